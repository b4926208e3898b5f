//! How the engine tells its caller what it is doing. The engine never
//! prints: the binary implements [`Reporter`] (progress bars on a TTY, plain
//! lines in logs, GitHub annotations in Actions), tests implement it to
//! collect warnings.

/// A stage of a save or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Scan,
    /// Reading, hashing and compressing changed files (save).
    Pack,
    /// Writing the manifest and moving the head (save).
    Commit,
    /// Comparing the snapshot with what is on disk (restore).
    Compare,
    /// Fetching, verifying and staging files (restore).
    Fetch,
    /// Renaming staged files into place (restore).
    Apply,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Scan => "scanning",
            Phase::Pack => "packing",
            Phase::Commit => "committing",
            Phase::Compare => "comparing",
            Phase::Fetch => "fetching",
            Phase::Apply => "applying",
        }
    }
}

pub trait Reporter: Send + Sync {
    /// A phase starts; `total` is the amount of work in bytes, if known.
    fn phase(&self, _phase: Phase, _total: Option<u64>) {}
    /// `bytes` more of the current phase are done.
    fn advance(&self, _bytes: u64) {}
    /// Something the user should know about; the run goes on.
    fn warn(&self, _message: &str) {}
}

/// A reporter that drops everything.
pub struct Silent;

impl Reporter for Silent {}

/// The run summary: the one JSON object `save --json` and `restore --json`
/// print on stdout, and the one definition of its fields. The GitHub Action
/// reads it (`action/report.cjs`, `parseReport`/`REPORT_FIELDS`); the test
/// `summary_schema` in tests/integration runs that parser over the real
/// output of both commands, so renaming a field here fails it.
///
/// Fields every summary has come first; the others appear only where they
/// mean something (a restore has no `stored_bytes`, a miss no `generation`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    pub command: Command,
    pub outcome: Outcome,
    /// The snapshot saved or restored (`null` when there is none).
    pub snapshot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    pub files: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlinks: Option<u64>,
    pub bytes: u64,
    /// Save: bytes not already in the store; restore: bytes written.
    pub new_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    pub objects_sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_read: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_written: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_fetched: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects_fetched: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
    pub dedup_ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_credentials: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_changing: Option<Vec<String>>,
    pub duration_ms: u64,
    /// Where a restore's snapshot came from (`null` otherwise).
    pub source: Option<SummarySource>,
    /// Why the cache was skipped or failed (the run went on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// Which command printed the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Save,
    Restore,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Save => "save",
            Command::Restore => "restore",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Saved,
    Unchanged,
    Hit,
    Miss,
    /// No backend configured: nothing was done.
    Skipped,
    /// A cache failure (reported as a warning; the build goes on).
    Error,
}

/// A restore's source: the scope read and its trust class.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SummarySource {
    pub scope: String,
    pub trust: Option<String>,
}

impl RunSummary {
    /// A summary of nothing done (`skipped`, `miss`, `error`).
    pub fn empty(command: Command, outcome: Outcome) -> RunSummary {
        RunSummary {
            command,
            outcome,
            snapshot_id: None,
            generation: None,
            files: 0,
            dirs: None,
            symlinks: None,
            bytes: 0,
            new_bytes: 0,
            stored_bytes: None,
            objects_sent: 0,
            files_read: None,
            files_written: None,
            bytes_fetched: None,
            objects_fetched: None,
            removed: None,
            dedup_ratio: 0.0,
            skipped_credentials: None,
            skipped_changing: None,
            duration_ms: 0,
            source: None,
            error: None,
            warnings: Vec::new(),
        }
    }

    /// A completed save.
    pub fn saved(s: &crate::SaveSummary) -> RunSummary {
        RunSummary {
            snapshot_id: Some(s.head.snapshot.to_string()),
            generation: Some(s.head.generation),
            files: s.files,
            dirs: Some(s.dirs),
            symlinks: Some(s.symlinks),
            bytes: s.bytes,
            new_bytes: s.new_bytes,
            stored_bytes: Some(s.stored_bytes),
            objects_sent: s.objects_sent,
            files_read: Some(s.files_read),
            dedup_ratio: s.dedup_ratio(),
            skipped_credentials: Some(s.skipped_credentials),
            skipped_changing: Some(s.skipped_changing.clone()),
            duration_ms: s.duration.as_millis() as u64,
            ..RunSummary::empty(
                Command::Save,
                match s.outcome {
                    crate::SaveOutcome::Saved => Outcome::Saved,
                    crate::SaveOutcome::Unchanged => Outcome::Unchanged,
                },
            )
        }
    }

    /// A restore: a hit (with its source) or a miss.
    pub fn restored(s: &crate::RestoreSummary) -> RunSummary {
        let duration_ms = s.duration.as_millis() as u64;
        let Some(src) = &s.source else {
            return RunSummary {
                duration_ms,
                ..RunSummary::empty(Command::Restore, Outcome::Miss)
            };
        };
        RunSummary {
            snapshot_id: Some(src.head.snapshot.to_string()),
            generation: Some(src.head.generation),
            files: s.files,
            bytes: s.bytes,
            files_written: Some(s.files_written),
            new_bytes: s.bytes_written,
            bytes_fetched: Some(s.bytes_fetched),
            objects_fetched: Some(s.objects_fetched),
            removed: Some(s.removed),
            dedup_ratio: if s.bytes == 0 {
                1.0
            } else {
                1.0 - s.bytes_written as f64 / s.bytes as f64
            },
            skipped_credentials: Some(s.skipped_credentials),
            duration_ms,
            source: Some(SummarySource {
                scope: src.scope.clone(),
                trust: src.trust.clone(),
            }),
            ..RunSummary::empty(Command::Restore, Outcome::Hit)
        }
    }

    /// The one line printed on stdout.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("plain fields serialise")
    }
}
