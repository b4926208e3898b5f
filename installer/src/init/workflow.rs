//! The workflow init writes (`.github/workflows/stateful-ci.yml` by
//! default): checkout without persisted credentials, restore, the project's
//! own install/build/test commands, save (always). Its header carries a
//! marker with a hash of the rest of the file, so a later run can tell a
//! file init wrote and nobody touched from one the user changed. Pure.

use super::detect::{Detected, NodePm, PyManager};

/// `actions/checkout`, pinned by commit (v6.0.2, its current major; the
/// commit as published in the actions/checkout release notes and seen
/// pinned in many public workflows).
pub const CHECKOUT: &str = "actions/checkout@de0fac2e4500dabe0009e67214ff5f5447ce83dd # v6.0.2";
/// `oven-sh/setup-bun`, pinned by commit (v2.1.2); only for bun projects.
pub const SETUP_BUN: &str = "oven-sh/setup-bun@735343b667d3e6f658f44d0eca948eb6282f2b76 # v2.1.2";
/// This project's own action: pinned by the commit this binary was released
/// from, with a version comment (a development build: its version tag).
pub const ACTION: &str = crate::bundle::ACTION_USES;

const MARKER: &str = "# stateful-ci-init: blake3=";

/// What the workflow is generated from.
#[derive(Debug, Clone)]
pub struct WorkflowSpec<'a> {
    /// The project kind whose commands the workflow runs; `None`: placeholders.
    pub kind: Option<&'a Detected>,
    /// The branch whose pushes run trusted jobs.
    pub branch: &'a str,
    /// The workflow's path in the repository, named in the placeholders.
    pub path: &'a str,
    /// The generator's version, named in the header.
    pub version: &'a str,
}

struct Step {
    name: String,
    uses: Option<&'static str>,
    with: Vec<(&'static str, String)>,
    run: Option<String>,
    id: Option<&'static str>,
    cond: Option<&'static str>,
    comment: Option<String>,
}

impl Step {
    fn run(name: &str, command: &str) -> Step {
        Step {
            name: name.into(),
            uses: None,
            with: Vec::new(),
            run: Some(command.into()),
            id: None,
            cond: None,
            comment: None,
        }
    }

    fn uses(name: &str, uses: &'static str) -> Step {
        Step {
            uses: Some(uses),
            run: None,
            ..Step::run(name, "")
        }
    }

    fn placeholder(name: &str, what: &str, path: &str) -> Step {
        Step {
            comment: Some(format!("Replace this step with your {what} command(s).")),
            ..Step::run(
                &format!("{name} (fill in)"),
                &format!("echo \"::warning title=stateful-ci::fill in the {what} step in {path}\""),
            )
        }
    }
}

/// The environment that points home-directory caches into the workspace,
/// where the preset's paths expect them (see `runtime::config::PRESETS`).
fn job_env(kind: Option<&Detected>) -> Vec<(&'static str, &'static str)> {
    match kind {
        Some(Detected::Node { pm, .. }) => {
            let mut env = match pm {
                NodePm::Npm => vec![(
                    "npm_config_cache",
                    "${{ github.workspace }}/.stateful-ci/npm-cache",
                )],
                NodePm::YarnBerry => vec![
                    (
                        "YARN_CACHE_FOLDER",
                        "${{ github.workspace }}/.stateful-ci/yarn-cache",
                    ),
                    ("YARN_ENABLE_GLOBAL_CACHE", "\"false\""),
                ],
                // pnpm: --store-dir on the command line. bun: node_modules
                // only (its cache would add restore time to save a download
                // that takes under a second). Yarn 1: node_modules only
                // (its cache holds every platform's optional packages:
                // 545 MB for a 71 MB node_modules, measured).
                NodePm::Pnpm | NodePm::Bun | NodePm::YarnClassic => Vec::new(),
            };
            // Node 22.1+ keeps V8's compiled code of the modules it loads
            // here (tsc 5.7+ turns the cache on by itself, into the temporary
            // folder a fresh runner starts without). Kept, the next run's
            // tools start from it: on the bench app with Node 22.23, vitest
            // took 195 modules from it and started 0.1-0.4 s faster (a
            // modest gain there; more for tools that load more code). Node
            // checks each entry against the module's source and its own
            // version; an older Node ignores the variable.
            env.push((
                "NODE_COMPILE_CACHE",
                "${{ github.workspace }}/.stateful-ci/node-compile-cache",
            ));
            env
        }
        Some(Detected::Rust { .. }) => vec![(
            "CARGO_HOME",
            "${{ github.workspace }}/.stateful-ci/cargo-home",
        )],
        Some(Detected::Python {
            manager: PyManager::Poetry,
            ..
        }) => vec![("POETRY_VIRTUALENVS_IN_PROJECT", "\"true\"")],
        Some(Detected::Go) => vec![
            ("GOCACHE", "${{ github.workspace }}/.cache/go-build"),
            ("GOMODCACHE", "${{ github.workspace }}/.cache/go-mod"),
            // The module cache is read-only by default, which a restore over
            // it, and any cleanup, trips on.
            ("GOFLAGS", "-modcacherw"),
        ],
        Some(Detected::Gradle { .. }) => {
            vec![("GRADLE_USER_HOME", "${{ github.workspace }}/.gradle-home")]
        }
        Some(Detected::Maven { .. }) => vec![(
            "MAVEN_OPTS",
            "-Dmaven.repo.local=${{ github.workspace }}/.m2/repository",
        )],
        _ => Vec::new(),
    }
}

/// A node install with a lock file. A restored `node_modules` is kept only
/// when a stamp inside it shows it was installed by the same package
/// manager and node from the same package.json and lock file; otherwise it
/// is removed first. Measured: given a restored `node_modules` and a changed
/// lock file, bun and pnpm install the new packages but leave the removed
/// ones behind (bun in `node_modules/NAME`, pnpm in `node_modules/.pnpm`),
/// so without the stamp a snapshot could keep a package the lock file no
/// longer has. The packages then come from the package manager's cache in
/// the workspace where one is kept (npm's cache, the pnpm store, yarn 2+'s
/// cache).
///
/// npm: `npm ci` deletes `node_modules` before it installs, which would
/// throw the restored one away, so it runs only when the stamp differs.
/// With a matching stamp the restored tree is the one the last `npm ci`
/// built from these very files, so what is left of `npm ci` is the
/// project's own install scripts: when package.json has any, `npm install`
/// runs them (and checks the tree against the lock file, which it cannot
/// change: it is byte for byte what `npm ci` accepted); when it has none,
/// there is nothing to do (measured: `npm install` on a matching tree of
/// 264 packages takes 2-3 s, a tenth of the cold install).
/// The other package managers follow the same rule: with a matching stamp
/// the restored `node_modules` is the tree they built from these very files
/// (measured: pnpm's "Already up to date" still took 4.2 s, yarn 1's 1.7 s),
/// so they run only when the project has install scripts of its own.
///
/// Exit 0 when package.json has a script the install runs for the project
/// itself.
const NPM_HAS_INSTALL_SCRIPTS: &str = r#"node -e 'const s = require("./package.json").scripts || {}; process.exit(["preinstall", "install", "postinstall", "prepublish", "preprepare", "prepare", "postprepare"].some((k) => k in s) ? 0 : 1)'"#;

fn node_locked_install(pm: NodePm) -> String {
    let (version, files, matching, fresh) = match pm {
        NodePm::Npm => (
            "npm --version",
            "package.json package-lock.json npm-shrinkwrap.json",
            "npm install --prefer-offline --no-audit --no-fund",
            "npm ci --prefer-offline --no-audit --no-fund",
        ),
        NodePm::Pnpm => (
            "pnpm --version",
            "package.json pnpm-lock.yaml pnpm-workspace.yaml",
            "pnpm install --frozen-lockfile --store-dir .pnpm-store",
            "",
        ),
        NodePm::YarnClassic => (
            "yarn --version",
            "package.json yarn.lock",
            "yarn install --frozen-lockfile",
            "",
        ),
        NodePm::YarnBerry => (
            "yarn --version",
            "package.json yarn.lock",
            "yarn install --immutable",
            "",
        ),
        NodePm::Bun => (
            "bun --version",
            "package.json bun.lock bun.lockb",
            "bun install --frozen-lockfile",
            "",
        ),
    };
    let stamp = format!(
        "stamp=\"{} $(node --version) $({version}) $(sha256sum {files} 2>/dev/null || true)\"",
        pm.name()
    );
    let body = if fresh.is_empty() {
        format!(
            "if [ \"$(cat node_modules/.stateful-ci-stamp 2>/dev/null)\" != \"$stamp\" ]; then\n  rm -rf node_modules\n  {matching}\nelif {NPM_HAS_INSTALL_SCRIPTS}; then\n  {matching}\nelse\n  echo \"node_modules was installed by {} from these very files: nothing to install\"\nfi",
            pm.name()
        )
    } else {
        format!(
            "if [ \"$(cat node_modules/.stateful-ci-stamp 2>/dev/null)\" != \"$stamp\" ]; then\n  {fresh}\nelif {NPM_HAS_INSTALL_SCRIPTS}; then\n  {matching}\nelse\n  echo \"node_modules was installed by npm ci from this package-lock.json: nothing to install\"\nfi"
        )
    };
    format!("{stamp}\n{body}\necho \"$stamp\" > node_modules/.stateful-ci-stamp")
}

/// pip into `.venv`. pip never removes a package that left the
/// requirements, so the restored virtualenv is used only when the
/// requirements file and the interpreter are the ones it was made with (a
/// stamp inside it says which); otherwise it is made afresh.
fn pip_install(file: &str, install: &str) -> String {
    format!(
        r#"stamp="$(python3 -c 'import sys; print(sys.executable, sys.version)') $(sha256sum {file})"
if [ "$(cat .venv/.stateful-ci-stamp 2>/dev/null)" != "$stamp" ]; then
  rm -rf .venv
  python3 -m venv .venv
fi
.venv/bin/pip install {install}
echo "$stamp" > .venv/.stateful-ci-stamp"#
    )
}

/// Setup and the project's own steps, between restore and save.
fn project_steps(kind: Option<&Detected>, path: &str) -> (Vec<Step>, Vec<Step>) {
    let mut setup = Vec::new();
    let mut steps = Vec::new();
    match kind {
        None => {
            steps.push(Step::placeholder("Install", "install", path));
            steps.push(Step::placeholder("Build and test", "build and test", path));
        }
        Some(Detected::Node {
            pm,
            locked,
            scripts,
        }) => {
            let install = match (pm, locked) {
                (pm, true) => node_locked_install(*pm),
                (NodePm::Npm, false) => "npm install --prefer-offline --no-audit --no-fund".into(),
                (NodePm::Pnpm, false) => "pnpm install --store-dir .pnpm-store".into(),
                (NodePm::YarnBerry | NodePm::YarnClassic, false) => "yarn install".into(),
                (NodePm::Bun, false) => "bun install".into(),
            };
            match pm {
                NodePm::Bun => setup.push(Step::uses("Set up bun", SETUP_BUN)),
                NodePm::Pnpm | NodePm::YarnBerry => {
                    setup.push(Step::run("Set up corepack (pnpm, yarn)", "corepack enable"))
                }
                _ => {}
            }
            let mut step = Step::run("Install", &install);
            if *locked {
                step.comment = Some(format!(
                    "The restored node_modules is used only if {} installed it from this package.json and lock file (the stamp); else it is removed.",
                    pm.name()
                ));
            }
            steps.push(step);
            let run = |script: &str| match (pm, script) {
                (NodePm::Npm, "test") => "npm test".to_string(),
                (NodePm::Bun, s) => format!("bun run {s}"),
                (_, s) => format!("{} run {s}", pm.name()),
            };
            for (script, name) in [("build", "Build"), ("test", "Test")] {
                if scripts.iter().any(|s| s == script) {
                    steps.push(Step::run(name, &run(script)));
                }
            }
            if scripts.is_empty() {
                steps.push(Step::placeholder("Build and test", "build and test", path));
            }
        }
        Some(Detected::Rust { locked }) => {
            let l = if *locked { " --locked" } else { "" };
            steps.push(Step::run("Build", &format!("cargo build{l}")));
            steps.push(Step::run("Test", &format!("cargo test{l}")));
        }
        Some(Detected::Python {
            manager,
            requirements,
            pyproject,
            pytest,
        }) => {
            match manager {
                PyManager::Uv => {
                    setup.push(Step::run("Set up uv", "pipx install uv"));
                    steps.push(Step::run("Install", "uv sync --locked"));
                }
                PyManager::Poetry => {
                    setup.push(Step::run("Set up poetry", "pipx install poetry"));
                    steps.push(Step::run("Install", "poetry sync --no-interaction"));
                }
                PyManager::Pip if *requirements => {
                    let mut step = Step::run(
                        "Install",
                        &pip_install("requirements.txt", "-r requirements.txt"),
                    );
                    step.comment = Some("A new .venv when requirements.txt or Python changed (pip never removes a package).".into());
                    steps.push(step);
                }
                PyManager::Pip if *pyproject => {
                    let mut step = Step::run("Install", &pip_install("pyproject.toml", "-e ."));
                    step.comment = Some("A new .venv when pyproject.toml or Python changed (pip never removes a package).".into());
                    steps.push(step);
                }
                PyManager::Pip => {
                    steps.push(Step::run("Create the virtualenv", "python3 -m venv .venv"));
                    steps.push(Step::placeholder("Install", "install", path));
                }
            }
            if *pytest {
                steps.push(Step::run("Test", ".venv/bin/python -m pytest"));
            } else {
                steps.push(Step::placeholder("Test", "test", path));
            }
        }
        Some(Detected::Go) => {
            steps.push(Step::run("Build", "go build ./..."));
            steps.push(Step::run("Test", "go test ./..."));
        }
        Some(Detected::Gradle { wrapper }) => {
            let g = if *wrapper { "./gradlew" } else { "gradle" };
            steps.push(Step::run("Build and test", &format!("{g} build")));
        }
        Some(Detected::Maven { wrapper }) => {
            let m = if *wrapper { "./mvnw" } else { "mvn" };
            steps.push(Step::run("Build and test", &format!("{m} -B verify")));
        }
    }
    (setup, steps)
}

/// The backend URL comes from a repository secret (a secret, not a variable:
/// actionlint knows no `vars` context here) the workflow's author
/// sets (`deploy` prints the command), never from the checked-out
/// stateful-ci.toml, which in a pull request job may be the pull request's
/// (issue 10, item 2; docs/TRUST.md).
fn backend_url_input() -> (&'static str, String) {
    (
        "backend-url",
        "${{ secrets.STATEFUL_CI_BACKEND_URL }}".into(),
    )
}

/// A YAML scalar for a branch name: bare when plainly safe, else quoted.
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        && !s.starts_with(['-', '.'])
        && !["true", "false", "yes", "no", "on", "off", "null", "y", "n"]
            .contains(&s.to_ascii_lowercase().as_str());
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string serialises")
    }
}

/// The workflow's full text, header and marker included.
pub fn generate(spec: &WorkflowSpec) -> String {
    let body = body(spec);
    format!(
        "# Generated by `stateful-ci init` (stateful-ci {version}). Edit it freely:\n\
         # init does not overwrite a changed file without asking, and\n\
         # `stateful-ci init --check` shows how it differs from what init would write.\n\
         {MARKER}{hash}\n{body}",
        version = spec.version,
        hash = hash(&body),
    )
}

fn body(spec: &WorkflowSpec) -> String {
    let mut y = String::new();
    y.push_str("name: stateful-ci\n\non:\n  push:\n");
    y.push_str(&format!("    branches: [{}]\n", yaml_str(spec.branch)));
    y.push_str("  pull_request:\n  workflow_dispatch:\n\n");
    y.push_str("permissions:\n  contents: read\n");
    y.push_str("  id-token: write # the stateful-ci backend verifies this job's OIDC token\n\n");
    y.push_str("jobs:\n  build:\n    runs-on: ubuntu-latest\n");
    let env = job_env(spec.kind);
    if !env.is_empty() {
        y.push_str("    env:\n");
        for (k, v) in env {
            y.push_str(&format!("      {k}: {v}\n"));
        }
    }
    y.push_str("    steps:\n");
    let (setup, own) = project_steps(spec.kind, spec.path);
    let mut steps = vec![Step {
        with: vec![("persist-credentials", "false".into())],
        ..Step::uses("Check out", CHECKOUT)
    }];
    steps.extend(setup);
    steps.push(Step {
        id: Some("workspace"),
        with: vec![backend_url_input()],
        comment: Some(
            "Restores now and saves after the last step (also when a step failed: save-on: always).\n      \
             # steps.workspace.outputs.cache-hit says whether a snapshot was found."
                .into(),
        ),
        ..Step::uses("Restore the workspace (saved again at the end of the job)", ACTION)
    });
    steps.extend(own);
    for (i, s) in steps.iter().enumerate() {
        if i > 0 {
            y.push('\n');
        }
        if let Some(c) = &s.comment {
            y.push_str(&format!("      # {c}\n"));
        }
        y.push_str(&format!("      - name: {}\n", s.name));
        if let Some(id) = s.id {
            y.push_str(&format!("        id: {id}\n"));
        }
        if let Some(c) = s.cond {
            y.push_str(&format!("        if: {c}\n"));
        }
        if let Some(u) = s.uses {
            y.push_str(&format!("        uses: {u}\n"));
        }
        if !s.with.is_empty() {
            y.push_str("        with:\n");
            for (k, v) in &s.with {
                y.push_str(&format!("          {k}: {v}\n"));
            }
        }
        if let Some(r) = &s.run {
            y.push_str(&format!("        run: {}\n", run_scalar(r)));
        }
    }
    y
}

/// A `run:` value: plain when YAML reads it back unchanged, else a literal
/// block.
fn run_scalar(cmd: &str) -> String {
    let needs_block = cmd.contains('\n')
        || cmd.contains(": ")
        || cmd.contains(" #")
        || cmd.starts_with(['"', '\'', '*', '&', '!']);
    if needs_block {
        let mut out = String::from("|");
        for line in cmd.lines() {
            out.push('\n');
            if !line.is_empty() {
                out.push_str("          ");
                out.push_str(line);
            }
        }
        out
    } else {
        cmd.to_string()
    }
}

fn hash(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex()[..32].to_string()
}

/// How the file on disk relates to what init would write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// No file.
    Missing,
    /// Exactly what init would write.
    Same,
    /// Written by init and not changed since (an older generator or other
    /// answers): safe to replace.
    Untouched,
    /// Changed by hand, or not written by init: replaced only when asked.
    Changed,
}

pub fn classify(existing: Option<&str>, new: &str) -> Existing {
    let Some(old) = existing else {
        return Existing::Missing;
    };
    if old == new {
        return Existing::Same;
    }
    // The marker line, then the body it hashes.
    let mut offset = 0;
    for line in old.split_inclusive('\n').take(10) {
        offset += line.len();
        if let Some(recorded) = line.trim_end().strip_prefix(MARKER) {
            return if recorded == hash(&old[offset..]) {
                Existing::Untouched
            } else {
                Existing::Changed
            };
        }
    }
    Existing::Changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::detect::{ProjectFiles, detect};

    fn gen_for(files: ProjectFiles) -> String {
        let found = detect(&files);
        generate(&WorkflowSpec {
            kind: found.first(),
            branch: "main",
            path: ".github/workflows/stateful-ci.yml",
            version: "0.1.0",
        })
    }

    #[test]
    fn node_npm_workflow_has_the_required_shape() {
        let y = gen_for(ProjectFiles::from_names(&["package-lock.json"]).with(
            "package.json",
            r#"{"scripts":{"build":"tsc","test":"node --test"}}"#,
        ));
        assert!(y.contains("permissions:\n  contents: read\n  id-token: write"));
        assert_eq!(y.matches("permissions:").count(), 1);
        assert!(y.contains(&format!(
            "uses: {CHECKOUT}\n        with:\n          persist-credentials: false\n"
        )));
        // One step: the action restores, and its post step saves.
        let pin = format!("id: workspace\n        uses: {ACTION}\n");
        assert_eq!(y.matches("stateful-ci/stateful-ci@").count(), 1, "{y}");
        assert!(!y.contains("command:"), "{y}");
        let order: Vec<usize> = [
            pin.as_str(),
            "npm ci --prefer-offline --no-audit --no-fund",
            "run: npm run build",
            "run: npm test",
        ]
        .iter()
        .map(|s| y.find(s).unwrap_or_else(|| panic!("{s:?} missing in\n{y}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{y}");
        assert!(!y.contains("setup-bun"));
        assert!(
            y.contains(
                "    env:\n      npm_config_cache: ${{ github.workspace }}/.stateful-ci/npm-cache\n      NODE_COMPILE_CACHE: ${{ github.workspace }}/.stateful-ci/node-compile-cache\n"
            ),
            "npm's cache and Node's compile cache go into the workspace: {y}"
        );
        assert!(y.contains("branches: [main]"));
        // The backend URL comes from a repository secret, never the tree.
        assert_eq!(
            y.matches("backend-url: ${{ secrets.STATEFUL_CI_BACKEND_URL }}")
                .count(),
            1,
            "{y}"
        );
    }

    #[test]
    fn package_managers_and_ecosystems_get_their_commands() {
        let cases: &[(ProjectFiles, &[&str])] = &[
            (
                ProjectFiles::from_names(&["pnpm-lock.yaml"])
                    .with("package.json", r#"{"scripts":{"test":"vitest"}}"#),
                &[
                    "run: corepack enable",
                    "pnpm install --frozen-lockfile --store-dir .pnpm-store\n",
                    "sha256sum package.json pnpm-lock.yaml",
                    "  rm -rf node_modules\n",
                    "run: pnpm run test",
                ],
            ),
            (
                ProjectFiles::from_names(&["bun.lock"])
                    .with("package.json", r#"{"scripts":{"test":"bun test"}}"#),
                &[
                    SETUP_BUN,
                    "          bun install --frozen-lockfile\n",
                    "sha256sum package.json bun.lock bun.lockb",
                    "run: bun run test",
                ],
            ),
            (
                ProjectFiles::from_names(&["Cargo.toml", "Cargo.lock"]),
                &[
                    "CARGO_HOME: ${{ github.workspace }}/.stateful-ci/cargo-home",
                    "run: cargo build --locked",
                    "run: cargo test --locked",
                ],
            ),
            (
                ProjectFiles::default().with("requirements.txt", "pytest\n"),
                &[
                    "            rm -rf .venv\n            python3 -m venv .venv\n",
                    "          .venv/bin/pip install -r requirements.txt\n",
                    "$(sha256sum requirements.txt)",
                    "run: .venv/bin/python -m pytest",
                ],
            ),
            (
                ProjectFiles::from_names(&["uv.lock"]).with(
                    "pyproject.toml",
                    "[dependency-groups]\ndev = [\"pytest\"]\n",
                ),
                &[
                    "run: pipx install uv",
                    "run: uv sync --locked",
                    "run: .venv/bin/python -m pytest",
                ],
            ),
            (
                ProjectFiles::from_names(&["poetry.lock", "pyproject.toml"]),
                &[
                    "POETRY_VIRTUALENVS_IN_PROJECT: \"true\"",
                    "run: poetry sync --no-interaction",
                ],
            ),
            (
                ProjectFiles::from_names(&["yarn.lock", ".yarnrc.yml"]).with("package.json", "{}"),
                &[
                    "YARN_CACHE_FOLDER: ${{ github.workspace }}/.stateful-ci/yarn-cache",
                    "YARN_ENABLE_GLOBAL_CACHE: \"false\"",
                    "          yarn install --immutable\n",
                ],
            ),
            (
                ProjectFiles::from_names(&["yarn.lock"]).with("package.json", "{}"),
                &["          yarn install --frozen-lockfile\n"],
            ),
            (
                ProjectFiles::from_names(&["go.mod"]),
                &[
                    "GOCACHE: ${{ github.workspace }}/.cache/go-build",
                    "GOMODCACHE: ${{ github.workspace }}/.cache/go-mod",
                    "GOFLAGS: -modcacherw",
                    "run: go build ./...",
                    "run: go test ./...",
                ],
            ),
            (
                ProjectFiles::from_names(&["build.gradle.kts", "gradlew"]),
                &[
                    "GRADLE_USER_HOME: ${{ github.workspace }}/.gradle-home",
                    "run: ./gradlew build",
                ],
            ),
            (
                ProjectFiles::from_names(&["pom.xml"]),
                &[
                    "MAVEN_OPTS: -Dmaven.repo.local=${{ github.workspace }}/.m2/repository",
                    "run: mvn -B verify",
                ],
            ),
            (
                ProjectFiles::from_names(&["package.json"]),
                &[
                    "run: npm install --prefer-offline",
                    "fill in the build and test step in .github/workflows/stateful-ci.yml",
                ],
            ),
            (
                ProjectFiles::from_names(&["README.md"]),
                &["fill in the install step in .github/workflows/stateful-ci.yml"],
            ),
        ];
        for (files, wants) in cases {
            let y = gen_for(files.clone());
            for w in *wants {
                assert!(y.contains(w), "{w:?} missing for {:?}:\n{y}", files.names);
            }
            // Every block's lines are indented under `run: |`.
            for block in y.split("run: |\n").skip(1) {
                let first = block.lines().next().unwrap_or("");
                assert!(first.starts_with("          "), "{first:?} in\n{y}");
            }
        }
    }

    #[test]
    fn odd_branch_names_are_quoted() {
        assert_eq!(yaml_str("main"), "main");
        assert_eq!(yaml_str("release/1.x"), "release/1.x");
        assert_eq!(yaml_str("on"), "\"on\"");
        assert_eq!(yaml_str("a b#c"), "\"a b#c\"");
    }

    #[test]
    fn the_marker_tells_untouched_from_changed() {
        let spec = |branch| WorkflowSpec {
            kind: None,
            branch,
            path: "w.yml",
            version: "0.1.0",
        };
        let v1 = generate(&spec("main"));
        let v2 = generate(&spec("trunk"));
        assert_eq!(classify(None, &v1), Existing::Missing);
        assert_eq!(classify(Some(&v1), &v1), Existing::Same);
        assert_eq!(classify(Some(&v1), &v2), Existing::Untouched);
        let edited = v1.replace("runs-on: ubuntu-latest", "runs-on: ubuntu-24.04");
        assert_eq!(classify(Some(&edited), &v1), Existing::Changed);
        assert_eq!(classify(Some("name: mine\n"), &v1), Existing::Changed);
        // Only the header changed (e.g. a newer generator version): untouched.
        let older = v1.replace("(stateful-ci 0.1.0)", "(stateful-ci 0.0.9)");
        assert_eq!(classify(Some(&older), &v1), Existing::Untouched);
    }
}
