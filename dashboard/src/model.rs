//! The data every view renders: one [`Status`] value, gathered once per
//! refresh. It holds no secret (the admin token never enters it), so any
//! rendering of it, text, JSON or TUI, is safe to show.

use serde::{Deserialize, Serialize};
use stateful_ci_protocol::wire::{AdminScopeSize, AdminSnapshot, HealthResponse};

/// Everything `status` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Version of this `stateful-ci` binary.
    pub binary_version: String,
    /// Unix seconds when this status was gathered.
    pub gathered_at: i64,
    pub config: ConfigView,
    /// The `[deployment]` record `deploy` wrote; `None`: not deployed.
    pub deployment: Option<Deployment>,
    /// The Worker, when a backend URL is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendView>,
    /// A local directory store, when `--store` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalView>,
    /// Differences between the binary, the deployment record and the
    /// running Worker; empty when they agree (or cannot be compared).
    pub drift: Vec<String>,
}

/// The workspace configuration as `stateful-ci.toml` states it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigView {
    /// The file the settings came from; `None` when there is none.
    pub source: Option<String>,
    pub preset: Option<String>,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub workspace: String,
    pub backend_url: Option<String>,
    /// Why the configuration could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the view shows of the deployment record (`[deployment]` in
/// stateful-ci.toml, read by `stateful_ci_runtime::deployment`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub account_id: Option<String>,
    pub worker_name: Option<String>,
    pub worker_url: Option<String>,
    pub worker_version: Option<String>,
    /// `d1_migrations` of the record: what `deploy` applied.
    pub migrations: Vec<String>,
}

/// What the Worker says about itself and, with the admin token, its runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub url: String,
    pub health: Option<HealthResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_error: Option<String>,
    /// Whether the admin routes answered.
    pub admin: bool,
    /// Why the admin routes are not shown (no token, refused, unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_error: Option<String>,
    /// Recent decisions (restores and saves), newest first.
    pub runs: Vec<RunRow>,
    pub snapshots: Vec<AdminSnapshot>,
    pub scopes: Vec<AdminScopeSize>,
    pub total_object_bytes: Option<u64>,
}

/// One restore or save decision with what the Worker knows about its run
/// and, for a hit or a commit, the snapshot it used or made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// Unix seconds.
    pub at: i64,
    pub repository: String,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Trust class: trusted, internal, external, privileged.
    pub class: String,
    /// `restore`, `save_prepare` or `save_commit`.
    pub route: String,
    pub allowed: bool,
    /// The Worker's reason code (`restore_hit`, `save_not_allowed`, ...).
    pub reason: String,
    /// restored, miss, save started, saved, denied.
    pub decision: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Entries (files, directories, symlinks) in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Plaintext bytes of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Stored (compressed) bytes of the snapshot's objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    pub detail: String,
    /// How many identical decisions in a row this stands for (1 normally).
    #[serde(default)]
    pub repeats: u32,
}

/// A local directory store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalView {
    pub path: String,
    pub scopes: Vec<LocalScope>,
    /// Bytes of all pack and manifest files (each stored once).
    pub unique_bytes: u64,
    /// Sum over scopes of the stored bytes their heads reference.
    pub referenced_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One scope (head) of a local store and its current snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalScope {
    pub scope: String,
    pub generation: u64,
    pub snapshot: String,
    pub created_at: i64,
    pub parent: Option<String>,
    pub roots: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    pub stored_bytes: u64,
    pub packs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRow {
    /// The decision with its repeat count, as the tables show it.
    pub fn decision_cell(&self) -> String {
        if self.repeats > 1 {
            format!("{} x{}", self.decision, self.repeats)
        } else {
            self.decision.clone()
        }
    }

    /// The human label of a decision.
    pub fn label(route: &str, allowed: bool, reason: &str) -> String {
        if !allowed {
            return format!("denied ({reason})");
        }
        match (route, reason) {
            (_, "restore_hit") => "restored".into(),
            (_, "restore_miss") => "miss".into(),
            (_, "save_allowed") => "save started".into(),
            (_, "commit_applied") => "saved".into(),
            (_, "commit_replayed") => "saved (replayed)".into(),
            (r, other) => format!("{r}: {other}"),
        }
    }
}
