//! The workspace configuration: which paths a snapshot covers.
//!
//! Read from `stateful-ci.toml` (or the original project's
//! `stateful-ci.json`) at the workspace root, overridden by `--path` and
//! `--exclude`. Parsing is strict: a typo in a key is an error with a
//! suggestion, never a silently ignored setting. Tables owned by other parts
//! of the tool (`[deployment]`, written by `deploy`) are passed over here.

use std::path::Path;

use serde_json::Value as Json;
use stateful_ci_protocol::path::validate_relative;
use toml_edit::{DocumentMut, Item};

use crate::error::Error;

pub const CONFIG_FILE: &str = "stateful-ci.toml";
pub const LEGACY_CONFIG_FILE: &str = "stateful-ci.json";

/// Built-in path sets. Paths are relative to the workspace root; caches that
/// normally live in the home directory (npm's cache, Cargo's registry, Go,
/// Gradle, Maven) are pointed into the workspace by the environment of the
/// workflow `init` writes (see `installer/src/init/workflow.rs`, which
/// also picks the install command that reuses them and stays as strict as
/// the lock file). A path that does not exist is skipped, so one preset can
/// serve every package manager of an ecosystem. What each keeps was chosen
/// by measurement (`scripts/bench-presets.sh`, docs/BENCHMARKS.md).
///
/// The `node` preset keeps every path it had before (`node_modules`,
/// `.pnpm-store`, `.turbo`, `.next/cache`), so configurations and workflows
/// that name them keep working.
pub const PRESETS: &[(&str, &[&str], &str)] = &[
    (
        "node",
        &[
            "node_modules",
            ".pnpm-store",
            ".turbo",
            ".next/cache",
            ".stateful-ci/npm-cache",
            ".stateful-ci/yarn-cache",
            ".yarn/install-state.gz",
            ".stateful-ci/node-compile-cache",
        ],
        "node_modules, npm's and yarn's caches and the pnpm store (npm, pnpm, yarn, bun), Node's compile cache (NODE_COMPILE_CACHE), Turborepo and Next.js caches",
    ),
    (
        "rust",
        &[
            "target",
            ".stateful-ci/cargo-home/registry/index",
            ".stateful-ci/cargo-home/registry/cache",
            ".stateful-ci/cargo-home/git/db",
        ],
        "Cargo build output and, with CARGO_HOME=.stateful-ci/cargo-home, the downloaded registry",
    ),
    (
        "python",
        &[".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"],
        "the virtualenv .venv (pip, uv, poetry) and tool caches",
    ),
    (
        "go",
        &[".cache/go-build", ".cache/go-mod"],
        "Go build and module caches (GOCACHE, GOMODCACHE set inside the workspace)",
    ),
    (
        "gradle",
        &[".gradle", ".gradle-home/caches", ".gradle-home/wrapper"],
        "Gradle project cache and GRADLE_USER_HOME inside the workspace",
    ),
    (
        "maven",
        &[".m2/repository"],
        "Maven local repository (-Dmaven.repo.local=.m2/repository)",
    ),
];

const TOP_KEYS: &[&str] = &[
    "preset",
    "paths",
    "exclude",
    "workspace",
    "backend",
    crate::deployment::key::TABLE,
];
const BACKEND_KEYS: &[&str] = &["url", "audience"];

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub preset: Option<String>,
    /// Normalised, de-duplicated roots, none inside another.
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    /// Name of this workspace inside the repository (default `default`).
    pub workspace: String,
    /// `[backend] url` as written in the file: shown by `status`, never used
    /// to send a token (see [`backend_from_env`]).
    pub backend_url: Option<String>,
    /// `[backend] audience` as written in the file: never used to mint a
    /// token (see [`backend_from_env`]).
    pub audience: Option<String>,
    /// Which file the settings came from, if any.
    pub source: Option<String>,
}

/// Command-line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
}

impl Config {
    /// Load the configuration of the workspace at `root`, applying overrides.
    /// With neither a config file nor `--path`, this is an error that says
    /// how to create one.
    pub fn load(root: &Path, ov: &Overrides) -> Result<Config, Error> {
        let toml_path = root.join(CONFIG_FILE);
        let json_path = root.join(LEGACY_CONFIG_FILE);
        let mut cfg = if toml_path.exists() {
            let text = read_text(&toml_path)?;
            parse_toml(&text).map_err(|e| e.in_file(CONFIG_FILE))?
        } else if json_path.exists() {
            let text = read_text(&json_path)?;
            parse_json(&text).map_err(|e| e.in_file(LEGACY_CONFIG_FILE))?
        } else {
            Config {
                workspace: "default".into(),
                ..Config::default()
            }
        };
        if !ov.paths.is_empty() {
            cfg.preset = None;
            cfg.paths = normalise_paths(&ov.paths, "--path")?;
        }
        if !ov.exclude.is_empty() {
            cfg.exclude = validate_excludes(&ov.exclude, "--exclude")?;
        }
        if cfg.paths.is_empty() {
            return Err(Error::user(
                format!("no paths to snapshot in {}", root.display()),
                format!(
                    "create {CONFIG_FILE} with `stateful-ci init`, or pass --path (e.g. --path node_modules)"
                ),
            ));
        }
        Ok(cfg)
    }
}

fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::user(
            format!("cannot read {}: {e}", path.display()),
            "check the file's permissions and encoding (UTF-8)",
        )
    })
}

/// Parse `stateful-ci.toml` text.
pub fn parse_toml(text: &str) -> Result<Config, Error> {
    let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        Error::user(
            format!("not valid TOML: {}", e.message()),
            "fix the syntax near the position shown",
        )
    })?;
    let mut raw = RawConfig::default();
    for (key, item) in doc.iter() {
        match key {
            "preset" => raw.preset = Some(expect_str(item, "preset")?),
            "paths" => raw.paths = Some(expect_str_array(item, "paths")?),
            "exclude" => raw.exclude = expect_str_array(item, "exclude")?,
            "workspace" => raw.workspace = Some(expect_str(item, "workspace")?),
            "backend" => {
                let table = item
                    .as_table_like()
                    .ok_or_else(|| type_err("backend", "a table"))?;
                for (k, v) in table.iter() {
                    match k {
                        "url" => raw.backend_url = Some(expect_str(v, "backend.url")?),
                        "audience" => raw.audience = Some(expect_str(v, "backend.audience")?),
                        other => {
                            return Err(unknown_key(
                                &format!("backend.{other}"),
                                other,
                                BACKEND_KEYS,
                            ));
                        }
                    }
                }
            }
            // Owned by `deploy` (crate::deployment); validated there.
            crate::deployment::key::TABLE => {}
            other => return Err(unknown_key(other, other, TOP_KEYS)),
        }
    }
    raw.resolve()
}

/// Parse the original project's `stateful-ci.json`.
pub fn parse_json(text: &str) -> Result<Config, Error> {
    let v: Json = serde_json::from_str(text).map_err(|e| {
        Error::user(
            format!("not valid JSON: {e}"),
            "fix the syntax at the line and column shown",
        )
    })?;
    let obj = v.as_object().ok_or_else(|| {
        Error::user(
            "the top level must be an object",
            r#"write e.g. {"preset": "node"}"#,
        )
    })?;
    let mut raw = RawConfig::default();
    for (key, val) in obj {
        let strings = |name: &str| -> Result<Vec<String>, Error> {
            val.as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|x| x.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| type_err(name, "a list of strings"))
        };
        match key.as_str() {
            "preset" => {
                raw.preset = Some(
                    val.as_str()
                        .ok_or_else(|| type_err("preset", "a string"))?
                        .to_owned(),
                )
            }
            "paths" => raw.paths = Some(strings("paths")?),
            "exclude" => raw.exclude = strings("exclude")?,
            "workspace" => {
                raw.workspace = Some(
                    val.as_str()
                        .ok_or_else(|| type_err("workspace", "a string"))?
                        .to_owned(),
                )
            }
            other => return Err(unknown_key(other, other, &TOP_KEYS[..4])),
        }
    }
    raw.resolve()
}

#[derive(Default)]
struct RawConfig {
    preset: Option<String>,
    paths: Option<Vec<String>>,
    exclude: Vec<String>,
    workspace: Option<String>,
    backend_url: Option<String>,
    audience: Option<String>,
}

impl RawConfig {
    fn resolve(self) -> Result<Config, Error> {
        let mut paths = Vec::new();
        if let Some(p) = &self.preset {
            paths.extend(preset_paths(p)?.iter().map(|s| s.to_string()));
        }
        if let Some(p) = &self.paths {
            if p.is_empty() {
                return Err(Error::user(
                    "`paths` is an empty list",
                    "list at least one directory to keep (e.g. paths = [\"node_modules\"]) or remove the key and set a preset",
                ));
            }
            paths.extend(p.iter().cloned());
        }
        if self.preset.is_none() && self.paths.is_none() {
            return Err(Error::user(
                "neither `preset` nor `paths` is set",
                format!(
                    "add e.g. preset = \"node\" (presets: {})",
                    preset_names().join(", ")
                ),
            ));
        }
        let workspace = self.workspace.unwrap_or_else(|| "default".into());
        if workspace.is_empty()
            || workspace.len() > 64
            || !workspace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::user(
                format!("workspace name {workspace:?} is not valid"),
                "use 1-64 characters from A-Z, a-z, 0-9, '-', '_' and '.'",
            ));
        }
        Ok(Config {
            preset: self.preset,
            paths: normalise_paths(&paths, "paths")?,
            exclude: validate_excludes(&self.exclude, "exclude")?,
            workspace,
            backend_url: self.backend_url,
            audience: self.audience,
            source: None,
        })
    }
}

// ---------------------------------------------------------------- backend

/// Environment variable naming the backend URL (also `--backend`).
pub const BACKEND_URL_ENV: &str = "STATEFUL_CI_BACKEND_URL";
/// Environment variable naming the OIDC audience to request.
pub const AUDIENCE_ENV: &str = "STATEFUL_CI_AUDIENCE";
/// The audience requested when none is set (the Worker's default too).
pub const DEFAULT_AUDIENCE: &str = "stateful-ci";

/// Where the run's OIDC token goes and for which audience.
///
/// Both come only from what the workflow's author controls: `--backend` /
/// `STATEFUL_CI_BACKEND_URL` (the action's `backend-url` input, a repository
/// variable) and `STATEFUL_CI_AUDIENCE`. Never from `stateful-ci.toml`: it
/// is read from the checked-out tree, which in a `pull_request_target` or
/// `workflow_run` job may be a pull request's, and would then choose where a
/// token carrying the base repository's identity is sent, and for which
/// audience (a cloud provider's, say). Tokens go over https only, except to
/// loopback (`http://127.0.0.1`, `localhost`, `[::1]`) for local backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub url: String,
    pub audience: String,
}

/// The backend from the flag (or env, through clap) and `audience_env`
/// (`STATEFUL_CI_AUDIENCE`); `None` when no URL is given.
pub fn backend_from_env(
    url: Option<&str>,
    audience_env: Option<&str>,
) -> Result<Option<Backend>, Error> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    check_token_url(url)?;
    let audience = audience_env
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_AUDIENCE);
    if audience.len() > 256 || !audience.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::user(
            format!("{AUDIENCE_ENV} {audience:?} is not a usable OIDC audience"),
            format!(
                "set it to the audience the backend was deployed with (default {DEFAULT_AUDIENCE}), or unset it"
            ),
        ));
    }
    Ok(Some(Backend {
        url: url.to_string(),
        audience: audience.to_string(),
    }))
}

/// A URL the run's OIDC token may be sent to: `https://HOST...`, or
/// `http://` to a loopback address (127.0.0.0/8, `localhost`, `[::1]`).
pub fn check_token_url(url: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Error::user(
            format!("backend URL {url:?} {why}"),
            "use the https:// URL that `stateful-ci deploy` printed (plain http is accepted only for a backend on this machine: http://127.0.0.1:PORT)",
        )
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.len() > 2048 {
        return Err(bad("contains spaces or control characters"));
    }
    let lower = url.to_ascii_lowercase();
    let (https, rest) = if let Some(r) = lower.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = lower.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("is not an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad("contains user information (`user@`)"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (format!("[{h}]"), p),
            None => return Err(bad("has an unterminated IPv6 address")),
        }
    } else {
        match authority.split_once(':') {
            Some((h, _)) => (h.to_string(), &authority[h.len()..]),
            None => (authority.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if let Some(p) = port.strip_prefix(':') {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(bad("has an invalid port"));
        }
    } else if !port.is_empty() {
        return Err(bad("has an invalid host"));
    }
    if https {
        return Ok(());
    }
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(bad(
            "is plain http to another machine: the run's OIDC token would cross the network unencrypted",
        ))
    }
}

/// The one-time note when `stateful-ci.toml` still names a backend URL or
/// audience: they are ignored, and why.
pub fn ignored_backend_keys_note(cfg: &Config) -> Option<String> {
    let mut keys = Vec::new();
    if cfg.backend_url.is_some() {
        keys.push("url");
    }
    if cfg.audience.is_some() {
        keys.push("audience");
    }
    if keys.is_empty() {
        return None;
    }
    Some(format!(
        "[backend] {} in {CONFIG_FILE} is ignored: the checked-out tree (in a pull request job, the pull request's) must not choose where this run's OIDC token is sent or for which audience; set them in the workflow instead (the action's backend-url input from the repository secret {BACKEND_URL_ENV}, and {AUDIENCE_ENV} if the backend uses another audience), then remove them from {CONFIG_FILE}",
        keys.join(" and ")
    ))
}

/// The paths of a built-in preset.
pub fn preset_paths(name: &str) -> Result<&'static [&'static str], Error> {
    PRESETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, p, _)| *p)
        .ok_or_else(|| {
            let mut hint = format!("use one of: {}", preset_names().join(", "));
            if let Some(s) = suggest(name, &preset_names()) {
                hint = format!("did you mean {s:?}? ({hint})");
            }
            Error::user(format!("unknown preset {name:?}"), hint)
        })
}

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _, _)| *n).collect()
}

/// Validate and normalise configured roots: relative, no `..`, no
/// duplicates, and no root inside another.
pub fn normalise_paths(input: &[String], what: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for raw in input {
        let p = normalise_one(raw);
        if p.is_empty() || p == "." {
            return Err(Error::user(
                format!("{what}: {raw:?} names the whole workspace"),
                "list the directories to keep (e.g. node_modules), not the repository root",
            ));
        }
        if raw.starts_with('/') || raw.starts_with('~') || Path::new(raw).is_absolute() {
            return Err(Error::user(
                format!("{what}: {raw:?} is an absolute path"),
                "paths are relative to the repository root; point tools' caches into the workspace (e.g. CARGO_HOME=.cargo-home)",
            ));
        }
        if p.split('/').any(|c| c == "..") {
            return Err(Error::user(
                format!("{what}: {raw:?} leaves the workspace with `..`"),
                "only paths inside the repository can be snapshotted",
            ));
        }
        validate_relative(&p).map_err(|e| {
            Error::user(
                format!("{what}: {raw:?}: {e}"),
                "use a plain relative path like .next/cache",
            )
        })?;
        out.push(p);
    }
    out.sort();
    out.dedup();
    // Drop roots covered by another root.
    let all = out.clone();
    out.retain(|p| {
        !all.iter()
            .any(|q| q != p && stateful_ci_protocol::format::is_within(p, q))
    });
    Ok(out)
}

fn normalise_one(raw: &str) -> String {
    raw.trim()
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn validate_excludes(input: &[String], what: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for raw in input {
        let p = raw
            .trim()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if p.is_empty() {
            return Err(Error::user(
                format!("{what}: an empty pattern"),
                "remove it or write a glob like **/*.log",
            ));
        }
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            return Err(Error::user(
                format!("{what}: {raw:?} is absolute or uses `..`"),
                "exclude patterns are relative to the repository root, e.g. node_modules/.cache",
            ));
        }
        globset::Glob::new(&p).map_err(|e| {
            Error::user(
                format!("{what}: {raw:?} is not a valid glob: {e}"),
                "see the glob syntax in README.md",
            )
        })?;
        out.push(p);
    }
    Ok(out)
}

fn expect_str(item: &Item, name: &str) -> Result<String, Error> {
    item.as_str()
        .map(str::to_owned)
        .ok_or_else(|| type_err(name, "a string"))
}

fn expect_str_array(item: &Item, name: &str) -> Result<Vec<String>, Error> {
    item.as_array()
        .and_then(|a| {
            a.iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| type_err(name, "a list of strings"))
}

fn type_err(name: &str, want: &str) -> Error {
    Error::user(
        format!("`{name}` must be {want}"),
        format!("e.g. {}", example_for(name)),
    )
}

fn example_for(name: &str) -> &'static str {
    match name {
        "paths" => r#"paths = ["node_modules", ".next/cache"]"#,
        "exclude" => r#"exclude = ["**/*.log"]"#,
        "preset" => r#"preset = "node""#,
        "workspace" => r#"workspace = "web""#,
        _ => r#"[backend] url = "https://stateful-ci.example.workers.dev""#,
    }
}

fn unknown_key(full: &str, key: &str, known: &[&str]) -> Error {
    let hint = match suggest(key, known) {
        Some(s) => format!("did you mean `{s}`? (known keys: {})", known.join(", ")),
        None => format!("known keys: {}", known.join(", ")),
    };
    Error::user(format!("unknown key `{full}`"), hint)
}

/// The closest candidate by edit distance, if it is close enough.
pub fn suggest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(input, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_and_paths_resolve() {
        let c = parse_toml("preset = \"node\"\n").unwrap();
        // The original preset's paths are all still there.
        for p in [".next/cache", ".pnpm-store", ".turbo", "node_modules"] {
            assert!(c.paths.iter().any(|x| x == p), "{p} missing: {:?}", c.paths);
        }
        assert!(c.paths.iter().any(|x| x == ".stateful-ci/npm-cache"));
        assert!(
            c.paths
                .iter()
                .any(|x| x == ".stateful-ci/node-compile-cache")
        );
        let c = parse_toml("paths = [\"./a/\", \"a/b\", \"c\"]\nexclude = [\"**/*.log\"]").unwrap();
        assert_eq!(c.paths, vec!["a", "c"]);
        assert_eq!(c.exclude, vec!["**/*.log"]);
        assert_eq!(c.workspace, "default");
    }

    #[test]
    fn json_form_is_read() {
        let mut want: Vec<String> = preset_paths("rust")
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        want.sort();
        assert_eq!(parse_json(r#"{"preset":"rust"}"#).unwrap().paths, want);
        let c = parse_json(r#"{"paths":["x"],"exclude":["x/tmp"]}"#).unwrap();
        assert_eq!(
            (c.paths, c.exclude),
            (vec!["x".to_string()], vec!["x/tmp".to_string()])
        );
    }

    #[test]
    fn bad_input_names_the_problem_and_the_fix() {
        let cases = [
            ("paths = [\"/etc\"]", "absolute"),
            ("paths = [\"../x\"]", "`..`"),
            ("paths = []", "empty list"),
            ("paths = [\".\"]", "whole workspace"),
            ("preset = \"nod\"", "did you mean \"node\""),
            ("pathz = [\"x\"]", "did you mean `paths`"),
            ("[backend]\nurll = \"x\"", "did you mean `url`"),
            ("preset = 3", "must be a string"),
            ("exclude = [\"a\"]", "neither `preset` nor `paths`"),
            ("paths = [\"x\"]\nexclude = [\"a[\"]", "not a valid glob"),
        ];
        for (text, want) in cases {
            let err = parse_toml(text).unwrap_err();
            let shown = format!("{err}\n{}", err.hint.clone().unwrap_or_default());
            assert!(shown.contains(want), "{text:?}: {shown}");
        }
        assert!(
            parse_json("{\"pats\": []}")
                .unwrap_err()
                .hint
                .unwrap()
                .contains("paths")
        );
    }

    #[test]
    fn tokens_go_over_https_or_to_loopback_only() {
        for ok in [
            "https://stateful-ci.x.workers.dev",
            "https://example.com:8443/base",
            "HTTPS://EXAMPLE.COM",
            "http://127.0.0.1:8787",
            "http://127.3.4.5",
            "http://localhost:1/x",
            "http://[::1]:8787/",
        ] {
            check_token_url(ok).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1:8787",
            "http://127.0.0.1@evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "https://user:pw@example.com",
            "ftp://example.com",
            "example.com",
            "https://",
            "http://[::2]",
            "http://127.0.0.1:99999",
            "https://exa mple.com",
        ] {
            let e = check_token_url(bad).unwrap_err();
            assert!(e.hint.is_some(), "{bad}");
        }
    }

    /// Issue 10, item 2: the file's `[backend]` keys never reach the token
    /// request; the environment decides, and the file's keys are reported.
    #[test]
    fn the_backend_comes_from_the_environment_never_the_file() {
        let cfg = parse_toml(
            "preset = \"node\"\n[backend]\nurl = \"https://attacker.example\"\naudience = \"sts.amazonaws.com\"\n",
        )
        .unwrap();
        assert_eq!(backend_from_env(None, None).unwrap(), None);
        let b = backend_from_env(Some("https://w.example"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (b.url.as_str(), b.audience.as_str()),
            ("https://w.example", "stateful-ci")
        );
        let b = backend_from_env(Some("https://w.example"), Some("custom"))
            .unwrap()
            .unwrap();
        assert_eq!(b.audience, "custom");
        assert!(backend_from_env(Some("http://w.example"), None).is_err());
        assert!(backend_from_env(Some("https://w.example"), Some("a b")).is_err());
        let note = ignored_backend_keys_note(&cfg).unwrap();
        assert!(
            note.contains("url and audience") && note.contains("ignored"),
            "{note}"
        );
        assert!(note.contains(BACKEND_URL_ENV), "{note}");
        assert_eq!(
            ignored_backend_keys_note(&parse_toml("preset = \"node\"").unwrap()),
            None
        );
    }

    #[test]
    fn overrides_replace_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "preset = \"node\"\n").unwrap();
        let ov = Overrides {
            paths: vec!["out".into()],
            exclude: vec!["out/tmp".into()],
        };
        let c = Config::load(dir.path(), &ov).unwrap();
        assert_eq!(
            (c.paths, c.exclude),
            (vec!["out".to_string()], vec!["out/tmp".to_string()])
        );
        let empty = tempfile::tempdir().unwrap();
        let err = Config::load(empty.path(), &Overrides::default()).unwrap_err();
        assert!(err.hint.unwrap().contains("stateful-ci init"));
    }
}
