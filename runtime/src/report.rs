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
