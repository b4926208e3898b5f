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
///
/// The cache is bounded (descriptors are a limited resource) and evicts
/// approximately least recently used handles: two generations, where a hit
/// in the old one moves the handle to the young one and a full young
/// generation becomes the old one (dropping, and so closing, the handles
/// of the generation before that no one still holds). Restore writes files
/// in frame order, which jumps between directories; a cache that was
/// cleared whenever it filled up reopened every directory (and its
/// ancestors) about twice over on a tree with a few more directories than
/// it held (54,297 directory opens for 11,392 directories at 120,000
/// files).
pub struct Dirs {
    root: Arc<Handle>,
    cache: Mutex<Generations>,
    /// Most handles kept (both generations).
    cap: usize,
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Arc<Handle>>,
    old: HashMap<String, Arc<Handle>>,
}

impl Generations {
    fn get(&mut self, rel: &str, cap: usize) -> Option<Arc<Handle>> {
        if let Some(h) = self.young.get(rel) {
            return Some(h.clone());
        }
        let (k, h) = self.old.remove_entry(rel)?;
        self.insert(k, h.clone(), cap);
        Some(h)
    }

    fn insert(&mut self, rel: String, h: Arc<Handle>, cap: usize) {
        if self.young.len() >= cap / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(rel, h);
    }
}

/// Descriptors left for everything but cached directory handles (the files
/// being written, the store's pack files, the runtime's own).
const FD_RESERVE: u64 = 512;

impl Dirs {
    pub fn open(root: &Path) -> io::Result<Dirs> {
        let cap = raise_fd_limit()
            .saturating_sub(FD_RESERVE)
            .clamp(64, 1 << 16) as usize;
        Ok(Dirs::with_capacity(open_root(root)?, cap))
    }

    fn with_capacity(root: Handle, cap: usize) -> Dirs {
        Dirs {
            root: Arc::new(root),
            cache: Mutex::new(Generations::default()),
            cap,
        }
    }

    /// The handle of the directory at relative path `rel` ("" is the root),
    /// every component opened without following symlinks.
    pub fn get(&self, rel: &str) -> io::Result<Arc<Handle>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.cache.lock().unwrap().get(rel, self.cap) {
            return Ok(fd);
        }
        let (parent, name) = split(rel);
        let pfd = self.get(parent)?;
        let fd = Arc::new(open_dir_at(pfd.as_raw_fd(), name)?);
        self.cache
            .lock()
            .unwrap()
            .insert(rel.to_string(), fd.clone(), self.cap);
        Ok(fd)
    }

    /// Forget cached handles at or below `rel` (after it was renamed or
    /// removed).
    pub fn forget(&self, rel: &str) {
        let mut cache = self.cache.lock().unwrap();
        let keep =
            |k: &String, _: &mut Arc<Handle>| !stateful_ci_protocol::format::is_within(k, rel);
        cache.young.retain(keep);
        cache.old.retain(keep);
    }

    /// Handles held now (both generations).
    #[cfg(test)]
    fn cached(&self) -> usize {
        let c = self.cache.lock().unwrap();
        c.young.len() + c.old.len()
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

impl Kind {
    /// What std's file type (of metadata that did not follow a symlink) is.
    pub fn of(ft: std::fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 directories `dNN`, each with one subdirectory `s`.
    fn tree() -> (tempfile::TempDir, Dirs) {
        let t = tempfile::tempdir().unwrap();
        for i in 0..40 {
            std::fs::create_dir_all(t.path().join(format!("d{i:02}/s"))).unwrap();
        }
        let dirs = Dirs::with_capacity(open_root(t.path()).unwrap(), 8);
        (t, dirs)
    }

    #[test]
    fn the_handle_cache_stays_bounded_and_keeps_what_is_in_use() {
        let (_t, dirs) = tree();
        let hot = dirs.get("d00").unwrap();
        for i in 1..40 {
            dirs.get(&format!("d{i:02}/s")).unwrap();
            // A directory used between others stays cached: the same handle.
            if i % 2 == 0 {
                assert!(
                    Arc::ptr_eq(&hot, &dirs.get("d00").unwrap()),
                    "d00 reopened at {i}"
                );
            }
            assert!(dirs.cached() <= 8, "{} handles cached", dirs.cached());
        }
        // Every handle still names its directory.
        let s = dirs.get("d39/s").unwrap();
        assert!(read_names(s.as_raw_fd()).unwrap().is_empty());
        assert_eq!(
            read_names(dirs.get("d07").unwrap().as_raw_fd()).unwrap(),
            ["s"]
        );
    }

    #[test]
    fn forgetting_a_path_drops_it_and_what_is_below_it_from_both_generations() {
        let (_t, dirs) = tree();
        let first = dirs.get("d01/s").unwrap();
        for i in 2..6 {
            dirs.get(&format!("d{i:02}")).unwrap();
        }
        dirs.forget("d01");
        assert!(!Arc::ptr_eq(&first, &dirs.get("d01/s").unwrap()));
    }

    /// Whatever the umask, the file has exactly the mode asked for and the
    /// descriptor writes (also for a read-only mode).
    #[cfg(unix)]
    #[test]
    fn a_created_file_has_exactly_its_mode() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let root = open_root(t.path()).unwrap();
        for mode in [0o644, 0o755, 0o444, 0o666, 0o600, 0o777] {
            let name = format!("f{mode:o}");
            let mut f = create_file_with_mode_at(root.as_raw_fd(), &name, mode).unwrap();
            f.write_all(b"data").unwrap();
            drop(f);
            let m = std::fs::metadata(t.path().join(&name)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, mode, "{name}");
            assert_eq!(std::fs::read(t.path().join(&name)).unwrap(), b"data");
        }
    }
}
