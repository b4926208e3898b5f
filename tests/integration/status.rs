//! `stateful-ci status`: against the Worker under workerd after real saves
//! and restores (including a denied pull_request_target save), against a
//! local store, and the dashboard once for real in a terminal (tmux).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backend;
use crate::util::*;

fn status_json(a: &Area, ws: &str, envs: &[(&str, &str)], args: &[&str]) -> (Value, String) {
    std::fs::create_dir_all(a.path(ws)).unwrap();
    let mut c = bin();
    c.arg("status")
        .arg("--json")
        .args(args)
        .current_dir(a.path(ws));
    c.env_remove("STATEFUL_CI_ADMIN_TOKEN")
        .env_remove("STATEFUL_CI_BACKEND_URL");
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "status failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (v, stdout + &stderr)
}

fn rows(v: &Value, pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    v["backend"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| pred(r))
        .collect()
}

#[test]
fn status_json_reports_what_happened_on_the_worker() {
    let Some(mut b) = backend::start() else {
        return;
    };
    // The backend deployed into the local emulator by `stateful-ci dev`,
    // through the same code path as `deploy`.
    let _dev = crate::deploy::dev_backend(&mut b);
    assert!(
        !b.admin_token.is_empty(),
        "serve.mjs printed no admin token"
    );
    let a = Area::new();
    let args = ["--path", "out", "--json"];
    write(&a.path("main/out/a.txt"), b"main state\n");
    write(&a.path("main/out/sub/b.txt"), &vec![7u8; 50_000]);
    let saved = b.ok(&a, "main", &[&["save"][..], &args].concat());
    assert_eq!(saved["outcome"], "saved");

    b.claims(serde_json::json!({
        "event_name": "pull_request", "ref": "refs/pull/5/merge", "run_id": "9000002",
        "sub": "repo:acme/app:pull_request", "base_ref": "main", "head_ref": "feature"
    }));
    let hit = b.ok(&a, "pr", &[&["restore"][..], &args].concat());
    assert_eq!(hit["outcome"], "hit");
    write(&a.path("pr/out/a.txt"), b"pull request state\n");
    let pr_saved = b.ok(&a, "pr", &[&["save"][..], &args].concat());
    assert_eq!(pr_saved["outcome"], "saved");

    b.claims(serde_json::json!({
        "event_name": "pull_request_target", "ref": "refs/heads/main", "run_id": "9000003",
        "base_ref": "main", "head_ref": "feature"
    }));
    let denied = b.run(&a, "pr", &["save", "--path", "out", "--json"]);
    assert!(denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("save_not_allowed"));

    // Without the admin token: health only, and the fix is named.
    let (v, _) = status_json(&a, "w", &[], &["--backend", &b.url]);
    assert_eq!(v["backend"]["admin"], false);
    assert!(
        v["backend"]["admin_error"]
            .as_str()
            .unwrap()
            .contains("STATEFUL_CI_ADMIN_TOKEN")
    );
    assert_eq!(v["backend"]["health"]["protocol"], 1);
    // A wrong token is refused and said so.
    let (v, _) = status_json(
        &a,
        "w",
        &[("STATEFUL_CI_ADMIN_TOKEN", "wrong")],
        &["--backend", &b.url],
    );
    assert!(
        v["backend"]["admin_error"]
            .as_str()
            .unwrap()
            .contains("admin_unauthorized"),
        "{v}"
    );

    let (v, all_output) = status_json(
        &a,
        "w",
        &[("STATEFUL_CI_ADMIN_TOKEN", &b.admin_token)],
        &["--backend", &b.url, "--limit", "50"],
    );
    let be = &v["backend"];
    assert_eq!(be["admin"], true, "{v}");
    assert_eq!(be["health"]["worker_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["deployment"],
        Value::Null,
        "no stateful-ci.toml here: not deployed"
    );

    // The push to main saved generation 1: the row carries the snapshot
    // and the sizes that save printed.
    let main_saves = rows(&v, |r| r["decision"] == "saved" && r["event"] == "push");
    assert_eq!(main_saves.len(), 1, "{v:#}");
    let m = main_saves[0];
    assert_eq!(m["repository"], "acme/app");
    assert_eq!(m["git_ref"], "refs/heads/main");
    assert_eq!(m["class"], "trusted");
    assert_eq!(m["scope"], "branch:refs/heads/main");
    assert_eq!(m["generation"], 1);
    assert_eq!(m["snapshot"], saved["snapshot_id"]);
    assert_eq!(m["bytes"], saved["bytes"], "{m} vs {saved}");
    assert!(m["entries"].as_u64().unwrap() >= 2, "{m}");

    // The pull request read main's snapshot and saved into its own scope.
    let pr_hit = rows(&v, |r| {
        r["decision"] == "restored" && r["event"] == "pull_request"
    });
    assert_eq!(pr_hit.len(), 1, "{v:#}");
    assert_eq!(pr_hit[0]["class"], "external");
    assert_eq!(pr_hit[0]["snapshot"], saved["snapshot_id"]);
    let pr_save = rows(&v, |r| {
        r["decision"] == "saved" && r["event"] == "pull_request"
    });
    assert_eq!(pr_save.len(), 1, "{v:#}");
    assert_eq!(pr_save[0]["snapshot"], pr_saved["snapshot_id"]);
    assert_ne!(pr_save[0]["scope"], "branch:refs/heads/main");
    assert_eq!(pr_save[0]["git_ref"], "refs/pull/5/merge");

    // The pull_request_target save was denied, with the reason.
    let denied_rows = rows(&v, |r| r["allowed"] == false);
    assert_eq!(denied_rows.len(), 1, "{v:#}");
    let d = denied_rows[0];
    assert_eq!(d["event"], "pull_request_target");
    assert_eq!(d["reason"], "save_not_allowed");
    assert_eq!(d["decision"], "denied (save_not_allowed)");
    assert_eq!(d["class"], "external");
    assert!(d.get("snapshot").is_none());

    // Scopes: main and the PR's, each at generation 1; storage totals.
    let scopes = be["scopes"].as_array().unwrap();
    assert_eq!(scopes.len(), 2, "{scopes:?}");
    assert!(scopes.iter().all(|s| s["head_generation"] == 1));
    assert!(be["total_object_bytes"].as_u64().unwrap() > 0);

    // No secret anywhere: not the admin token, not the runner's request
    // token, not a JWT.
    assert!(!all_output.contains(&b.admin_token));
    assert!(!all_output.contains("eyJ"), "a JWT in the output");

    // The text report shows the same runs.
    let out = bin()
        .args(["status", "--backend", &b.url])
        .env("STATEFUL_CI_ADMIN_TOKEN", &b.admin_token)
        .current_dir(a.path("w"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("denied (save_not_allowed)"), "{text}");
    assert!(text.contains("pull_request_target"), "{text}");
    assert!(text.contains("not deployed"), "{text}");
    assert!(!text.contains(&b.admin_token));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&b.admin_token));

    tmux_dashboard(&a, &b);
}

#[test]
fn status_describes_a_local_store_and_the_config() {
    let a = Area::new();
    write(
        &a.path("w/stateful-ci.toml"),
        b"preset = \"node\"\nexclude = [\"node_modules/.cache\"]\n\n[deployment]\naccount_id = \"acct-1\"\nworker_url = \"http://127.0.0.1:9\"\nworker_version = \"0.0.1\"\n",
    );
    write(
        &a.path("w/node_modules/pkg/index.js"),
        b"module.exports = 1;\n",
    );
    write(&a.path("w/node_modules/pkg/big.bin"), &vec![1u8; 100_000]);
    let store = a.store();
    let saved = a.ok("w", &["save", "--store", &store, "--json"]);
    a.ok(
        "w",
        &["save", "--store", &store, "--scope", "pr:7", "--json"],
    );
    let (v, _) = status_json(
        &a,
        "w",
        &[],
        &["--store", &store, "--backend", "http://127.0.0.1:9"],
    );
    assert_eq!(v["config"]["preset"], "node");
    assert_eq!(v["config"]["exclude"][0], "node_modules/.cache");
    assert_eq!(v["deployment"]["account_id"], "acct-1");
    assert!(
        v["drift"][0]
            .as_str()
            .unwrap()
            .contains("deployed Worker is 0.0.1"),
        "{v}"
    );
    assert!(
        v["backend"]["health_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:9")
    );
    let scopes = v["local"]["scopes"].as_array().unwrap();
    assert_eq!(scopes.len(), 2, "{v}");
    let d = scopes.iter().find(|s| s["scope"] == "default").unwrap();
    assert_eq!(d["generation"], 1);
    assert_eq!(d["snapshot"], saved["snapshot_id"]);
    assert_eq!(d["files"], saved["files"]);
    assert_eq!(d["bytes"], saved["bytes"]);
    assert!(scopes.iter().any(|s| s["scope"] == "pr:7"));
    // Both scopes share their packs: referenced by each head, stored once.
    let unique = v["local"]["unique_bytes"].as_u64().unwrap();
    let referenced = v["local"]["referenced_bytes"].as_u64().unwrap();
    assert!(unique > 0 && referenced > unique, "{unique} {referenced}");

    // Bare `stateful-ci` without a terminal prints the status.
    let out = bin()
        .current_dir(a.path("w"))
        .env_remove("STATEFUL_CI_BACKEND_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("preset     node"), "{text}");
    assert!(text.contains("Config (stateful-ci.toml)"), "{text}");
    assert!(text.contains("account    acct-1"), "{text}");

    // A directory that is not a store is named, not created.
    let (v, _) = status_json(
        &a,
        "w",
        &[],
        &["--store", &a.path("nothing").to_string_lossy()],
    );
    assert!(
        v["local"]["error"]
            .as_str()
            .unwrap()
            .contains("not a stateful-ci store")
    );
    assert!(!a.path("nothing").exists());
}

// ----------------------------------------------------------------- tmux

struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }
    /// `-e` arguments giving the dashboard the backend's URL and admin token.
    fn env(b: &backend::Backend) -> Vec<String> {
        [
            format!("STATEFUL_CI_BACKEND_URL={}", b.url),
            format!("STATEFUL_CI_ADMIN_TOKEN={}", b.admin_token),
            "NO_COLOR=1".into(),
            "STATEFUL_CI_DASHBOARD_REFRESH_SECS=1".into(),
        ]
        .into_iter()
        .flat_map(|kv| ["-e".to_string(), kv])
        .collect()
    }

    /// A detached 140x40 session `dash` running `script` with the backend's
    /// URL and admin token in its environment.
    fn start(&self, b: &backend::Backend, script: &std::path::Path) {
        let st = self
            .cmd()
            .args(["new-session", "-d", "-s", "dash", "-x", "140", "-y", "40"])
            .args(Self::env(b))
            .arg(format!("sh {}", script.display()))
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Replace what runs in `dash` with `script`, in the same server and
    /// with the same environment as `start`.
    fn respawn(&self, b: &backend::Backend, script: &std::path::Path) {
        let st = self
            .cmd()
            .args(["respawn-pane", "-k", "-t", "dash"])
            .args(Self::env(b))
            .arg(format!("sh {}", script.display()))
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "dash"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "dash"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }
    /// Wait until the screen shows `text` (a readiness probe, bounded).
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {text:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// The dashboard for real in a terminal: start, navigate, filter, quit.
fn tmux_dashboard(a: &Area, b: &backend::Backend) {
    if Command::new("tmux").arg("-V").output().is_err() {
        if std::env::var_os("STATEFUL_CI_REQUIRE_WORKERD").is_some() {
            panic!("tmux is missing: run scripts/setup-tmux.sh");
        }
        eprintln!("skipping the tmux test: tmux is missing (scripts/setup-tmux.sh)");
        return;
    }
    let t = Tmux {
        socket: a.path("tmux.sock"),
    };
    let script = a.path("dash.sh");
    std::fs::write(
        &script,
        format!(
            "cd '{}' && '{}' ; echo \"dashboard-exit=$?\"; sleep 600\n",
            a.path("w").display(),
            env!("CARGO_BIN_EXE_stateful-ci"),
        ),
    )
    .unwrap();
    t.start(b, &script);
    let s = t.wait_for("Recent runs (");
    assert!(s.contains("Deployment health"), "{s}");
    assert!(s.contains("denied (save_not_allowed)"), "{s}");
    assert!(s.contains("branch:refs/heads/main"), "{s}");
    assert!(!s.contains(&b.admin_token));

    // Navigate: the second row's snapshot detail.
    t.keys(&["Down"]);
    t.keys(&["Enter"]);
    let s = t.wait_for("Snapshot detail");
    assert!(s.contains("decision"), "{s}");
    t.keys(&["Escape"]);
    t.wait_for("Enter detail");

    // Filter to the denied pull_request_target save.
    t.keys(&["/"]);
    t.wait_for("filter (repo:");
    t.keys(&["-l", "trust:external decision:denied"]);
    t.keys(&["Enter"]);
    let s = t.wait_for("filter: trust:external decision:denied");
    assert!(s.contains("Recent runs (1 of"), "{s}");
    assert!(s.contains("pull_request_target"), "{s}");
    assert!(!s.contains("restored"), "{s}");

    // Refresh on a key keeps the filter.
    t.keys(&["r"]);
    t.wait_for("filter: trust:external decision:denied");

    // The timer refreshes too (every second here): a new save on main
    // appears without a key.
    t.keys(&["c"]);
    t.wait_for("Enter detail");
    b.claims(serde_json::json!({}));
    write(&a.path("main/out/later.txt"), b"a later push\n");
    let again = b.ok(a, "main", &["save", "--path", "out", "--json"]);
    assert_eq!(again["generation"], 2);
    let id = again["snapshot_id"].as_str().unwrap();
    let short: String = id.rsplit('/').next().unwrap().chars().take(12).collect();
    t.wait_for(&short);

    // Quit: the program exits 0 and the terminal is back to the shell's
    // screen (the dashboard's alternate screen is gone).
    t.keys(&["q"]);
    let s = t.wait_for("dashboard-exit=0");
    assert!(!s.contains("Recent runs"), "{s}");
    assert!(!s.contains(&b.admin_token));

    // Ctrl-C quits cleanly too. The second run replaces the first in the
    // same pane (`respawn-pane -k`): killing the only session would stop the
    // tmux server, and a `new-session` racing that shutdown fails with
    // "server exited unexpectedly". Its exit line differs from the first so
    // the wait below can only be met by the second run.
    let again = a.path("dash-again.sh");
    std::fs::write(
        &again,
        std::fs::read_to_string(&script)
            .unwrap()
            .replace("dashboard-exit=", "dashboard-again-exit="),
    )
    .unwrap();
    t.respawn(b, &again);
    t.wait_for("Recent runs (");
    t.keys(&["C-c"]);
    let s = t.wait_for("dashboard-again-exit=0");
    assert!(!s.contains("Recent runs"), "{s}");
}
