//! `deploy`, `upgrade` and `destroy`: read the account's state, plan
//! ([`plan::plan`], pure), apply, verify the Worker answers, record.
//!
//! Every step is safe to repeat: a create whose answer was lost is found
//! again (name taken → look it up), a migration whose answer was lost is
//! found in `d1_migrations`, so a rerun after any failure finishes the job.
//! Must not: print (progress goes through a callback), write a secret into
//! the record, or delete anything the record does not say this tool created.

mod destroy;
pub mod plan;
pub mod record;
pub mod repos;

pub use destroy::{DESTROY_ADMIN_TOKEN_ENV, destroy, destroy_items};

use std::time::{Duration, Instant};

use crate::Error;
use serde_json::{Value as Json, json};

use crate::bundle::Bundle;
use crate::cloudflare::{CfError, Client, Part};
use crate::secrets;
pub use plan::{Desired, Observed, Plan, PlanError, ScriptState, Step};
pub use record::{ConfigFile, Record};
pub use repos::Repository;

pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
pub const GRANT_KEY: &str = "GRANT_KEY";
/// Use this value for the admin token when it is first created.
pub const ADMIN_TOKEN_ENV: &str = "STATEFUL_CI_ADMIN_TOKEN";
pub const COMPATIBILITY_DATE: &str = "2025-09-01";
/// The Cron Trigger of the retention sweep: hourly, at a minute few others
/// pick (docs/WORKER.md, "Retention"). Each run does bounded work, so an
/// hourly run keeps a busy cache within its retention without long runs.
pub const SWEEP_CRON: &str = "41 * * * *";

/// Non-secret settings of the Worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub account_id: String,
    /// Name of the script, bucket and database.
    pub name: String,
    /// Each allowed repository with its own default branch (see `repos`).
    pub repositories: Vec<Repository>,
    /// Trust a branch event only when its token says `ref_protected: true`.
    pub require_protected: bool,
    pub audience: String,
    /// Only `stateful-ci dev` sets it.
    pub oidc_test_issuer: Option<String>,
}

impl Settings {
    pub fn validate(&self) -> Result<(), Error> {
        let n = &self.name;
        let ok = (3..=54).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if !ok {
            return Err(Error::user(
                format!("--name {n:?} cannot name a Worker, bucket and database"),
                "use 3 to 54 lowercase letters, digits and inner dashes, e.g. stateful-ci",
            ));
        }
        repos::validate(&self.repositories)?;
        Ok(())
    }

    /// Plain-text vars the Worker reads (see docs/WORKER.md).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("REPOSITORIES", repos::worker_var(&self.repositories)),
            ("OIDC_AUDIENCE", self.audience.clone()),
        ];
        if self.require_protected {
            v.push(("REQUIRE_PROTECTED_REF", "true".into()));
        }
        if let Some(i) = &self.oidc_test_issuer {
            v.push(("OIDC_TEST_ISSUER", i.clone()));
        }
        v
    }
}

/// Hash of everything non-secret the upload declares besides the code.
pub fn worker_config_hash(settings: &Settings, database_id: Option<&str>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(COMPATIBILITY_DATE.as_bytes());
    h.update(settings.name.as_bytes());
    h.update(database_id.unwrap_or("").as_bytes());
    for (k, v) in settings.vars() {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..16].to_string()
}

pub struct Deployer<'a> {
    pub client: &'a Client,
    pub settings: Settings,
    pub bundle: Bundle,
    pub config: ConfigFile,
    /// Where to probe `/v1/health` (default: the workers.dev URL, reached
    /// through the API origin when the API base is overridden).
    pub health_base: Option<String>,
    pub health_timeout: Duration,
}

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub worker_url: String,
    pub record: Record,
    pub notes: Vec<String>,
}

fn cf(e: CfError) -> Error {
    e.into()
}

impl<'a> Deployer<'a> {
    fn acct(&self) -> &str {
        &self.settings.account_id
    }

    /// Check the token (user or account-owned) before anything else.
    pub fn verify(&self) -> Result<(), Error> {
        let t = self.client.verify_token(self.acct()).map_err(cf)?;
        if t.status != "active" {
            return Err(Error::user(
                format!("the Cloudflare API token is {}, not active", t.status),
                format!(
                    "create a new token with {}",
                    crate::cloudflare::MINIMAL_PERMISSIONS
                ),
            ));
        }
        Ok(())
    }

    pub fn record(&self) -> Result<Option<Record>, Error> {
        Ok(self.config.read()?)
    }

    pub fn desired(&self, database_id: Option<&str>) -> Desired {
        Desired {
            account_id: self.settings.account_id.clone(),
            script: self.settings.name.clone(),
            bucket: self.settings.name.clone(),
            database: self.settings.name.clone(),
            version: self.bundle.version.clone(),
            migrations: self
                .bundle
                .migrations
                .iter()
                .map(|(n, _)| n.clone())
                .collect(),
            do_steps: self.bundle.do_steps.clone(),
            worker_config: worker_config_hash(&self.settings, database_id),
            secrets: vec![ADMIN_TOKEN.into(), GRANT_KEY.into()],
            schedules: vec![SWEEP_CRON.into()],
        }
    }

    /// Read the account's state (GETs and read-only SQL only).
    pub fn observe(&self) -> Result<Observed, Error> {
        let a = self.acct();
        let name = &self.settings.name;
        let c = self.client;
        let account_subdomain = c.workers_subdomain(a).map_err(cf)?;
        let bucket_exists = c.bucket_exists(a, name).map_err(cf)?;
        let database_id = c.database_by_name(a, name).map_err(cf)?.map(|d| d.uuid);
        let (migrations_table, applied_migrations) = match &database_id {
            Some(id) => self.applied(id)?,
            None => (false, Vec::new()),
        };
        let script = match c.script(a, name).map_err(cf)? {
            Some(s) => Some(ScriptState {
                migration_tag: s.migration_tag.filter(|t| !t.is_empty()),
                secrets: c.secret_names(a, name).map_err(cf)?,
                route_enabled: c.script_route_enabled(a, name).map_err(cf)?,
                schedules: c.schedules(a, name).map_err(cf)?,
            }),
            None => None,
        };
        Ok(Observed {
            account_subdomain,
            bucket_exists,
            database_id,
            migrations_table,
            applied_migrations,
            script,
        })
    }

    fn applied(&self, db: &str) -> Result<(bool, Vec<String>), Error> {
        let a = self.acct();
        let r = self
            .client
            .query(
                a,
                db,
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'd1_migrations'",
                &[],
            )
            .map_err(cf)?;
        if r.first().is_none_or(|q| q.results.is_empty()) {
            return Ok((false, Vec::new()));
        }
        let r = self
            .client
            .query(a, db, "SELECT name FROM d1_migrations ORDER BY id", &[])
            .map_err(cf)?;
        let names = r
            .first()
            .map(|q| {
                q.results
                    .iter()
                    .filter_map(|row| row.get("name").and_then(Json::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok((true, names))
    }

    pub fn plan(&self, seen: &Observed, force: bool) -> Result<Plan, Error> {
        let record = self.record()?;
        plan::plan(
            &self.desired(seen.database_id.as_deref()),
            seen,
            record.as_ref(),
            force,
        )
        .map_err(|e| Error::user(e.to_string(), e.hint()))
    }

    /// Apply `plan` (computed from `seen`), probe the Worker, write the record.
    pub fn apply(
        &self,
        plan: &Plan,
        seen: &Observed,
        progress: &dyn Fn(&str),
    ) -> Result<Outcome, Error> {
        let a = self.acct().to_string();
        let name = self.settings.name.clone();
        let c = self.client;
        let mut notes = Vec::new();
        let mut record = self
            .record()?
            .filter(|r| r.account_id == a && r.script == name)
            .unwrap_or_else(|| Record {
                account_id: a.clone(),
                script: name.clone(),
                bucket: name.clone(),
                database: name.clone(),
                ..Record::default()
            });
        let mut database_id = seen.database_id.clone();
        let mut tag = seen.script.as_ref().and_then(|s| s.migration_tag.clone());
        for step in &plan.steps {
            progress(&step.to_string());
            match step {
                // Each create is recorded before it is sent: if its answer is
                // lost, the rerun finds the resource in place, and `destroy`
                // still knows this tool made it (a missing one counts as deleted).
                Step::CreateBucket(b) => {
                    record.mark_created("bucket");
                    self.config.write(&record)?;
                    c.create_bucket(&a, b).map_err(cf)?;
                }
                Step::CreateDatabase(d) => {
                    record.mark_created("database");
                    self.config.write(&record)?;
                    let db = c.create_database(&a, d).map_err(cf)?;
                    database_id = Some(db.uuid.clone());
                    record.database_id = Some(db.uuid);
                    self.config.write(&record)?;
                }
                Step::CreateMigrationsTable => {
                    let db = database_id.as_deref().expect("database exists by now");
                    c.query(
                        &a,
                        db,
                        "CREATE TABLE IF NOT EXISTS d1_migrations(\n    id         INTEGER PRIMARY KEY AUTOINCREMENT,\n    name       TEXT UNIQUE,\n    applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL\n);",
                        &[],
                    )
                    .map_err(cf)?;
                }
                Step::ApplyMigration(m) => {
                    let db = database_id.clone().expect("database exists by now");
                    self.apply_migration(&db, m)?;
                }
                Step::UploadWorker { .. } => {
                    let db = database_id.clone().expect("database exists by now");
                    if seen.script.is_none() {
                        record.mark_created("script");
                        self.config.write(&record)?;
                    }
                    tag = Some(self.upload(&db, tag.clone())?);
                    record.do_migration_tag = tag.clone();
                    self.config.write(&record)?;
                }
                Step::PutSecret(s) => {
                    let value = if s == ADMIN_TOKEN {
                        let (value, origin) = match std::env::var(ADMIN_TOKEN_ENV)
                            .ok()
                            .filter(|v| v.len() >= 16)
                        {
                            Some(v) => (v, format!("set from {ADMIN_TOKEN_ENV}")),
                            None => (random_hex(32)?, "generated".to_string()),
                        };
                        // Stored before it is put, so a Worker never holds a
                        // token that `status` cannot find.
                        notes.push(store_admin_token(&plan.worker_url, &value, &origin));
                        value
                    } else {
                        random_hex(32)?
                    };
                    c.put_secret(&a, &name, s, &value).map_err(cf)?;
                }
                Step::EnableRoute => c.enable_script_route(&a, &name).map_err(cf)?,
                Step::SetSchedules(crons) => c.put_schedules(&a, &name, crons).map_err(cf)?,
            }
        }
        progress(&format!("waiting for {}/v1/health", plan.worker_url));
        self.wait_healthy(&plan.worker_url)?;
        let settings_stale = record.repositories != self.settings.repositories
            || record.require_protected != self.settings.require_protected
            || record.audience.as_deref() != Some(self.settings.audience.as_str());
        if plan.record_stale || settings_stale || !plan.steps.is_empty() {
            record.database_id = database_id.clone();
            record.worker_url = Some(plan.worker_url.clone());
            record.worker_version = Some(self.bundle.version.clone());
            record.worker_config = Some(worker_config_hash(&self.settings, database_id.as_deref()));
            record.do_migration_tag = tag.or(record.do_migration_tag);
            record.d1_migrations = self
                .bundle
                .migrations
                .iter()
                .map(|(n, _)| n.clone())
                .collect();
            record.repositories = self.settings.repositories.clone();
            record.require_protected = self.settings.require_protected;
            record.audience = Some(self.settings.audience.clone());
            self.config.write(&record)?;
        }
        Ok(Outcome {
            worker_url: plan.worker_url.clone(),
            record,
            notes,
        })
    }

    /// One `/query` per file with its `d1_migrations` row appended, so the
    /// migration and its record commit together. If the answer is lost,
    /// the table tells whether it ran.
    fn apply_migration(&self, db: &str, m: &str) -> Result<(), Error> {
        let a = self.acct();
        let (_, sql) = self
            .bundle
            .migrations
            .iter()
            .find(|(n, _)| n == m)
            .expect("planned migrations come from the bundle");
        let body = sql.trim_end();
        // A newline first, so a trailing `-- comment` cannot swallow the insert.
        let sep = if body.ends_with(';') { "\n" } else { "\n;\n" };
        let stmt = format!(
            "{body}{sep}INSERT INTO d1_migrations (name) VALUES ('{}');",
            m.replace('\'', "''")
        );
        match self.client.query(a, db, &stmt, &[]) {
            Ok(_) => Ok(()),
            Err(e) => {
                let (_, applied) = self.applied(db)?;
                if applied.iter().any(|x| x == m) {
                    Ok(())
                } else {
                    Err(Error::user(
                        format!("D1 migration {m} failed: {e}"),
                        e.hint(),
                    ))
                }
            }
        }
    }

    /// Upload the Worker with the Durable Object steps after `deployed`;
    /// returns the tag now deployed. A lost answer shows up as a tag
    /// mismatch on the retry: the tag is read again and the upload redone.
    fn upload(&self, db: &str, deployed: Option<String>) -> Result<String, Error> {
        let a = self.acct();
        let name = &self.settings.name;
        let first = self
            .client
            .upload_script(a, name, &self.parts(db, deployed.as_deref())?);
        match first {
            Ok(_) => {}
            Err(e) if e.has_code(10079) || e.status().is_some_and(|s| s >= 500) => {
                let now = self
                    .client
                    .script(a, name)
                    .map_err(cf)?
                    .and_then(|s| s.migration_tag)
                    .filter(|t| !t.is_empty());
                self.client
                    .upload_script(a, name, &self.parts(db, now.as_deref())?)
                    .map_err(cf)?;
            }
            Err(e) => return Err(cf(e)),
        }
        Ok(self
            .bundle
            .do_steps
            .last()
            .map(|s| s.tag.clone())
            .or(deployed)
            .unwrap_or_default())
    }

    /// The multipart form: metadata plus one part per module.
    pub fn parts(&self, db: &str, deployed_tag: Option<&str>) -> Result<Vec<Part>, Error> {
        let metadata = self.metadata(db, deployed_tag)?;
        let mut parts = vec![Part {
            name: "metadata".into(),
            filename: None,
            content_type: "application/json".into(),
            bytes: serde_json::to_vec(&metadata).expect("JSON"),
        }];
        for m in &self.bundle.modules {
            parts.push(Part {
                name: m.name.clone(),
                filename: Some(m.name.clone()),
                content_type: m.content_type.into(),
                bytes: m.bytes.clone(),
            });
        }
        Ok(parts)
    }

    pub fn metadata(&self, db: &str, deployed_tag: Option<&str>) -> Result<Json, Error> {
        let name = &self.settings.name;
        let mut bindings = vec![
            json!({"type": "d1", "name": "DB", "id": db}),
            json!({"type": "r2_bucket", "name": "BUCKET", "bucket_name": name}),
            json!({"type": "durable_object_namespace", "name": "COORDINATOR", "class_name": crate::bundle::COORDINATOR_CLASS}),
        ];
        for (k, v) in self.settings.vars() {
            bindings.push(json!({"type": "plain_text", "name": k, "text": v}));
        }
        let mut meta = json!({
            "main_module": crate::bundle::MAIN_MODULE,
            "compatibility_date": COMPATIBILITY_DATE,
            "bindings": bindings,
            "keep_bindings": ["secret_text"],
        });
        let steps = &self.bundle.do_steps;
        let start = match deployed_tag {
            None => 0,
            Some(t) => match steps.iter().position(|s| s.tag == t) {
                Some(i) => i + 1,
                None => steps.len(),
            },
        };
        let todo = &steps[start..];
        if let Some(last) = todo.last() {
            let mut m = json!({
                "new_tag": last.tag,
                "steps": todo.iter().map(|s| json!({"new_sqlite_classes": s.new_sqlite_classes})).collect::<Vec<_>>(),
            });
            if let Some(t) = deployed_tag {
                m["old_tag"] = json!(t);
            }
            meta["migrations"] = m;
        }
        Ok(meta)
    }

    /// Poll `/v1/health` until it answers 200 with the service name.
    pub fn wait_healthy(&self, worker_url: &str) -> Result<(), Error> {
        let http = stateful_ci_net::client(Duration::from_secs(10));
        let (base, host) = worker_endpoint(self.client, worker_url, self.health_base.as_deref())?;
        let url = format!("{base}/v1/health");
        let started = Instant::now();
        let mut last: String;
        let mut pause = Duration::from_millis(100);
        loop {
            let mut req = http.get(&url);
            if let Some(h) = &host {
                req = req.header("host", h);
            }
            match req.send() {
                Ok(r) if r.status().is_success() => {
                    let body: Json = r.json().unwrap_or(Json::Null);
                    if body.get("service").and_then(Json::as_str) == Some("stateful-ci") {
                        return Ok(());
                    }
                    last = "an answer that is not stateful-ci's health document".into();
                }
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => {
                    last = if e.is_timeout() {
                        "timed out".into()
                    } else {
                        "connection failed".into()
                    }
                }
            }
            if started.elapsed() > self.health_timeout {
                return Err(Error::user(
                    format!(
                        "the Worker at {worker_url} did not answer /v1/health within {}s (last: {last})",
                        self.health_timeout.as_secs()
                    ),
                    "a new workers.dev route can take a minute to appear: run the same command again (nothing is redone)",
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// Where to send requests for the Worker at `worker_url`: `explicit` if
/// given; through the API origin with the workers.dev `Host` when the API
/// base is overridden (an emulator serves workers.dev hosts there); else the
/// URL itself. Returns (base URL without a trailing slash, Host header).
pub fn worker_endpoint(
    client: &Client,
    worker_url: &str,
    explicit: Option<&str>,
) -> Result<(String, Option<String>), Error> {
    let api = client.is_overridden().then(|| client.base());
    route_to_worker(api, worker_url, explicit)
}

/// [`worker_endpoint`] for callers without a [`Client`] (`status`, the
/// dashboard): `api_override` is `CLOUDFLARE_API_BASE_URL` when it is set
/// to something other than Cloudflare's API.
pub fn route_to_worker(
    api_override: Option<&str>,
    worker_url: &str,
    explicit: Option<&str>,
) -> Result<(String, Option<String>), Error> {
    Ok(match (explicit, api_override) {
        (Some(b), _) => (b.trim_end_matches('/').to_string(), None),
        (None, Some(api)) => {
            let base = stateful_ci_net::reqwest::Url::parse(api).map_err(|e| {
                Error::user(
                    format!(
                        "{} {api:?} is not a URL: {e}",
                        crate::cloudflare::BASE_URL_ENV
                    ),
                    "set it to http(s)://HOST[:PORT]/client/v4",
                )
            })?;
            let origin = base.origin().ascii_serialization();
            let host = worker_url
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            (origin, Some(host))
        }
        (None, None) => (worker_url.trim_end_matches('/').to_string(), None),
    })
}

/// `CLOUDFLARE_API_BASE_URL` when it names something other than
/// Cloudflare's API (the emulator), for [`route_to_worker`].
pub fn api_override_from_env() -> Option<String> {
    let base = Client::base_from_env();
    (base != crate::cloudflare::DEFAULT_BASE_URL).then_some(base)
}

/// Keep the admin token where `status` and the dashboard look
/// ([`secrets::Entry::AdminToken`]); returns the note saying where (never
/// the token).
fn store_admin_token(worker_url: &str, value: &str, origin: &str) -> String {
    match secrets::set(&secrets::Entry::admin_token(worker_url), value) {
        Ok(place) => format!(
            "{ADMIN_TOKEN} {origin} and stored in {place}, where `stateful-ci status` finds it"
        ),
        Err(e) => format!(
            "{ADMIN_TOKEN} {origin} but NOT stored ({e}); `stateful-ci status` needs it in {ADMIN_TOKEN_ENV}: choose a value, put it as the Worker's {ADMIN_TOKEN} with the Cloudflare dashboard (Worker settings, Variables and Secrets) and set {ADMIN_TOKEN_ENV} to it"
        ),
    }
}

pub(crate) fn random_hex(n: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).map_err(|e| {
        Error::user(
            format!("the OS random number generator failed: {e}"),
            "run the command again; if it persists, the system's entropy source is broken",
        )
    })?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
