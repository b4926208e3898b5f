//! The built Worker under workerd, driven over HTTP from Rust, decoding every
//! answer with the protocol crate's wire types (so the Rust client types and
//! the Worker's JSON cannot drift apart).
//!
//! Needs the bundle (`scripts/build-worker.sh`) and Node 22
//! (`scripts/setup-wasm.sh`). `scripts/test-worker.sh` runs it with
//! `STATEFUL_CI_REQUIRE_WORKERD=1`, which turns missing prerequisites into a
//! failure; a plain `cargo test` without them says so and passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stateful_ci_protocol::wire::{
    ErrorBody, ErrorCode, HealthResponse, PutObjectResponse, RestoreRequest, RestoreResponse,
    SaveCommitRequest, SaveCommitResponse, SavePrepareRequest, SavePrepareResponse,
};
use stateful_ci_protocol::{ObjectKey, ObjectKind};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Node 22 in the tools folder, both named by scripts/lib/tools.env (the
/// one definition the scripts and the installer read too).
fn node() -> PathBuf {
    let env = include_str!("../../scripts/lib/tools.env");
    let key = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("scripts/lib/tools.env has no {k}"))
            .trim()
            .to_string()
    };
    let tools = std::env::var_os("STATEFUL_CI_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(key("TOOLS_HOME_DEFAULT"))
        });
    tools.join(key("NODE22_IN_TOOLS"))
}

struct Served {
    child: Child,
    issuer: String,
    backend: String,
}

impl Drop for Served {
    /// Closing its stdin makes serve.mjs stop workerd and exit. Killing it
    /// left workerd running without a parent: one per run of this test.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

/// Starts tests/worker/lib/serve.mjs, or None when prerequisites are absent
/// and not required.
fn serve() -> Option<Served> {
    let root = repo_root();
    let bundle = root.join("worker-template/dist/index_bg.wasm");
    let node = node();
    let modules = root.join("tests/worker/node_modules/miniflare");
    if !bundle.exists() || !node.exists() || !modules.exists() {
        let what = format!(
            "Worker bundle {} / Node 22 {} / miniflare {} missing: run scripts/test-worker.sh",
            bundle.exists(),
            node.exists(),
            modules.exists()
        );
        if std::env::var_os("STATEFUL_CI_REQUIRE_WORKERD").is_some() {
            panic!("{what}");
        }
        eprintln!("skipping the workerd test: {what}");
        return None;
    }
    let mut child = Command::new(node)
        .arg(root.join("tests/worker/lib/serve.mjs"))
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env_remove("CLOUDFLARE_API_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start serve.mjs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut issuer, mut backend) = (String::new(), String::new());
    // Readiness: serve.mjs prints `backend:` last, once the Worker answers.
    for line in lines.by_ref() {
        let line = line.expect("read serve.mjs output");
        if let Some(v) = line.strip_prefix("issuer: ") {
            issuer = v.to_string();
        }
        if let Some(v) = line.strip_prefix("backend: ") {
            backend = v.to_string();
            break;
        }
    }
    assert!(
        !backend.is_empty(),
        "serve.mjs exited before printing the backend URL"
    );
    Some(Served {
        child,
        issuer,
        backend,
    })
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: {e}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn error(&self) -> ErrorBody {
        self.json()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection, chunked bodies).
fn http(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let hostport = base.strip_prefix("http://").expect("http URL");
    let mut s = TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {hostport}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read until the message is complete (the server may keep the
    // connection open despite `connection: close`).
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let split = loop {
        if let Some(split) = complete(&raw) {
            break split;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the answer was complete");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let eol = i + rest[i..].windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[i..eol])
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            i = eol + 2 + size + 2;
        }
        rest = out;
    }
    Reply {
        status,
        headers,
        body: rest,
    }
}

/// The header length when `raw` holds a complete answer.
fn complete(raw: &[u8]) -> Option<usize> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n").then_some(split);
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    (body.len() >= len).then_some(split)
}

fn post_json<T: serde::Serialize>(base: &str, path: &str, token: &str, body: &T) -> Reply {
    let auth = format!("Bearer {token}");
    http(
        base,
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &serde_json::to_vec(body).unwrap(),
    )
}

fn token(issuer: &str, claims: serde_json::Value) -> String {
    let r = http(
        issuer,
        "POST",
        "/token",
        &[("content-type", "application/json")],
        claims.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    r.json::<serde_json::Value>()["value"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn worker_round_trip_and_refusals_from_rust() {
    let Some(served) = serve() else { return };
    let (issuer, backend) = (served.issuer.as_str(), served.backend.as_str());

    let health: HealthResponse = http(backend, "GET", "/v1/health", &[], b"").json();
    assert_eq!(
        health.protocol,
        stateful_ci_protocol::wire::PROTOCOL_VERSION
    );
    assert!(health.oidc_test_mode && health.migrations.iter().any(|m| m.starts_with("0001_")));

    let main = token(issuer, serde_json::json!({}));
    let pack = vec![7u8; 100_000];
    let pack_key = key(ObjectKind::Pack, &pack);
    // The Worker never reads a manifest: any bytes stand for one here.
    let manifest = format!("manifest listing {pack_key}").into_bytes();
    let manifest_key = key(ObjectKind::Manifest, &manifest);
    let workspace = "rust".to_string();

    let prep: SavePrepareResponse = post_json(
        backend,
        "/v1/save/prepare",
        &main,
        &SavePrepareRequest {
            workspace: workspace.clone(),
            objects: vec![manifest_key, pack_key],
        },
    )
    .json();
    assert_eq!(prep.scope, "branch:refs/heads/main");
    assert_eq!(prep.expected_generation, 0);
    assert_eq!(prep.missing.len(), 2);

    let auth = format!("Bearer {main}");
    // Wrong bytes for the key: refused.
    let bad = http(
        backend,
        "PUT",
        &format!("/v1/objects/{pack_key}"),
        &[("authorization", &auth)],
        b"other bytes",
    );
    assert_eq!(bad.status, 422);
    assert_eq!(bad.error().code, ErrorCode::HashMismatch);
    for (k, bytes) in [(pack_key, &pack), (manifest_key, &manifest)] {
        let r = http(
            backend,
            "PUT",
            &format!("/v1/objects/{k}"),
            &[("authorization", &auth)],
            bytes,
        );
        let put: PutObjectResponse = r.json();
        assert!(put.created && put.key == k && put.size == bytes.len() as u64);
    }
    let commit = SaveCommitRequest {
        workspace: workspace.clone(),
        manifest: manifest_key,
        packs: vec![pack_key],
        expected_generation: prep.expected_generation,
        idempotency_key: "rust-run-1".into(),
        total_bytes: 100_000,
        entries: 1,
    };
    let done: SaveCommitResponse = post_json(backend, "/v1/save/commit", &main, &commit).json();
    assert_eq!((done.head.generation, done.replayed), (1, false));
    let again: SaveCommitResponse = post_json(backend, "/v1/save/commit", &main, &commit).json();
    assert_eq!((again.head, again.replayed), (done.head.clone(), true));

    let restored: RestoreResponse = post_json(
        backend,
        "/v1/restore",
        &main,
        &RestoreRequest {
            workspace: workspace.clone(),
        },
    )
    .json();
    let hit = restored.hit.expect("hit");
    assert_eq!(hit.head, done.head);
    assert_eq!(hit.packs, vec![pack_key]);
    let grant = format!("Bearer {}", hit.grant);
    let got = http(
        backend,
        "GET",
        &format!("/v1/objects/{pack_key}"),
        &[("authorization", &grant)],
        b"",
    );
    assert_eq!((got.status, got.body == pack), (200, true));
    let part = http(
        backend,
        "GET",
        &format!("/v1/objects/{pack_key}"),
        &[("authorization", &grant), ("range", "bytes=10-19")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, pack[10..20].to_vec());
    assert_eq!(part.header("content-range"), Some("bytes 10-19/100000"));

    // A pull_request run restores main's state but saves only to its PR scope,
    // which main never reads.
    let pr = token(
        issuer,
        serde_json::json!({"event_name": "pull_request", "ref": "refs/pull/3/merge", "base_ref": "main"}),
    );
    let pr_view: RestoreResponse = post_json(
        backend,
        "/v1/restore",
        &pr,
        &RestoreRequest {
            workspace: workspace.clone(),
        },
    )
    .json();
    assert_eq!(pr_view.decision.save_scope.as_deref(), Some("pr:3"));
    assert_eq!(pr_view.hit.unwrap().scope, "branch:refs/heads/main");
    let main_view: RestoreResponse =
        post_json(backend, "/v1/restore", &main, &RestoreRequest { workspace }).json();
    assert!(
        main_view
            .decision
            .restore_scopes
            .iter()
            .all(|s| !s.starts_with("pr:"))
    );

    // An unsigned token is refused with its reason.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(
            serde_json::json!({"iss": issuer, "aud": "stateful-ci", "repository": "acme/app"})
                .to_string()
                .as_bytes()
        )
    );
    let refused = post_json(
        backend,
        "/v1/restore",
        &none,
        &RestoreRequest {
            workspace: "rust".into(),
        },
    );
    assert_eq!(refused.status, 401);
    let e = refused.error();
    assert_eq!(
        (e.code, e.reason.as_deref()),
        (ErrorCode::InvalidToken, Some("alg_none"))
    );
}

/// The key of an object: its kind and the SHA-256 of its bytes (format v2).
fn key(kind: ObjectKind, bytes: &[u8]) -> ObjectKey {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}{hex}", kind.prefix()).parse().unwrap()
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}
