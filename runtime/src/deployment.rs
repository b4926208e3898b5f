//! The deployment record: the `[deployment]` table of `stateful-ci.toml`,
//! the one owner of its keys ([`key`]) and of its reader and writer
//! ([`ConfigFile`]). `deploy`/`upgrade`/`destroy` write and clear it, the
//! dashboard and `status` read it (for the Worker URL and the migration
//! drift check), and [`crate::config`] skips the table by the same name.
//! Edited with toml_edit so the user's comments and layout stay. It names
//! what `deploy` created, which is all `destroy` deletes, and the Worker's
//! settings: each allowed repository with its own default branch and ids
//! (`[[deployment.repository]]`). It never holds a secret (the admin token
//! lives in the OS keyring, see the installer's `secrets` module).
//!
//! It no longer writes `[backend] url`: `save`/`restore` ignore the backend
//! URL and audience of the checked-out tree (a pull request's tree may name
//! any URL); the workflow passes them (repository secret
//! `STATEFUL_CI_BACKEND_URL`).

use std::path::PathBuf;

use serde::Serialize;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use crate::Error;

/// The record's keys, defined once: every reader and writer uses these.
pub mod key {
    pub const TABLE: &str = "deployment";
    pub const ACCOUNT_ID: &str = "account_id";
    pub const SCRIPT: &str = "script";
    pub const BUCKET: &str = "bucket";
    pub const DATABASE: &str = "database";
    pub const DATABASE_ID: &str = "database_id";
    pub const WORKER_URL: &str = "worker_url";
    pub const WORKER_VERSION: &str = "worker_version";
    pub const WORKER_CONFIG: &str = "worker_config";
    pub const DO_MIGRATION_TAG: &str = "do_migration_tag";
    /// The D1 migrations this deploy applied (file names, in order), as the
    /// Worker's `/v1/health` `migrations` lists them.
    pub const D1_MIGRATIONS: &str = "d1_migrations";
    pub const CREATED: &str = "created";
    /// Names only (older records; still written for a quick look).
    pub const REPOSITORIES: &str = "repositories";
    /// `[[deployment.repository]]`: name, default_branch, id, owner_id.
    pub const REPOSITORY: &str = "repository";
    pub const REPOSITORY_NAME: &str = "name";
    pub const REPOSITORY_DEFAULT_BRANCH: &str = "default_branch";
    pub const REPOSITORY_ID: &str = "id";
    pub const REPOSITORY_OWNER_ID: &str = "owner_id";
    pub const DEFAULT_BRANCH: &str = "default_branch";
    pub const REQUIRE_PROTECTED: &str = "require_protected";
    pub const AUDIENCE: &str = "audience";
}

/// One allowed repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Repository {
    /// `OWNER/NAME`.
    pub name: String,
    /// Its default branch, e.g. `master` (empty: not known yet).
    pub default_branch: String,
    /// GitHub's numeric repository id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// GitHub's numeric owner id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub account_id: String,
    pub script: String,
    pub bucket: String,
    pub database: String,
    pub database_id: Option<String>,
    pub worker_url: Option<String>,
    pub worker_version: Option<String>,
    /// Hash of the non-secret Worker settings (bindings and vars).
    pub worker_config: Option<String>,
    pub do_migration_tag: Option<String>,
    pub d1_migrations: Vec<String>,
    /// Which of `bucket`, `database`, `script` this tool created.
    pub created: Vec<String>,
    /// The Worker's non-secret settings, reused by `upgrade`: each allowed
    /// repository (a record from before per-repository branches gives
    /// entries with an empty `default_branch`).
    pub repositories: Vec<Repository>,
    /// `[deployment] default_branch`: init's record of the clone's default
    /// branch, or an older deploy's single value. Read, kept, never written.
    pub default_branch: Option<String>,
    pub require_protected: bool,
    pub audience: Option<String>,
}

impl Record {
    pub fn created(&self, what: &str) -> bool {
        self.created.iter().any(|c| c == what)
    }
    pub fn mark_created(&mut self, what: &str) {
        if !self.created(what) {
            self.created.push(what.to_string());
        }
    }
}

impl Record {
    /// Read the record out of a parsed file: `Ok(None)` without the table,
    /// an error (a sentence) when the table lacks its account.
    pub fn from_doc(doc: &DocumentMut) -> Result<Option<Record>, String> {
        let Some(t) = doc.get(key::TABLE).and_then(Item::as_table) else {
            return Ok(None);
        };
        let s = |k: &str| t.get(k).and_then(Item::as_str).map(str::to_string);
        let list = |k: &str| {
            t.get(k)
                .and_then(Item::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut repositories: Vec<Repository> = t
            .get(key::REPOSITORY)
            .and_then(Item::as_array_of_tables)
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let f = |k: &str| r.get(k).and_then(Item::as_str).map(str::to_string);
                        Repository {
                            name: f(key::REPOSITORY_NAME).unwrap_or_default(),
                            default_branch: f(key::REPOSITORY_DEFAULT_BRANCH).unwrap_or_default(),
                            id: f(key::REPOSITORY_ID),
                            owner_id: f(key::REPOSITORY_OWNER_ID),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if repositories.is_empty() {
            let names: Vec<String> = list(key::REPOSITORIES);
            repositories = names
                .into_iter()
                .map(|name| Repository {
                    name,
                    ..Repository::default()
                })
                .collect();
        }
        let Some(account_id) = s(key::ACCOUNT_ID) else {
            return Err(format!("[{}] has no {}", key::TABLE, key::ACCOUNT_ID));
        };
        Ok(Some(Record {
            account_id,
            script: s(key::SCRIPT).unwrap_or_default(),
            bucket: s(key::BUCKET).unwrap_or_default(),
            database: s(key::DATABASE).unwrap_or_default(),
            database_id: s(key::DATABASE_ID),
            worker_url: s(key::WORKER_URL),
            worker_version: s(key::WORKER_VERSION),
            worker_config: s(key::WORKER_CONFIG),
            do_migration_tag: s(key::DO_MIGRATION_TAG),
            d1_migrations: list(key::D1_MIGRATIONS),
            created: list(key::CREATED),
            repositories,
            default_branch: s(key::DEFAULT_BRANCH),
            require_protected: t
                .get(key::REQUIRE_PROTECTED)
                .and_then(Item::as_bool)
                .unwrap_or(false),
            audience: s(key::AUDIENCE),
        }))
    }

    /// Read leniently, for views (`status`, the dashboard): `None` when the
    /// text is not TOML, has no table or the table no account.
    pub fn from_toml(text: &str) -> Option<Record> {
        let doc: DocumentMut = text.parse().ok()?;
        Record::from_doc(&doc).ok().flatten()
    }
}

pub struct ConfigFile {
    pub path: PathBuf,
}

impl ConfigFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ConfigFile { path: path.into() }
    }

    fn load(&self) -> Result<DocumentMut, Error> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text.parse::<DocumentMut>().map_err(|e| {
                Error::user(
                    format!("{}: not valid TOML: {e}", self.path.display()),
                    "fix the file (or move it away) and run the command again",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DocumentMut::new()),
            Err(e) => Err(Error::user(
                format!("cannot read {}: {e}", self.path.display()),
                "check the file's permissions",
            )),
        }
    }

    fn save(&self, doc: &DocumentMut) -> Result<(), Error> {
        let tmp = self.path.with_extension("toml.tmp");
        std::fs::write(&tmp, doc.to_string())
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| {
                Error::user(
                    format!("cannot write {}: {e}", self.path.display()),
                    "check the directory's permissions; the Cloudflare resources exist, so run the command again once it is writable",
                )
            })
    }

    /// The record, `None` when the file or the table is absent.
    pub fn read(&self) -> Result<Option<Record>, Error> {
        let doc = self.load()?;
        Record::from_doc(&doc).map_err(|e| {
            Error::user(
                format!("{}: {e}", self.path.display()),
                "this table is written by `stateful-ci deploy`; remove it if it was edited by hand, then deploy again",
            )
        })
    }
    /// Write the record.
    pub fn write(&self, r: &Record) -> Result<(), Error> {
        let mut doc = self.load()?;
        if !doc.contains_key(key::TABLE) {
            let mut t = Table::new();
            t.decor_mut().set_prefix("\n# Written by `stateful-ci deploy`: what it created in your Cloudflare account.\n");
            doc.insert(key::TABLE, Item::Table(t));
        }
        let t = doc[key::TABLE].as_table_mut().expect("a table");
        let mut set = |k: &str, v: Option<&str>| match v {
            Some(v) => {
                t.insert(k, value(v));
            }
            None => {
                t.remove(k);
            }
        };
        set(key::ACCOUNT_ID, Some(&r.account_id));
        set(key::SCRIPT, Some(&r.script));
        set(key::BUCKET, Some(&r.bucket));
        set(key::DATABASE, Some(&r.database));
        set(key::DATABASE_ID, r.database_id.as_deref());
        set(key::WORKER_URL, r.worker_url.as_deref());
        set(key::WORKER_VERSION, r.worker_version.as_deref());
        set(key::WORKER_CONFIG, r.worker_config.as_deref());
        set(key::DO_MIGRATION_TAG, r.do_migration_tag.as_deref());
        t.insert(
            key::D1_MIGRATIONS,
            value(r.d1_migrations.iter().collect::<Array>()),
        );
        t.insert(key::CREATED, value(r.created.iter().collect::<Array>()));
        t.insert(
            key::REPOSITORIES,
            value(
                r.repositories
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Array>(),
            ),
        );
        set_opt(t, key::DEFAULT_BRANCH, r.default_branch.as_deref());
        if r.require_protected {
            t.insert(key::REQUIRE_PROTECTED, value(true));
        } else {
            t.remove(key::REQUIRE_PROTECTED);
        }
        set_opt(t, key::AUDIENCE, r.audience.as_deref());
        let mut aot = ArrayOfTables::new();
        for x in r
            .repositories
            .iter()
            .filter(|x| !x.default_branch.is_empty())
        {
            let mut e = Table::new();
            e.insert(key::REPOSITORY_NAME, value(x.name.as_str()));
            e.insert(
                key::REPOSITORY_DEFAULT_BRANCH,
                value(x.default_branch.as_str()),
            );
            set_opt(&mut e, key::REPOSITORY_ID, x.id.as_deref());
            set_opt(&mut e, key::REPOSITORY_OWNER_ID, x.owner_id.as_deref());
            aot.push(e);
        }
        if aot.is_empty() {
            t.remove(key::REPOSITORY);
        } else {
            t.insert(key::REPOSITORY, Item::ArrayOfTables(aot));
        }
        self.save(&doc)
    }

    /// Remove the record, and `[backend] url` if it points at that Worker.
    pub fn clear(&self, r: &Record) -> Result<(), Error> {
        if !self.path.exists() {
            return Ok(());
        }
        let mut doc = self.load()?;
        doc.remove(key::TABLE);
        if let Some(b) = doc.get_mut("backend").and_then(Item::as_table_mut) {
            if b.get("url").and_then(Item::as_str) == r.worker_url.as_deref()
                && r.worker_url.is_some()
            {
                b.remove("url");
            }
        }
        if doc
            .get("backend")
            .and_then(Item::as_table)
            .is_some_and(Table::is_empty)
        {
            doc.remove("backend");
        }
        self.save(&doc)
    }
}

fn set_opt(t: &mut Table, k: &str, v: Option<&str>) {
    match v {
        Some(v) => {
            t.insert(k, value(v));
        }
        None => {
            t.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record written before per-repository default branches keeps its
    /// names; the branch is then resolved again (never assumed).
    #[test]
    fn an_older_record_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("stateful-ci.toml");
        std::fs::write(
            &p,
            "preset = \"rust\"\n[deployment]\naccount_id = \"a\"\nrepositories = [\"octo/app\"]\ndefault_branch = \"main\"\n",
        )
        .unwrap();
        let r = ConfigFile::new(&p).read().unwrap().unwrap();
        assert_eq!(r.repositories.len(), 1);
        assert_eq!(r.repositories[0].name, "octo/app");
        assert_eq!(r.repositories[0].default_branch, "");
        assert_eq!(r.default_branch.as_deref(), Some("main"));
    }

    #[test]
    fn the_record_round_trips_and_keeps_comments() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("stateful-ci.toml");
        std::fs::write(&p, "# my comment\npreset = \"rust\" # inline\n").unwrap();
        let f = ConfigFile::new(&p);
        assert_eq!(f.read().unwrap(), None);
        let mut r = Record {
            account_id: "a".repeat(32),
            script: "stateful-ci".into(),
            bucket: "stateful-ci".into(),
            database: "stateful-ci".into(),
            database_id: Some("uuid".into()),
            worker_url: Some("https://stateful-ci.x.workers.dev".into()),
            d1_migrations: vec!["0001_init.sql".into()],
            repositories: vec![
                Repository {
                    name: "octo/app".into(),
                    default_branch: "master".into(),
                    id: Some("424242".into()),
                    owner_id: Some("2020".into()),
                },
                Repository {
                    name: "octo/lib".into(),
                    default_branch: "trunk".into(),
                    ..Repository::default()
                },
            ],
            require_protected: true,
            ..Record::default()
        };
        r.mark_created("bucket");
        f.write(&r).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("# my comment") && text.contains("# inline"),
            "{text}"
        );
        assert!(
            text.contains("worker_url = \"https://stateful-ci.x.workers.dev\""),
            "{text}"
        );
        assert!(
            !text.contains("[backend]"),
            "the backend URL is never written where a checkout could change it: {text}"
        );
        assert!(text.contains("[[deployment.repository]]"), "{text}");
        assert_eq!(f.read().unwrap(), Some(r.clone()));
        // The runtime's parser still accepts the file.
        crate::config::parse_toml(&text).unwrap();
        f.clear(&r).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            !text.contains("deployment") && !text.contains("workers.dev"),
            "{text}"
        );
        assert!(text.contains("# my comment"));
    }
}
