//! The plan: a pure function from what exists (observed through the API,
//! plus the deployment record) and what this binary wants, to the steps
//! that close the gap. Nothing here does I/O; `deploy --dry-run` prints it
//! and the tests snapshot it.

use std::fmt;

use crate::bundle::{DoStep, semver_of};

use super::record::Record;

/// What exists in the account, read without changing anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub account_subdomain: Option<String>,
    pub bucket_exists: bool,
    pub database_id: Option<String>,
    pub migrations_table: bool,
    pub applied_migrations: Vec<String>,
    pub script: Option<ScriptState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptState {
    pub migration_tag: Option<String>,
    pub secrets: Vec<String>,
    pub route_enabled: bool,
    /// Cron Triggers (expressions) installed on the script.
    pub schedules: Vec<String>,
}

/// What this binary wants to be deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub account_id: String,
    pub script: String,
    pub bucket: String,
    pub database: String,
    pub version: String,
    pub migrations: Vec<String>,
    pub do_steps: Vec<DoStep>,
    /// Hash of bindings and vars (see `worker_config_hash`).
    pub worker_config: String,
    pub secrets: Vec<String>,
    /// The Cron Triggers that run the retention sweep.
    pub schedules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateBucket(String),
    CreateDatabase(String),
    CreateMigrationsTable,
    ApplyMigration(String),
    UploadWorker {
        version: String,
        old_tag: Option<String>,
        new_tags: Vec<String>,
        reason: String,
    },
    PutSecret(String),
    EnableRoute,
    /// Replace the script's Cron Triggers with these.
    SetSchedules(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub account_id: String,
    pub steps: Vec<Step>,
    /// What is already in place, for the printout.
    pub unchanged: Vec<String>,
    pub worker_url: String,
    /// The record needs writing even if no step runs.
    pub record_stale: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    NoSubdomain,
    Downgrade {
        deployed: String,
        ours: String,
    },
    UnknownTag {
        deployed: String,
        known: Vec<String>,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NoSubdomain => {
                f.write_str("the Cloudflare account has no workers.dev subdomain yet")
            }
            PlanError::Downgrade { deployed, ours } => write!(
                f,
                "the deployed Worker is version {deployed}, newer than this binary's {ours}"
            ),
            PlanError::UnknownTag { deployed, known } => write!(
                f,
                "the deployed Worker's Durable Object migration tag {deployed:?} is not one this binary knows ({})",
                known.join(", ")
            ),
        }
    }
}

impl PlanError {
    pub fn hint(&self) -> &'static str {
        match self {
            PlanError::NoSubdomain => {
                "open Workers & Pages in the Cloudflare dashboard once to choose a workers.dev subdomain, then deploy again"
            }
            PlanError::Downgrade { .. } => {
                "install the newer stateful-ci (npx stateful-ci@latest), or pass --force to deploy this older Worker anyway"
            }
            PlanError::UnknownTag { .. } => {
                "the Worker was deployed by a newer stateful-ci; use that version (a Durable Object migration cannot be undone)"
            }
        }
    }
}

pub fn plan(
    want: &Desired,
    seen: &Observed,
    record: Option<&Record>,
    force: bool,
) -> Result<Plan, PlanError> {
    let Some(sub) = &seen.account_subdomain else {
        return Err(PlanError::NoSubdomain);
    };
    let worker_url = format!("https://{}.{sub}.workers.dev", want.script);
    let mut steps = Vec::new();
    let mut unchanged = Vec::new();
    let record = record.filter(|r| r.account_id == want.account_id && r.script == want.script);

    if let (Some(r), false) = (record, force) {
        if let (Some(dv), Some(ours)) = (r.worker_version.as_deref(), semver_of(&want.version)) {
            if semver_of(dv).is_some_and(|d| d > ours) {
                return Err(PlanError::Downgrade {
                    deployed: dv.to_string(),
                    ours: want.version.clone(),
                });
            }
        }
    }

    if seen.bucket_exists {
        unchanged.push(format!("R2 bucket {}", want.bucket));
    } else {
        steps.push(Step::CreateBucket(want.bucket.clone()));
    }
    if seen.database_id.is_some() {
        unchanged.push(format!("D1 database {}", want.database));
    } else {
        steps.push(Step::CreateDatabase(want.database.clone()));
    }
    if !seen.migrations_table || seen.database_id.is_none() {
        steps.push(Step::CreateMigrationsTable);
    }
    let pending: Vec<&String> = want
        .migrations
        .iter()
        .filter(|m| !seen.applied_migrations.contains(m))
        .collect();
    if pending.is_empty() {
        unchanged.push(format!(
            "D1 migrations ({} applied)",
            seen.applied_migrations.len()
        ));
    }
    for m in pending {
        steps.push(Step::ApplyMigration(m.clone()));
    }

    let tags: Vec<String> = want.do_steps.iter().map(|s| s.tag.clone()).collect();
    let deployed_tag = seen.script.as_ref().and_then(|s| s.migration_tag.clone());
    let new_tags: Vec<String> = match &deployed_tag {
        None => tags.clone(),
        Some(t) => match tags.iter().position(|k| k == t) {
            Some(i) => tags[i + 1..].to_vec(),
            None if force => Vec::new(),
            None => {
                return Err(PlanError::UnknownTag {
                    deployed: t.clone(),
                    known: tags,
                });
            }
        },
    };
    let reason = match (&seen.script, record) {
        (None, _) => Some("not deployed".to_string()),
        (Some(_), None) => Some("no deployment record for it".to_string()),
        (Some(_), Some(r)) => {
            if r.worker_version.as_deref() != Some(want.version.as_str()) {
                Some(format!(
                    "version {} -> {}",
                    r.worker_version.as_deref().unwrap_or("unknown"),
                    want.version
                ))
            } else if r.worker_config.as_deref() != Some(want.worker_config.as_str()) {
                Some("settings changed".to_string())
            } else if !new_tags.is_empty() {
                Some("new Durable Object migration".to_string())
            } else {
                None
            }
        }
    };
    let uploads = reason.is_some();
    match reason {
        Some(reason) => steps.push(Step::UploadWorker {
            version: want.version.clone(),
            old_tag: deployed_tag,
            new_tags,
            reason,
        }),
        None => unchanged.push(format!("Worker {} {}", want.script, want.version)),
    }
    let have_secrets = seen
        .script
        .as_ref()
        .map(|s| s.secrets.clone())
        .unwrap_or_default();
    for s in &want.secrets {
        if !have_secrets.contains(s) {
            steps.push(Step::PutSecret(s.clone()));
        }
    }
    // Cron Triggers outlive uploads (an upload leaves them alone), so an
    // upgrade keeps them; they are set when missing or different.
    match &seen.script {
        Some(s) if s.schedules == want.schedules => {
            unchanged.push(format!("Cron Triggers {}", want.schedules.join(", ")))
        }
        _ => steps.push(Step::SetSchedules(want.schedules.clone())),
    }
    if seen.script.as_ref().is_some_and(|s| s.route_enabled) {
        unchanged.push(format!("workers.dev route {worker_url}"));
    } else {
        steps.push(Step::EnableRoute);
    }
    let record_stale = uploads
        || record.is_none_or(|r| {
            r.worker_url.as_deref() != Some(worker_url.as_str())
                || r.database_id != seen.database_id
                || r.d1_migrations != want.migrations
        });
    Ok(Plan {
        account_id: want.account_id.clone(),
        steps,
        unchanged,
        worker_url,
        record_stale,
    })
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateBucket(n) => write!(f, "create R2 bucket {n}"),
            Step::CreateDatabase(n) => write!(f, "create D1 database {n}"),
            Step::CreateMigrationsTable => {
                f.write_str("create table d1_migrations (as wrangler does)")
            }
            Step::ApplyMigration(m) => write!(f, "apply D1 migration {m}"),
            Step::UploadWorker {
                version,
                old_tag,
                new_tags,
                reason,
            } => {
                write!(f, "upload Worker {version} ({reason})")?;
                if !new_tags.is_empty() {
                    write!(
                        f,
                        "; Durable Object migration {} -> {}",
                        old_tag.as_deref().unwrap_or("none"),
                        new_tags.join(" -> ")
                    )?;
                }
                Ok(())
            }
            Step::PutSecret(s) => write!(f, "set secret {s} (generated once)"),
            Step::EnableRoute => f.write_str("enable the workers.dev route"),
            Step::SetSchedules(c) => {
                write!(f, "set Cron Triggers {} (retention sweep)", c.join(", "))
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "account {}", self.account_id)?;
        writeln!(f, "worker URL {}", self.worker_url)?;
        if self.steps.is_empty() {
            writeln!(f, "nothing to change")?;
        } else {
            writeln!(f, "to do:")?;
            for s in &self.steps {
                writeln!(f, "  + {s}")?;
            }
        }
        if !self.unchanged.is_empty() {
            writeln!(f, "in place:")?;
            for u in &self.unchanged {
                writeln!(f, "  = {u}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Desired {
        Desired {
            account_id: "a".repeat(32),
            script: "stateful-ci".into(),
            bucket: "stateful-ci".into(),
            database: "stateful-ci".into(),
            version: "0.2.0+aaaaaaaaaaaa".into(),
            migrations: vec!["0001_init.sql".into(), "0002_more.sql".into()],
            do_steps: vec![
                DoStep {
                    tag: "v1".into(),
                    new_sqlite_classes: vec!["A".into()],
                },
                DoStep {
                    tag: "v2".into(),
                    new_sqlite_classes: vec!["B".into()],
                },
            ],
            worker_config: "cfg".into(),
            secrets: vec!["ADMIN_TOKEN".into()],
            schedules: vec!["41 * * * *".into()],
        }
    }

    fn deployed(version: &str, tag: &str) -> (Observed, Record) {
        let seen = Observed {
            account_subdomain: Some("team".into()),
            bucket_exists: true,
            database_id: Some("db".into()),
            migrations_table: true,
            applied_migrations: vec!["0001_init.sql".into()],
            script: Some(ScriptState {
                migration_tag: Some(tag.into()),
                secrets: vec!["ADMIN_TOKEN".into()],
                route_enabled: true,
                schedules: vec!["41 * * * *".into()],
            }),
        };
        let rec = Record {
            account_id: "a".repeat(32),
            script: "stateful-ci".into(),
            worker_version: Some(version.into()),
            worker_config: Some("cfg".into()),
            ..Record::default()
        };
        (seen, rec)
    }

    #[test]
    fn an_upgrade_applies_only_what_is_new() {
        let (seen, rec) = deployed("0.1.0+bbbbbbbbbbbb", "v1");
        let p = plan(&want(), &seen, Some(&rec), false).unwrap();
        assert_eq!(
            p.steps,
            vec![
                Step::ApplyMigration("0002_more.sql".into()),
                Step::UploadWorker {
                    version: "0.2.0+aaaaaaaaaaaa".into(),
                    old_tag: Some("v1".into()),
                    new_tags: vec!["v2".into()],
                    reason: "version 0.1.0+bbbbbbbbbbbb -> 0.2.0+aaaaaaaaaaaa".into(),
                },
            ]
        );
    }

    #[test]
    fn a_downgrade_is_refused_unless_forced() {
        let (seen, rec) = deployed("0.3.0+cccccccccccc", "v2");
        let e = plan(&want(), &seen, Some(&rec), false).unwrap_err();
        assert!(matches!(e, PlanError::Downgrade { .. }), "{e}");
        assert!(e.hint().contains("--force"));
        let p = plan(&want(), &seen, Some(&rec), true).unwrap();
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::UploadWorker { new_tags, .. } if new_tags.is_empty()))
        );
    }

    #[test]
    fn an_unknown_durable_object_tag_is_refused() {
        let (seen, rec) = deployed("0.2.0+aaaaaaaaaaaa", "v9");
        let e = plan(&want(), &seen, Some(&rec), false).unwrap_err();
        assert!(e.to_string().contains("\"v9\""), "{e}");
    }

    #[test]
    fn no_subdomain_is_an_error_with_a_fix() {
        let e = plan(&want(), &Observed::default(), None, false).unwrap_err();
        assert_eq!(e, PlanError::NoSubdomain);
        assert!(e.hint().contains("workers.dev subdomain"));
    }

    #[test]
    fn cron_triggers_are_set_when_missing_and_kept_otherwise() {
        let (mut seen, rec) = deployed("0.2.0+aaaaaaaaaaaa", "v2");
        seen.applied_migrations.push("0002_more.sql".into());
        let p = plan(&want(), &seen, Some(&rec), false).unwrap();
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert!(
            p.unchanged
                .iter()
                .any(|u| u.contains("Cron Triggers 41 * * * *"))
        );
        seen.script.as_mut().unwrap().schedules.clear();
        let p = plan(&want(), &seen, Some(&rec), false).unwrap();
        assert_eq!(p.steps, vec![Step::SetSchedules(vec!["41 * * * *".into()])]);
        let fresh = plan(
            &want(),
            &Observed {
                account_subdomain: Some("team".into()),
                ..Observed::default()
            },
            None,
            false,
        )
        .unwrap();
        let upload = fresh
            .steps
            .iter()
            .position(|s| matches!(s, Step::UploadWorker { .. }))
            .unwrap();
        let cron = fresh
            .steps
            .iter()
            .position(|s| matches!(s, Step::SetSchedules(_)))
            .unwrap();
        assert!(cron > upload, "triggers need the script: {:?}", fresh.steps);
    }

    #[test]
    fn changed_settings_reupload_without_migrations() {
        let (mut seen, mut rec) = deployed("0.2.0+aaaaaaaaaaaa", "v2");
        seen.applied_migrations.push("0002_more.sql".into());
        rec.worker_config = Some("old".into());
        let p = plan(&want(), &seen, Some(&rec), false).unwrap();
        assert_eq!(p.steps.len(), 1);
        assert!(
            p.steps[0].to_string().contains("settings changed"),
            "{}",
            p.steps[0]
        );
    }
}
