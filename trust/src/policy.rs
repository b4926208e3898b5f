//! The scope policy: which scopes a run may restore from, in order, and the
//! one scope it may save to. One pure function, [`decide`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::classify::{RunClass, RunIdentity, Tenant, is_valid_ref};

/// Where snapshots of one workspace live. The string form
/// ([`fmt::Display`], parsed back by [`FromStr`]) names the Durable Object
/// and is stored in D1; it is case-sensitive: compare it with `=`, never
/// `LIKE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `branch:refs/heads/<name>`: written by trusted runs (trusted branches)
    /// or internal runs (other branches) of that branch.
    Branch(String),
    /// `pr:<N>`: written only by external runs of pull request N; read only
    /// by external runs.
    PullRequest(u64),
    /// `privileged:<ref>` (or `privileged:event:<name>` without a ref):
    /// written by privileged runs, read by no run.
    Privileged(String),
}

impl Scope {
    /// The scope's kind: `branch`, `pr` or `privileged`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Branch(_) => "branch",
            Scope::PullRequest(_) => "pr",
            Scope::Privileged(_) => "privileged",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Branch(r) => write!(f, "branch:{r}"),
            Scope::PullRequest(n) => write!(f, "pr:{n}"),
            Scope::Privileged(k) => write!(f, "privileged:{k}"),
        }
    }
}

/// A scope string that is not one this crate writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a scope: expected `branch:refs/heads/<name>`, `pr:<number>` or `privileged:<ref>`, as written by the Worker"
)]
pub struct ScopeError(String);

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ScopeError(s.chars().take(80).collect());
        let (kind, value) = s.split_once(':').ok_or_else(err)?;
        match kind {
            "branch" if value.starts_with("refs/heads/") && is_valid_ref(value) => {
                Ok(Scope::Branch(value.to_owned()))
            }
            "pr" => {
                if value.is_empty()
                    || value.starts_with('0')
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(err());
                }
                value.parse().map(Scope::PullRequest).map_err(|_| err())
            }
            "privileged" if is_privileged_key(value) => Ok(Scope::Privileged(value.to_owned())),
            _ => Err(err()),
        }
    }
}

fn is_privileged_key(k: &str) -> bool {
    if let Some(event) = k.strip_prefix("event:") {
        !event.is_empty()
            && event.len() <= 64
            && event
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    } else {
        k.starts_with("refs/") && is_valid_ref(k)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A workspace name from the project's config: 1-64 of `[A-Za-z0-9._-]`,
/// not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Workspace(String);

/// A workspace name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "workspace name `{0}` is invalid: use 1-64 letters, digits, `.`, `_` or `-`, not starting with `.` (e.g. `default`)"
)]
pub struct WorkspaceError(String);

impl Workspace {
    pub fn new(name: &str) -> Result<Self, WorkspaceError> {
        let ok = (1..=64).contains(&name.len())
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(WorkspaceError(name.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Workspace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Workspace::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether and where a run may save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SaveDecision {
    Allowed { scope: Scope },
    Denied { code: String, reason: String },
}

/// The policy's answer for one run and workspace; the Worker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub tenant: Tenant,
    pub workspace: Workspace,
    pub class: RunClass,
    /// Scopes to try, in order; the first with a head wins.
    pub restore: Vec<Scope>,
    pub save: SaveDecision,
    /// Why: the classification reason and the rule applied.
    pub reason: String,
}

impl Decision {
    /// The scope a save goes to, if saving is allowed.
    pub fn save_scope(&self) -> Option<&Scope> {
        match &self.save {
            SaveDecision::Allowed { scope } => Some(scope),
            SaveDecision::Denied { .. } => None,
        }
    }

    /// Whether the run may read snapshots of `scope` (grants for objects must
    /// be checked against this, never against a client-supplied scope).
    pub fn may_restore_from(&self, scope: &Scope) -> bool {
        self.restore.contains(scope)
    }

    /// The Durable Object name for `scope` of this run's tenant and
    /// workspace: `v1/<owner id>/<repository id>/<workspace>/<scope>`.
    pub fn coordinator_name(&self, scope: &Scope) -> String {
        coordinator_name(&self.tenant, &self.workspace, scope)
    }
}

/// `v1/<owner id>/<repository id>/<workspace>/<scope>`: the name of the
/// Durable Object that holds one scope's head.
pub fn coordinator_name(tenant: &Tenant, workspace: &Workspace, scope: &Scope) -> String {
    format!("v1/{}/{}/{}", tenant.key(), workspace, scope)
}

fn push_unique(list: &mut Vec<Scope>, scope: Scope) {
    if !list.contains(&scope) {
        list.push(scope);
    }
}

/// The policy, as one pure function of the classified run.
///
/// | class | restore, in order | save |
/// | --- | --- | --- |
/// | trusted | own branch if trusted, base branch if trusted (merge queue), default branch | own branch |
/// | internal | own branch, default branch | own branch |
/// | external | own PR (`pr:N`, `pull_request` runs only), base branch, default branch | `pr:N`, or nothing |
/// | privileged | own branch if trusted, default branch | `privileged:<ref>` (read by nobody) |
///
/// Consequences: a `pr:N` scope is read only by external runs, so nothing an
/// external run saves can reach a trusted, internal or privileged run;
/// trusted and privileged runs read only trusted branches, which only
/// trusted runs write; internal state never reaches trusted runs; privileged
/// scopes are never read.
pub fn decide(run: &RunIdentity, workspace: &Workspace) -> Decision {
    let default = Scope::Branch(run.default_branch.clone());
    let mut restore = Vec::new();
    let (save, rule) = match run.class {
        RunClass::Trusted => {
            if let Some(b) = run.branch.as_ref().filter(|_| run.branch_trusted) {
                push_unique(&mut restore, Scope::Branch(b.clone()));
            }
            if let Some(base) = run.base_branch.as_ref().filter(|_| run.base_trusted) {
                push_unique(&mut restore, Scope::Branch(base.clone()));
            }
            push_unique(&mut restore, default);
            match &run.branch {
                Some(b) => (
                    SaveDecision::Allowed {
                        scope: Scope::Branch(b.clone()),
                    },
                    "trusted: restore trusted branches only; save to the own branch",
                ),
                None => (
                    denied("no_branch", "the run has no branch to save to"),
                    "trusted: restore trusted branches only",
                ),
            }
        }
        RunClass::Internal => {
            if let Some(b) = &run.branch {
                push_unique(&mut restore, Scope::Branch(b.clone()));
            }
            push_unique(&mut restore, default);
            match &run.branch {
                // Defensive: classify never makes a run on a trusted branch
                // internal, but only trusted runs may ever write one.
                Some(_) if run.branch_trusted => (
                    denied(
                        "trusted_branch",
                        "internal runs never write a trusted branch's scope",
                    ),
                    "internal: restore own branch then default branch",
                ),
                Some(b) => (
                    SaveDecision::Allowed {
                        scope: Scope::Branch(b.clone()),
                    },
                    "internal: restore own branch then default branch, never pull requests; save to the own branch",
                ),
                None => (
                    denied("no_branch", "the run has no branch to save to"),
                    "internal: restore own branch then default branch",
                ),
            }
        }
        RunClass::External => {
            if let Some(n) = run.pr_scope {
                push_unique(&mut restore, Scope::PullRequest(n));
            }
            if let Some(base) = &run.base_branch {
                push_unique(&mut restore, Scope::Branch(base.clone()));
            }
            push_unique(&mut restore, default);
            match run.pr_scope {
                Some(n) => (
                    SaveDecision::Allowed {
                        scope: Scope::PullRequest(n),
                    },
                    "external: may read trusted state; saves only to its own pull request scope, which no other class reads",
                ),
                None => (
                    denied(
                        "no_pull_request_scope",
                        "external runs save only to their pull request's own scope, which only `pull_request` \
                         runs on refs/pull/N/merge or refs/pull/N/head have; nothing is saved",
                    ),
                    "external: may read trusted state; no pull request scope to save to",
                ),
            }
        }
        RunClass::Privileged => {
            if let Some(b) = run.branch.as_ref().filter(|_| run.branch_trusted) {
                push_unique(&mut restore, Scope::Branch(b.clone()));
            }
            push_unique(&mut restore, default);
            let key = match &run.git_ref {
                Some(r) if r.starts_with("refs/") && is_valid_ref(r) => r.clone(),
                _ => format!("event:{}", sanitize_event(&run.event)),
            };
            (
                SaveDecision::Allowed {
                    scope: Scope::Privileged(key),
                },
                "privileged: restore trusted branches only; save to a privileged scope that no run reads",
            )
        }
    };
    Decision {
        tenant: run.tenant.clone(),
        workspace: workspace.clone(),
        class: run.class,
        restore,
        save,
        reason: format!("{}; {rule}", run.reason),
    }
}

fn denied(code: &str, reason: &str) -> SaveDecision {
    SaveDecision::Denied {
        code: code.to_owned(),
        reason: reason.to_owned(),
    }
}

fn sanitize_event(e: &str) -> String {
    let s: String = e
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_strings_round_trip() {
        for s in [
            "branch:refs/heads/main",
            "pr:123",
            "privileged:refs/tags/v1.0.0",
            "privileged:event:release",
        ] {
            let scope: Scope = s.parse().unwrap();
            assert_eq!(scope.to_string(), s);
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), scope);
        }
        for bad in [
            "branch:main",
            "branch:refs/tags/v1",
            "pr:007",
            "pr:",
            "pr:-1",
            "privileged:",
            "privileged:event:",
            "tag:refs/tags/v1",
            "main",
            "BRANCH:refs/heads/main",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn workspace_names() {
        assert!(Workspace::new("default").is_ok());
        assert!(Workspace::new("node_modules-1.2").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "x".repeat(65).as_str(), "a:b"] {
            assert!(Workspace::new(bad).is_err(), "{bad} accepted");
        }
    }
}
