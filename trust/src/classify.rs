//! Run classification: from verified claims only, never from request fields.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::oidc::Claims;

/// Events that run code from outside the repository's write-access holders,
/// or whose inputs they control (comments, other workflows' artifacts).
pub(crate) const EXTERNAL_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_target",
    "issue_comment",
    "workflow_run",
];
/// The only event whose runs use a pull request scope (`pr:N`): fork code
/// without the repository's secrets.
pub(crate) const PR_SCOPE_EVENT: &str = "pull_request";
/// Events that publish or deploy.
pub(crate) const PRIVILEGED_EVENTS: &[&str] = &["release", "deployment", "deployment_status"];
/// Events that are trusted on a trusted ref (and internal on other branches).
pub(crate) const BRANCH_EVENTS: &[&str] = &["push", "schedule", "workflow_dispatch", "merge_group"];

/// Prefix GitHub gives merge-queue refs:
/// `refs/heads/gh-readonly-queue/<base branch>/pr-<N>-<sha>`.
const MERGE_QUEUE_PREFIX: &str = "refs/heads/gh-readonly-queue/";

/// How much a run is trusted, in the order the policy treats them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunClass {
    /// `push`, `schedule`, `workflow_dispatch` on a trusted ref; `merge_group`
    /// whose base is a trusted ref.
    Trusted,
    /// Those events on any other branch.
    Internal,
    /// Pull requests, comments, `workflow_run`, any other or unknown event,
    /// and branch events on refs that are not branches or tags.
    External,
    /// `release`, `deployment`, `deployment_status`, tag refs, and trusted or
    /// internal runs of a job with a deployment `environment`.
    Privileged,
}

impl RunClass {
    /// Stable lower-case name (`trusted`, `internal`, `external`, `privileged`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunClass::Trusted => "trusted",
            RunClass::Internal => "internal",
            RunClass::External => "external",
            RunClass::Privileged => "privileged",
        }
    }
}

impl fmt::Display for RunClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the run's `ref` claim is, relative to the [`TrustConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefClass {
    /// The repository's configured default branch (e.g. `refs/heads/master`).
    DefaultBranch,
    /// A configured extra trusted branch.
    TrustedBranch,
    /// A merge-queue branch (`refs/heads/gh-readonly-queue/<base>/pr-N-...`).
    MergeQueue,
    /// Any other branch.
    OtherBranch,
    /// `refs/tags/...` (or `ref_type: tag`).
    Tag,
    /// `refs/pull/N/merge` or `refs/pull/N/head`.
    PullRequest,
    /// A ref of another shape.
    Unrecognised,
    /// No `ref` claim.
    None,
}

impl RefClass {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefClass::DefaultBranch => "default_branch",
            RefClass::TrustedBranch => "trusted_branch",
            RefClass::MergeQueue => "merge_queue",
            RefClass::OtherBranch => "other_branch",
            RefClass::Tag => "tag",
            RefClass::PullRequest => "pull_request",
            RefClass::Unrecognised => "unrecognised",
            RefClass::None => "none",
        }
    }
}

/// The tenant: GitHub's numeric ids, which survive renames and transfers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tenant {
    pub repository_id: String,
    pub repository_owner_id: String,
}

impl Tenant {
    /// `OWNER_ID/REPOSITORY_ID`, e.g. `2020/424242`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.repository_owner_id, self.repository_id)
    }
}

/// Which branches of one repository are trusted: that repository's own
/// default branch (learned at deploy time from the clone or init's record,
/// never assumed) plus configured extras. Branch names are compared exactly
/// (git refs are case-sensitive). With [`TrustConfig::require_protected`],
/// a branch event is trusted only when GitHub also says the ref is protected
/// (`ref_protected: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustConfig {
    default_branch: String,
    extra_trusted: Vec<String>,
    require_protected: bool,
}

/// A branch name in the trust settings that is not a valid branch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustConfigError {
    #[error(
        "trusted branch `{0}` is not a valid branch name: give a branch such as `main` or `refs/heads/release/1.x` (tags cannot be trusted refs; tag runs are privileged)"
    )]
    BadBranch(String),
}

impl TrustConfig {
    /// `default_branch` as `main` or `refs/heads/main`.
    pub fn new(default_branch: &str) -> Result<Self, TrustConfigError> {
        Ok(Self {
            default_branch: branch_ref(default_branch)?,
            extra_trusted: Vec::new(),
            require_protected: false,
        })
    }

    /// When `true`, `push`, `schedule` and `workflow_dispatch` on a trusted
    /// branch are trusted only if the token says `ref_protected: true`;
    /// otherwise they are internal (they read trusted state but write
    /// nothing trusted). Off by default: see docs/TRUST.md for the trade-off.
    pub fn require_protected(mut self, on: bool) -> Self {
        self.require_protected = on;
        self
    }

    /// Whether trusted runs need `ref_protected: true`.
    pub fn requires_protected(&self) -> bool {
        self.require_protected
    }

    /// Adds an extra trusted branch (`release/1.x` or `refs/heads/release/1.x`),
    /// matched exactly: no patterns.
    pub fn with_trusted_ref(mut self, branch: &str) -> Result<Self, TrustConfigError> {
        let full = branch_ref(branch)?;
        if full != self.default_branch && !self.extra_trusted.contains(&full) {
            self.extra_trusted.push(full);
        }
        Ok(self)
    }

    /// Checks a branch name as [`TrustConfig::new`] and
    /// [`TrustConfig::with_trusted_ref`] accept it; returns the full ref.
    pub fn check_branch(name: &str) -> Result<String, TrustConfigError> {
        branch_ref(name)
    }

    /// The default branch as a full ref.
    pub fn default_branch(&self) -> &str {
        &self.default_branch
    }

    /// Every trusted branch as a full ref, the default branch first.
    pub fn trusted_refs(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.default_branch.as_str())
            .chain(self.extra_trusted.iter().map(String::as_str))
    }

    /// Whether `full_ref` (e.g. `refs/heads/main`) is a trusted branch.
    pub fn is_trusted_ref(&self, full_ref: &str) -> bool {
        self.trusted_refs().any(|r| r == full_ref)
    }
}

fn branch_ref(name: &str) -> Result<String, TrustConfigError> {
    let full = if name.starts_with("refs/") {
        name.to_owned()
    } else {
        format!("refs/heads/{name}")
    };
    if full.starts_with("refs/heads/") && is_valid_ref(&full) {
        Ok(full)
    } else {
        Err(TrustConfigError::BadBranch(name.chars().take(64).collect()))
    }
}

/// A conservative subset of `git check-ref-format`: printable ASCII without
/// space and `~^:?*[\`, no `..`, `//`, `@{`, no component starting with `.`
/// or ending with `.lock`, no trailing `/` or `.`, at most 255 bytes.
pub(crate) fn is_valid_ref(r: &str) -> bool {
    if r.is_empty() || r.len() > 255 || r.ends_with('/') || r.ends_with('.') {
        return false;
    }
    if r.contains("..") || r.contains("//") || r.contains("@{") || r == "@" {
        return false;
    }
    if !r
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"~^:?*[\\".contains(&b))
    {
        return false;
    }
    r.split('/')
        .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
}

/// The run, as the policy sees it. Built only by [`classify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub tenant: Tenant,
    /// `OWNER/NAME` at the time of the run (display only; the tenant is the ids).
    pub repository: String,
    pub event: String,
    pub class: RunClass,
    /// The `ref` claim as issued.
    pub git_ref: Option<String>,
    pub ref_class: RefClass,
    /// The run's own branch (`refs/heads/...`), when its ref is one.
    pub branch: Option<String>,
    /// Whether `branch` is a trusted branch.
    pub branch_trusted: bool,
    /// Pull request number from `refs/pull/N/merge` or `refs/pull/N/head`.
    pub pr_number: Option<u64>,
    /// The pull request scope (`pr:N`) this run may read and write: set only
    /// for `pull_request` runs. Other external events (`pull_request_target`,
    /// `issue_comment`, `workflow_run`, ...) run with the repository's secrets
    /// and must never consume state that pull request code wrote.
    pub pr_scope: Option<u64>,
    /// Base branch (`refs/heads/...`): a pull request's `base_ref`, or the
    /// branch a merge-queue ref merges into.
    pub base_branch: Option<String>,
    /// Whether `base_branch` is a trusted branch.
    pub base_trusted: bool,
    /// The default branch as a full ref.
    pub default_branch: String,
    /// The job's deployment environment, if any.
    pub environment: Option<String>,
    /// Why the run got its class, for the audit record.
    pub reason: String,
}

/// Parses `refs/pull/N/merge` / `refs/pull/N/head` (N without leading zeros).
pub(crate) fn pull_request_number(r: &str) -> Option<u64> {
    let rest = r.strip_prefix("refs/pull/")?;
    let (n, tail) = rest.split_once('/')?;
    if tail != "merge" && tail != "head" {
        return None;
    }
    if n.is_empty() || n.len() > 19 || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    n.parse().ok()
}

/// The base branch of a merge-queue ref:
/// `refs/heads/gh-readonly-queue/<base>/pr-<N>-<sha>` gives `refs/heads/<base>`.
/// The base may contain `/`; the last `/pr-` component ends it.
pub(crate) fn merge_queue_base(r: &str) -> Option<String> {
    let rest = r.strip_prefix(MERGE_QUEUE_PREFIX)?;
    let (base, last) = rest.rsplit_once('/')?;
    let pr = last.strip_prefix("pr-")?;
    let digits = pr.split('-').next().unwrap_or("");
    if base.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let full = format!("refs/heads/{base}");
    is_valid_ref(&full).then_some(full)
}

/// Normalises a `base_ref` claim (`main` or `refs/heads/main`) to a branch ref.
fn base_branch_ref(base: &str) -> Option<String> {
    let full = if base.starts_with("refs/") {
        base.to_owned()
    } else {
        format!("refs/heads/{base}")
    };
    (full.starts_with("refs/heads/") && is_valid_ref(&full)).then_some(full)
}

/// Classifies a run from its verified claims.
///
/// Rules, first match wins:
/// 1. `pull_request`, `pull_request_target`, `issue_comment`, `workflow_run`
///    and every event not named below: **external**.
/// 2. `release`, `deployment`, `deployment_status`: **privileged**.
/// 3. `push`, `schedule`, `workflow_dispatch`, `merge_group` on a tag
///    (`refs/tags/...` or `ref_type: tag`): **privileged**.
/// 4. `merge_group`: **trusted** if its ref is a merge-queue ref whose base is
///    a trusted branch, **internal** if the base is another branch,
///    **external** on any ref that is not a merge-queue ref.
/// 5. `push`, `schedule`, `workflow_dispatch` on a trusted branch (the
///    repository's configured default branch or an extra trusted branch):
///    **trusted**, unless the configuration requires protected refs and the
///    token does not say `ref_protected: true` (then **internal**); on
///    another branch: **internal**; on anything that is not a branch:
///    **external**.
/// 6. A trusted or internal run of a job with an `environment` claim is
///    **privileged** (deployment jobs read only trusted-lineage state). An
///    `environment` never changes an external run: it stays external.
pub fn classify(claims: &Claims, cfg: &TrustConfig) -> RunIdentity {
    let event = claims.event_name.as_str();
    let git_ref = claims.git_ref.clone();
    let r = git_ref.as_deref().unwrap_or("");
    let is_tag = r.starts_with("refs/tags/") || claims.ref_type.as_deref() == Some("tag");
    let branch = (!is_tag && r.starts_with("refs/heads/") && is_valid_ref(r)).then(|| r.to_owned());
    let branch_trusted = branch.as_deref().is_some_and(|b| cfg.is_trusted_ref(b));
    let pr_number = pull_request_number(r);
    let queue_base = branch.as_deref().and_then(merge_queue_base);

    let ref_class = if git_ref.is_none() {
        RefClass::None
    } else if is_tag {
        RefClass::Tag
    } else if let Some(b) = branch.as_deref() {
        if b == cfg.default_branch() {
            RefClass::DefaultBranch
        } else if branch_trusted {
            RefClass::TrustedBranch
        } else if queue_base.is_some() {
            RefClass::MergeQueue
        } else {
            RefClass::OtherBranch
        }
    } else if pr_number.is_some() {
        RefClass::PullRequest
    } else {
        RefClass::Unrecognised
    };

    let base_branch = if event == "merge_group" {
        queue_base.clone()
    } else if EXTERNAL_EVENTS.contains(&event) {
        claims.base_ref.as_deref().and_then(base_branch_ref)
    } else {
        None
    };
    let base_trusted = base_branch
        .as_deref()
        .is_some_and(|b| cfg.is_trusted_ref(b));

    let (mut class, mut reason) = if EXTERNAL_EVENTS.contains(&event) {
        (
            RunClass::External,
            format!("`{event}` runs code or input from outside the repository's writers"),
        )
    } else if PRIVILEGED_EVENTS.contains(&event) {
        (
            RunClass::Privileged,
            format!("`{event}` publishes or deploys"),
        )
    } else if !BRANCH_EVENTS.contains(&event) {
        (
            RunClass::External,
            "an event stateful-ci does not classify is treated as external".to_owned(),
        )
    } else if is_tag {
        (
            RunClass::Privileged,
            format!("`{event}` on a tag publishes a release"),
        )
    } else if let Some(b) = branch.as_deref() {
        if event == "merge_group" {
            match queue_base.as_deref() {
                Some(base) if cfg.is_trusted_ref(base) => (
                    RunClass::Trusted,
                    format!("`merge_group` into trusted branch `{base}`"),
                ),
                Some(base) => (
                    RunClass::Internal,
                    format!("`merge_group` into untrusted branch `{base}`"),
                ),
                // GitHub runs merge groups only on merge-queue refs; on any
                // other branch the run could write that branch's scope.
                None => (
                    RunClass::External,
                    "`merge_group` on a branch that is not a merge-queue ref is treated as external"
                        .to_owned(),
                ),
            }
        } else if branch_trusted && cfg.require_protected && claims.ref_protected != Some(true) {
            (
                RunClass::Internal,
                format!(
                    "`{event}` on trusted branch `{b}`, but GitHub does not report the ref as protected \
                     (`ref_protected` is not true) and this backend trusts only protected branches"
                ),
            )
        } else if branch_trusted {
            (
                RunClass::Trusted,
                format!("`{event}` on trusted branch `{b}`"),
            )
        } else {
            (
                RunClass::Internal,
                format!("`{event}` on untrusted branch `{b}`"),
            )
        }
    } else {
        (
            RunClass::External,
            format!("`{event}` on a ref that is not a branch or tag is treated as external"),
        )
    };

    if let Some(env) = claims.environment.as_deref()
        && matches!(class, RunClass::Trusted | RunClass::Internal)
    {
        class = RunClass::Privileged;
        reason = format!("{reason}, in deployment environment `{env}`");
    }

    RunIdentity {
        tenant: Tenant {
            repository_id: claims.repository_id.clone(),
            repository_owner_id: claims.repository_owner_id.clone(),
        },
        repository: claims.repository.clone(),
        event: claims.event_name.clone(),
        class,
        git_ref,
        ref_class,
        branch,
        branch_trusted,
        pr_number,
        pr_scope: pr_number.filter(|_| class == RunClass::External && event == PR_SCOPE_EVENT),
        base_branch,
        base_trusted,
        default_branch: cfg.default_branch().to_owned(),
        environment: claims.environment.clone(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_numbers() {
        assert_eq!(pull_request_number("refs/pull/7/merge"), Some(7));
        assert_eq!(pull_request_number("refs/pull/123/head"), Some(123));
        assert_eq!(pull_request_number("refs/pull/07/merge"), None);
        assert_eq!(pull_request_number("refs/pull/7/other"), None);
        assert_eq!(pull_request_number("refs/pull//merge"), None);
        assert_eq!(pull_request_number("refs/heads/refs/pull/7/merge"), None);
        assert_eq!(
            pull_request_number("refs/pull/99999999999999999999/merge"),
            None
        );
    }

    #[test]
    fn merge_queue_bases() {
        assert_eq!(
            merge_queue_base("refs/heads/gh-readonly-queue/main/pr-12-0123abcd").as_deref(),
            Some("refs/heads/main")
        );
        assert_eq!(
            merge_queue_base("refs/heads/gh-readonly-queue/release/1.x/pr-3-ff").as_deref(),
            Some("refs/heads/release/1.x")
        );
        assert_eq!(
            merge_queue_base("refs/heads/gh-readonly-queue/pr-12-abc"),
            None
        );
        assert_eq!(
            merge_queue_base("refs/heads/gh-readonly-queue/main/feature"),
            None
        );
        assert_eq!(merge_queue_base("refs/heads/main"), None);
    }

    #[test]
    fn refs() {
        assert!(is_valid_ref("refs/heads/main"));
        assert!(is_valid_ref("refs/heads/release/1.x"));
        assert!(!is_valid_ref("refs/heads/a..b"));
        assert!(!is_valid_ref("refs/heads/a b"));
        assert!(!is_valid_ref("refs/heads/x:y"));
        assert!(!is_valid_ref("refs/heads/x/"));
        assert!(!is_valid_ref("refs/heads/.hidden"));
        assert!(!is_valid_ref("refs/heads/x.lock"));
        assert!(!is_valid_ref("refs/heads//x"));
    }

    #[test]
    fn trust_config() {
        let cfg = TrustConfig::new("main")
            .unwrap()
            .with_trusted_ref("release/1.x")
            .unwrap();
        assert_eq!(cfg.default_branch(), "refs/heads/main");
        assert!(cfg.is_trusted_ref("refs/heads/main"));
        assert!(cfg.is_trusted_ref("refs/heads/release/1.x"));
        assert!(!cfg.is_trusted_ref("refs/heads/Main"));
        assert!(!cfg.is_trusted_ref("refs/heads/release/1.y"));
        assert!(TrustConfig::new("refs/tags/v1").is_err());
        assert!(TrustConfig::new("a..b").is_err());
        assert!(TrustConfig::new("").is_err());
        assert!(!cfg.requires_protected());
        assert!(cfg.require_protected(true).requires_protected());
    }
}
