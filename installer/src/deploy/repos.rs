//! Which repositories may use the backend, each with **its own** default
//! branch and, when known, GitHub's immutable ids: the `REPOSITORIES`
//! setting of the Worker (`stateful_ci_worker_core::config::vars`).
//!
//! The default branch decides which runs are trusted, so it is learned,
//! never assumed (issue 10, item 1): from `--default-branch`, the deployment
//! record (`[[deployment.repository]]`), the clone's `origin/HEAD` (what
//! `git clone` records and `stateful-ci init` detects), init's or an older
//! deploy's `[deployment] default_branch`, or by asking on a terminal;
//! otherwise deploy stops and says how to give it.
//!
//! Ids (issue 10, item 6): `--repository-id OWNER/NAME=ID` or the record
//! give them; without one the Worker pins the ids of the first verified token
//! for that name (trust on first use, see docs/TRUST.md). GitHub's API is not
//! asked: deploy needs no GitHub credentials.
//!
//! Pure except [`clone_default_branch`] and [`origin_repository`] (git).

use std::path::Path;

use crate::Error;

/// Env var read like `--default-branch`.
pub const DEFAULT_BRANCH_ENV: &str = "STATEFUL_CI_DEFAULT_BRANCH";

/// One allowed repository (defined with the deployment record that keeps it).
pub use stateful_ci_runtime::deployment::Repository;

/// The Worker's `REPOSITORIES` value.
pub fn worker_var(repos: &[Repository]) -> String {
    serde_json::to_string(repos).expect("plain strings serialise")
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// A branch name as `deploy` accepts it: `master` or `refs/heads/master`,
/// no spaces or control characters (the Worker checks the rest).
fn valid_branch(b: &str) -> bool {
    let b = b.strip_prefix("refs/heads/").unwrap_or(b);
    !b.is_empty()
        && b.len() <= 200
        && !b.starts_with('-')
        && !b.contains("..")
        && b.bytes()
            .all(|c| c.is_ascii_graphic() && !b"~^:?*[\\".contains(&c))
}

pub fn validate(repos: &[Repository]) -> Result<(), Error> {
    if repos.is_empty() {
        return Err(Error::user(
            "no repository is allowed to use the backend",
            "pass --repository OWNER/NAME (repeatable), or run in a clone whose `origin` remote is on GitHub",
        ));
    }
    for (i, r) in repos.iter().enumerate() {
        let parts: Vec<&str> = r.name.split('/').collect();
        if parts.len() != 2
            || parts
                .iter()
                .any(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return Err(Error::user(
                format!("--repository {:?} is not OWNER/NAME", r.name),
                "pass the GitHub repository as OWNER/NAME, e.g. octo-org/app",
            ));
        }
        if repos[..i].iter().any(|o| same(&o.name, &r.name)) {
            return Err(Error::user(
                format!("repository {} is listed twice", r.name),
                "list each repository once",
            ));
        }
        if !valid_branch(&r.default_branch) {
            return Err(Error::user(
                format!(
                    "the default branch of {} ({:?}) is not a branch name",
                    r.name, r.default_branch
                ),
                format!(
                    "pass --default-branch {}=BRANCH with the branch GitHub shows as default (Settings, General)",
                    r.name
                ),
            ));
        }
        for id in [&r.id, &r.owner_id].into_iter().flatten() {
            if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::user(
                    format!("the id {id:?} of {} is not a number", r.name),
                    format!(
                        "pass --repository-id {}=ID with GitHub's numeric id (`gh api repos/{} --jq .id`)",
                        r.name, r.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What [`resolve`] combines, highest precedence first.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Repository names (from `--repository`, else the record, else origin).
    pub names: Vec<String>,
    /// `--default-branch` values: `BRANCH` (every repository without its
    /// own) or `OWNER/NAME=BRANCH`.
    pub branch_flags: Vec<String>,
    /// `--repository-id OWNER/NAME=ID` values.
    pub id_flags: Vec<String>,
    /// The deployment record's repositories.
    pub record: Vec<Repository>,
    /// The clone's `origin` repository and its `origin/HEAD` branch.
    pub origin: Option<(String, Option<String>)>,
    /// `[deployment] default_branch` (init's record, or an older deploy's
    /// single value): used for the origin repository, and for every
    /// repository of a record that predates per-repository branches.
    pub recorded_default_branch: Option<String>,
}

/// Combines the sources. Repositories whose default branch is still unknown
/// come back with an empty `default_branch` (the caller asks or stops).
pub fn resolve(s: &Sources) -> Result<Vec<Repository>, Error> {
    let mut global_branch = None;
    let mut named_branch = Vec::new();
    for f in &s.branch_flags {
        match f.split_once('=') {
            Some((name, b)) => named_branch.push((name.trim().to_string(), b.trim().to_string())),
            None if global_branch.is_none() => global_branch = Some(f.trim().to_string()),
            None => {
                return Err(Error::user(
                    "--default-branch BRANCH is given twice",
                    "give it once, or per repository as --default-branch OWNER/NAME=BRANCH",
                ));
            }
        }
    }
    let mut ids = Vec::new();
    for f in &s.id_flags {
        let Some((name, id)) = f.split_once('=') else {
            return Err(Error::user(
                format!("--repository-id {f:?} is not OWNER/NAME=ID"),
                "pass e.g. --repository-id octo-org/app=424242 (the id: `gh api repos/octo-org/app --jq .id`)",
            ));
        };
        ids.push((name.trim().to_string(), id.trim().to_string()));
    }
    for (name, _) in named_branch.iter().chain(ids.iter()) {
        if !s.names.iter().any(|n| same(n, name)) {
            return Err(Error::user(
                format!("{name} is not one of the allowed repositories"),
                "also pass --repository with that OWNER/NAME",
            ));
        }
    }
    let legacy_record = s.record.iter().all(|r| r.default_branch.is_empty());
    let mut out = Vec::new();
    for name in &s.names {
        let rec = s.record.iter().find(|r| same(&r.name, name));
        let origin = s.origin.as_ref().filter(|(o, _)| same(o, name));
        let branch = named_branch
            .iter()
            .find(|(n, _)| same(n, name))
            .map(|(_, b)| b.clone())
            .or_else(|| global_branch.clone())
            .or_else(|| {
                rec.map(|r| r.default_branch.clone())
                    .filter(|b| !b.is_empty())
            })
            .or_else(|| origin.and_then(|(_, b)| b.clone()))
            .or_else(|| {
                s.recorded_default_branch
                    .clone()
                    .filter(|_| origin.is_some() || (rec.is_some() && legacy_record))
            })
            .unwrap_or_default();
        let id = ids
            .iter()
            .find(|(n, _)| same(n, name))
            .map(|(_, id)| id.clone())
            .or_else(|| rec.and_then(|r| r.id.clone()));
        // A recorded owner id belongs to the recorded repository id only.
        let owner_id = rec.filter(|r| r.id == id).and_then(|r| r.owner_id.clone());
        out.push(Repository {
            name: name.clone(),
            default_branch: branch
                .strip_prefix("refs/heads/")
                .unwrap_or(&branch)
                .to_string(),
            id,
            owner_id,
        });
    }
    Ok(out)
}

/// The error for repositories whose default branch nobody gave.
pub fn unknown_branch_error(missing: &[&Repository]) -> Error {
    let names: Vec<&str> = missing.iter().map(|r| r.name.as_str()).collect();
    Error::user(
        format!(
            "the default branch of {} is not known, and stateful-ci never assumes one: it decides which runs are trusted",
            names.join(", ")
        ),
        format!(
            "pass --default-branch BRANCH (or --default-branch {}=BRANCH per repository; also {DEFAULT_BRANCH_ENV}), or run in a clone of the repository (its origin/HEAD names the branch)",
            names.first().copied().unwrap_or("OWNER/NAME")
        ),
    )
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The default branch of the clone at `dir` as `git clone` recorded it
/// (`refs/remotes/origin/HEAD`), the same source `stateful-ci init` uses.
/// Never the current branch: that is whatever is checked out.
pub fn clone_default_branch(dir: &Path) -> Option<String> {
    git(
        dir,
        &["symbolic-ref", "--short", "refs/remotes/origin/HEAD"],
    )
    .and_then(|s| s.strip_prefix("origin/").map(String::from))
    .filter(|b| valid_branch(b))
}

/// `OWNER/NAME` of the clone's `origin` remote, if it is on GitHub.
pub fn origin_repository(dir: &Path) -> Option<String> {
    parse_github_remote(&git(dir, &["remote", "get-url", "origin"])?)
}

pub fn parse_github_remote(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("git@github.com:")
        .or_else(|| url.strip_prefix("ssh://git@github.com/"))
        .or_else(|| url.strip_prefix("https://github.com/"))
        .or_else(|| url.strip_prefix("http://github.com/"))?;
    let rest = rest.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = rest.split('/');
    let (o, n) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && !o.is_empty() && !n.is_empty()).then(|| format!("{o}/{n}"))
}

/// The clone at `dir`: its origin repository and default branch.
pub fn origin(dir: &Path) -> Option<(String, Option<String>)> {
    origin_repository(dir).map(|name| (name, clone_default_branch(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, branch: &str) -> Repository {
        Repository {
            name: name.into(),
            default_branch: branch.into(),
            ..Repository::default()
        }
    }

    #[test]
    fn nothing_known_means_no_branch_never_main() {
        let r = resolve(&Sources {
            names: vec!["octo/app".into()],
            ..Sources::default()
        })
        .unwrap();
        assert_eq!(r[0].default_branch, "");
        let e = unknown_branch_error(&[&r[0]]);
        assert!(e.message.contains("never assumes"), "{e:?}");
    }

    #[test]
    fn the_clone_gives_the_origin_repository_its_branch() {
        let s = Sources {
            names: vec!["Octo/App".into(), "octo/lib".into()],
            origin: Some(("octo/app".into(), Some("master".into()))),
            ..Sources::default()
        };
        let r = resolve(&s).unwrap();
        assert_eq!(r[0].default_branch, "master");
        assert_eq!(r[1].default_branch, "", "not the clone's repository");
    }

    #[test]
    fn precedence_flag_record_clone_recorded() {
        let mut s = Sources {
            names: vec!["octo/app".into()],
            record: vec![Repository {
                id: Some("42".into()),
                owner_id: Some("7".into()),
                ..repo("octo/app", "trunk")
            }],
            origin: Some(("octo/app".into(), Some("master".into()))),
            recorded_default_branch: Some("main".into()),
            ..Sources::default()
        };
        let r = resolve(&s).unwrap();
        assert_eq!(r[0].default_branch, "trunk");
        assert_eq!(
            (r[0].id.as_deref(), r[0].owner_id.as_deref()),
            (Some("42"), Some("7"))
        );
        s.branch_flags = vec!["refs/heads/dev".into()];
        s.id_flags = vec!["octo/app=43".into()];
        let r = resolve(&s).unwrap();
        assert_eq!(r[0].default_branch, "dev");
        assert_eq!(
            (r[0].id.as_deref(), r[0].owner_id.as_deref()),
            (Some("43"), None)
        );
        s.branch_flags = vec!["octo/app=release".into(), "dev".into()];
        assert_eq!(resolve(&s).unwrap()[0].default_branch, "release");
        // A record from before per-repository branches: the clone wins over
        // its single (possibly assumed) value.
        s.branch_flags.clear();
        s.record = vec![repo("octo/app", "")];
        assert_eq!(resolve(&s).unwrap()[0].default_branch, "master");
        s.origin = None;
        assert_eq!(resolve(&s).unwrap()[0].default_branch, "main");
    }

    #[test]
    fn bad_flags_and_settings_say_what_to_fix() {
        let s = Sources {
            names: vec!["octo/app".into()],
            id_flags: vec!["octo/other=1".into()],
            ..Sources::default()
        };
        assert!(
            resolve(&s)
                .unwrap_err()
                .hint
                .unwrap()
                .contains("--repository")
        );
        let s = Sources {
            names: vec!["octo/app".into()],
            id_flags: vec!["424242".into()],
            ..Sources::default()
        };
        assert!(resolve(&s).is_err());
        let mut r = repo("octo/app", "master");
        validate(std::slice::from_ref(&r)).unwrap();
        r.id = Some("x1".into());
        assert!(validate(std::slice::from_ref(&r)).is_err());
        assert!(validate(&[repo("octo/app", "a b")]).is_err());
        assert!(validate(&[repo("octo/app", "")]).is_err());
        assert!(validate(&[repo("octo/app", "m"), repo("Octo/App", "m")]).is_err());
        assert!(validate(&[]).is_err());
    }

    #[test]
    fn the_worker_setting_is_json_per_repository() {
        let v = worker_var(&[
            Repository {
                id: Some("42".into()),
                ..repo("octo/app", "master")
            },
            repo("octo/lib", "main"),
        ]);
        assert_eq!(
            v,
            r#"[{"name":"octo/app","default_branch":"master","id":"42"},{"name":"octo/lib","default_branch":"main"}]"#
        );
    }
}
