//! The local stat index: what the engine last knew about each file
//! (size, mtime, ctime, inode → blob ids). A save skips reading files whose
//! stat is unchanged; a restore skips files that already match.
//!
//! It lives outside the workspace (in the user's cache directory), keyed by
//! the workspace's absolute path, so it is never captured in a snapshot. It
//! is only a hint: losing it costs time, never correctness, and an entry is
//! only trusted when its ctime is safely older than the moment it was
//! recorded (the "racy" window that git also guards against).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stateful_ci_protocol::{BlobId, ObjectKey};

use crate::scan::Stat;

/// An entry whose ctime is this close to the time it was recorded may have
/// been modified within the same timestamp tick; it is not trusted.
const RACY_NS: i64 = 2_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub blobs: Vec<BlobId>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatIndex {
    /// The snapshot this workspace was last restored from or saved as, and
    /// the store it is in.
    pub base: Option<(String, ObjectKey)>,
    pub files: HashMap<String, Record>,
}

impl StatIndex {
    /// Where the index of the workspace at `root` lives.
    pub fn location(root: &Path) -> Option<PathBuf> {
        let dir = std::env::var_os("STATEFUL_CI_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("stateful-ci"))
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|d| PathBuf::from(d).join(".cache").join("stateful-ci"))
            })?;
        let abs = std::fs::canonicalize(root).ok()?;
        let id = blake3::hash(abs.as_os_str().as_encoded_bytes()).to_hex();
        Some(
            dir.join("stat-index")
                .join(format!("{}.json.zst", &id[..32])),
        )
    }

    /// Load the index, or an empty one if it is missing or unreadable.
    pub fn load(root: &Path) -> StatIndex {
        Self::location(root)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| zstd::decode_all(&b[..]).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Save the index atomically. Failure only costs time later, so the
    /// caller may ignore it (after telling the user).
    pub fn store(&self, root: &Path) -> std::io::Result<()> {
        let Some(path) = Self::location(root) else {
            return Ok(());
        };
        let dir = path.parent().expect("index path has a parent");
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let bytes = zstd::encode_all(&json[..], 1)?;
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// The blobs of `path` if its stat matches a trusted record.
    pub fn lookup(&self, path: &str, stat: &Stat) -> Option<&[BlobId]> {
        let r = self.files.get(path)?;
        (r.size == stat.size
            && r.mtime_ns == stat.mtime_ns
            && r.ctime_ns == stat.ctime_ns
            && r.ino == stat.ino)
            .then_some(&r.blobs[..])
    }

    /// Record a file whose content (`blobs`) was read at `read_at_ns`.
    /// Racy entries (changed too close to the read) are dropped instead.
    pub fn record_read(&mut self, path: String, stat: &Stat, blobs: Vec<BlobId>, read_at_ns: i64) {
        if stat.ctime_ns > read_at_ns - RACY_NS {
            self.files.remove(&path);
            return;
        }
        self.record_written(path, stat, blobs);
    }

    /// Record a file this process has just written itself (restore), whose
    /// content is known without a race.
    pub fn record_written(&mut self, path: String, stat: &Stat, blobs: Vec<BlobId>) {
        self.files.insert(
            path,
            Record {
                size: stat.size,
                mtime_ns: stat.mtime_ns,
                ctime_ns: stat.ctime_ns,
                ino: stat.ino,
                blobs,
            },
        );
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
