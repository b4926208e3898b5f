//! Where snapshots live. A [`Store`] is deliberately small, in the style of
//! sccache's `Storage`: content-addressed objects (put, ranged get, which of
//! these are missing) plus a head pointer per scope moved by compare-and-set.
//!
//! Stores hold bytes and heads; they know nothing about manifests, chunking
//! or the workspace. Every byte a store returns is untrusted: the engine
//! verifies it against its key or blob id before use.

use std::collections::HashSet;
use std::ops::Range;

use stateful_ci_protocol::{Head, ObjectKey};

use crate::error::Result;

pub mod local;

pub use local::LocalStore;

/// The snapshot a restore should use, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub head: Head,
    /// The scope the snapshot was read from (e.g. `default`, `branch:refs/heads/main`).
    pub scope: String,
    /// The trust class of that scope, when the store knows it.
    pub trust: Option<String>,
}

/// The result of a compare-and-set on the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The head now points at the new snapshot.
    Updated(Head),
    /// Someone else moved the head first; this is the head now.
    Conflict(Option<Head>),
}

pub trait Store: Send + Sync {
    /// A short human description (`local store /path`, a URL).
    fn describe(&self) -> String;

    /// The snapshot a restore in this context should use, if any.
    fn restore_point(&self) -> Result<Option<RestorePoint>>;

    /// The current head of the scope a save in this context writes to.
    fn save_head(&self) -> Result<Option<Head>>;

    /// Which of `keys` the store does not have.
    fn missing(&self, keys: &[ObjectKey]) -> Result<HashSet<ObjectKey>>;

    /// Store an object. Idempotent; a partially written object is never
    /// visible under its key.
    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<()>;

    /// Read an object, or a byte range of it.
    fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Vec<u8>>;

    /// Move the save scope's head from generation `expected` (0: no head
    /// yet) to `snapshot`. `idempotency_key` lets a retried commit return the
    /// first result.
    fn compare_and_set_head(
        &self,
        expected: u64,
        snapshot: &ObjectKey,
        idempotency_key: &str,
    ) -> Result<CasOutcome>;
}
