//! Gathering a [`Status`]: the config file, the deployment record, a local
//! store's heads, and the Worker's health and admin routes. Network and
//! file access live here; the joins and comparisons are pure functions
//! tested without either.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use stateful_ci_installer::deploy::{api_override_from_env, route_to_worker};
use stateful_ci_installer::secrets::{self, Entry};
use stateful_ci_net::{RetryPolicy, reqwest};
use stateful_ci_protocol::ObjectKey;
use stateful_ci_protocol::wire::{
    AdminDecision, AdminDecisionsResponse, AdminRun, AdminRunsResponse, AdminSizesResponse,
    AdminSnapshot, AdminSnapshotsResponse, ErrorBody, HealthResponse,
};
use stateful_ci_runtime::config::{CONFIG_FILE, LEGACY_CONFIG_FILE};
use stateful_ci_runtime::deployment::Record;
use stateful_ci_runtime::{Config, LocalStore, Overrides};

use crate::model::*;

/// Environment variable holding the Worker's admin token.
pub const ADMIN_TOKEN_ENV: &str = "STATEFUL_CI_ADMIN_TOKEN";

/// The Worker's admin token. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let t = token.into();
        (!t.trim().is_empty()).then(|| AdminToken(t.trim().to_string()))
    }

    /// From `STATEFUL_CI_ADMIN_TOKEN`, else where `deploy` stored it: the
    /// entry [`Entry::AdminToken`] of [`stateful_ci_installer::secrets`]
    /// (the OS keyring, or its file fallback).
    pub fn find(worker_url: &str) -> Option<Self> {
        if let Ok(t) = std::env::var(ADMIN_TOKEN_ENV)
            && let Some(t) = AdminToken::new(t)
        {
            return Some(t);
        }
        secrets::get(&Entry::admin_token(worker_url))
            .ok()
            .and_then(AdminToken::new)
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// What to gather.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workspace root (where stateful-ci.toml lives).
    pub root: PathBuf,
    /// A local store to describe.
    pub store: Option<PathBuf>,
    /// The Worker URL; default: the deployment record, then `[backend] url`.
    pub backend: Option<String>,
    /// How many runs, snapshots and scopes to ask for.
    pub limit: u32,
    pub binary_version: String,
    /// Look for the admin token (env, keyring) when true.
    pub use_admin_token: bool,
}

/// Gather everything; failures become messages inside the status, so a
/// partial picture is still shown.
pub fn gather(opts: &Options) -> Status {
    let (config, deployment) = read_config(&opts.root);
    let url = opts
        .backend
        .clone()
        .or_else(|| deployment.as_ref().and_then(|d| d.worker_url.clone()))
        .or_else(|| config.backend_url.clone());
    let backend = url.map(|u| {
        let token = if opts.use_admin_token {
            AdminToken::find(&u)
        } else {
            None
        };
        // A URL from the record is reached like `deploy` reaches it (through
        // the emulator when CLOUDFLARE_API_BASE_URL points at one).
        let route = match &opts.backend {
            Some(_) => None,
            None => route_to_worker(api_override_from_env().as_deref(), &u, None)
                .ok()
                .and_then(|(base, host)| host.map(|h| (base, h))),
        };
        fetch_backend_via(&u, route.as_ref(), token.as_ref(), opts.limit)
    });
    let local = opts.store.as_deref().map(read_local);
    let drift = drift(
        &opts.binary_version,
        deployment.as_ref(),
        backend.as_ref().and_then(|b| b.health.as_ref()),
    );
    Status {
        binary_version: opts.binary_version.clone(),
        gathered_at: now_secs(),
        config,
        deployment,
        backend,
        local,
        drift,
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------- config

/// The configuration and the deployment record of the workspace at `root`.
pub fn read_config(root: &Path) -> (ConfigView, Option<Deployment>) {
    let path = root.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).ok();
    // The runtime does not record where settings came from; name the file.
    let file = if text.is_some() {
        Some(CONFIG_FILE.to_string())
    } else if root.join(LEGACY_CONFIG_FILE).exists() {
        Some(LEGACY_CONFIG_FILE.to_string())
    } else {
        None
    };
    let deployment = text.as_deref().and_then(parse_deployment);
    let view = match Config::load(root, &Overrides::default()) {
        Ok(c) => ConfigView {
            source: c.source.or(file),
            preset: c.preset,
            paths: c.paths,
            exclude: c.exclude,
            workspace: c.workspace,
            backend_url: c.backend_url,
            error: None,
        },
        Err(e) => ConfigView {
            source: file,
            workspace: "default".into(),
            error: Some(match &e.hint {
                Some(h) => format!("{} ({h})", e.message),
                None => e.message.clone(),
            }),
            ..ConfigView::default()
        },
    };
    (view, deployment)
}

/// The deployment record as `deploy` wrote it, read by the record's one
/// owner ([`stateful_ci_runtime::deployment`]), leniently: `None` when the
/// table is absent, lacks its account or the file is not TOML.
pub fn parse_deployment(text: &str) -> Option<Deployment> {
    let r = Record::from_toml(text)?;
    Some(Deployment {
        account_id: Some(r.account_id),
        worker_name: Some(r.script).filter(|s| !s.is_empty()),
        worker_url: r.worker_url,
        worker_version: r.worker_version,
        migrations: r.d1_migrations,
    })
}

/// Differences between this binary, the deployment record and the Worker's
/// health answer.
pub fn drift(
    binary: &str,
    deployment: Option<&Deployment>,
    health: Option<&HealthResponse>,
) -> Vec<String> {
    let mut out = Vec::new();
    let recorded = deployment.and_then(|d| d.worker_version.as_deref());
    if let Some(v) = recorded
        && v != binary
    {
        out.push(format!(
            "deployed Worker is {v}, this binary is {binary}: run `stateful-ci upgrade`"
        ));
    }
    if let Some(h) = health {
        if h.worker_version != binary && recorded.is_none_or(|v| v == binary) {
            out.push(format!(
                "running Worker reports {}, this binary is {binary}: run `stateful-ci upgrade`",
                h.worker_version
            ));
        }
        if let Some(v) = recorded
            && v != h.worker_version
        {
            out.push(format!(
                "the deployment record says {v} but the running Worker reports {}: the record is stale or another deploy replaced the Worker",
                h.worker_version
            ));
        }
        if let Some(d) = deployment
            && !d.migrations.is_empty()
            && d.migrations != h.migrations
        {
            out.push(format!(
                "migrations recorded [{}] differ from those the Worker reports [{}]",
                d.migrations.join(", "),
                h.migrations.join(", ")
            ));
        }
        if h.oidc_test_mode {
            out.push(format!(
                "the Worker trusts a test OIDC issuer ({}), not GitHub: a `dev` backend, not for real CI",
                h.oidc_issuer
            ));
        }
        for w in &h.warnings {
            out.push(format!("Worker: {w}"));
        }
    }
    out
}

// ------------------------------------------------------------- backend

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(1),
        max_total: Duration::from_secs(5),
    }
}

fn get_json<T: DeserializeOwned>(
    client: &reqwest::blocking::Client,
    url: &str,
    host: Option<&str>,
    token: Option<&AdminToken>,
) -> Result<T, String> {
    let resp = stateful_ci_net::send(
        || {
            let r = client.get(url);
            let r = match host {
                Some(h) => r.header(reqwest::header::HOST, h),
                None => r,
            };
            match token {
                Some(t) => r.bearer_auth(t.expose()),
                None => r,
            }
        },
        &quick_policy(),
        |_| {},
    )
    .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    if !status.is_success() {
        return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => format!(
                "GET {url}: {} ({}): {}",
                status.as_u16(),
                b.code.as_str(),
                b.message
            ),
            Err(_) => format!("GET {url}: HTTP {}", status.as_u16()),
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("GET {url}: unexpected answer ({e}): is this a stateful-ci Worker?"))
}

/// Ask the Worker at `url` for its health and, with a token, its admin views.
pub fn fetch_backend(url: &str, token: Option<&AdminToken>, limit: u32) -> BackendView {
    fetch_backend_via(url, None, token, limit)
}

/// [`fetch_backend`], sending the requests to `route` = (origin, Host
/// header) instead of `url` itself (the emulator's workers.dev hosts).
pub fn fetch_backend_via(
    url: &str,
    route: Option<&(String, String)>,
    token: Option<&AdminToken>,
    limit: u32,
) -> BackendView {
    let shown = url.trim_end_matches('/');
    let base = route.map_or(shown, |(origin, _)| origin.trim_end_matches('/'));
    let host = route.map(|(_, h)| h.as_str());
    let client = stateful_ci_net::client(Duration::from_secs(15));
    let mut view = BackendView {
        url: shown.to_string(),
        ..BackendView::default()
    };
    match get_json::<HealthResponse>(&client, &format!("{base}/v1/health"), host, None) {
        Ok(h) => view.health = Some(h),
        Err(e) => view.health_error = Some(e),
    }
    let Some(token) = token else {
        view.admin_error = Some(format!(
            "no admin token: set {ADMIN_TOKEN_ENV} or run `stateful-ci deploy`, which stores it in the OS keyring"
        ));
        return view;
    };
    let admin = |route: &str| format!("{base}/v1/admin/{route}?limit={limit}");
    let fetched = (|| {
        let runs: AdminRunsResponse = get_json(&client, &admin("runs"), host, Some(token))?;
        let decisions: AdminDecisionsResponse =
            get_json(&client, &admin("decisions"), host, Some(token))?;
        let snapshots: AdminSnapshotsResponse =
            get_json(&client, &admin("snapshots"), host, Some(token))?;
        let sizes: AdminSizesResponse = get_json(&client, &admin("sizes"), host, Some(token))?;
        Ok::<_, String>((runs, decisions, snapshots, sizes))
    })();
    match fetched {
        Ok((runs, decisions, snapshots, sizes)) => {
            view.admin = true;
            view.runs = join_runs(&runs.runs, &decisions.decisions, &snapshots.snapshots);
            view.snapshots = snapshots.snapshots;
            view.scopes = sizes.scopes;
            view.total_object_bytes = Some(sizes.total_object_bytes);
        }
        Err(e) => {
            view.admin_error = Some(format!(
                "admin routes: {e}; check {ADMIN_TOKEN_ENV} or the keyring entry from `stateful-ci deploy`"
            ))
        }
    }
    view
}

/// One row per restore/save decision, newest first, with the run's ref and
/// event and the snapshot a hit used or a commit made.
pub fn join_runs(
    runs: &[AdminRun],
    decisions: &[AdminDecision],
    snapshots: &[AdminSnapshot],
) -> Vec<RunRow> {
    let mut by_run: HashMap<(&str, &str), &AdminRun> = HashMap::new();
    for r in runs {
        // Newest attempt wins (runs come newest first).
        by_run
            .entry((r.repository.as_str(), r.run_id.as_str()))
            .or_insert(r);
    }
    let mut by_gen: HashMap<(&str, &str, u64), &AdminSnapshot> = HashMap::new();
    for s in snapshots {
        by_gen
            .entry((s.repository.as_str(), s.scope.as_str(), s.generation))
            .or_insert(s);
    }
    let mut out: Vec<RunRow> = Vec::new();
    // An allowed save/prepare is a step of a save (a client calls it
    // several times: head, missing objects); the commit that follows is
    // the decision. Denied prepares are kept.
    for d in decisions
        .iter()
        .filter(|d| !(d.route == "save_prepare" && d.allowed))
    {
        let row = {
            let run = by_run.get(&(d.repository.as_str(), d.run_id.as_str()));
            let generation = d
                .detail
                .strip_prefix("generation ")
                .and_then(|g| g.trim().parse::<u64>().ok())
                .filter(|_| d.allowed);
            let snap =
                generation.and_then(|g| by_gen.get(&(d.repository.as_str(), d.scope.as_str(), g)));
            RunRow {
                at: d.at,
                repository: d.repository.clone(),
                run_id: d.run_id.clone(),
                git_ref: run.map(|r| r.git_ref.clone()),
                event: run.map(|r| r.event.clone()),
                class: d.class.clone(),
                route: d.route.clone(),
                allowed: d.allowed,
                reason: d.reason.clone(),
                decision: RunRow::label(&d.route, d.allowed, &d.reason),
                scope: d.scope.clone(),
                generation,
                snapshot: snap.map(|s| s.manifest.clone()),
                entries: snap.map(|s| s.entries),
                bytes: snap.map(|s| s.total_bytes),
                stored_bytes: snap.map(|s| s.stored_bytes),
                detail: d.detail.clone(),
                repeats: 1,
            }
        };
        // The same decision again within a run (e.g. a save reading its
        // parent's manifest restores once more) is one row with a count.
        match out.last_mut() {
            Some(prev)
                if prev.repository == row.repository
                    && prev.run_id == row.run_id
                    && prev.route == row.route
                    && prev.allowed == row.allowed
                    && prev.reason == row.reason
                    && prev.scope == row.scope
                    && prev.detail == row.detail =>
            {
                prev.repeats += 1;
            }
            _ => out.push(row),
        }
    }
    out
}

// ------------------------------------------------------------- local store

/// Describe the local store at `dir` without creating or changing it (the
/// layout is the store's own business: `LocalStore::inspect`).
pub fn read_local(dir: &Path) -> LocalView {
    let mut view = LocalView {
        path: dir.display().to_string(),
        ..LocalView::default()
    };
    let seen = match LocalStore::inspect(dir) {
        Ok(seen) => seen,
        Err(e) => {
            view.error = Some(format!(
                "{}{}",
                e.message,
                e.hint.map(|h| format!(": {h}")).unwrap_or_default()
            ));
            return view;
        }
    };
    view.unique_bytes = seen.unique_bytes;
    for s in seen.scopes {
        let mut row = LocalScope {
            scope: s.scope.clone(),
            ..LocalScope::default()
        };
        match s.head {
            Err(e) => row.error = Some(format!("head file is damaged: {e}")),
            Ok(h) => {
                row.generation = h.generation;
                row.snapshot = h.snapshot.to_string();
                fill_from_manifest(dir, &s.scope, &h.snapshot, &mut row);
            }
        }
        view.referenced_bytes += row.stored_bytes;
        view.scopes.push(row);
    }
    view
}

fn fill_from_manifest(dir: &Path, scope: &str, key: &ObjectKey, row: &mut LocalScope) {
    let store = match LocalStore::open_existing(dir, scope) {
        Ok(s) => s,
        Err(e) => {
            row.error = Some(e.message);
            return;
        }
    };
    match stateful_ci_runtime::objects::load_manifest(&store, key) {
        Err(e) => row.error = Some(e.message),
        Ok(m) => {
            row.created_at = m.created_at;
            row.parent = m.parent.map(|p| p.to_string());
            row.roots = m.roots.clone();
            row.files = m.files;
            row.bytes = m.bytes;
            row.packs = m.packs.len() as u64;
            row.stored_bytes = m
                .packs
                .iter()
                .filter_map(|p| store.object_len(p))
                .sum::<u64>()
                + store.object_len(key).unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(version: &str, migrations: &[&str]) -> HealthResponse {
        HealthResponse {
            service: "stateful-ci".into(),
            protocol: 1,
            worker_version: version.into(),
            migrations: migrations.iter().map(|s| s.to_string()).collect(),
            oidc_test_mode: false,
            oidc_issuer: "https://token.actions.githubusercontent.com".into(),
            warnings: vec![],
        }
    }

    #[test]
    fn deployment_record_is_read_leniently() {
        assert_eq!(parse_deployment("preset = \"node\"\n"), None);
        assert_eq!(parse_deployment("not toml ["), None);
        assert_eq!(parse_deployment("[deployment]\nscript = \"x\"\n"), None);
        let d = parse_deployment(
            "[deployment]\naccount_id = \"abc\"\nscript = \"stateful-ci\"\nworker_url = \"https://w.example\"\nworker_version = \"0.1.0\"\nd1_migrations = [\"0001_init.sql\", 2]\nfuture_key = { x = 1 }\napi_token = \"must-not-be-read\"\n",
        )
        .unwrap();
        assert_eq!(d.account_id.as_deref(), Some("abc"));
        assert_eq!(d.worker_name.as_deref(), Some("stateful-ci"));
        assert_eq!(d.worker_url.as_deref(), Some("https://w.example"));
        assert_eq!(d.migrations, vec!["0001_init.sql"]);
        assert!(!format!("{d:?}").contains("must-not-be-read"));
    }

    /// The drift check reads the record `deploy` writes (its own writer,
    /// not a hand-written file): a Worker whose D1 lacks a recorded
    /// migration is named. Before one owner held the keys, `deploy` wrote
    /// `d1_migrations` and the dashboard read `migrations`, so this never fired.
    #[test]
    fn migration_drift_shows_on_the_record_deploy_wrote() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "preset = \"rust\"\n").unwrap();
        let written = Record {
            account_id: "0123456789abcdef0123456789abcdef".into(),
            script: "stateful-ci".into(),
            worker_url: Some("https://stateful-ci.team.workers.dev".into()),
            worker_version: Some("0.1.0".into()),
            d1_migrations: vec!["0001_init.sql".into(), "0002_object_visibility.sql".into()],
            ..Record::default()
        };
        stateful_ci_runtime::deployment::ConfigFile::new(dir.path().join(CONFIG_FILE))
            .write(&written)
            .unwrap();
        let (config, deployment) = read_config(dir.path());
        assert_eq!(config.error, None);
        let deployment = deployment.expect("the record deploy wrote is read");
        assert_eq!(deployment.migrations, written.d1_migrations);
        let same = health("0.1.0", &["0001_init.sql", "0002_object_visibility.sql"]);
        assert!(drift("0.1.0", Some(&deployment), Some(&same)).is_empty());
        let behind = health("0.1.0", &["0001_init.sql"]);
        let d = drift("0.1.0", Some(&deployment), Some(&behind));
        assert!(
            d.iter().any(|l| l.contains(
                "migrations recorded [0001_init.sql, 0002_object_visibility.sql] differ from those the Worker reports [0001_init.sql]"
            )),
            "{d:?}"
        );
    }

    #[test]
    fn drift_names_each_disagreement() {
        assert!(drift("0.1.0", None, None).is_empty());
        let rec = Deployment {
            worker_version: Some("0.1.0".into()),
            migrations: vec!["0001_init.sql".into()],
            ..Deployment::default()
        };
        assert!(
            drift(
                "0.1.0",
                Some(&rec),
                Some(&health("0.1.0", &["0001_init.sql"]))
            )
            .is_empty()
        );
        let d = drift(
            "0.2.0",
            Some(&rec),
            Some(&health("0.1.0", &["0001_init.sql"])),
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("deployed Worker is 0.1.0, this binary is 0.2.0"));
        let d = drift("0.1.0", Some(&rec), Some(&health("0.0.9", &[])));
        assert!(
            d.iter()
                .any(|l| l.contains("record says 0.1.0 but the running Worker reports 0.0.9")),
            "{d:?}"
        );
        assert!(d.iter().any(|l| l.contains("migrations recorded")), "{d:?}");
        let d = drift("0.1.0", None, Some(&health("0.0.9", &[])));
        assert!(d[0].contains("running Worker reports 0.0.9"));
        let mut h = health("0.1.0", &[]);
        h.oidc_test_mode = true;
        assert!(drift("0.1.0", None, Some(&h))[0].contains("test OIDC issuer"));
    }

    #[test]
    fn decisions_join_their_run_and_snapshot() {
        let run = AdminRun {
            repository: "o/r".into(),
            run_id: "7".into(),
            run_attempt: "1".into(),
            workflow_ref: "w".into(),
            git_ref: "refs/heads/main".into(),
            event: "push".into(),
            actor: "a".into(),
            class: "trusted".into(),
            first_seen: 1,
            last_seen: 2,
        };
        let snap = AdminSnapshot {
            repository: "o/r".into(),
            workspace: "default".into(),
            scope: "branch:refs/heads/main".into(),
            manifest: "manifests/ab".into(),
            generation: 3,
            created_at: 2,
            total_bytes: 100,
            stored_bytes: 40,
            entries: 5,
            workflow_ref: "w".into(),
            job_workflow_ref: "w".into(),
            git_ref: "refs/heads/main".into(),
            event: "push".into(),
            sha: "s".into(),
            actor: "a".into(),
            run_id: "7".into(),
            runner_environment: "github-hosted".into(),
            class: "trusted".into(),
        };
        let d = |reason: &str, allowed: bool, detail: &str| AdminDecision {
            at: 2,
            route: "save_commit".into(),
            repository: "o/r".into(),
            run_id: "7".into(),
            class: "trusted".into(),
            allowed,
            reason: reason.into(),
            scope: "branch:refs/heads/main".into(),
            detail: detail.into(),
        };
        let rows = join_runs(
            &[run],
            &[
                d("commit_applied", true, "generation 3"),
                d("generation_conflict", false, ""),
                d("commit_applied", true, "generation 4"),
            ],
            &[snap],
        );
        assert_eq!(rows[0].decision, "saved");
        assert_eq!(rows[0].git_ref.as_deref(), Some("refs/heads/main"));
        assert_eq!(rows[0].event.as_deref(), Some("push"));
        assert_eq!(rows[0].snapshot.as_deref(), Some("manifests/ab"));
        assert_eq!(
            (rows[0].entries, rows[0].bytes, rows[0].stored_bytes),
            (Some(5), Some(100), Some(40))
        );
        assert_eq!(rows[1].decision, "denied (generation_conflict)");
        assert_eq!(rows[1].snapshot, None);
        // A generation not among the fetched snapshots has no snapshot fields.
        assert_eq!(rows[2].generation, Some(4));
        assert_eq!(rows[2].snapshot, None);
        assert_eq!(rows[2].entries, None);
    }

    #[test]
    fn save_steps_fold_and_repeats_collapse() {
        let d = |route: &str, allowed: bool, reason: &str| AdminDecision {
            at: 1,
            route: route.into(),
            repository: "o/r".into(),
            run_id: "7".into(),
            class: "trusted".into(),
            allowed,
            reason: reason.into(),
            scope: "s".into(),
            detail: "generation 1".into(),
        };
        let rows = join_runs(
            &[],
            &[
                d("save_commit", true, "commit_applied"),
                d("save_prepare", true, "save_allowed"),
                d("save_prepare", true, "save_allowed"),
                d("restore", true, "restore_hit"),
                d("restore", true, "restore_hit"),
                d("save_prepare", false, "save_not_allowed"),
            ],
            &[],
        );
        let got: Vec<(String, u32)> = rows
            .iter()
            .map(|r| (r.decision_cell(), r.repeats))
            .collect();
        assert_eq!(
            got,
            vec![
                ("saved".to_string(), 1),
                ("restored x2".to_string(), 2),
                ("denied (save_not_allowed)".to_string(), 1),
            ]
        );
        // Unknown run: no ref or event is invented.
        assert_eq!(rows[0].git_ref, None);
        assert_eq!(rows[0].event, None);
    }

    #[test]
    fn admin_token_debug_is_redacted() {
        let t = AdminToken::new("s3cret-value").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(AdminToken::new("  ").is_none());
    }
}
