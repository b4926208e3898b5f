//! `deploy` / `upgrade` / `destroy` / `dev` against the local Cloudflare
//! emulator (tests/cloudflare-emulator, real workerd). Every test starts its
//! own emulator on a free port, reads its ready line, and at the end asserts
//! the emulator saw no contract violation. Needs `scripts/setup-emulator.sh`
//! (Node 22 + packages) and the Worker bundle (`scripts/build-worker.sh`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use stateful_ci_installer::cloudflare::{ApiToken, Client, Part};

use crate::util::{bin, stop_gracefully};

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const OTHER_ACCOUNT: &str = "fedcba9876543210fedcba9876543210";
/// An account where R2 is not enabled and no workers.dev subdomain exists.
const BARE_ACCOUNT: &str = "cccccccccccccccccccccccccccccccc";
const TOKEN_BARE: &str = "tok-bare-1234567890abcdef1234567890abcdef";
const TOKEN: &str = "tok-all-5f1e2d3c4b5a69788796a5b4c3d2e1f0";
const TOKEN_NO_D1: &str = "tok-nod1-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const TOKEN_ACCOUNT_OWNED: &str = "tok-acct-99887766554433221100ffeeddccbbaa";
const ADMIN: &str = "admin-token-for-tests-0123456789abcdef";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn node22() -> PathBuf {
    stateful_ci_installer::tools::node22()
}

fn require_setup() {
    let emu = repo().join("tests/cloudflare-emulator");
    assert!(
        node22().is_file() && emu.join("node_modules/miniflare").is_dir(),
        "Node 22 or the emulator's npm packages are missing: run `bash scripts/setup-emulator.sh` first"
    );
    assert!(
        repo().join("worker-template/dist/index_bg.wasm").is_file(),
        "the Worker bundle is missing: run `bash scripts/setup-wasm.sh && bash scripts/build-worker.sh`, then rebuild"
    );
}

/// A running emulator with the test accounts and tokens.
struct Emu {
    child: Child,
    api: String,
    control: String,
    _dir: tempfile::TempDir,
    http: stateful_ci_net::reqwest::blocking::Client,
}

impl Emu {
    fn start() -> Emu {
        Emu::start_with(&[])
    }

    /// `env`: extra environment for the emulator (e.g. a compressed rate limit).
    fn start_with(env: &[(&str, &str)]) -> Emu {
        require_setup();
        let dir = tempfile::tempdir().unwrap();
        // Exactly the permissions deploy, upgrade and destroy need: no
        // Account Settings Read (no call of theirs needs it).
        let all = ["Workers Scripts Edit", "D1 Edit", "Workers R2 Storage Edit"];
        let config = json!({
            "accounts": [
                {"id": ACCOUNT, "name": "Team", "workers_subdomain": "team"},
                {"id": OTHER_ACCOUNT, "name": "Other", "workers_subdomain": "other"},
                {"id": BARE_ACCOUNT, "name": "Bare", "r2_enabled": false}
            ],
            "tokens": [
                {"id": "a0000000000000000000000000000001", "value": TOKEN, "owner": "user",
                 "accounts": [ACCOUNT], "permissions": all},
                {"id": "a0000000000000000000000000000002", "value": TOKEN_NO_D1, "owner": "user",
                 "accounts": [ACCOUNT],
                 "permissions": ["Workers Scripts Edit", "D1 Read", "Workers R2 Storage Edit"]},
                {"id": "a0000000000000000000000000000004", "value": TOKEN_BARE, "owner": "user",
                 "accounts": [BARE_ACCOUNT], "permissions": all},
                {"id": "a0000000000000000000000000000003", "value": TOKEN_ACCOUNT_OWNED, "owner": "account",
                 "account_id": ACCOUNT, "accounts": [ACCOUNT], "permissions": all}
            ],
            // The fault suite makes about a thousand calls with one token.
            "rate_limit": {"requests": 100000, "window_seconds": 300}
        });
        let cfg = dir.path().join("accounts.json");
        std::fs::write(&cfg, config.to_string()).unwrap();
        let mut child = Command::new(node22())
            .arg(repo().join("tests/cloudflare-emulator/src/cli.js"))
            .args(["--port", "0", "--exit-on-stdin-close", "--config"])
            .arg(&cfg)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the emulator with Node 22");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("emulator: api=") {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let rest = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the emulator printed its ready line");
        let mut parts = rest.split_whitespace();
        let api = parts.next().unwrap().to_string();
        let control = parts
            .find_map(|p| p.strip_prefix("control="))
            .unwrap()
            .to_string();
        Emu {
            child,
            api,
            control,
            _dir: dir,
            http: stateful_ci_net::client(Duration::from_secs(30)),
        }
    }

    fn ctl(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        let url = format!("{}{path}", self.control);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            "PATCH" => self.http.patch(&url).json(&body.unwrap_or(Json::Null)),
            "PUT" => self.http.put(&url).json(&body.unwrap_or(Json::Null)),
            _ => self.http.post(&url).json(&body.unwrap_or(Json::Null)),
        };
        req.send().unwrap().json().unwrap()
    }

    fn fault(&self, f: Json) {
        let r = self.ctl("POST", "/faults", Some(f.clone()));
        assert!(r.get("fault").is_some(), "fault {f} refused: {r}");
    }

    fn requests(&self) -> Vec<Json> {
        let r = self.ctl("GET", "/requests", None);
        r.get("requests")
            .unwrap_or(&r)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn clear_requests(&self) {
        self.ctl("DELETE", "/requests", None);
    }

    fn mutating(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r["mutating"] == json!(true))
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or(""),
                    r["operation"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// The script's state in the emulator (None: not deployed).
    fn script_state(&self, name: &str) -> Option<Json> {
        self.account_state()["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// Writes `count` objects into a bucket's storage directly (no API calls).
    fn seed(&self, bucket: &str, count: u64, prefix: &str) {
        // Local R2 writes take about a millisecond each: chunks keep every
        // call well inside the timeouts.
        let slow = stateful_ci_net::client(Duration::from_secs(900));
        let mut done = 0;
        while done < count {
            let n = (count - done).min(5_000);
            let r: Json = slow
                .post(format!("{}/r2/seed", self.control))
                .json(&json!({"account_id": ACCOUNT, "bucket": bucket, "count": n, "prefix": format!("{prefix}{done:08}-")}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(r["written"], json!(n), "{r}");
            done += n;
        }
    }

    fn object_count(&self, bucket: &str) -> u64 {
        let r = self.ctl(
            "POST",
            "/r2/count",
            Some(json!({"account_id": ACCOUNT, "bucket": bucket})),
        );
        r["objects"].as_u64().unwrap_or_else(|| panic!("{r}"))
    }

    fn account_state(&self) -> Json {
        self.ctl("GET", "/state", None)["accounts"][ACCOUNT].clone()
    }

    fn assert_no_violations(&self) {
        let v = self.ctl("GET", "/violations", None);
        assert_eq!(v["violations"], json!([]), "contract violations: {v:#}");
    }

    fn client(&self) -> Client {
        Client::new(&self.api, ApiToken::new(TOKEN))
    }

    /// GET a path of the deployed Worker through its workers.dev host.
    fn worker_get(&self, script: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
        let origin = self.api.trim_end_matches("/client/v4");
        let mut req = self
            .http
            .get(format!("{origin}{path}"))
            .header("host", format!("{script}.team.workers.dev"));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }
}

impl Drop for Emu {
    /// SIGTERM lets the emulator stop its workerd (a SIGKILL would orphan it).
    fn drop(&mut self) {
        stop_gracefully(&mut self.child);
    }
}

/// Runs the CLI against an emulator and keeps every output for the token check.
struct Cli<'a> {
    emu: &'a Emu,
    dir: tempfile::TempDir,
    token: &'a str,
    outputs: std::cell::RefCell<Vec<String>>,
}

impl<'a> Cli<'a> {
    fn new(emu: &'a Emu, token: &'a str) -> Self {
        Cli {
            emu,
            dir: tempfile::tempdir().unwrap(),
            token,
            outputs: Default::default(),
        }
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = bin();
        c.args(args)
            .current_dir(self.dir.path())
            .env("CLOUDFLARE_API_BASE_URL", &self.emu.api)
            .env("CLOUDFLARE_API_TOKEN", self.token)
            .env("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
            .env("STATEFUL_CI_NO_KEYRING", "1")
            // The admin token's file fallback (no OS keyring here) stays
            // inside the test's directory.
            .env("XDG_CONFIG_HOME", self.dir.path().join(".config"))
            .env("STATEFUL_CI_ADMIN_TOKEN", ADMIN)
            .env("STATEFUL_CI_CF_MAX_ATTEMPTS", "2")
            .env("STATEFUL_CI_CF_RETRY_BASE_MS", "10")
            .env("STATEFUL_CI_HEALTH_TIMEOUT_SECS", "60")
            // The default branch is never assumed (issue 10, item 1).
            .env("STATEFUL_CI_DEFAULT_BRANCH", "main")
            .env_remove("STATEFUL_CI_BUNDLE_DIR")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.outputs.borrow_mut().push(text);
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.run_env(args, env);
        assert!(
            out.status.success(),
            "{args:?} failed ({:?}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stateful-ci.toml")).unwrap_or_default()
    }

    /// No token value appears in anything the CLI printed.
    fn assert_token_never_printed(&self) {
        for o in self.outputs.borrow().iter() {
            for t in [TOKEN, TOKEN_NO_D1, TOKEN_ACCOUNT_OWNED, ADMIN] {
                assert!(!o.contains(t), "a secret appeared in the output:\n{o}");
            }
        }
        assert!(!self.config().contains(ADMIN));
    }
}

/// Replace the bundle version (it changes with every Worker build).
fn normalise(plan: &str) -> String {
    let prefix = format!("{}+", env!("CARGO_PKG_VERSION"));
    plan.lines()
        .map(|l| {
            let mut l = l.to_string();
            while let Some(i) = l.find(&prefix) {
                l = format!("{}<VERSION>{}", &l[..i], &l[i + prefix.len() + 12..]);
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The plan against its insta snapshot in installer/tests/snapshots
/// (`cargo insta review` after an intended change).
fn snapshot(name: &str, actual: &str) {
    insta::with_settings!({
        snapshot_path => repo().join("installer/tests/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, actual);
    });
}

fn d1_migrations(c: &Client, db_name: &str) -> Vec<String> {
    let db = c
        .database_by_name(ACCOUNT, db_name)
        .unwrap()
        .expect("database exists");
    let r = c
        .query(
            ACCOUNT,
            &db.uuid,
            "SELECT name FROM d1_migrations ORDER BY id",
            &[],
        )
        .unwrap();
    r[0].results
        .iter()
        .map(|row| row["name"].as_str().unwrap().to_string())
        .collect()
}

/// The repository's migrations (what the embedded bundle applies), then `extra`.
fn repo_migrations(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    v.sort();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// A bundle like the embedded one plus a D1 migration and a Durable Object step.
fn upgraded_bundle(dir: &Path) {
    let dist = repo().join("worker-template/dist");
    std::fs::copy(dist.join("index_bg.wasm"), dir.join("index_bg.wasm")).unwrap();
    std::fs::copy(dist.join("index.js"), dir.join("worker.js")).unwrap();
    std::fs::write(
        dir.join("index.js"),
        "export * from \"./worker.js\";\nexport { default } from \"./worker.js\";\n\
         export class ExtraCoordinator { constructor(state, env) { this.state = state; }\n\
         async fetch() { return new Response(\"extra\"); } }\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("migrations")).unwrap();
    for e in std::fs::read_dir(repo().join("migrations")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join("migrations").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("migrations/9001_test_extra.sql"),
        "CREATE TABLE test_extra (id INTEGER PRIMARY KEY, note TEXT);\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("do-migrations.json"),
        r#"[{"tag": "v1", "new_sqlite_classes": ["ScopeCoordinator"]},
            {"tag": "v2", "new_sqlite_classes": ["ExtraCoordinator"]}]"#,
    )
    .unwrap();
}

#[test]
fn deploy_upgrade_destroy_end_to_end() {
    let emu = Emu::start();
    let c = emu.client();
    // Someone else's resources in the same account.
    c.create_bucket(ACCOUNT, "foreign-bucket").unwrap();
    c.put_object(ACCOUNT, "foreign-bucket", "theirs", b"keep")
        .unwrap();
    c.create_database(ACCOUNT, "foreign-db").unwrap();
    let foreign_meta =
        json!({"main_module": "f.js", "compatibility_date": "2025-09-01", "bindings": []});
    c.upload_script(
        ACCOUNT,
        "foreign-script",
        &[
            Part {
                name: "metadata".into(),
                filename: None,
                content_type: "application/json".into(),
                bytes: foreign_meta.to_string().into_bytes(),
            },
            Part {
                name: "f.js".into(),
                filename: Some("f.js".into()),
                content_type: "application/javascript+module".into(),
                bytes: b"export default { fetch() { return new Response('f') } }".to_vec(),
            },
        ],
    )
    .unwrap();

    let cli = Cli::new(&emu, TOKEN);
    std::fs::write(
        cli.dir.path().join("stateful-ci.toml"),
        "# my settings\npreset = \"rust\"\n",
    )
    .unwrap();

    // Dry run: the plan, no mutating call.
    emu.clear_requests();
    let plan = cli.ok(&["deploy", "--dry-run", "--repository", "octo/app"], &[]);
    snapshot("deploy-fresh", &normalise(&plan));
    assert_eq!(emu.mutating(), Vec::<String>::new());

    cli.ok(&["deploy", "--yes", "--repository", "octo/app"], &[]);
    let config = cli.config();
    assert!(
        config.contains("# my settings") && config.contains("[deployment]"),
        "{config}"
    );
    assert!(
        config.contains("url = \"https://stateful-ci.team.workers.dev\""),
        "{config}"
    );
    let st = emu.account_state();
    let ours = st["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "stateful-ci")
        .unwrap()
        .clone();
    assert_eq!(ours["migration_tag"], "v1");
    assert_eq!(ours["secrets"], json!(["ADMIN_TOKEN", "GRANT_KEY"]));
    // Retention runs: the Cron Trigger is installed and fires the Worker's
    // scheduled handler against the real bindings.
    assert_eq!(ours["schedules"], json!(["41 * * * *"]));
    let fired = emu.ctl(
        "POST",
        "/scheduled",
        Some(json!({"account_id": ACCOUNT, "script": "stateful-ci"})),
    );
    assert_eq!(fired["outcome"], "ok", "{fired}");
    let types: Vec<&str> = ours["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["ESModule", "CompiledWasm"]);
    assert_eq!(d1_migrations(&c, "stateful-ci"), repo_migrations(&[]));

    // The Worker answers; the admin route accepts the secret set at deploy.
    let (s, body) = emu.worker_get("stateful-ci", "/v1/health", None);
    assert_eq!(s, 200, "{body}");
    let health: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(health["oidc_test_mode"], json!(false));
    // The D1 that `/query` migrated is the D1 the Worker reads.
    assert_eq!(
        health["migrations"],
        json!(repo_migrations(&[])),
        "{health}"
    );
    assert_eq!(
        emu.worker_get("stateful-ci", "/v1/admin/runs?limit=1", Some(ADMIN))
            .0,
        200
    );
    assert_eq!(
        emu.worker_get(
            "stateful-ci",
            "/v1/admin/runs?limit=1",
            Some("wrong-token-0000000000")
        )
        .0,
        401
    );

    // Nothing changed: the second deploy makes no mutating call.
    emu.clear_requests();
    let again = cli.ok(&["deploy", "--yes"], &[]);
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(emu.mutating(), Vec::<String>::new());
    snapshot(
        "deploy-unchanged",
        &normalise(&cli.ok(&["deploy", "--dry-run"], &[])),
    );

    // Data that an upgrade must keep.
    let db = c.database_by_name(ACCOUNT, "stateful-ci").unwrap().unwrap();
    c.query(
        ACCOUNT,
        &db.uuid,
        "CREATE TABLE keep_me (v TEXT); INSERT INTO keep_me VALUES ('still here');",
        &[],
    )
    .unwrap();
    c.put_object(ACCOUNT, "stateful-ci", "r/1/2/packs/keep", b"object bytes")
        .unwrap();

    // Upgrade to a bundle with one more D1 migration and one more DO step.
    let b = tempfile::tempdir().unwrap();
    upgraded_bundle(b.path());
    let bundle_env = [("STATEFUL_CI_BUNDLE_DIR", b.path().to_str().unwrap())];
    let up_plan = cli.ok(&["upgrade", "--dry-run"], &bundle_env);
    snapshot("upgrade", &normalise(&up_plan));
    let no_tty = cli.run_env(&["upgrade"], &bundle_env);
    assert_eq!(no_tty.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("pass --yes"));
    emu.clear_requests();
    cli.ok(&["upgrade", "--yes"], &bundle_env);
    let mut m = emu.mutating();
    m.sort();
    assert_eq!(
        m,
        vec![
            "POST cloudflare-d1-query-database",
            "PUT worker-script-upload-worker-module"
        ],
        "upgrade must apply only the new migration and upload once"
    );
    assert_eq!(
        d1_migrations(&c, "stateful-ci"),
        repo_migrations(&["9001_test_extra.sql"])
    );
    let (_, body) = emu.worker_get("stateful-ci", "/v1/health", None);
    let health: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        health["migrations"],
        json!(repo_migrations(&["9001_test_extra.sql"])),
        "{health}"
    );
    let st = emu.account_state();
    let ours = st["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "stateful-ci")
        .unwrap()
        .clone();
    assert_eq!(ours["migration_tag"], "v2");
    assert_eq!(
        ours["schedules"],
        json!(["41 * * * *"]),
        "upgrade keeps the Cron Trigger"
    );
    assert_eq!(
        ours["durable_object_classes"],
        json!(["ScopeCoordinator", "ExtraCoordinator"])
    );
    assert_eq!(
        ours["secrets"],
        json!(["ADMIN_TOKEN", "GRANT_KEY"]),
        "secrets kept"
    );
    assert_eq!(
        emu.worker_get("stateful-ci", "/v1/admin/runs?limit=1", Some(ADMIN))
            .0,
        200
    );
    let kept = c
        .query(ACCOUNT, &db.uuid, "SELECT v FROM keep_me", &[])
        .unwrap();
    assert_eq!(kept[0].results, vec![json!({"v": "still here"})]);
    let keys: Vec<String> = c
        .objects(ACCOUNT, "stateful-ci")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, vec!["r/1/2/packs/keep"]);
    assert!(cli.config().contains("do_migration_tag = \"v2\""));

    // Going back to the embedded (older-tag) bundle is refused: its tags end at v1... the
    // deployed v2 is unknown to it.
    let back = cli.run(&["upgrade", "--yes"]);
    assert_eq!(back.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&back.stderr).contains("\"v2\""));

    // Destroy: ours gone, theirs untouched, record cleared.
    let no_tty = cli.run(&["destroy"]);
    assert_eq!(no_tty.status.code(), Some(1));
    emu.clear_requests();
    let listing = cli.ok(&["destroy", "--yes"], &[]);
    // The Cron Trigger is removed first (no sweep runs mid-destroy), the
    // bucket is emptied through the Worker, then the script goes.
    let order: Vec<String> = emu
        .mutating()
        .into_iter()
        .filter(|m| !m.contains("query"))
        .collect();
    assert_eq!(
        order.first().map(String::as_str),
        Some("PUT worker-cron-trigger-update-cron-triggers"),
        "{order:?}"
    );
    assert!(
        !order.iter().any(|m| m.contains("r2-delete-object")),
        "the Worker emptied the bucket, not one API call per object: {order:?}"
    );
    assert!(
        listing.contains("Worker script stateful-ci") && listing.contains("R2 bucket stateful-ci"),
        "{listing}"
    );
    let st = emu.account_state();
    let names = |k: &str, f: &str| -> Vec<String> {
        st[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                if f.is_empty() {
                    x.as_str().unwrap().to_string()
                } else {
                    x[f].as_str().unwrap().to_string()
                }
            })
            .collect()
    };
    assert_eq!(names("r2_buckets", ""), vec!["foreign-bucket"]);
    assert_eq!(names("d1_databases", "name"), vec!["foreign-db"]);
    assert_eq!(names("scripts", "name"), vec!["foreign-script"]);
    assert_eq!(c.objects(ACCOUNT, "foreign-bucket").unwrap().len(), 1);
    let config = cli.config();
    assert!(
        !config.contains("[deployment]")
            && !config.contains("workers.dev")
            && config.contains("# my settings"),
        "{config}"
    );
    // A second destroy has nothing to do and says so.
    assert_eq!(cli.run(&["destroy", "--yes"]).status.code(), Some(1));

    cli.assert_token_never_printed();
    emu.assert_no_violations();
}

/// Issue 14: after a plain `deploy` (admin token generated, nothing set by
/// the user), `status` finds the token where deploy stored it and shows
/// the Worker's runs; deploy says where; destroy deletes the entry. Here no
/// OS keyring is reachable (STATEFUL_CI_NO_KEYRING=1), so the store is the
/// file fallback the binary really uses in that case.
#[test]
fn status_finds_the_admin_token_deploy_stored() {
    let emu = Emu::start();
    let cli = Cli::new(&emu, TOKEN);
    // Nothing chosen by the user: deploy generates the token.
    let unset = [("STATEFUL_CI_ADMIN_TOKEN", "")];
    let out = cli.ok(&["deploy", "--yes", "--repository", "octo/app"], &unset);
    let file = cli.dir.path().join(".config/stateful-ci/secrets.json");
    let said = cli.outputs.borrow().last().unwrap().clone();
    assert!(
        said.contains("ADMIN_TOKEN generated and stored in")
            && said.contains(&file.display().to_string()),
        "deploy names where the admin token is: {said}\n{out}"
    );
    let stored: serde_json::Map<String, Json> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let entry = "admin:https://stateful-ci.team.workers.dev";
    let generated = stored[entry].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 64, "a fresh 32-byte token");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the file is private: {mode:o}");
    }
    // The Worker accepts exactly that token.
    assert_eq!(
        emu.worker_get("stateful-ci", "/v1/admin/runs?limit=1", Some(&generated))
            .0,
        200
    );

    let status = cli.ok(&["status", "--json"], &unset);
    let v: Json = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(
        v["backend"]["url"], "https://stateful-ci.team.workers.dev",
        "{v:#}"
    );
    assert_eq!(v["backend"]["admin"], json!(true), "{v:#}");
    assert!(v["backend"]["admin_error"].is_null(), "{v:#}");
    assert!(v["backend"]["runs"].is_array(), "{v:#}");

    cli.ok(&["destroy", "--yes"], &unset);
    let left: serde_json::Map<String, Json> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        !left.contains_key(entry),
        "destroy deletes the entry: {left:?}"
    );
    for o in cli.outputs.borrow().iter() {
        assert!(!o.contains(&generated), "the admin token was printed:\n{o}");
    }
    cli.assert_token_never_printed();
    emu.assert_no_violations();
}

#[test]
fn a_failure_at_any_step_is_finished_by_a_rerun() {
    let emu = Emu::start();
    let c = emu.client();
    let ops = [
        "r2-create-bucket",
        "cloudflare-d1-create-database",
        "cloudflare-d1-query-database",
        "worker-script-upload-worker-module",
        "worker-script-put-secret",
        "worker-script-post-subdomain",
    ];
    let mut case = 0;
    for op in ops {
        for kind in ["500", "reset"] {
            case += 1;
            let name = format!("fault-{case}");
            let cli = Cli::new(&emu, TOKEN);
            let args = [
                "deploy",
                "--yes",
                "--repository",
                "octo/app",
                "--name",
                name.as_str(),
            ];
            // Every attempt fails after taking effect (two per call, STATEFUL_CI_CF_MAX_ATTEMPTS=2,
            // plus the deployer's own re-checks), so this run fails.
            emu.fault(json!({"kind": kind, "operation": op, "when": "after", "count": 6}));
            let failed = cli.run(&args);
            emu.ctl("DELETE", "/faults", None);
            assert_eq!(
                failed.status.code(),
                Some(1),
                "{op}/{kind}: {}",
                String::from_utf8_lossy(&failed.stderr)
            );
            let err = String::from_utf8_lossy(&failed.stderr);
            assert!(err.contains("hint:"), "{op}/{kind}: {err}");
            cli.ok(&args, &[]);
            // Same end state as a clean deploy, no duplicates.
            let st = emu.account_state();
            let count = |k: &str, f: Option<&str>| {
                st[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|x| match f {
                        Some(f) => x[f].as_str() == Some(name.as_str()),
                        None => x.as_str() == Some(name.as_str()),
                    })
                    .count()
            };
            assert_eq!(count("r2_buckets", None), 1, "{op}/{kind}");
            assert_eq!(count("d1_databases", Some("name")), 1, "{op}/{kind}");
            let script = st["scripts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == json!(name))
                .unwrap();
            assert_eq!(script["migration_tag"], "v1", "{op}/{kind}");
            assert_eq!(
                script["secrets"],
                json!(["ADMIN_TOKEN", "GRANT_KEY"]),
                "{op}/{kind}"
            );
            assert_eq!(script["workers_dev_enabled"], json!(true), "{op}/{kind}");
            assert_eq!(
                d1_migrations(&c, &name),
                repo_migrations(&[]),
                "{op}/{kind}"
            );
            // And the run after success changes nothing.
            emu.clear_requests();
            cli.ok(&args, &[]);
            assert_eq!(emu.mutating(), Vec::<String>::new(), "{op}/{kind}");
            cli.ok(&["destroy", "--yes"], &[]);
            let st = emu.account_state();
            assert!(
                !st.to_string().contains(&format!("\"{name}\"")),
                "{op}/{kind}: left behind: {st}"
            );
            cli.assert_token_never_printed();
        }
    }

    // A deploy that stopped half way is destroyed completely, and a destroy
    // that stopped half way is finished by a rerun.
    let cli = Cli::new(&emu, TOKEN);
    let args = [
        "deploy",
        "--yes",
        "--repository",
        "octo/app",
        "--name",
        "half-way",
    ];
    emu.fault(
        json!({"kind": "500", "operation": "worker-script-upload-worker-module", "count": 6}),
    );
    assert_eq!(cli.run(&args).status.code(), Some(1));
    emu.ctl("DELETE", "/faults", None);
    emu.fault(json!({"kind": "reset", "operation": "cloudflare-d1-delete-database", "count": 6}));
    let partial = cli.run(&["destroy", "--yes"]);
    emu.ctl("DELETE", "/faults", None);
    assert_eq!(
        partial.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&partial.stderr)
    );
    assert!(
        cli.config().contains("[deployment]"),
        "the record stays until destroy is done"
    );
    cli.ok(&["destroy", "--yes"], &[]);
    let st = emu.account_state();
    assert!(!st.to_string().contains("half-way"), "left behind: {st}");
    cli.assert_token_never_printed();

    emu.assert_no_violations();
}

#[test]
fn rate_limits_are_waited_out_and_permissions_are_named() {
    let emu = Emu::start();
    // 429 with retry-after: 1 on the bucket creation, waited out.
    let cli = Cli::new(&emu, TOKEN);
    emu.clear_requests();
    emu.fault(
        json!({"kind": "429", "operation": "r2-create-bucket", "retry_after": 1, "count": 1}),
    );
    let out = cli.run(&["deploy", "--yes", "--repository", "octo/app"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rate limited (429)"), "{err}");
    let creates: Vec<Json> = emu
        .requests()
        .into_iter()
        .filter(|r| r["operation"] == "r2-create-bucket")
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert_eq!(creates[0]["status"], 429);
    assert_eq!(creates[1]["status"], 200);
    let t = |r: &Json| r["time"].as_str().unwrap().to_string();
    assert!(t(&creates[1]) > t(&creates[0]));

    // Page and cursor pagination walk every page.
    let small = emu.client().with_page_size(10);
    for i in 0..23 {
        small
            .create_database(ACCOUNT, &format!("paged-{i:02}"))
            .unwrap();
    }
    let mut dbs: Vec<String> = small
        .databases(ACCOUNT)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    dbs.retain(|n| n.starts_with("paged-"));
    assert_eq!(dbs.len(), 23, "{dbs:?}");
    small.create_bucket(ACCOUNT, "paged-bucket").unwrap();
    for i in 0..25 {
        small
            .put_object(ACCOUNT, "paged-bucket", &format!("k/{i:02}"), b"x")
            .unwrap();
    }
    assert_eq!(small.objects(ACCOUNT, "paged-bucket").unwrap().len(), 25);
    let pages = emu
        .requests()
        .iter()
        .filter(|r| r["operation"] == "r2-list-objects")
        .count();
    assert_eq!(pages, 3, "25 objects in pages of 10");

    // A token without D1 Edit: the error names the permission.
    let weak = Cli::new(&emu, TOKEN_NO_D1);
    let out = weak.run(&[
        "deploy",
        "--yes",
        "--repository",
        "octo/app",
        "--name",
        "weak-one",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("D1 Edit") && err.contains("create the D1 database"),
        "{err}"
    );

    // An account-owned token is verified through the account endpoint.
    let owned = Cli::new(&emu, TOKEN_ACCOUNT_OWNED);
    owned.ok(
        &[
            "deploy",
            "--dry-run",
            "--repository",
            "octo/app",
            "--name",
            "owned-one",
        ],
        &[],
    );
    assert!(
        emu.requests()
            .iter()
            .any(|r| r["operation"] == "account-api-tokens-verify-token" && r["status"] == 200),
        "account token verify not used"
    );

    // A bad token: clear error, token not echoed.
    let bad = Cli::new(&emu, "not-a-token-abcdef0123456789");
    let out = bad.run(&["deploy", "--yes", "--repository", "octo/app"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CLOUDFLARE_API_TOKEN") && !err.contains("not-a-token"),
        "{err}"
    );

    for c in [&cli, &weak, &owned] {
        c.assert_token_never_printed();
    }
    emu.assert_no_violations();
}

/// Cloudflare's account limit compressed for the test: 40 requests per 3 s
/// (the real one is 1,200 per 5 minutes; going over blocks the whole window).
const TIGHT_LIMIT: [(&str, &str); 2] = [
    ("CF_EMULATOR_RATE_LIMIT_REQUESTS", "40"),
    ("CF_EMULATOR_RATE_LIMIT_WINDOW_SECONDS", "3"),
];

fn count_429(emu: &Emu) -> usize {
    emu.requests().iter().filter(|r| r["status"] == 429).count()
}

#[test]
fn destroy_empties_50000_objects_under_the_rate_limit() {
    let emu = Emu::start_with(&TIGHT_LIMIT);
    let cli = Cli::new(&emu, TOKEN);
    let patient = [("STATEFUL_CI_CF_MAX_ATTEMPTS", "10")];
    let started = Instant::now();
    cli.ok(&["deploy", "--yes", "--repository", "octo/app"], &patient);
    let deploy_secs = started.elapsed().as_secs_f64();
    // 50,000 objects with '/' in their keys, written straight into storage.
    let seeded = Instant::now();
    emu.seed("stateful-ci", 50_000, "r/1/2/packs/");
    assert_eq!(emu.object_count("stateful-ci"), 50_000);
    let seed_secs = seeded.elapsed().as_secs_f64();

    emu.clear_requests();
    let t = Instant::now();
    let out = cli.ok(&["destroy", "--yes"], &patient);
    let destroy_secs = t.elapsed().as_secs_f64();
    let api_calls = emu.requests().len();
    eprintln!(
        "destroy of 50,000 objects: {destroy_secs:.1}s, {api_calls} API requests, {} answered 429 (deploy {deploy_secs:.1}s, seeding {seed_secs:.1}s)",
        count_429(&emu)
    );
    let st = emu.account_state();
    assert!(
        !st["r2_buckets"].to_string().contains("stateful-ci")
            && emu.script_state("stateful-ci").is_none(),
        "{out}\n{st}"
    );
    // A handful of API requests, far below the account limit; the objects
    // went 1,000 per Worker call.
    assert!(api_calls < 40, "{api_calls} API requests");
    assert!(
        !emu.requests()
            .iter()
            .any(|r| r["operation"] == "r2-delete-object"),
        "no per-object API deletes"
    );
    cli.assert_token_never_printed();
    emu.assert_no_violations();
}

#[test]
fn destroy_without_the_worker_empties_through_the_api_waiting_out_the_block() {
    let emu = Emu::start_with(&TIGHT_LIMIT);
    let cli = Cli::new(&emu, TOKEN);
    let patient = [("STATEFUL_CI_CF_MAX_ATTEMPTS", "10")];
    cli.ok(&["deploy", "--yes", "--repository", "octo/app"], &patient);
    emu.seed("stateful-ci", 130, "r/1/2/packs/");
    // Keys with a literal '/' and one whose name holds "%2F" (another key).
    let c = emu.client();
    c.put_object(ACCOUNT, "stateful-ci", "r/1/2/manifests/a%2Fb", b"m")
        .unwrap();
    assert_eq!(emu.object_count("stateful-ci"), 131);
    // The Worker is gone (e.g. deleted by hand): the API is the fallback.
    c.delete_script(ACCOUNT, "stateful-ci").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    emu.clear_requests();
    let out = cli.run_env(&["destroy", "--yes"], &patient);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let deletes = emu
        .requests()
        .iter()
        .filter(|r| r["operation"] == "r2-delete-object" && r["status"] == 200)
        .count();
    assert_eq!(deletes, 131, "one DELETE per object, each key once");
    assert!(count_429(&emu) >= 1, "the limit was reached and waited out");
    assert!(err.contains("rate limited (429)"), "{err}");
    assert!(
        !emu.account_state()["r2_buckets"]
            .to_string()
            .contains("stateful-ci")
    );
    let blocks = emu.ctl("GET", "/rate-limit", None);
    assert!(
        blocks["limiters"][ACCOUNT]["blocks"].as_u64().unwrap() >= 2,
        "{blocks}"
    );
    cli.assert_token_never_printed();
    emu.assert_no_violations();
}

#[test]
fn destroy_is_resumable_and_checks_progress() {
    let emu = Emu::start();
    let cli = Cli::new(&emu, TOKEN);
    cli.ok(&["deploy", "--yes", "--repository", "octo/app"], &[]);
    emu.seed("stateful-ci", 3_000, "r/1/2/packs/");
    // The script deletion fails (after the bucket was emptied): a rerun
    // finishes, and the bucket is emptied no second time.
    emu.fault(json!({"kind": "500", "operation": "worker-script-delete-worker", "count": 6}));
    let first = cli.run(&["destroy", "--yes"]);
    emu.ctl("DELETE", "/faults", None);
    assert_eq!(first.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&first.stderr).contains("hint:"));
    assert_eq!(emu.object_count("stateful-ci"), 0);
    assert!(cli.config().contains("[deployment]"));
    cli.ok(&["destroy", "--yes"], &[]);
    assert!(emu.script_state("stateful-ci").is_none());
    emu.assert_no_violations();
}

#[test]
fn deploy_names_the_fix_for_r2_not_enabled_and_no_workers_dev_subdomain() {
    let emu = Emu::start();
    let run = |cli: &Cli| {
        let out = cli.run_env(
            &["deploy", "--yes", "--repository", "octo/app"],
            &[("CLOUDFLARE_ACCOUNT_ID", BARE_ACCOUNT)],
        );
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cli = Cli::new(&emu, TOKEN_BARE);
    let err = run(&cli);
    assert!(
        err.contains("code 10042") && err.contains("R2 Object Storage") && !err.contains("retry"),
        "{err}"
    );
    emu.ctl(
        "PATCH",
        &format!("/accounts/{BARE_ACCOUNT}"),
        Some(json!({"r2_enabled": true})),
    );
    let err = run(&cli);
    assert!(
        err.contains("no workers.dev subdomain") && err.contains("Workers & Pages"),
        "{err}"
    );
    cli.assert_token_never_printed();
    emu.assert_no_violations();
}

fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                continue;
            };
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
            if ppid == p {
                all.push(child);
                frontier.push(child);
            }
        }
    }
    all
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s[s.rfind(')').unwrap() + 2..].starts_with('Z'),
        Err(_) => false,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn dev_serves_the_backend_and_stops_everything_on_a_signal() {
    require_setup();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let port = free_port();
        let cfg = tempfile::tempdir().unwrap();
        let mut child = bin()
            .args([
                "dev",
                "--port",
                &port.to_string(),
                "--repository",
                "octo/app",
                "--oidc-issuer",
                "http://127.0.0.1:9/issuer",
                "--default-branch",
                "main",
            ])
            .current_dir(cfg.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("dev printed its backend line");
        assert_eq!(line, format!("backend: http://127.0.0.1:{port}"));
        let http = stateful_ci_net::client(Duration::from_secs(10));
        let health: Json = http
            .get(format!("http://127.0.0.1:{port}/v1/health"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(health["oidc_test_mode"], json!(true), "{health}");
        assert!(
            !cfg.path().join("stateful-ci.toml").exists(),
            "dev must not write the user's config"
        );
        let procs = descendants(child.id());
        assert!(!procs.is_empty(), "dev started the emulator");
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let started = Instant::now();
        let status = child.wait().unwrap();
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(status.code(), Some(128 + signal), "dev exit status");
        for p in procs {
            assert!(
                !alive(p),
                "process {p} started by dev is still running after signal {signal}"
            );
        }
        assert!(
            http.get(format!("http://127.0.0.1:{port}/v1/health"))
                .send()
                .is_err()
        );
    }
}

/// Start `stateful-ci dev` trusting `issuer`'s test tokens, with `issuer`'s
/// admin token, and point `issuer`'s runs at it: from then on the CLI runs
/// of `issuer` go to the emulator-deployed Worker instead of serve.mjs's.
pub fn dev_backend(issuer: &mut crate::backend::Backend) -> StopOnDrop {
    require_setup();
    let port = free_port();
    let mut dev = bin()
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--repository",
            "acme/app",
            "--oidc-issuer",
            &issuer.issuer,
        ])
        .env("STATEFUL_CI_ADMIN_TOKEN", &issuer.admin_token)
        .env("STATEFUL_CI_DEFAULT_BRANCH", "main")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = dev.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let dev = StopOnDrop(dev);
    let line = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("dev printed its backend line");
    let backend = line
        .strip_prefix("backend: ")
        .expect("backend line")
        .to_string();
    assert_eq!(backend, format!("http://127.0.0.1:{port}"));
    issuer.url = backend;
    dev
}

/// `stateful-ci dev --oidc-issuer` + `save`/`restore --backend` with tokens
/// from that issuer give back the exact tree.
#[test]
fn dev_backend_serves_save_and_restore_with_a_test_issuer() {
    let Some(mut issuer) = crate::backend::start() else {
        return;
    };
    let mut dev = dev_backend(&mut issuer);
    let a = crate::util::Area::new();
    crate::util::rich_tree(&a.path("src"));
    let args = ["--path", "node_modules", "--json"];
    let saved = issuer.ok(&a, "src", &[&["save"][..], &args].concat());
    assert_eq!(saved["outcome"], "saved", "{saved}");
    let hit = issuer.ok(&a, "dst", &[&["restore"][..], &args].concat());
    assert_eq!(hit["outcome"], "hit", "{hit}");
    crate::tree::assert_same(
        &a.path("src"),
        &a.path("dst"),
        &[".npmrc", ".env.local", "server.pem"],
    );
    unsafe {
        libc::kill(dev.0.id() as i32, libc::SIGINT);
    }
    assert_eq!(dev.0.wait().unwrap().code(), Some(130));
}

/// Stops a `stateful-ci dev` left running by a failed assertion.
pub struct StopOnDrop(Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            stop_gracefully(&mut self.0);
        }
    }
}

/// A signal while `dev` is still deploying stops the emulator it started too.
#[test]
fn dev_interrupted_during_startup_leaves_nothing_behind() {
    require_setup();
    let port = free_port();
    let mut child = bin()
        .args([
            "dev",
            "--port",
            &port.to_string(),
            "--repository",
            "octo/app",
            "--default-branch",
            "main",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut child = StopOnDrop(child);
    // The emulator answers the API once deploy's steps start.
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("dev reports its steps");
        if line.contains("create R2 bucket") {
            break;
        }
    }
    let procs = descendants(child.0.id());
    assert!(!procs.is_empty(), "dev started the emulator");
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    assert_eq!(child.0.wait().unwrap().code(), Some(143));
    // The emulator stops its workerd on SIGTERM; wait for that (bounded).
    let started = Instant::now();
    while procs.iter().any(|p| alive(*p)) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in procs {
        assert!(
            !alive(p),
            "process {p} started by dev survived a signal during startup"
        );
    }
}
