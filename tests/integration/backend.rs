//! `save` / `restore --backend` through the real Worker under workerd (local
//! D1, R2 and Durable Objects) with a fake GitHub OIDC issuer, both started
//! by `tests/worker/lib/serve.mjs`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::tree::assert_same;
use crate::util::*;

pub struct Backend {
    child: Child,
    pub issuer: String,
    pub url: String,
    /// The Worker's admin token (for the admin routes).
    pub admin_token: String,
    pub(crate) token_url: String,
    pub(crate) request_token: String,
}

impl Drop for Backend {
    /// SIGTERM lets serve.mjs stop its workerd (a SIGKILL would orphan it).
    fn drop(&mut self) {
        stop_gracefully(&mut self.child);
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Start the Worker and the issuer, or return None (skipping) when the
/// prerequisites are absent and STATEFUL_CI_REQUIRE_WORKERD is unset.
pub fn start() -> Option<Backend> {
    let node = stateful_ci_installer::tools::node22();
    let root = repo_root();
    let ready = node.exists()
        && root.join("worker-template/dist/index_bg.wasm").exists()
        && root.join("tests/worker/node_modules/miniflare").exists();
    if !ready {
        let what = "Node 22, the Worker bundle or miniflare is missing: run scripts/test-worker.sh";
        if std::env::var_os("STATEFUL_CI_REQUIRE_WORKERD").is_some() {
            panic!("{what}");
        }
        eprintln!("skipping a backend test: {what}");
        return None;
    }
    let mut child = Command::new(node)
        .arg(root.join("tests/worker/lib/serve.mjs"))
        .args(["--repository", "acme/app"])
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env_remove("CLOUDFLARE_API_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start serve.mjs");
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut b = Backend {
        child,
        issuer: String::new(),
        url: String::new(),
        admin_token: String::new(),
        token_url: String::new(),
        request_token: String::new(),
    };
    for line in out.lines() {
        let line = line.expect("read serve.mjs output");
        let (k, v) = line.split_once(": ").unwrap_or(("", ""));
        match k {
            "issuer" => b.issuer = v.into(),
            "admin-token" => b.admin_token = v.into(),
            "actions-token-url" => b.token_url = v.into(),
            "actions-token-request-token" => b.request_token = v.into(),
            "backend" => {
                b.url = v.into();
                break;
            }
            _ => {}
        }
    }
    assert!(
        !b.url.is_empty(),
        "serve.mjs exited before printing the backend URL"
    );
    Some(b)
}

impl Backend {
    /// Make the runner's next OIDC tokens carry these claims (over a push to main).
    pub fn claims(&self, claims: serde_json::Value) {
        let c = stateful_ci_net::client(std::time::Duration::from_secs(10));
        let r = c
            .post(format!("{}/runner-claims", self.issuer))
            .json(&claims)
            .send()
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Run the CLI in `ws` as a GitHub job would.
    pub fn run(&self, a: &Area, ws: &str, args: &[&str]) -> std::process::Output {
        std::fs::create_dir_all(a.path(ws)).unwrap();
        bin()
            .args(args)
            .args(["--backend", &self.url])
            .current_dir(a.path(ws))
            .env("STATEFUL_CI_CACHE_DIR", a.path("cache"))
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", &self.token_url)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &self.request_token)
            .env("GITHUB_RUN_ID", "42")
            .output()
            .unwrap()
    }

    pub fn ok(&self, a: &Area, ws: &str, args: &[&str]) -> serde_json::Value {
        let out = self.run(a, ws, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("warning"),
            "{args:?}: unexpected warning: {stderr}"
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

#[test]
fn save_and_restore_through_the_worker() {
    let Some(b) = start() else { return };
    let a = Area::new();
    rich_tree(&a.path("src"));
    let args = ["--path", "node_modules", "--json"];
    let miss = b.ok(&a, "src", &[&["restore"][..], &args].concat());
    assert_eq!(miss["outcome"], "miss");
    let first = b.ok(&a, "src", &[&["save"][..], &args].concat());
    assert_eq!(first["outcome"], "saved");
    assert_eq!(first["generation"], 1);

    let hit = b.ok(&a, "dst", &[&["restore"][..], &args].concat());
    assert_eq!(hit["outcome"], "hit");
    assert_eq!(hit["source"]["scope"], "branch:refs/heads/main");
    assert_eq!(hit["source"]["trust"], "trusted");
    assert_same(
        &a.path("src"),
        &a.path("dst"),
        &[".npmrc", ".env.local", "server.pem"],
    );

    // A second save uploads only what is missing: one new pack and the manifest.
    write(&a.path("dst/node_modules/pkg/added.js"), b"added later\n");
    let second = b.ok(&a, "dst", &[&["save"][..], &args].concat());
    assert_eq!(second["generation"], 2);
    assert_eq!(second["objects_sent"], 2, "{second}");
    assert!(
        second["stored_bytes"].as_u64().unwrap() < 64 * 1024,
        "{second}"
    );
    let again = b.ok(&a, "fresh", &[&["restore"][..], &args].concat());
    assert_eq!(again["generation"], 2);
    assert_same(&a.path("dst"), &a.path("fresh"), &[]);
}

#[test]
fn a_pull_request_save_never_becomes_main_state() {
    let Some(b) = start() else { return };
    let a = Area::new();
    let args = ["--path", "out", "--json"];
    write(&a.path("main/out/state.txt"), b"trusted main state");
    b.ok(&a, "main", &[&["save"][..], &args].concat());

    // A pull request run reads main's state and saves to its own scope.
    b.claims(serde_json::json!({
        "event_name": "pull_request", "ref": "refs/pull/5/merge",
        "sub": "repo:acme/app:pull_request", "base_ref": "main", "head_ref": "feature"
    }));
    let pr = b.ok(&a, "pr", &[&["restore"][..], &args].concat());
    assert_eq!(pr["source"]["scope"], "branch:refs/heads/main");
    assert_eq!(pr["source"]["trust"], "external");
    write(&a.path("pr/out/state.txt"), b"POISON from a pull request");
    let saved = b.ok(&a, "pr", &[&["save"][..], &args].concat());
    assert_eq!(saved["outcome"], "saved");

    // pull_request_target may not save at all: a warning, exit 0.
    b.claims(serde_json::json!({
        "event_name": "pull_request_target", "ref": "refs/heads/main", "base_ref": "main", "head_ref": "feature"
    }));
    let out = b.run(&a, "pr", &["save", "--path", "out", "--json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("save_not_allowed"));
    let strict = b.run(&a, "pr", &["save", "--path", "out", "--strict"]);
    assert_eq!(strict.status.code(), Some(1));

    // Main, a release and a deployment never see the PR's bytes.
    for claims in [
        serde_json::json!({}),
        serde_json::json!({"event_name": "release", "ref": "refs/tags/v1.0.0", "ref_type": "tag", "sub": "repo:acme/app:ref:refs/tags/v1.0.0"}),
        serde_json::json!({"event_name": "deployment", "environment": "production", "sub": "repo:acme/app:environment:production"}),
    ] {
        b.claims(claims.clone());
        let ws = format!("reader-{}", claims["event_name"].as_str().unwrap_or("push"));
        let r = b.ok(&a, &ws, &[&["restore"][..], &args].concat());
        assert_eq!(r["outcome"], "hit", "{claims}");
        assert_eq!(
            std::fs::read(a.path(&ws).join("out/state.txt")).unwrap(),
            b"trusted main state",
            "{claims}"
        );
    }
}

#[test]
fn without_an_oidc_token_the_job_runs_cold() {
    let a = Area::new();
    write(&a.path("w/out/x"), b"x");
    let out = a.run(
        "w",
        &[
            "restore",
            "--backend",
            "http://127.0.0.1:9",
            "--path",
            "out",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("id-token: write") || err.contains("OIDC"),
        "{err}"
    );
    let strict = a.run(
        "w",
        &[
            "restore",
            "--backend",
            "http://127.0.0.1:9",
            "--path",
            "out",
            "--strict",
        ],
    );
    assert_eq!(strict.status.code(), Some(1));
}

// ------------------------------------------------------------------------
// Issue 10 end to end through `stateful-ci dev` (the Worker deployed into
// the local Cloudflare emulator through deploy's own code path).

/// Stops a `stateful-ci dev` on drop (SIGTERM, so it stops its emulator).
struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            stop_gracefully(&mut self.0);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `stateful-ci dev --repository acme/app --oidc-issuer ISSUER ARGS...` run
/// in `cwd`, with no default branch given by flag or environment; points
/// `issuer`'s runs at it.
fn dev_in(issuer: &mut Backend, cwd: &std::path::Path, args: &[&str]) -> Option<Dev> {
    let emulator = repo_root().join("tests/cloudflare-emulator/node_modules/miniflare");
    if !emulator.exists() {
        let what = "the emulator's packages are missing: run scripts/setup-emulator.sh";
        if std::env::var_os("STATEFUL_CI_REQUIRE_WORKERD").is_some() {
            panic!("{what}");
        }
        eprintln!("skipping: {what}");
        return None;
    }
    let port = free_port();
    let mut child = bin()
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--repository",
            "acme/app",
        ])
        .args(["--oidc-issuer", &issuer.issuer])
        .args(args)
        .current_dir(cwd)
        .env_remove("STATEFUL_CI_DEFAULT_BRANCH")
        .env("STATEFUL_CI_ADMIN_TOKEN", &issuer.admin_token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let dev = Dev(child);
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(240))
        .expect("dev printed its backend line");
    issuer.url = line
        .strip_prefix("backend: ")
        .expect("backend line")
        .to_string();
    Some(dev)
}

/// A clone of github.com/acme/app whose default branch (origin/HEAD, as
/// `git clone` records it) is `master`.
fn clone_with_default_branch(dir: &std::path::Path, branch: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", branch]);
    git(&["remote", "add", "origin", "https://github.com/acme/app.git"]);
    git(&["commit", "-q", "--allow-empty", "-m", "init"]);
    git(&[
        "update-ref",
        &format!("refs/remotes/origin/{branch}"),
        "HEAD",
    ]);
    git(&[
        "symbolic-ref",
        "refs/remotes/origin/HEAD",
        &format!("refs/remotes/origin/{branch}"),
    ]);
}

fn push_to(branch: &str) -> serde_json::Value {
    serde_json::json!({
        "event_name": "push", "ref": format!("refs/heads/{branch}"), "ref_type": "branch",
        "sub": format!("repo:acme/app:ref:refs/heads/{branch}"),
    })
}

fn release() -> serde_json::Value {
    serde_json::json!({
        "event_name": "release", "ref": "refs/tags/v1.0.0", "ref_type": "tag",
        "sub": "repo:acme/app:ref:refs/tags/v1.0.0",
    })
}

/// Issue 10, item 1, end to end: in a repository whose default branch is
/// `master` (learned by `dev` from the clone; no flag), a push to a branch
/// named `main` never becomes what a release restores. On main before the
/// fix, `dev` assumed `main` and the release restored the poison.
#[test]
fn a_branch_named_main_never_seeds_a_release_where_master_is_default() {
    let Some(mut b) = start() else { return };
    let a = Area::new();
    clone_with_default_branch(&a.path("clone"), "master");
    let Some(_dev) = dev_in(&mut b, &a.path("clone"), &[]) else {
        return;
    };
    let args = ["--path", "out", "--json"];

    b.claims(push_to("main"));
    write(
        &a.path("writer/out/state.txt"),
        b"POISON from a branch named main",
    );
    let saved = b.ok(&a, "writer", &[&["save"][..], &args].concat());
    assert_eq!(saved["outcome"], "saved", "{saved}");

    b.claims(release());
    let r = b.ok(&a, "release-1", &[&["restore"][..], &args].concat());
    assert_eq!(
        r["outcome"], "miss",
        "a release restored a branch named main: {r}"
    );

    b.claims(push_to("master"));
    write(&a.path("trusted/out/state.txt"), b"trusted master state");
    b.ok(&a, "trusted", &[&["save"][..], &args].concat());

    for (claims, ws) in [(release(), "release-2"), (push_to("master"), "master-2")] {
        b.claims(claims);
        let r = b.ok(&a, ws, &[&["restore"][..], &args].concat());
        assert_eq!(r["outcome"], "hit", "{r}");
        assert_eq!(r["source"]["scope"], "branch:refs/heads/master", "{r}");
        assert_eq!(
            std::fs::read(a.path(ws).join("out/state.txt")).unwrap(),
            b"trusted master state"
        );
    }
}

/// Without a clone, init's record or a flag, `dev` refuses to guess.
#[test]
fn dev_refuses_to_guess_the_default_branch() {
    let a = Area::new();
    std::fs::create_dir_all(a.path("empty")).unwrap();
    let out = bin()
        .args(["dev", "--port", "9", "--repository", "acme/app"])
        .current_dir(a.path("empty"))
        .env_remove("STATEFUL_CI_DEFAULT_BRANCH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("never assumes") && err.contains("--default-branch"),
        "{err}"
    );
}

/// A one-thread HTTP server that records each request line and answers by
/// forwarding GETs to `forward` (or 404 without one).
struct Recorder {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn recorder(forward: Option<String>) -> Recorder {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let http = stateful_ci_net::client(std::time::Duration::from_secs(10));
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let line = head.lines().next().unwrap_or("").to_string();
            log.lock().unwrap().push(line.clone());
            let path = line.split(' ').nth(1).unwrap_or("/");
            let auth = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or(l.strip_prefix("Authorization: "))
                })
                .unwrap_or("")
                .to_string();
            let (status, body) = match &forward {
                Some(f) => {
                    let r = http
                        .get(format!("{f}{path}"))
                        .header("authorization", auth)
                        .send()
                        .unwrap();
                    (r.status().as_u16(), r.text().unwrap())
                }
                None => (404, String::new()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Recorder { url, seen }
}

/// Issue 10, item 2, end to end: a workspace file naming another audience
/// and another backend never causes a token for that audience, nor sends
/// anything there; the backend and audience come from the flag/env.
#[test]
fn a_workspace_file_never_chooses_the_audience_or_the_backend() {
    let Some(mut b) = start() else { return };
    let a = Area::new();
    clone_with_default_branch(&a.path("clone"), "main");
    let Some(_dev) = dev_in(&mut b, &a.path("clone"), &[]) else {
        return;
    };
    let attacker = recorder(None);
    // Token requests go through a recorder in front of the issuer.
    let issuer_base = b
        .token_url
        .split("/actions-token")
        .next()
        .unwrap()
        .to_string();
    let tokens = recorder(Some(issuer_base.clone()));
    let token_url = b.token_url.replacen(&issuer_base, &tokens.url, 1);
    std::fs::create_dir_all(a.path("ws")).unwrap();
    write(
        &a.path("ws/stateful-ci.toml"),
        format!(
            "paths = [\"out\"]\n[backend]\nurl = \"{}\"\naudience = \"sts.amazonaws.com\"\n",
            attacker.url
        )
        .as_bytes(),
    );
    write(&a.path("ws/out/x"), b"x");
    let run = |args: &[&str], backend: Option<&str>| {
        let mut c = bin();
        c.args(args)
            .current_dir(a.path("ws"))
            .env("STATEFUL_CI_CACHE_DIR", a.path("cache"))
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", &token_url)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", &b.request_token)
            .env_remove("STATEFUL_CI_BACKEND_URL")
            .env_remove("STATEFUL_CI_AUDIENCE");
        if let Some(u) = backend {
            c.args(["--backend", u]);
        }
        c.output().unwrap()
    };
    // The workflow names the backend: the save works, with a warning that
    // the file's keys are ignored.
    let out = run(&["save", "--json"], Some(&b.url));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "saved", "{report} {err}");
    assert!(
        err.contains("ignored") && err.contains("STATEFUL_CI_BACKEND_URL"),
        "{err}"
    );
    // Nothing names a backend: nothing is sent anywhere.
    let out = run(&["restore", "--json"], None);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("\"hit\""),
        "restored from the file's backend"
    );
    // Plain http to another machine is refused before any token is minted.
    let out = run(&["restore", "--strict"], Some("http://192.0.2.1:9"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https"));

    let minted = tokens.seen.lock().unwrap().clone();
    assert!(!minted.is_empty(), "the save minted a token");
    for line in &minted {
        assert!(line.contains("audience=stateful-ci"), "{line}");
        assert!(
            !line.contains("amazonaws"),
            "a token for the file's audience: {line}"
        );
    }
    assert!(
        attacker.seen.lock().unwrap().is_empty(),
        "the file's backend was contacted: {:?}",
        attacker.seen.lock().unwrap()
    );
}
