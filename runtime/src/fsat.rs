//! File-system operations relative to directory handles, never following a
//! symlink: the only way restore touches the workspace.
//!
//! A directory is reached by opening each component from the workspace's
//! own handle, one name at a time, refusing a symlink, at the moment it is
//! needed (not from a check made earlier), and every create, rename,
//! remove, mode and time change is made relative to such a handle. A
//! symlink that appears anywhere on the way, whether the snapshot put it
//! there, a case-insensitive file system aliased it, or something swapped
//! it in while the restore ran, makes the operation fail instead of leading
//! outside.
//!
//! Handles are cached per relative path for the length of one restore; a
//! cached handle pins the directory it was opened on, so later operations
//! cannot be redirected by a rename of a path component.
//!
//! One API, two implementations ([`unix`] and [`windows`], chosen at build
//! time); the shared part (the handle cache, path splitting) is here:
//!
//! - **Unix** (Linux, macOS): `openat` with `O_DIRECTORY | O_NOFOLLOW`,
//!   `mkdirat`, `renameat`, `unlinkat`, `fchmod` on a descriptor opened with
//!   `O_NOFOLLOW`, `utimensat` with `AT_SYMLINK_NOFOLLOW`.
//! - **Windows**: `NtCreateFile` relative to the parent's handle
//!   (`OBJECT_ATTRIBUTES.RootDirectory`, one component, so nothing on the
//!   way is resolved by path) with `FILE_OPEN_REPARSE_POINT`, so a symlink
//!   or junction is opened as itself, never traversed; a directory or file
//!   opened to be written into or through is then checked on its handle and
//!   refused when it is a symlink or junction (a name-surrogate reparse
//!   point). Renames (`FileRenameInformation` with the target directory's
//!   handle as `RootDirectory`) and deletions (`FileDispositionInformation`)
//!   are made on such handles, so they act on the link itself. Listing is
//!   by handle (`FileFullDirectoryInfo`). What Windows does not have:
//!   - mode bits: restore sets no permission or read-only flag on Windows
//!     (only the modification time); a snapshot saved on Windows records
//!     `0o644` for files and `0o755` for directories (`0o444`/`0o555` when
//!     the read-only attribute is set), see `scan::Stat::of`;
//!   - creating a symlink relative to a handle: `CreateSymbolicLinkW` takes
//!     a path, so [`symlink_at`] takes it from a second handle on the
//!     parent, opened without delete sharing (so the parent cannot be
//!     renamed away while it is held), right before the call. Creating a
//!     symlink needs Developer Mode or an elevated process (GitHub's
//!     Windows runners are); a relative target's `/` becomes `\`.
//!
//! The few other OS calls the engine makes (free space, whether a process
//! is alive, a file lock, opening a file to read without following a
//! symlink) are here too, so the rest of the engine is the same code on
//! every platform.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[cfg(unix)]
pub mod unix;
#[cfg(unix)]
pub use unix::*;
#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub use windows::*;

/// Cached directory handles below one root.
pub struct Dirs {
    root: Arc<Handle>,
    cache: Mutex<HashMap<String, Arc<Handle>>>,
    /// Most handles kept: half the descriptors the process may open.
    cap: usize,
}

impl Dirs {
    pub fn open(root: &Path) -> io::Result<Dirs> {
        Ok(Dirs {
            root: Arc::new(open_root(root)?),
            cache: Mutex::new(HashMap::new()),
            cap: (raise_fd_limit() / 2).clamp(64, 32768) as usize,
        })
    }

    /// The handle of the directory at relative path `rel` ("" is the root),
    /// every component opened without following symlinks.
    pub fn get(&self, rel: &str) -> io::Result<Arc<Handle>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.cache.lock().unwrap().get(rel) {
            return Ok(fd.clone());
        }
        let (parent, name) = split(rel);
        let pfd = self.get(parent)?;
        let fd = Arc::new(open_dir_at(pfd.as_raw_fd(), name)?);
        let mut cache = self.cache.lock().unwrap();
        if cache.len() > self.cap {
            // Bounded: descriptors are a limited resource.
            cache.clear();
        }
        cache.insert(rel.to_string(), fd.clone());
        Ok(fd)
    }

    /// Forget cached handles at or below `rel` (after it was renamed or
    /// removed).
    pub fn forget(&self, rel: &str) {
        let mut cache = self.cache.lock().unwrap();
        cache.retain(|k, _| !stateful_ci_protocol::format::is_within(k, rel));
    }
}

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
pub fn split(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// What `name` in `dir` is, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File,
    Dir,
    Symlink,
    Other,
}
