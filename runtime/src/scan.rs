//! Walking the configured paths: a parallel walk that never follows
//! symlinks, skips the deny list and the user's excludes, and records what
//! it passes over so the summary can say so (by count, never by content).
//! Each directory is listed, its entries stat'ed and its subdirectories
//! opened relative to its own handle ([`WalkDir`]), never by a full path:
//! the kernel resolves one name per call, and a directory replaced by a
//! symlink while the walk runs is not followed.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::slice::ParallelSliceMut;
use stateful_ci_protocol::EntryKind;

use crate::deny::is_denied;
use crate::error::{Error, Result, io_ctx};
use crate::fsat::{self, Kind, WalkDir};

/// The parts of `lstat` the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
}

impl Stat {
    #[cfg(unix)]
    pub fn of(m: &Metadata) -> Stat {
        Stat {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            mode: m.mode() & 0o7777,
        }
    }

    /// Windows has no inode, ctime or mode bits: see
    /// [`crate::fsat::windows::stat_of`].
    #[cfg(windows)]
    pub fn of(m: &Metadata) -> Stat {
        crate::fsat::stat_of(m)
    }
}

/// One walked entry. A save holds one per entry of the workspace until
/// its stat index is written, so it is kept small: the path and, for a
/// symlink, its target share one allocation (`path NUL target`; neither
/// can hold a NUL), 64 bytes and the text where a path and an optional
/// target of their own took 80 bytes and two allocations.
#[derive(Debug, Clone)]
pub struct Scanned {
    text: Box<str>,
    pub kind: EntryKind,
    pub stat: Stat,
}

const _: () = assert!(std::mem::size_of::<Scanned>() <= 64);

impl Scanned {
    /// `target` is a symlink's (and only a symlink's) target.
    pub fn new(path: &str, kind: EntryKind, stat: Stat, target: Option<&str>) -> Scanned {
        debug_assert!(!path.contains('\0') && target.is_none_or(|t| !t.contains('\0')));
        let text = match target {
            Some(t) => format!("{path}\0{t}").into_boxed_str(),
            None => path.into(),
        };
        Scanned { text, kind, stat }
    }

    /// A file or directory, taking its path without copying it.
    fn owned(path: String, kind: EntryKind, stat: Stat) -> Scanned {
        Scanned {
            text: path.into_boxed_str(),
            kind,
            stat,
        }
    }

    pub fn path(&self) -> &str {
        // Only a symlink's text is searched (the walk's sort compares
        // paths n log n times).
        match self.kind {
            EntryKind::Symlink => self.text.split_once('\0').map_or(&self.text, |(p, _)| p),
            _ => &self.text,
        }
    }

    pub fn target(&self) -> Option<&str> {
        match self.kind {
            EntryKind::Symlink => self.text.split_once('\0').map(|(_, t)| t),
            _ => None,
        }
    }

    /// The path, given up without a copy (the symlink's target cut off).
    pub fn into_path(self) -> String {
        let len = self.path().len();
        let mut s = String::from(self.text);
        s.truncate(len);
        s
    }
}

#[derive(Debug, Default)]
pub struct ScanResult {
    /// Sorted by path.
    pub entries: Vec<Scanned>,
    pub skipped_credentials: u64,
    /// Sockets, FIFOs, devices.
    pub skipped_special: u64,
    pub skipped_non_utf8: u64,
    /// Configured roots that do not exist.
    pub missing_roots: Vec<String>,
}

/// Which relative paths the user excluded, plus the deny list.
pub struct Filter {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl Filter {
    pub fn new(excludes: &[String]) -> Result<Filter> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for pat in excludes {
            let glob = GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    Error::user(format!("exclude pattern {pat:?}: {e}"), "fix the glob")
                })?;
            if pat.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        Ok(Filter {
            by_path: by_path
                .build()
                .map_err(|e| Error::user(e.to_string(), "fix the exclude globs"))?,
            by_name: by_name
                .build()
                .map_err(|e| Error::user(e.to_string(), "fix the exclude globs"))?,
        })
    }

    /// Whether the user excluded `rel`. Called for every entry of every
    /// save and restore; most configurations exclude nothing, and an empty
    /// `GlobSet` still copies the path into a match candidate first.
    pub fn excluded(&self, rel: &str) -> bool {
        let name = || rel.rsplit('/').next().unwrap_or(rel);
        (!self.by_path.is_empty() && self.by_path.is_match(rel))
            || (!self.by_name.is_empty() && self.by_name.is_match(name()))
    }
}

/// Walk `roots` below `workspace`.
pub fn scan(workspace: &Path, roots: &[String], filter: &Filter) -> Result<ScanResult> {
    let out = Mutex::new(Vec::new());
    let counters = Counters::default();
    let errors = Mutex::new(Vec::new());
    let mut missing_roots = Vec::new();
    let walk = Walk {
        workspace,
        filter,
        out: &out,
        counters: &counters,
        errors: &errors,
    };
    rayon::scope(|s| {
        for root in roots {
            let abs = workspace.join(root);
            match std::fs::symlink_metadata(&abs) {
                Ok(m) => {
                    if filter.excluded(root) {
                        continue;
                    }
                    if is_denied(root) {
                        counters.credentials.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let stat = Stat::of(&m);
                    if m.is_dir() {
                        match WalkDir::open(&abs) {
                            Ok(dir) => walk.visit(s, root.clone(), dir, stat),
                            Err(e) => errors.lock().unwrap().push(io_ctx("list", &abs, e)),
                        }
                    } else {
                        let kind = Kind::of(m.file_type());
                        let target = || std::fs::read_link(&abs).map(|t| t.into_os_string());
                        if let Some(leaf) = walk.leaf(root.clone(), kind, stat, target) {
                            out.lock().unwrap().push(leaf);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    missing_roots.push(root.clone())
                }
                Err(e) => errors.lock().unwrap().push(io_ctx("read", &abs, e)),
            }
        }
    });
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    let mut entries = out.into_inner().unwrap();
    entries.par_sort_unstable_by(|a: &Scanned, b| a.path().cmp(b.path()));
    // Grown by doubling, the list can be twice its length (at 500,000
    // entries, 50 MB unused while the save runs).
    entries.shrink_to_fit();
    Ok(ScanResult {
        entries,
        skipped_credentials: counters.credentials.into_inner(),
        skipped_special: counters.special.into_inner(),
        skipped_non_utf8: counters.non_utf8.into_inner(),
        missing_roots,
    })
}

#[derive(Default)]
struct Counters {
    credentials: AtomicU64,
    special: AtomicU64,
    non_utf8: AtomicU64,
}

/// What every directory's task of one walk shares.
#[derive(Clone, Copy)]
struct Walk<'s> {
    workspace: &'s Path,
    filter: &'s Filter,
    out: &'s Mutex<Vec<Scanned>>,
    counters: &'s Counters,
    errors: &'s Mutex<Vec<Error>>,
}

impl<'s> Walk<'s> {
    fn fail(&self, what: &str, rel: &str, e: std::io::Error) {
        let abs = self.workspace.join(rel);
        self.errors.lock().unwrap().push(io_ctx(what, &abs, e));
    }

    /// Record the directory `rel` (open as `dir`, with `stat`), its files
    /// and symlinks, and start a task for each subdirectory. Every entry is
    /// stat'ed and every subdirectory opened relative to `dir`'s handle
    /// ([`WalkDir`]), never by a path a symlink could redirect.
    fn visit(self, s: &rayon::Scope<'s>, rel: String, dir: WalkDir, stat: Stat) {
        let listed = match dir.list() {
            Ok(l) => l,
            Err(e) => return self.fail("list", &rel, e),
        };
        // This directory and its files and symlinks go to the shared list in
        // one locked step (one lock per entry made the two threads of a
        // 120,000-file scan wait on each other).
        let mut here = Vec::with_capacity(listed.len() + 1);
        here.push(Scanned::new(
            &rel,
            EntryKind::Dir,
            Stat { size: 0, ..stat },
            None,
        ));
        // Subdirectories are walked by their own tasks once this listing is
        // done, each opening its directory relative to this one's handle
        // (shared until the last has done so): the descriptors open at
        // once follow the walk's frontier, not the number of directories.
        let mut subdirs = Vec::new();
        for l in listed {
            let name = l.name();
            let Some(name) = name_str(name) else {
                self.counters.non_utf8.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if name.starts_with(crate::restore::STAGING_PREFIX) {
                // A restore's private names (its own or a killed one's).
                continue;
            }
            let child = format!("{rel}/{name}");
            if self.filter.excluded(&child) {
                continue;
            }
            if is_denied(&child) {
                self.counters.credentials.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (kind, st) = match dir.stat(&l) {
                Ok(k) => k,
                // Removed since it was listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.fail("stat", &child, e);
                    continue;
                }
            };
            if kind == Kind::Dir {
                subdirs.push((child, l, st));
            } else if let Some(leaf) = self.leaf(child, kind, st, || dir.read_link(&l)) {
                here.push(leaf);
            }
        }
        self.out.lock().unwrap().append(&mut here);
        let dir = Arc::new(dir);
        for (child, l, st) in subdirs {
            let parent = Arc::clone(&dir);
            s.spawn(move |s| {
                let opened = parent.open_child(&l);
                drop(parent);
                match opened {
                    Ok(sub) => self.visit(s, child, sub, st),
                    // Removed, or replaced by a file or a symlink, since it
                    // was listed: left out, like a file that vanished.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            || fsat::is_loop(&e)
                            || fsat::is_not_dir(&e) => {}
                    Err(e) => self.fail("list", &child, e),
                }
            });
        }
    }

    /// A file or symlink as the snapshot records it; `None` for what it
    /// does not record (special files, a symlink whose target is not
    /// UTF-8), counted.
    fn leaf(
        &self,
        rel: String,
        kind: Kind,
        stat: Stat,
        target: impl FnOnce() -> std::io::Result<OsString>,
    ) -> Option<Scanned> {
        match kind {
            Kind::Symlink => match target() {
                Ok(t) => match t.to_str() {
                    Some(t) => Some(Scanned::new(
                        &rel,
                        EntryKind::Symlink,
                        Stat { size: 0, ..stat },
                        Some(t),
                    )),
                    None => {
                        self.counters.non_utf8.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                },
                Err(e) => {
                    self.fail("read the link", &rel, e);
                    None
                }
            },
            Kind::File => Some(Scanned::owned(rel, EntryKind::File, stat)),
            _ => {
                self.counters.special.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

fn name_str(name: &OsStr) -> Option<&str> {
    let s = name.to_str()?;
    // Names the manifest cannot represent safely.
    (!s.contains('\\') && !s.chars().any(char::is_control)).then_some(s)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// The walk records what `lstat` by path says (its own handle-relative
    /// calls must agree with std), lists a directory too large for one
    /// read of its records, records symlinks as themselves without
    /// following them, and counts what it cannot record.
    #[test]
    fn the_walk_agrees_with_lstat_and_never_follows_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path();
        let big = ws.join("root/big");
        std::fs::create_dir_all(&big).unwrap();
        // 2,000 names of about 60 bytes: over 32 KiB of directory records.
        for i in 0..2000 {
            std::fs::write(big.join(format!("{i:04}-{}", "n".repeat(55))), [i as u8]).unwrap();
        }
        std::fs::create_dir(ws.join("root/sub")).unwrap();
        std::fs::write(ws.join("root/sub/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("../outside", ws.join("root/link")).unwrap();
        std::fs::create_dir(ws.join("outside")).unwrap();
        std::fs::write(ws.join("outside/secret"), b"x").unwrap();
        std::os::unix::fs::symlink("../outside", ws.join("root/sub/dirlink")).unwrap();
        // Not UTF-8: refused by some file systems (APFS), counted where made.
        let bad = std::ffi::OsStr::from_bytes(b"root/sub/\xff");
        let non_utf8 = std::fs::write(ws.join(bad), b"").is_ok();

        let r = scan(ws, &["root".to_string()], &Filter::new(&[]).unwrap()).unwrap();
        assert_eq!(r.skipped_non_utf8, u64::from(non_utf8));
        assert_eq!(r.entries.len(), 1 + 1 + 2000 + 1 + 1 + 1 + 1);
        assert!(r.entries.windows(2).all(|w| w[0].path() < w[1].path()));
        for e in &r.entries {
            let m = std::fs::symlink_metadata(ws.join(e.path())).unwrap();
            let want = Stat::of(&m);
            let want = match e.kind {
                EntryKind::File => want,
                _ => Stat { size: 0, ..want },
            };
            assert_eq!(e.stat, want, "{}", e.path());
            let kind = if m.file_type().is_symlink() {
                EntryKind::Symlink
            } else if m.is_dir() {
                EntryKind::Dir
            } else {
                EntryKind::File
            };
            assert_eq!(e.kind, kind, "{}", e.path());
        }
        let link = r.entries.iter().find(|e| e.path() == "root/sub/dirlink");
        assert_eq!(link.unwrap().target(), Some("../outside"));
        assert!(r.entries.iter().all(|e| !e.path().contains("secret")));
    }

    /// A subdirectory replaced by a symlink between its listing and its
    /// opening is refused, never followed (the walk then leaves it out).
    #[test]
    fn a_directory_swapped_for_a_symlink_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/sub")).unwrap();
        std::fs::create_dir(t.path().join("outside")).unwrap();
        let root = WalkDir::open(&t.path().join("root")).unwrap();
        let listed = root.list().unwrap();
        let sub = listed.iter().find(|l| l.name() == "sub").unwrap();
        std::fs::remove_dir(t.path().join("root/sub")).unwrap();
        std::os::unix::fs::symlink("../outside", t.path().join("root/sub")).unwrap();
        let e = root
            .open_child(sub)
            .err()
            .expect("the symlink was followed");
        assert!(fsat::is_loop(&e) || fsat::is_not_dir(&e), "{e}");
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    /// A symlink's path and target come back apart from their one
    /// allocation; a file's path is all of its text, even where the
    /// text a symlink would use as a separator could appear.
    #[test]
    fn path_and_target_share_one_allocation_and_come_back_apart() {
        let stat = Stat {
            size: 0,
            mtime_ns: 7,
            ..Stat::default()
        };
        let link = Scanned::new("a/b/link", EntryKind::Symlink, stat, Some("../c/d"));
        assert_eq!(link.path(), "a/b/link");
        assert_eq!(link.target(), Some("../c/d"));
        assert_eq!(link.stat, stat);
        assert_eq!(link.clone().into_path(), "a/b/link");
        let empty = Scanned::new("l", EntryKind::Symlink, stat, Some(""));
        assert_eq!((empty.path(), empty.target()), ("l", Some("")));

        let file = Scanned::owned("a/b/file.js".to_string(), EntryKind::File, stat);
        assert_eq!(file.path(), "a/b/file.js");
        assert_eq!(file.target(), None);
        assert_eq!(file.into_path(), "a/b/file.js");
        let dir = Scanned::new("a/b", EntryKind::Dir, stat, None);
        assert_eq!((dir.path(), dir.target()), ("a/b", None));
    }
}
