//! The deployment record: the `[deployment]` table of `stateful-ci.toml`,
//! edited with toml_edit so the user's comments and layout stay. It names
//! what this tool created, which is all `destroy` deletes, and the Worker's
//! settings: each allowed repository with its own default branch and ids
//! (`[[deployment.repository]]`). It never holds a secret.
//!
//! It no longer writes `[backend] url`: `save`/`restore` ignore the backend
//! URL and audience of the checked-out tree (a pull request's tree may name
//! any URL); the workflow passes them (repository secret
//! `STATEFUL_CI_BACKEND_URL`).

use std::path::{Path, PathBuf};

use stateful_ci_runtime::Error;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use super::repos::Repository;

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

    pub fn read(&self) -> Result<Option<Record>, Error> {
        let doc = self.load()?;
        let Some(t) = doc.get("deployment").and_then(Item::as_table) else {
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
            .get("repository")
            .and_then(Item::as_array_of_tables)
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let f = |k: &str| r.get(k).and_then(Item::as_str).map(str::to_string);
                        Repository {
                            name: f("name").unwrap_or_default(),
                            default_branch: f("default_branch").unwrap_or_default(),
                            id: f("id"),
                            owner_id: f("owner_id"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        if repositories.is_empty() {
            let names: Vec<String> = list("repositories");
            repositories = names
                .into_iter()
                .map(|name| Repository {
                    name,
                    ..Repository::default()
                })
                .collect();
        }
        let Some(account_id) = s("account_id") else {
            return Err(Error::user(
                format!("{}: [deployment] has no account_id", self.path.display()),
                "this table is written by `stateful-ci deploy`; remove it if it was edited by hand, then deploy again",
            ));
        };
        Ok(Some(Record {
            account_id,
            script: s("script").unwrap_or_default(),
            bucket: s("bucket").unwrap_or_default(),
            database: s("database").unwrap_or_default(),
            database_id: s("database_id"),
            worker_url: s("worker_url"),
            worker_version: s("worker_version"),
            worker_config: s("worker_config"),
            do_migration_tag: s("do_migration_tag"),
            d1_migrations: list("d1_migrations"),
            created: list("created"),
            repositories,
            default_branch: s("default_branch"),
            require_protected: t
                .get("require_protected")
                .and_then(Item::as_bool)
                .unwrap_or(false),
            audience: s("audience"),
        }))
    }

    /// Write the record.
    pub fn write(&self, r: &Record) -> Result<(), Error> {
        let mut doc = self.load()?;
        if !doc.contains_key("deployment") {
            let mut t = Table::new();
            t.decor_mut().set_prefix("\n# Written by `stateful-ci deploy`: what it created in your Cloudflare account.\n");
            doc.insert("deployment", Item::Table(t));
        }
        let t = doc["deployment"].as_table_mut().expect("a table");
        let mut set = |k: &str, v: Option<&str>| match v {
            Some(v) => {
                t.insert(k, value(v));
            }
            None => {
                t.remove(k);
            }
        };
        set("account_id", Some(&r.account_id));
        set("script", Some(&r.script));
        set("bucket", Some(&r.bucket));
        set("database", Some(&r.database));
        set("database_id", r.database_id.as_deref());
        set("worker_url", r.worker_url.as_deref());
        set("worker_version", r.worker_version.as_deref());
        set("worker_config", r.worker_config.as_deref());
        set("do_migration_tag", r.do_migration_tag.as_deref());
        t.insert(
            "d1_migrations",
            value(r.d1_migrations.iter().collect::<Array>()),
        );
        t.insert("created", value(r.created.iter().collect::<Array>()));
        t.insert(
            "repositories",
            value(
                r.repositories
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect::<Array>(),
            ),
        );
        set_opt(t, "default_branch", r.default_branch.as_deref());
        if r.require_protected {
            t.insert("require_protected", value(true));
        } else {
            t.remove("require_protected");
        }
        set_opt(t, "audience", r.audience.as_deref());
        let mut aot = ArrayOfTables::new();
        for x in r
            .repositories
            .iter()
            .filter(|x| !x.default_branch.is_empty())
        {
            let mut e = Table::new();
            e.insert("name", value(x.name.as_str()));
            e.insert("default_branch", value(x.default_branch.as_str()));
            set_opt(&mut e, "id", x.id.as_deref());
            set_opt(&mut e, "owner_id", x.owner_id.as_deref());
            aot.push(e);
        }
        if aot.is_empty() {
            t.remove("repository");
        } else {
            t.insert("repository", Item::ArrayOfTables(aot));
        }
        self.save(&doc)
    }

    /// Remove the record, and `[backend] url` if it points at that Worker.
    pub fn clear(&self, r: &Record) -> Result<(), Error> {
        if !self.path.exists() {
            return Ok(());
        }
        let mut doc = self.load()?;
        doc.remove("deployment");
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

pub fn default_config_path(dir: &Path) -> PathBuf {
    dir.join(stateful_ci_runtime::config::CONFIG_FILE)
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
        stateful_ci_runtime::config::parse_toml(&text).unwrap();
        f.clear(&r).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            !text.contains("deployment") && !text.contains("workers.dev"),
            "{text}"
        );
        assert!(text.contains("# my comment"));
    }
}
