//! Where snapshots live. A [`Store`] is deliberately small, in the style of
//! sccache's `Storage`: content-addressed objects (put, ranged get, which of
//! these are missing) plus a head pointer per scope moved by compare-and-set.
//!
//! Stores hold bytes and heads; they know nothing about manifests, chunking
//! or the workspace. Every byte a store returns is untrusted: the engine
//! verifies it against its key or blob id before use.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use stateful_ci_protocol::{Head, ObjectKey};

use crate::error::Result;

pub mod local;
pub mod worker;

pub use local::LocalStore;
pub use worker::WorkerStore;

/// The snapshot a restore should use, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub head: Head,
    /// The scope the snapshot was read from (e.g. `default`, `branch:refs/heads/main`).
    pub scope: String,
    /// The trust class of that scope, when the store knows it.
    pub trust: Option<String>,
}

/// Where a store leaves a buffer it was given ([`Store::put_owned`]) once
/// it is done with it, for the caller to fill again: a fresh 20 MiB buffer
/// costs a page fault and a zeroed page for every 4 KiB written into it
/// (a third of a cold save's page faults). Holds one at most; a network
/// store gives the buffer back when the HTTP client lets go of its last
/// copy, which may be after `put_owned` returned.
#[derive(Clone, Default)]
pub struct Spare(Arc<Mutex<Option<Vec<u8>>>>);

impl Spare {
    /// Keep `buf` (emptied) unless one is kept already.
    pub fn give(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(buf);
    }

    /// The kept buffer, if any (empty, with its capacity).
    pub fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
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

    /// `put` of bytes the caller gives up: a network store sends them
    /// without the copy `put` needs (a save hands over each pack, 20 MiB).
    /// The buffer goes to `spare` when the store is done with it.
    fn put_owned(&self, key: &ObjectKey, bytes: Vec<u8>, spare: &Spare) -> Result<()> {
        self.put(key, &bytes)?;
        spare.give(bytes);
        Ok(())
    }

    /// Read an object, or a byte range of it.
    fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_into(key, range, &mut buf)?;
        Ok(buf)
    }

    /// Read an object, or a byte range of it, into `buf` (replacing what it
    /// held). A restore hands the same buffers back for every range: a
    /// fresh multi-MiB vector per transfer costs a page fault and a zeroed
    /// page for every 4 KiB it receives.
    fn get_into(&self, key: &ObjectKey, range: Option<Range<u64>>, buf: &mut Vec<u8>)
    -> Result<()>;

    /// Move the save scope's head from generation `commit.expected` (0: no
    /// head yet) to `commit.snapshot`, whose objects are all stored.
    fn commit(&self, commit: &Commit) -> Result<CasOutcome>;

    /// How many transfers to run at once (an optional capability: network
    /// stores want more than the number of cores).
    fn parallelism(&self) -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

/// A request to move the head to a new snapshot.
#[derive(Debug, Clone)]
pub struct Commit {
    pub expected: u64,
    pub snapshot: ObjectKey,
    /// Every object the snapshot references except the root manifest:
    /// exactly the packs the manifest lists.
    pub packs: Vec<ObjectKey>,
    /// Chosen by the client, unique per attempted snapshot; a retried commit
    /// with the same key returns the first result.
    pub idempotency_key: String,
    /// Plaintext bytes of the snapshot's files.
    pub total_bytes: u64,
    /// Entries (files, directories, symlinks) in the snapshot.
    pub entries: u64,
    /// Files in the snapshot.
    pub files: u64,
    /// Stored bytes this save uploaded (packs and root manifest).
    pub stored_bytes: u64,
}
