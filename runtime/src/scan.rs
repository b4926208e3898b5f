//! Walking the configured paths: a parallel walk that never follows
//! symlinks, skips the deny list and the user's excludes, and records what
//! it passes over so the summary can say so (by count, never by content).

use std::ffi::OsStr;
use std::fs::Metadata;
#[cfg(unix)]
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rayon::slice::ParallelSliceMut;
use stateful_ci_protocol::EntryKind;

use crate::deny::is_denied;
use crate::error::{Error, Result, io_ctx};

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

#[derive(Debug, Clone)]
pub struct Scanned {
    pub path: Box<str>,
    pub kind: EntryKind,
    pub stat: Stat,
    pub target: Option<Box<str>>,
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
                    visit(
                        s,
                        workspace,
                        root.clone(),
                        m,
                        filter,
                        &out,
                        &counters,
                        &errors,
                    );
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
    entries.par_sort_unstable_by(|a: &Scanned, b| a.path.cmp(&b.path));
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

#[allow(clippy::too_many_arguments)]
fn visit<'s>(
    s: &rayon::Scope<'s>,
    workspace: &'s Path,
    rel: String,
    meta: Metadata,
    filter: &'s Filter,
    out: &'s Mutex<Vec<Scanned>>,
    counters: &'s Counters,
    errors: &'s Mutex<Vec<Error>>,
) {
    if !meta.is_dir() {
        if let Some(leaf) = leaf(workspace, rel, &meta, counters, errors) {
            out.lock().unwrap().push(leaf);
        }
        return;
    }
    let abs = workspace.join(&rel);
    let rd = match std::fs::read_dir(&abs) {
        Ok(rd) => rd,
        Err(e) => {
            errors.lock().unwrap().push(io_ctx("list", &abs, e));
            return;
        }
    };
    // This directory and its files and symlinks go to the shared list in
    // one locked step (one lock per entry made the two threads of a
    // 120,000-file scan wait on each other).
    let mut here = vec![Scanned {
        path: rel.as_str().into(),
        kind: EntryKind::Dir,
        stat: Stat {
            size: 0,
            ..Stat::of(&meta)
        },
        target: None,
    }];
    for ent in rd {
        let ent = match ent {
            Ok(e) => e,
            Err(e) => {
                errors.lock().unwrap().push(io_ctx("list", &abs, e));
                continue;
            }
        };
        let name = ent.file_name();
        let Some(name) = name_str(&name) else {
            counters.non_utf8.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if name.starts_with(crate::restore::STAGING_PREFIX) {
            // A restore's private names (its own or a killed one's).
            continue;
        }
        let child = format!("{rel}/{name}");
        if filter.excluded(&child) {
            continue;
        }
        if is_denied(&child) {
            counters.credentials.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let m = match ent.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.lock().unwrap().push(io_ctx("stat", &ent.path(), e));
                continue;
            }
        };
        if m.is_dir() {
            s.spawn(move |s| visit(s, workspace, child, m, filter, out, counters, errors));
        } else if let Some(leaf) = leaf(workspace, child, &m, counters, errors) {
            here.push(leaf);
        }
    }
    out.lock().unwrap().append(&mut here);
}

/// A file or symlink as the snapshot records it; `None` for what it does
/// not record (special files, a symlink whose target is not UTF-8), counted.
fn leaf(
    workspace: &Path,
    rel: String,
    meta: &Metadata,
    counters: &Counters,
    errors: &Mutex<Vec<Error>>,
) -> Option<Scanned> {
    let ft = meta.file_type();
    let stat = Stat::of(meta);
    if ft.is_symlink() {
        let abs = workspace.join(&rel);
        match std::fs::read_link(&abs) {
            Ok(t) => match t.to_str() {
                Some(t) => Some(Scanned {
                    path: rel.into(),
                    kind: EntryKind::Symlink,
                    stat: Stat { size: 0, ..stat },
                    target: Some(t.into()),
                }),
                None => {
                    counters.non_utf8.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
            Err(e) => {
                errors
                    .lock()
                    .unwrap()
                    .push(io_ctx("read the link", &abs, e));
                None
            }
        }
    } else if ft.is_file() {
        Some(Scanned {
            path: rel.into(),
            kind: EntryKind::File,
            stat,
            target: None,
        })
    } else {
        counters.special.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn name_str(name: &OsStr) -> Option<&str> {
    let s = name.to_str()?;
    // Names the manifest cannot represent safely.
    (!s.contains('\\') && !s.chars().any(char::is_control)).then_some(s)
}
