//! `restore`: make the configured paths equal to a snapshot.
//!
//! Two phases keep a failed restore from damaging the workspace:
//!
//! 1. *Stage*: fetch every frame the workspace lacks, decode it, verify every
//!    blob in it against its hash, and only then write the files it belongs
//!    to, under private names: a directory that does not exist yet (or is
//!    to replace a file or symlink) is built whole under a private name
//!    beside its final place (`.stateful-ci-staging-<pid>-<run>-<n>`), so a
//!    restore into an empty workspace writes every file once, in its own
//!    directory, with no rename; a file to replace in an existing directory
//!    is written to a private name in that same directory. Nothing else is
//!    touched, so a corrupt or unreachable store leaves the workspace as it
//!    was (the staged names are removed again).
//! 2. *Apply*: only when everything is staged, remove what the snapshot does
//!    not have, rename the staged trees and files into place (one rename per
//!    new directory tree, one per replaced file) and set metadata.
//!
//! Staging streams: the snapshot's entries come in path order and are
//! compared with the disk and staged a window at a time ([`WINDOW`] entries,
//! the size of the save's windows, so a cold snapshot's frames each serve
//! one window). Between windows only the directories still open, the
//! private names made and what apply will do are kept ([`ToApply`]: lists
//! that grow with the changes, not with the tree), and the new stat index
//! is written to a file as each window is staged. A directory's entries
//! come in one run (every path that starts with `D/`), so when it is closed
//! the names on disk it should not have are known, and a new one can be
//! given its mode and time.
//!
//! Entries are confined to the configured paths: the manifest's paths are
//! validated (including that no two collide after case folding or Unicode
//! normalisation), every operation goes through directory handles opened
//! without following symlinks ([`crate::fsat`]) at the moment it is made,
//! so a path is never written through a symlink (an unexpected symlink on
//! disk is replaced, never followed), and credential files are never
//! written even if a hostile snapshot contains them.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::borrow::Cow;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use stateful_ci_protocol::format::is_within;
use stateful_ci_protocol::limits::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, CHUNK_THRESHOLD, WindowCut};
use stateful_ci_protocol::{BlobId, EntryKind, Frame, Manifest, ObjectKey};

use crate::config::Config;
use crate::deny::is_denied;
use crate::error::{Error, Result, io_ctx};
use crate::fsat::{self, AsRawFd, Dirs, Kind};
use crate::objects::{
    Loc, Node, PieceDigest, PieceFp, blob_of, decode_frame_into, for_each_node, load_manifest,
};
use crate::report::{Phase, Reporter};
use crate::scan::{Filter, Stat};
use crate::statindex::{Base, IndexStream, IndexWriter, ReadAhead, Record, Streamed};
use crate::store::{RestorePoint, Store};

pub const STAGING_PREFIX: &str = ".stateful-ci-staging-";
/// Neighbouring frames of one pack are fetched in one request when the gap
/// between them is at most this.
const MAX_GAP: u64 = 1024 * 1024;
/// One ranged request reads at most this much (or one frame, if longer).
const MAX_SPAN: u64 = 4 * 1024 * 1024;
/// Transfers in progress at once, whatever the store's parallelism or the
/// machine's cores: each holds a fetched range and a decoded frame (about
/// 8 MiB), so this bounds a restore's memory beyond its plan. Four ranges
/// of 4 MiB in flight still cover a network's bandwidth-delay product
/// (200 MB/s at 50 ms is 10 MB). With the Worker store's 8 transfers of up
/// to 16 MiB, a 500,000-file restore through the backend peaked at
/// 361-398 MiB; it grew with the cores on a local store too.
const MAX_TRANSFERS: usize = 4;
/// Where a restore cuts the snapshot's entries into windows: where a save
/// cuts them ([`crate::save::WINDOW`]), so each frame a save packed serves
/// one window, generation after generation. A window of 65,536 entries
/// holds about 20 MB of plan.
pub const WINDOW: WindowCut = crate::save::WINDOW;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Refuse a snapshot that would write more than this many bytes.
    pub max_bytes: u64,
    /// Where the snapshot's entries are cut into windows, planned and
    /// staged one at a time ([`WINDOW`], as a save cuts them).
    pub window: WindowCut,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            max_bytes: 512 * 1024 * 1024 * 1024,
            window: WINDOW,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// No snapshot to restore from.
    Miss,
    Restored,
}

#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub outcome: RestoreOutcome,
    pub source: Option<RestorePoint>,
    pub files: u64,
    pub bytes: u64,
    pub files_written: u64,
    pub bytes_written: u64,
    /// Stored (compressed) bytes read from the store: the frames holding
    /// the snapshot's pieces and those staged for writing (the root
    /// manifest, one small object, is not counted).
    pub bytes_fetched: u64,
    /// Requests those bytes took.
    pub objects_fetched: u64,
    pub removed: u64,
    pub skipped_credentials: u64,
    pub duration: Duration,
}

impl RestoreSummary {
    fn miss(started: Instant) -> Self {
        RestoreSummary {
            outcome: RestoreOutcome::Miss,
            source: None,
            files: 0,
            bytes: 0,
            files_written: 0,
            bytes_written: 0,
            bytes_fetched: 0,
            objects_fetched: 0,
            removed: 0,
            skipped_credentials: 0,
            duration: started.elapsed(),
        }
    }
}

/// What the disk has at an entry's path (observed while planning; every
/// operation re-checks at the moment it is made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisk {
    Missing,
    File(Stat),
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Already right.
    Keep,
    /// Content right, mode or mtime not.
    FixMeta,
    /// Needs to be (re)written.
    Write,
}

/// Where an entry's new content is staged. One per entry, so it is kept
/// small (8 bytes): a private name is the entry's index
/// ([`Places::private_name`]), in its real parent, and is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Nothing to stage.
    None,
    /// The top of a new tree built under a private name in its real
    /// parent, moved into place whole.
    FreshTop,
    /// Inside such a tree: `dir` indexes [`Places::dirs`], the staged
    /// parent's relative path (shared by its entries); the entry keeps its
    /// own name.
    Fresh { dir: u32 },
    /// A private name in the entry's real parent directory.
    Temp,
}

/// Each entry's [`Place`], and the staged directories they name.
struct Places {
    at: Vec<Place>,
    dirs: Vec<Box<str>>,
    /// The index of the window's first entry across windows (private names
    /// are made of an entry's index: see [`Places::private_name`]).
    first: usize,
    /// The prefix of this restore's private names ([`private_prefix`]).
    own: Arc<str>,
}

impl Places {
    /// Name a staged directory; its index is what a [`Place::Fresh`] holds
    /// (fewer directories than entries, and entries fit in a `u32`).
    fn add_dir(&mut self, path: String) -> u32 {
        self.dirs.push(path.into());
        (self.dirs.len() - 1) as u32
    }

    /// The private name of the window's entry `i`: made of its index across
    /// windows, so it is unique within the restore and needs no storing.
    fn private_name(&self, i: usize) -> String {
        format!("{}{}", self.own, self.first + i)
    }
}

impl std::ops::Index<usize> for Places {
    type Output = Place;
    fn index(&self, i: usize) -> &Place {
        &self.at[i]
    }
}

/// What the stat index needs of a restored file's stat beyond its node
/// (whose size and mode it was restored with): 24 bytes a file where a
/// whole [`Stat`] took 40, held for every file until the restore is done.
#[derive(Debug, Clone, Copy)]
struct Seen {
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl Seen {
    fn of(st: &Stat) -> Seen {
        Seen {
            mtime_ns: st.mtime_ns,
            ctime_ns: st.ctime_ns,
            ino: st.ino,
        }
    }

    /// The file's stat: the node's size and mode, the times and inode seen.
    /// (A file that is not the node's size after all then differs from its
    /// record, so the next save reads it again.)
    fn stat(&self, node: &Node) -> Stat {
        Stat {
            size: node.size,
            mode: node.mode & 0o7777,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
        }
    }
}

/// A directory of the snapshot whose entries may still be coming. Paths
/// come in byte order, so the entries below a directory `D` (every path
/// that starts with `D/`) come in one run, though not always right after
/// `D` itself (`D-x` and `D.x` sort between): it is closed once a path at
/// or beyond `D0` comes (`0` follows `/`).
struct OpenDir {
    path: Box<str>,
    mode: u32,
    mtime_ns: i64,
    state: DirState,
}

enum DirState {
    /// A directory on disk that stays, with the names the snapshot has in
    /// it: the others are removed (at apply) once it is closed.
    Kept { names: Vec<Box<str>> },
    /// A new directory built under a private name: its staged path,
    /// whether it is the top of its tree, and its index in the current
    /// window's [`Places::dirs`].
    Staged { at: Box<str>, top: bool, slot: u32 },
}

impl OpenDir {
    /// Whether `path` (or any later one) may still be below this directory.
    fn open_at(&self, path: &str) -> bool {
        path.len() > self.path.len()
            && path.starts_with(&*self.path)
            && path.as_bytes()[self.path.len()] <= b'/'
    }
}

/// One window's plan: its entries in path order (with the parents a
/// hand-made snapshot did not list before their first child), what each
/// needs and where it is staged.
struct Window {
    nodes: Vec<Node>,
    action: Vec<Action>,
    /// The stat of each file as it will be after the restore, for its stat
    /// index record: planned for a file kept as it is, set when a file is
    /// written (from its descriptor; moving a new tree into place does not
    /// change it). Apply changes the ctime of a file it moves into a
    /// directory that stays, or whose mode or time it sets: those records
    /// then do not match, so the next save reads those files again (the
    /// changes, not the tree) and finds their content by the record's
    /// blobs, storing nothing again.
    written: Vec<OnceLock<Seen>>,
    place: Places,
}

/// What apply does once every window is staged: lists that grow with the
/// changes (and with the directories that stay), not with the snapshot.
#[derive(Default)]
struct ToApply {
    /// (directory that stays, name in it the snapshot does not have).
    remove: Vec<(Box<str>, Box<str>)>,
    /// Entries staged under a private name in their real parent (new trees
    /// and replaced files), in path order: (path, kind, private name). It
    /// is also what a failed restore removes, so an entry goes on it before
    /// its private name is made.
    moves: Vec<(Box<str>, EntryKind, Box<str>)>,
    /// Files and symlinks whose content stays but whose mode or time does
    /// not: (path, kind, mode, mtime).
    fix: Vec<(Box<str>, EntryKind, u32, i64)>,
    /// Directories whose mode and time are set last: those that stay (their
    /// times change as entries are moved in or removed), the tops of new
    /// trees, and new directories their owner may not write (a new
    /// directory is sealed as soon as it is staged, but writable until
    /// apply, so that a failed restore can remove it).
    dirs: Vec<(Box<str>, u32, i64)>,
}

/// A restore in progress. The snapshot's entries stream in path order
/// ([`for_each_node`]) and are planned and staged a window at a time
/// ([`RestoreOptions::window`]; the save packs frames from windows of the
/// same size, so each frame of a cold snapshot serves one window). What
/// outlives a window is the directories still open, the stat index being
/// written (to a file) and [`ToApply`]: memory grows with the window and
/// the changes, not with the snapshot.
struct Run<'a> {
    workspace: &'a Path,
    config: &'a Config,
    store: &'a dyn Store,
    manifest: &'a Manifest,
    filter: &'a Filter,
    dirs: &'a Dirs,
    pool: &'a rayon::ThreadPool,
    reporter: &'a dyn Reporter,
    opts: &'a RestoreOptions,
    /// Called after each window is planned, before it is staged (tests
    /// change the disk there).
    after_plan: &'a (dyn Fn() + Sync),
    /// The prefix of this restore's private names ([`private_prefix`]).
    own: Arc<str>,

    checker: PathChecker,
    /// Each piece's local digest, over all its entries (selected or not),
    /// for the stat index: the next save reuses a piece whose entries it
    /// finds unchanged without building it again.
    digest: PieceDigest,
    digests: Vec<PieceFp>,
    /// Entries of the snapshot taken (selected or not), and how many when
    /// the current window began: windows are cut over all the entries, as
    /// the save that wrote them cut its own.
    taken: usize,
    window_start: usize,
    batch: Vec<Node>,

    /// The index of the next window's first node, counted across windows
    /// (private names are made of it).
    next_index: usize,
    open: Vec<OpenDir>,
    /// The old stat index, streamed beside the nodes (both in path order),
    /// and its next record. Only the stats of files it proves are kept,
    /// for a window at a time.
    recorded: Option<(ReadAhead, Option<Streamed>)>,
    /// Missing ancestors of configured roots: to create (outermost first)
    /// when the first window is staged, then those created.
    ancestors: Vec<String>,
    made_ancestors: Vec<String>,
    /// New directories closed: their mode and time are set once the window
    /// that stages their last entries is done. (staged path, mode, mtime)
    seal: Vec<(Box<str>, u32, i64)>,
    /// The workspace's new stat index, written as windows are staged and
    /// put in place only after apply.
    index: std::io::Result<Option<IndexWriter>>,
    apply: ToApply,

    skipped_credentials: u64,
    files: u64,
    bytes: u64,
    files_written: u64,
    bytes_written: u64,
    bytes_fetched: u64,
    objects_fetched: u64,
}

impl<'a> Run<'a> {
    /// Take the next entry of the snapshot (`piece` is the piece it is in).
    fn take(&mut self, n: Node, piece: usize) -> Result<()> {
        while self.digests.len() < piece {
            self.digests.push(self.digest.finish());
        }
        self.digest.add_node(&n);
        self.taken += 1;
        let size = if n.kind == EntryKind::File { n.size } else { 0 };
        let ends = (self.opts.window).ends_after(&n.path, self.taken - self.window_start);
        let verdict = if self.config.paths.iter().any(|p| is_within(&n.path, p)) {
            self.checker.check(&n.path, n.kind, self.filter)
        } else {
            Skip::Excluded
        };
        match verdict {
            Skip::No => self.batch.push(n),
            Skip::Excluded => self.reporter.advance(size),
            Skip::Denied => {
                self.skipped_credentials += 1;
                self.reporter.advance(size);
            }
        }
        if ends {
            self.window_start = self.taken;
            self.flush()?;
        }
        Ok(())
    }

    /// Plan and stage the entries taken since the last window.
    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let room = window_room(self.opts, self.manifest.entries, self.taken);
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(room));
        let window = self.plan(batch)?;
        (self.after_plan)();
        self.stage(window)
    }

    /// After the last entry: the last window, then every directory still open.
    fn finish_stream(&mut self) -> Result<Vec<PieceFp>> {
        self.flush()?;
        self.close_passed(None)?;
        self.seal()?;
        if let Some((records, _)) = self.recorded.take() {
            // Records past a damaged one were not given out: those files
            // were compared by content instead.
            records.finish();
        }
        while self.digests.len() < self.manifest.pieces.len() {
            self.digests.push(self.digest.finish());
        }
        Ok(std::mem::take(&mut self.digests))
    }

    /// Close the open directories `path` is not below (all of them for
    /// `None`).
    fn close_passed(&mut self, path: Option<&str>) -> Result<()> {
        let mut k = 0;
        while k < self.open.len() {
            if path.is_some_and(|p| self.open[k].open_at(p)) {
                k += 1;
            } else {
                let d = self.open.remove(k);
                self.close(d)?;
            }
        }
        Ok(())
    }

    /// A directory has all its entries: list what else is in it (if it
    /// stays), or seal it (if it is new).
    fn close(&mut self, d: OpenDir) -> Result<()> {
        match d.state {
            DirState::Kept { mut names } => {
                // A parent a snapshot did not list is added before its
                // first child, so its name may come out of order.
                names.sort_unstable();
                let h = self
                    .dirs
                    .get(&d.path)
                    .map_err(|e| ws_err("open", &d.path, e))?;
                for name in
                    fsat::read_names(h.as_raw_fd()).map_err(|e| ws_err("list", &d.path, e))?
                {
                    if name.starts_with(&*self.own)
                        || names.binary_search_by(|n| (**n).cmp(name.as_str())).is_ok()
                    {
                        continue;
                    }
                    let rel = join(&d.path, &name);
                    if is_denied(&rel) || self.filter.excluded(&rel) {
                        continue;
                    }
                    self.apply.remove.push((d.path.clone(), name.into()));
                }
                self.apply.dirs.push((d.path, d.mode, d.mtime_ns));
            }
            DirState::Staged { top: true, .. } => {
                self.apply.dirs.push((d.path, d.mode, d.mtime_ns));
            }
            DirState::Staged { at, top: false, .. } => {
                if d.mode & 0o700 != 0o700 {
                    self.apply.dirs.push((d.path, d.mode, d.mtime_ns));
                }
                self.seal.push((at, d.mode, d.mtime_ns));
            }
        }
        Ok(())
    }

    /// Set the mode (writable by its owner until apply) and time of the new
    /// directories closed so far, whose entries are all staged.
    fn seal(&mut self) -> Result<()> {
        let seal = std::mem::take(&mut self.seal);
        seal.par_iter().try_for_each(|(at, mode, mtime)| {
            let (parent, name) = fsat::split(at);
            let d = self
                .dirs
                .get(parent)
                .map_err(|e| ws_err("open", parent, e))?;
            fsat::set_meta_at(d.as_raw_fd(), name, true, (mode & 0o777) | 0o700, *mtime)
                .map_err(|e| ws_err("set the metadata of", at, e))
        })
    }

    /// Decide what each entry of a window needs and where it is staged.
    fn plan(&mut self, batch: Vec<Node>) -> Result<Window> {
        let first = self.next_index;
        let mut place = Places {
            at: Vec::with_capacity(batch.len()),
            dirs: Vec::new(),
            first,
            own: self.own.clone(),
        };
        // New directories still open from the last window get slots in this
        // one.
        for d in &mut self.open {
            if let DirState::Staged { at, slot, .. } = &mut d.state {
                *slot = place.add_dir(at.to_string());
            }
        }
        let mut nodes = Vec::with_capacity(batch.len());
        for n in batch {
            self.close_passed(Some(&n.path))?;
            // A parent the snapshot does not list (only a hand-made
            // snapshot lacks one) is restored as a plain directory.
            let mut implied = Vec::new();
            let mut p = fsat::split(&n.path).0;
            while !p.is_empty()
                && self.config.paths.iter().any(|r| is_within(p, r))
                && !self.open.iter().any(|d| &*d.path == p)
            {
                implied.push(p.to_string());
                p = fsat::split(p).0;
            }
            for p in implied.into_iter().rev() {
                let dir = Node {
                    path: p.into(),
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    mtime_ns: 0,
                    size: 0,
                    target: None,
                    blobs: Box::default(),
                };
                self.add(dir, &mut nodes, &mut place);
            }
            self.add(n, &mut nodes, &mut place);
        }
        self.next_index += nodes.len();

        let recorded = self.recorded_for(&nodes);
        let workspace = self.workspace;
        let (action, written): (Vec<Action>, Vec<OnceLock<Seen>>) = nodes
            .par_iter()
            .enumerate()
            .map(|(i, e)| {
                let action = match (e.kind, place.at[i]) {
                    (EntryKind::Dir, Place::None) => Action::FixMeta,
                    // New directories, and whatever is below one: nothing
                    // of it is on disk.
                    (EntryKind::Dir, _) | (_, Place::Fresh { .. }) => Action::Write,
                    _ => {
                        let (action, disk) = compare(workspace, e, recorded.get(i));
                        let seen = match (action, disk) {
                            (Action::Keep, OnDisk::File(st)) => Some(Seen::of(&st)),
                            // Its time is set at apply, which changes its
                            // ctime: see `Window::written`.
                            (Action::FixMeta, OnDisk::File(st)) => Some(Seen {
                                mtime_ns: e.mtime_ns,
                                ..Seen::of(&st)
                            }),
                            _ => None,
                        };
                        if let Some(seen) = seen {
                            return (action, OnceLock::from(seen));
                        }
                        action
                    }
                };
                (action, OnceLock::new())
            })
            .unzip();
        // A file or symlink to write into a directory that stays is staged
        // beside its real name.
        for (i, e) in nodes.iter().enumerate() {
            if e.kind != EntryKind::Dir && place.at[i] == Place::None && action[i] == Action::Write
            {
                place.at[i] = Place::Temp;
            }
        }
        Ok(Window {
            nodes,
            action,
            written,
            place,
        })
    }

    /// Add an entry to the window being planned: a directory is placed at
    /// once (it is looked at on disk here, parents before children), the
    /// others once compared.
    fn add(&mut self, n: Node, nodes: &mut Vec<Node>, place: &mut Places) {
        let i = nodes.len();
        let (parent, name) = fsat::split(&n.path);
        let staged_parent = match self.open.iter_mut().rev().find(|d| &*d.path == parent) {
            Some(OpenDir {
                state: DirState::Kept { names },
                ..
            }) => {
                names.push(name.into());
                None
            }
            Some(OpenDir {
                state: DirState::Staged { at, slot, .. },
                ..
            }) => Some((join(at, name), *slot)),
            // A root: its parent is the workspace's.
            None => None,
        };
        if n.kind == EntryKind::Dir {
            let (p, state) = match staged_parent {
                Some((at, dir)) => {
                    let slot = place.add_dir(at.clone());
                    (
                        Place::Fresh { dir },
                        DirState::Staged {
                            at: at.into(),
                            top: false,
                            slot,
                        },
                    )
                }
                None if on_disk(&self.workspace.join(&*n.path)) == OnDisk::Dir => {
                    (Place::None, DirState::Kept { names: Vec::new() })
                }
                None => {
                    let at = join(parent, &place.private_name(i));
                    let slot = place.add_dir(at.clone());
                    (
                        Place::FreshTop,
                        DirState::Staged {
                            at: at.into(),
                            top: true,
                            slot,
                        },
                    )
                }
            };
            place.at.push(p);
            self.open.push(OpenDir {
                path: n.path.clone(),
                mode: n.mode,
                mtime_ns: n.mtime_ns,
                state,
            });
        } else {
            place.at.push(match staged_parent {
                Some((_, dir)) => Place::Fresh { dir },
                None => Place::None,
            });
        }
        nodes.push(n);
    }

    /// What the stat index recorded of each file node of a window whose
    /// blobs it lists as the node's (the stat that proves the file on disk
    /// is that content), `None` for the others; empty without an index.
    fn recorded_for(&mut self, nodes: &[Node]) -> Vec<Option<Record>> {
        let Some((records, next)) = &mut self.recorded else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            if n.kind != EntryKind::File {
                out.push(None);
                continue;
            }
            while next.as_ref().is_some_and(|(p, _, _)| **p < *n.path) {
                *next = records.next();
            }
            let found = match &*next {
                Some((p, r, _)) if **p == *n.path && r.blobs.iter().map(|b| &b.0).eq(n.ids()) => {
                    Some(Record {
                        size: r.size,
                        mtime_ns: r.mtime_ns,
                        ctime_ns: r.ctime_ns,
                        ino: r.ino,
                        trusted: r.trusted,
                        blobs: Box::default(),
                    })
                }
                _ => None,
            };
            out.push(found);
        }
        out
    }

    /// Stage a planned window: fetch, verify and write what it needs under
    /// private names, then record its files in the new stat index.
    fn stage(&mut self, w: Window) -> Result<()> {
        let Window {
            nodes,
            action,
            written,
            place,
        } = w;
        let to_write: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].kind == EntryKind::File && action[i] == Action::Write)
            .collect();
        let bytes: u64 = to_write.iter().map(|&i| nodes[i].size).sum();
        if self.bytes_written + bytes > self.opts.max_bytes {
            return Err(Error::corrupt(format!(
                "the snapshot would write more than the limit of {} bytes",
                self.opts.max_bytes
            )));
        }
        check_free_space(self.workspace, bytes)?;
        for a in std::mem::take(&mut self.ancestors) {
            let (p, n) = fsat::split(&a);
            let d = self.dirs.get(p).map_err(|e| ws_err("open", p, e))?;
            fsat::mkdir_at(d.as_raw_fd(), n, 0o755).map_err(|e| ws_err("create", &a, e))?;
            self.made_ancestors.push(a);
        }
        // Every private name this window may make in a real directory goes
        // on the list first (removing one that was never made is a no-op),
        // so a failure part way leaves nothing behind whichever thread made
        // what.
        for (i, e) in nodes.iter().enumerate() {
            match place[i] {
                Place::FreshTop | Place::Temp => {
                    self.apply
                        .moves
                        .push((e.path.clone(), e.kind, place.private_name(i).into()))
                }
                Place::None if action[i] == Action::FixMeta && e.kind != EntryKind::Dir => {
                    self.apply
                        .fix
                        .push((e.path.clone(), e.kind, e.mode, e.mtime_ns));
                }
                _ => {}
            }
            if e.kind == EntryKind::File {
                self.files += 1;
                self.bytes += e.size;
                if action[i] != Action::Write {
                    self.reporter.advance(e.size);
                }
            }
        }
        let (fetched, requests) = stage(
            self.store,
            self.manifest,
            self.dirs,
            &nodes,
            &place,
            &to_write,
            &written,
            self.reporter,
            self.pool,
        )?;
        self.seal()?;
        self.files_written += to_write.len() as u64;
        self.bytes_written += bytes;
        self.bytes_fetched += fetched;
        self.objects_fetched += requests;
        if let Ok(Some(index)) = &mut self.index {
            for (e, seen) in nodes.iter().zip(&written) {
                if let (EntryKind::File, Some(seen)) = (e.kind, seen.get()) {
                    index.push_file(&e.path, &seen.stat(e), true, &e.blobs);
                }
            }
        }
        Ok(())
    }

    /// Move everything staged into place; returns how many paths were
    /// removed.
    fn apply(&self) -> Result<u64> {
        let dirs = self.dirs;
        let ToApply {
            remove,
            moves,
            fix,
            dirs: metas,
        } = &self.apply;
        // What the snapshot does not have, from directories that stay.
        remove.par_iter().try_for_each(|(dir, name)| {
            let d = dirs.get(dir).map_err(|err| ws_err("open", dir, err))?;
            fsat::remove_at(d.as_raw_fd(), name)
                .map_err(|err| ws_err("remove", &join(dir, name), err))
        })?;
        for (path, kind, sname) in moves {
            move_into_place(dirs, path, *kind, sname)?;
        }
        for (path, kind, mode, mtime) in fix {
            let (parent, name) = fsat::split(path);
            let d = dirs
                .get(parent)
                .map_err(|err| ws_err("open", parent, err))?;
            match kind {
                EntryKind::Symlink => fsat::set_mtime_nofollow_at(d.as_raw_fd(), name, *mtime),
                _ => fsat::set_meta_at(d.as_raw_fd(), name, false, mode & 0o777, *mtime),
            }
            .map_err(|err| ws_err("set the metadata of", path, err))?;
        }
        // Directory modes and times last, since filling a directory changes
        // its mtime (setting a child's time or mode does not, so any order).
        metas.par_iter().try_for_each(|(path, mode, mtime)| {
            let (parent, name) = fsat::split(path);
            let d = dirs
                .get(parent)
                .map_err(|err| ws_err("open", parent, err))?;
            fsat::set_meta_at(d.as_raw_fd(), name, true, mode & 0o777, *mtime)
                .map_err(|err| ws_err("set the metadata of", path, err))
        })?;
        Ok(remove.len() as u64)
    }

    /// Remove what a failed restore made: the private names not moved into
    /// place yet (what was moved is the snapshot's content, verified), then
    /// the ancestors it created.
    fn roll_back(&self) {
        for (path, _, sname) in self.apply.moves.iter().rev() {
            let dir = fsat::split(path).0;
            if let Ok(d) = self.dirs.get(dir) {
                let _ = fsat::remove_at(d.as_raw_fd(), sname);
            }
        }
        for a in self.made_ancestors.iter().rev() {
            let (p, n) = fsat::split(a);
            if let Ok(d) = self.dirs.get(p) {
                let _ = fsat::rmdir_at(d.as_raw_fd(), n);
            }
        }
    }
}

/// Whether a file or symlink planned into a directory that stays (or a
/// root) is right on disk already. `recorded` is its stat index record,
/// if the index lists its content.
fn compare(workspace: &Path, e: &Node, recorded: Option<&Option<Record>>) -> (Action, OnDisk) {
    let abs = workspace.join(&*e.path);
    let disk = on_disk(&abs);
    let action = match (e.kind, disk) {
        (EntryKind::Symlink, OnDisk::Symlink) => {
            let same = fs::read_link(&abs).ok().is_some_and(|t| {
                Some(t.as_os_str().as_encoded_bytes()) == e.target.as_deref().map(str::as_bytes)
            });
            if same { Action::FixMeta } else { Action::Write }
        }
        (EntryKind::File, OnDisk::File(st)) => {
            let same = recorded
                .and_then(Option::as_ref)
                .is_some_and(|r| r.matches(&st))
                || (st.size == e.size
                    && hash_file(&abs)
                        .ok()
                        .is_some_and(|ids| ids.iter().eq(e.ids())));
            match (
                same,
                st.mode & 0o777 == e.mode & 0o777 && st.mtime_ns == e.mtime_ns,
            ) {
                (true, true) => Action::Keep,
                (true, false) => Action::FixMeta,
                (false, _) => Action::Write,
            }
        }
        _ => Action::Write,
    };
    (action, disk)
}

pub fn restore(
    workspace: &Path,
    config: &Config,
    store: &dyn Store,
    reporter: &dyn Reporter,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    restore_with(workspace, config, store, reporter, opts, &|| {})
}

fn restore_with(
    workspace: &Path,
    config: &Config,
    store: &dyn Store,
    reporter: &dyn Reporter,
    opts: &RestoreOptions,
    after_plan: &(dyn Fn() + Sync),
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let Some(point) = store.restore_point()? else {
        return Ok(RestoreSummary::miss(started));
    };
    let manifest = load_manifest(store, &point.head.snapshot)?;
    let filter = Filter::new(&config.exclude)?;
    clean_stale_staging(workspace, &config.paths);
    let mut ancestors = Vec::new();
    for root in &config.paths {
        for a in check_root_ancestors(workspace, root)? {
            if !ancestors.contains(&a) {
                ancestors.push(a);
            }
        }
    }
    ancestors.sort();
    let dirs = Dirs::open(workspace).map_err(|e| io_ctx("open", workspace, e))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(store.parallelism().clamp(1, MAX_TRANSFERS))
        .build()
        .map_err(|e| Error::workspace(format!("cannot start transfer threads: {e}")))?;

    reporter.phase(Phase::Fetch, Some(manifest.bytes));
    let mut run = Run {
        workspace,
        config,
        store,
        manifest: &manifest,
        filter: &filter,
        dirs: &dirs,
        pool: &pool,
        reporter,
        opts,
        after_plan,
        own: private_prefix().into(),
        checker: PathChecker::default(),
        digest: PieceDigest::default(),
        digests: Vec::with_capacity(manifest.pieces.len()),
        taken: 0,
        window_start: 0,
        batch: Vec::with_capacity(window_room(opts, manifest.entries, 0)),
        next_index: 0,
        open: Vec::new(),
        recorded: IndexStream::open(workspace).map(|s| {
            let mut records = s.read_ahead();
            let next = records.next();
            (records, next)
        }),
        ancestors,
        made_ancestors: Vec::new(),
        seal: Vec::new(),
        index: IndexWriter::create(workspace),
        apply: ToApply::default(),
        skipped_credentials: 0,
        files: 0,
        bytes: 0,
        files_written: 0,
        bytes_written: 0,
        bytes_fetched: 0,
        objects_fetched: 0,
    };
    let streamed = for_each_node(store, &manifest, |n, piece| run.take(n, piece))
        .and_then(|listing| Ok((listing, run.finish_stream()?)));
    let (listing, digests) = match streamed {
        Ok(x) => x,
        Err(e) => {
            run.roll_back();
            return Err(e);
        }
    };
    if run.skipped_credentials > 0 {
        reporter.warn(&format!(
            "the snapshot contains {} credential file(s) that were not restored",
            run.skipped_credentials
        ));
    }

    reporter.phase(Phase::Apply, None);
    let removed = match run.apply() {
        Ok(n) => n,
        Err(e) => {
            run.roll_back();
            return Err(e);
        }
    };
    let base = Base::of_manifest(store.describe(), point.head.snapshot, &manifest, digests);
    let index = std::mem::replace(&mut run.index, Ok(None))
        .and_then(|w| w.map_or(Ok(()), |w| w.finish(Some(&base))));
    if let Err(err) = index {
        reporter.warn(&format!(
            "could not write the local stat index ({err}); the next save will re-read every file"
        ));
    }
    Ok(RestoreSummary {
        outcome: RestoreOutcome::Restored,
        source: Some(point),
        files: run.files,
        bytes: run.bytes,
        files_written: run.files_written,
        bytes_written: run.bytes_written,
        bytes_fetched: run.bytes_fetched + listing.bytes,
        objects_fetched: run.objects_fetched + listing.requests,
        removed,
        skipped_credentials: run.skipped_credentials,
        duration: started.elapsed(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    No,
    Excluded,
    Denied,
}

/// [`check_filters`] for entries that come in path order: it remembers the
/// directories it let through that may still have entries to come (the
/// outermost first), so an entry whose parent passed needs only its own
/// path checked, not every prefix again (at 120,000 entries, a third of a
/// second of a restore's planning).
#[derive(Default)]
struct PathChecker {
    kept_dirs: Vec<String>,
}

impl PathChecker {
    fn check(&mut self, path: &str, kind: EntryKind, filter: &Filter) -> Skip {
        let parent = fsat::split(path).0;
        while self.kept_dirs.last().is_some_and(|d| !is_within(parent, d)) {
            self.kept_dirs.pop();
        }
        let verdict = if self.kept_dirs.last().is_some_and(|d| d == parent) {
            check_path(path, filter)
        } else {
            check_filters(path, filter)
        };
        if verdict == Skip::No && kind == EntryKind::Dir {
            self.kept_dirs.push(path.to_string());
        }
        verdict
    }
}

/// Check a path and each of its parents against the excludes and the deny list.
fn check_filters(path: &str, filter: &Filter) -> Skip {
    let mut end = 0;
    loop {
        let next = path[end..].find('/').map(|i| end + i).unwrap_or(path.len());
        if let verdict @ (Skip::Denied | Skip::Excluded) = check_path(&path[..next], filter) {
            return verdict;
        }
        if next == path.len() {
            return Skip::No;
        }
        end = next + 1;
    }
}

/// Check one path (not its parents) against the deny list and the excludes.
fn check_path(path: &str, filter: &Filter) -> Skip {
    if is_denied(path) {
        Skip::Denied
    } else if filter.excluded(path) {
        Skip::Excluded
    } else {
        Skip::No
    }
}

fn on_disk(abs: &Path) -> OnDisk {
    match fs::symlink_metadata(abs) {
        Ok(m) if m.file_type().is_symlink() => OnDisk::Symlink,
        Ok(m) if m.is_file() => OnDisk::File(Stat::of(&m)),
        Ok(m) if m.is_dir() => OnDisk::Dir,
        Ok(_) => OnDisk::Other,
        Err(_) => OnDisk::Missing,
    }
}

/// The blob ids of a file on disk, chunked the way a save would.
fn hash_file(abs: &Path) -> std::io::Result<Vec<BlobId>> {
    let mut f = fsat::open_nofollow(abs)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Vec::new());
    }
    if len <= CHUNK_THRESHOLD {
        let mut data = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut f, &mut data)?;
        return Ok(vec![BlobId::of(&data)]);
    }
    fastcdc::v2020::StreamCDC::new(&mut f, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .map(|c| {
            c.map(|c| BlobId::of(&c.data))
                .map_err(std::io::Error::other)
        })
        .collect()
}

/// The directories above a configured root belong to the repository: they
/// must be real directories (or absent), never symlinks leading elsewhere.
/// Returns the ones that are missing, outermost first.
fn check_root_ancestors(workspace: &Path, root: &str) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    let comps: Vec<&str> = root.split('/').collect();
    for n in 1..comps.len() {
        let rel = comps[..n].join("/");
        let abs = workspace.join(&rel);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::user(
                    format!(
                        "cannot restore {root}: {} is not a directory (a symlink or file)",
                        abs.display()
                    ),
                    "restore only writes below real directories of the workspace; remove it or change `paths`",
                ));
            }
            Err(_) => missing.push(rel),
        }
    }
    Ok(missing)
}

/// Room for the next window's entries, reserved from the start (grown by
/// doubling, the batch would take up to twice its size): a window's most,
/// or what the snapshot says is left, and never more than 2^20 whatever a
/// hostile root claims.
fn window_room(opts: &RestoreOptions, entries: u64, taken: usize) -> usize {
    let left = usize::try_from(entries)
        .unwrap_or(usize::MAX)
        .saturating_sub(taken);
    opts.window.max.clamp(1, 1 << 20).min(left.max(1))
}

/// The prefix of one restore's private names: the process's id, so that a
/// later restore can tell the names of a restore still running from those
/// of one that was killed ([`clean_stale_staging`]), and a number drawn for
/// this restore, because ids repeat (in a container, a job's processes get
/// the same ids run after run): a killed restore's names are never taken
/// for a new one's, so they are removed, not skipped or collided with.
fn private_prefix() -> String {
    static RESTORES: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = blake3::Hasher::new();
    h.update(&pid.to_le_bytes());
    h.update(&now.to_le_bytes());
    h.update(&RESTORES.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    format!("{STAGING_PREFIX}{pid}-{}-", &h.finalize().to_hex()[..8])
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn ws_err(what: &str, rel: &str, e: std::io::Error) -> Error {
    let hint = if fsat::is_loop(&e) || fsat::is_not_dir(&e) {
        Some("a path component is a symlink or file on disk; restore never writes through one")
    } else {
        None
    };
    let err = Error::workspace(format!("cannot {what} {rel}: {e}"));
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

/// Makes the staged entries that are not written whole (see [`stage`]):
/// `groups` holds them by the directory they are made in.
struct Maker<'a> {
    dirs: &'a Dirs,
    nodes: &'a [Node],
    place: &'a Places,
    written: &'a [OnceLock<Seen>],
    groups: HashMap<&'a str, Vec<usize>>,
    failed: Mutex<Option<Error>>,
}

impl<'a> Maker<'a> {
    /// The staged path of entry `i` if it is a directory.
    fn staged_dir(&self, i: usize) -> Option<String> {
        if self.nodes[i].kind != EntryKind::Dir {
            return None;
        }
        let (dir, name) = staged_at(self.place, self.nodes, i)?;
        Some(join(dir, &name))
    }

    /// Make the group in `dir` (which exists), starting a task for the group
    /// in each directory as soon as it is made.
    fn make<'s>(&'s self, s: &rayon::Scope<'s>, dir: &'s str) {
        for &i in &self.groups[dir] {
            if self.failed.lock().unwrap().is_some() {
                return;
            }
            if let Err(e) = create_staged(self.dirs, self.nodes, self.place, i, &self.written[i]) {
                self.failed.lock().unwrap().get_or_insert(e);
                return;
            }
            if let Some(sub) = self.staged_dir(i) {
                if let Some((sub, _)) = self.groups.get_key_value(sub.as_str()) {
                    s.spawn(move |s| self.make(s, sub));
                }
            }
        }
    }
}

/// Where entry `i` is staged: (parent dir, name).
fn staged_at<'a>(
    place: &'a Places,
    nodes: &'a [Node],
    i: usize,
) -> Option<(&'a str, Cow<'a, str>)> {
    let path = &*nodes[i].path;
    match place[i] {
        Place::Fresh { dir } => Some((
            &place.dirs[dir as usize],
            Cow::Borrowed(fsat::split(path).1),
        )),
        Place::FreshTop | Place::Temp => {
            Some((fsat::split(path).0, Cow::Owned(place.private_name(i))))
        }
        Place::None => None,
    }
}

/// One ranged read of a pack and the frames it covers.
struct Fetch {
    pack: ObjectKey,
    start: u64,
    end: u64,
    /// Each frame with its run of [`Target`]s.
    frames: Vec<(Frame, std::ops::Range<usize>)>,
}

/// One write of a blob: its frame (an index in the restore's frame table,
/// which is in pack order), where the blob starts in the decoded frame, and
/// which blob of which entry it is (the entry holds the blob's id and
/// place). Kept in one vector sorted by frame, so each frame's writes are a
/// run of it: 16 bytes a blob, 8 MB at 500,000 files (a map from blob to
/// destinations and a second map from frame to blobs took 207 MB). The
/// sort key is inside it: sorting 120,000 targets through their entries
/// (a cache miss per comparison) took 0.15 s on one thread.
#[derive(Clone, Copy)]
struct Target {
    frame: u32,
    /// The blob's offset in its decoded frame (frames decode to at most
    /// `MAX_FRAME_RAW` bytes, checked when the manifest was read).
    at: u32,
    node: u32,
    blob: u32,
}

impl Target {
    fn blob<'n>(&self, nodes: &'n [Node]) -> &'n (BlobId, Loc) {
        &nodes[self.node as usize].blobs[self.blob as usize]
    }

    /// Frames in pack order, then the blobs of a frame by place, so the
    /// writes of one blob (a blob written to several files) are adjacent
    /// and it is verified once.
    fn key(&self) -> u64 {
        (u64::from(self.frame) << 32) | u64::from(self.at)
    }

    /// Whether `other` writes the same blob (same place, length and id).
    fn same_blob(&self, other: &Target, nodes: &[Node]) -> bool {
        self.key() == other.key() && self.blob(nodes) == other.blob(nodes)
    }

    /// Where the blob goes in its file, and whether it is the whole file.
    fn offset_in_file(&self, nodes: &[Node]) -> (u64, bool) {
        let blobs = &nodes[self.node as usize].blobs;
        let off = blobs[..self.blob as usize]
            .iter()
            .map(|(_, l)| l.length())
            .sum();
        (off, blobs.len() == 1)
    }
}

/// A frame's place in pack order.
fn frame_order(f: &Frame) -> (u32, u64, u64, u64, u8) {
    (f.pack, f.offset, f.length, f.raw_len, f.codec as u8)
}

/// Fetch, verify and write a window's content under private names (see
/// [`Run::stage`]); returns the stored bytes fetched and the requests.
#[allow(clippy::too_many_arguments)]
fn stage(
    store: &dyn Store,
    manifest: &Manifest,
    dirs: &Dirs,
    nodes: &[Node],
    place: &Places,
    to_write: &[usize],
    written: &[OnceLock<Seen>],
    reporter: &dyn Reporter,
    pool: &rayon::ThreadPool,
) -> Result<(u64, u64)> {
    // Directories of new trees, symlinks, and empty and multi-blob files
    // created at their size: grouped by the directory they are created in,
    // each group made by one thread, and each directory made starting its
    // own group's task at once, so subtrees are made in parallel while
    // siblings never are (made one depth at a time, each depth in parallel,
    // two threads making siblings spent a fifth of this phase spinning on
    // their parent's lock at 120,000 files).
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in nodes.iter().enumerate() {
        let single_file = e.kind == EntryKind::File && e.blobs.len() == 1;
        if place[i] == Place::None || single_file {
            continue;
        }
        let (dir, _) = staged_at(place, nodes, i).expect("placed entries are staged");
        groups.entry(dir).or_default().push(i);
    }
    let maker = Maker {
        dirs,
        nodes,
        place,
        written,
        groups,
        failed: Mutex::new(None),
    };
    let made: HashSet<String> = maker
        .groups
        .values()
        .flatten()
        .filter_map(|&i| maker.staged_dir(i))
        .collect();
    pool.install(|| {
        rayon::scope(|s| {
            for dir in maker.groups.keys().filter(|d| !made.contains(**d)) {
                let maker = &maker;
                s.spawn(move |s| maker.make(s, dir));
            }
        })
    });
    drop(made);
    let Maker { groups, failed, .. } = maker;
    drop(groups);
    if let Some(e) = failed.into_inner().unwrap() {
        return Err(e);
    }

    // Which frames hold what: the frames in pack order, then every write
    // with its frame's index in that table.
    let mut table: Vec<Frame> = {
        let mut seen: HashSet<Frame> = HashSet::new();
        to_write
            .iter()
            .flat_map(|&i| nodes[i].blobs.iter().map(|(_, l)| l.frame()))
            .filter(|f| seen.insert(*f))
            .collect()
    };
    table.sort_unstable_by_key(frame_order);
    let mut targets: Vec<Target> = Vec::with_capacity(to_write.len());
    for &i in to_write {
        for (b, (_, loc)) in nodes[i].blobs.iter().enumerate() {
            let frame = table
                .binary_search_by_key(&frame_order(&loc.frame()), frame_order)
                .expect("every frame is in the table");
            // A `Loc` holds its offset in 32 bits.
            let at = loc.offset() as u32;
            targets.push(Target {
                frame: frame as u32,
                at,
                node: i as u32,
                blob: b as u32,
            });
        }
    }
    targets.par_sort_unstable_by_key(Target::key);
    let mut frames: Vec<(Frame, std::ops::Range<usize>)> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let f = table[t.frame as usize];
        match frames.last_mut() {
            Some((last, run)) if *last == f => run.end = i + 1,
            _ => frames.push((f, i..i + 1)),
        }
    }
    let mut fetches: Vec<Fetch> = Vec::new();
    for (f, run) in frames {
        let key = manifest.packs[f.pack as usize];
        let end = f.offset + f.length;
        match fetches.last_mut() {
            Some(x)
                if x.pack == key
                    && f.offset >= x.end
                    && f.offset <= x.end + MAX_GAP
                    && end - x.start <= MAX_SPAN =>
            {
                x.end = end;
                x.frames.push((f, run));
            }
            _ => fetches.push(Fetch {
                pack: key,
                start: f.offset,
                end,
                frames: vec![(f, run)],
            }),
        }
    }
    fetches.sort_by_key(|f| std::cmp::Reverse(f.end - f.start));
    let fetched: u64 = fetches.iter().map(|f| f.end - f.start).sum();
    let requests = fetches.len() as u64;

    // A fixed set of transfer threads, each with its own range and decoded
    // frame buffer, reused from one fetch to the next: at most
    // MAX_TRANSFERS fetches are in memory at once, whatever the snapshot.
    // The writes of a frame go to the pool, which runs nothing else: when
    // fetches were tasks of that pool, a thread waiting on its frame's
    // writes stole another fetch, and the fetches in memory grew with the
    // nesting (a 500,000-file restore through the backend peaked 40 to
    // 90 MiB above its plan).
    let transfer = |f: &Fetch, data: &mut Vec<u8>, plain: &mut Vec<u8>| -> Result<()> {
        store.get_into(&f.pack, Some(f.start..f.end), data)?;
        if data.len() as u64 != f.end - f.start {
            return Err(Error::corrupt(format!("{} returned a short range", f.pack)));
        }
        for (fr, run) in &f.frames {
            let lo = (fr.offset - f.start) as usize;
            decode_frame_into(fr, &data[lo..lo + fr.length as usize], plain)
                .map_err(|e| Error::corrupt(format!("pack {}: {}", f.pack, e.message)))?;
            // Verify every blob of the frame before writing any of them (a
            // blob written to several files is verified once).
            let run = &targets[run.clone()];
            let mut verified: Vec<&[u8]> = Vec::with_capacity(run.len());
            for (k, t) in run.iter().enumerate() {
                let repeat = k > 0 && run[k - 1].same_blob(t, nodes);
                let bytes = if repeat {
                    verified[k - 1]
                } else {
                    let (id, loc) = t.blob(nodes);
                    blob_of(id, loc.offset(), loc.length(), plain)?
                };
                verified.push(bytes);
            }
            // Written in path order, not in the blob order they were
            // verified in: files of one directory are then created one
            // after another (as `tar -x` does), and each thread takes its
            // own run of directories. In blob order every create went to a
            // random directory of the frame, and both threads into the
            // same ones.
            let mut by_path: Vec<u32> = (0..run.len() as u32).collect();
            by_path.sort_unstable_by_key(|&k| (run[k as usize].node, run[k as usize].blob));
            // Blobs of one file that follow each other in it and lie back
            // to back in the frame (a large file's chunks, which a save
            // packs in order) are written with one call, as one range of
            // verified bytes: a 56 MiB file took an open, a write and a
            // close for each of its 450 chunks. `writes` holds runs of
            // `by_path`.
            let mut writes: Vec<std::ops::Range<usize>> = Vec::with_capacity(by_path.len());
            for (j, &k) in by_path.iter().enumerate() {
                let t = &run[k as usize];
                if let Some(w) = writes.last_mut() {
                    let p = by_path[j - 1] as usize;
                    let prev = &run[p];
                    if prev.node == t.node
                        && t.blob == prev.blob + 1
                        && prev.at as usize + verified[p].len() == t.at as usize
                    {
                        w.end = j + 1;
                        continue;
                    }
                }
                writes.push(j..j + 1);
            }
            let plain: &[u8] = plain;
            // The writes of a frame are spread over the pool (each goes to
            // its own file or range), so the threads stay busy to the last
            // frame however unevenly the frames are sized.
            pool.install(|| {
                writes
                    .par_iter()
                    .with_min_len(32)
                    .try_for_each(|w| -> Result<()> {
                        let (first, last) =
                            (by_path[w.start] as usize, by_path[w.end - 1] as usize);
                        let t = &run[first];
                        // Every blob of the range was verified above.
                        let bytes =
                            &plain[t.at as usize..run[last].at as usize + verified[last].len()];
                        let i = t.node as usize;
                        let (off, whole) = t.offset_in_file(nodes);
                        write_blob(dirs, nodes, place, i, bytes, off, whole, &written[i])?;
                        reporter.advance(bytes.len() as u64);
                        Ok(())
                    })
            })?;
        }
        Ok(())
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let threads = store
        .parallelism()
        .clamp(1, MAX_TRANSFERS)
        .min(fetches.len());
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| -> Result<()> {
                    use std::sync::atomic::Ordering::Relaxed;
                    // Ranges are reused: a fresh vector per range cost a
                    // page fault and a zeroed page per 4 KiB received.
                    let (mut data, mut plain) = (Vec::new(), Vec::new());
                    while !stop.load(Relaxed) {
                        let Some(f) = fetches.get(next.fetch_add(1, Relaxed)) else {
                            break;
                        };
                        if let Err(e) = transfer(f, &mut data, &mut plain) {
                            stop.store(true, Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        // Any error stops every worker; the first worker's is reported.
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>>>()
    })?;
    // Metadata of multi-blob files, now complete.
    to_write
        .par_iter()
        .filter(|&&i| nodes[i].blobs.len() > 1)
        .try_for_each(|&i| {
            let (dir, name) = staged_at(place, nodes, i).expect("files to write are staged");
            let d = dirs.get(dir).map_err(|e| ws_err("open", dir, e))?;
            fsat::set_meta_at(
                d.as_raw_fd(),
                &name,
                false,
                nodes[i].mode & 0o777,
                nodes[i].mtime_ns,
            )
            .map_err(|e| ws_err("set the mode of", &nodes[i].path, e))?;
            if let Ok(m) =
                fsat::open_file_at(d.as_raw_fd(), &name, false).and_then(|f| f.metadata())
            {
                let _ = written[i].set(Seen::of(&Stat::of(&m)));
            }
            Ok(())
        })?;
    Ok((fetched, requests))
}

/// Create staged entry `i` (a directory, a symlink, or a file that is empty
/// or written in several blobs) under its staged name.
fn create_staged(
    dirs: &Dirs,
    nodes: &[Node],
    place: &Places,
    i: usize,
    written: &OnceLock<Seen>,
) -> Result<()> {
    let e = &nodes[i];
    let (dir, name) = staged_at(place, nodes, i).expect("only staged entries are created");
    let name = name.as_ref();
    let d = dirs.get(dir).map_err(|err| ws_err("open", dir, err))?;
    match e.kind {
        EntryKind::Dir => {
            fsat::mkdir_at(d.as_raw_fd(), name, 0o700).map_err(|err| ws_err("create", &e.path, err))
        }
        EntryKind::Symlink => {
            fsat::symlink_at(e.target.as_deref().unwrap_or_default(), d.as_raw_fd(), name)
                .map_err(|err| ws_err("create the symlink", &e.path, err))?;
            fsat::set_mtime_nofollow_at(d.as_raw_fd(), name, e.mtime_ns)
                .map_err(|err| ws_err("set the time of", &e.path, err))
        }
        EntryKind::File => {
            let f = fsat::create_file_at(d.as_raw_fd(), name)
                .map_err(|err| ws_err("create", &e.path, err))?;
            f.set_len(e.size)
                .map_err(|err| ws_err("size", &e.path, err))?;
            if e.blobs.is_empty() {
                fsat::set_meta_fd(f.as_raw_fd(), e.mode & 0o777, e.mtime_ns)
                    .map_err(|err| ws_err("set the mode of", &e.path, err))?;
                if let Ok(m) = f.metadata() {
                    let _ = written.set(Seen::of(&Stat::of(&m)));
                }
            }
            Ok(())
        }
    }
}

/// Write one blob of entry `i` (the whole file, or `bytes` at `off`).
#[allow(clippy::too_many_arguments)]
fn write_blob(
    dirs: &Dirs,
    nodes: &[Node],
    place: &Places,
    i: usize,
    bytes: &[u8],
    off: u64,
    whole: bool,
    written: &OnceLock<Seen>,
) -> Result<()> {
    let e = &nodes[i];
    let (dir, name) = staged_at(place, nodes, i).expect("files to write are staged");
    let name = name.as_ref();
    let d = dirs.get(dir).map_err(|err| ws_err("open", dir, err))?;
    if whole {
        let mut f = fsat::create_file_with_mode_at(d.as_raw_fd(), name, e.mode & 0o777)
            .map_err(|err| ws_err("create", &e.path, err))?;
        f.write_all(bytes)
            .map_err(|err| ws_err("write", &e.path, err))?;
        fsat::set_mtime_fd(f.as_raw_fd(), e.mtime_ns)
            .map_err(|err| ws_err("set the time of", &e.path, err))?;
        if let Ok(m) = f.metadata() {
            let _ = written.set(Seen::of(&Stat::of(&m)));
        }
        Ok(())
    } else {
        let f: File = fsat::open_file_at(d.as_raw_fd(), name, true)
            .map_err(|err| ws_err("open", &e.path, err))?;
        fsat::write_all_at(&f, bytes, off).map_err(|err| ws_err("write", &e.path, err))
    }
}

/// Move a staged entry (`sname` in its real parent) over its real name, replacing
/// what is there now (re-checked at this moment, not taken from the plan).
fn move_into_place(dirs: &Dirs, path: &str, kind: EntryKind, sname: &str) -> Result<()> {
    let (dir, name) = fsat::split(path);
    let d = dirs.get(dir).map_err(|err| ws_err("open", dir, err))?;
    match fsat::kind_at(d.as_raw_fd(), name).map_err(|err| ws_err("stat", path, err))? {
        Kind::Missing => {}
        Kind::Dir => {
            fsat::remove_at(d.as_raw_fd(), name).map_err(|err| ws_err("remove", path, err))?;
            dirs.forget(path);
        }
        _ if kind == EntryKind::Dir => {
            fsat::remove_at(d.as_raw_fd(), name).map_err(|err| ws_err("remove", path, err))?;
        }
        // A file or symlink is replaced by the rename itself.
        _ => {}
    }
    fsat::rename_at(d.as_raw_fd(), sname, d.as_raw_fd(), name)
        .map_err(|err| ws_err("move into place", path, err))
}

fn check_free_space(workspace: &Path, need: u64) -> Result<()> {
    let Some(avail) = fsat::free_space(workspace) else {
        return Ok(());
    };
    if need > avail {
        return Err(Error::workspace(format!(
            "the snapshot needs {need} bytes but only {avail} are free under {}",
            workspace.display()
        ))
        .with_hint("free disk space on the runner, or restore fewer paths"));
    }
    Ok(())
}

/// Remove staging trees left by restores that were killed, where a later
/// restore's pruning would not reach them: beside each configured root.
/// Called before this restore makes any private name, so names with this
/// process's id are another restore's (an earlier process with the same
/// id): stale, like those of a process that is gone.
fn clean_stale_staging(workspace: &Path, roots: &[String]) {
    let mut parents: Vec<PathBuf> = vec![workspace.to_path_buf()];
    for r in roots {
        if let Some((p, _)) = r.rsplit_once('/') {
            parents.push(workspace.join(p));
        }
    }
    parents.sort();
    parents.dedup();
    for dir in parents {
        let Ok(rd) = fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            let alive = pid
                .parse::<u32>()
                .is_ok_and(|pid| pid != std::process::id() && fsat::process_alive(pid));
            if !alive {
                if let Ok(d) = Dirs::open(&dir) {
                    let _ = fsat::remove_at(d.get("").unwrap().as_raw_fd(), name.to_str().unwrap());
                }
            }
        }
    }
}

// Unix: the test plants a symlink with std::os::unix::fs::symlink.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::objects::{Planted, plant};
    use crate::store::LocalStore;

    fn planted(path: &str, kind: EntryKind, data: &[u8], target: Option<&str>) -> Planted {
        Planted {
            path: path.into(),
            kind,
            mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
            target: target.map(str::to_string),
            data: data.to_vec(),
            stored: None,
        }
    }

    /// A local store in `dir/store` whose head is a hand-made snapshot of
    /// `entries` under the root `node_modules`, and the config restoring it.
    fn planted_store(dir: &Path, entries: &[Planted]) -> (LocalStore, Config) {
        let store = LocalStore::open(&dir.join("store"), "default").unwrap();
        let roots = vec!["node_modules".to_string()];
        plant(&store, &roots, entries).unwrap();
        let config = Config {
            paths: roots,
            ..Config::default()
        };
        (store, config)
    }

    /// Entries checked in path order, each against its own path once its
    /// parent passed, get the verdict a check of every prefix gives.
    #[test]
    fn checking_in_path_order_agrees_with_checking_every_prefix() {
        let filter = Filter::new(&["cache".to_string(), "a/skip/**".to_string()]).unwrap();
        let mut entries = vec![
            ("a", EntryKind::Dir),
            ("a/b", EntryKind::Dir),
            ("a/b-x", EntryKind::File),
            ("a/b/c", EntryKind::File),
            ("a/b/cache", EntryKind::Dir),
            ("a/b/cache/x", EntryKind::File),
            ("a/b/d", EntryKind::Dir),
            ("a/b/d/.npmrc", EntryKind::File),
            ("a/b/d/e", EntryKind::File),
            ("a/c", EntryKind::File),
            ("a/skip", EntryKind::Dir),
            ("a/skip/y", EntryKind::File),
            ("a/.ssh", EntryKind::Dir),
            ("a/.ssh/id_rsa", EntryKind::File),
            ("b/c", EntryKind::File),
        ];
        entries.sort_by_key(|e| e.0);
        let mut checker = PathChecker::default();
        let mut skipped = 0;
        for (path, kind) in entries {
            let fast = checker.check(path, kind, &filter);
            assert_eq!(fast, check_filters(path, &filter), "{path}");
            skipped += usize::from(fast != Skip::No);
        }
        // cache, cache/x, skip/y, .npmrc, .ssh, .ssh/id_rsa (and what the
        // globs say about a/skip itself).
        assert!(skipped >= 6, "{skipped}");
    }

    /// A restore killed part way leaves private names behind. A later
    /// restore whose process has the same id (pids repeat, in containers
    /// especially) must not take them for its own: it removes them and
    /// makes its own beside them.
    #[test]
    fn private_names_left_by_a_process_with_the_same_id_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        let nm = ws.join("node_modules");
        fs::create_dir_all(nm.join("kept")).unwrap();
        fs::write(nm.join("kept/old.txt"), b"old").unwrap();
        fs::write(nm.join("replaced.txt"), b"old").unwrap();
        // What a killed restore of this process's id left: files and a
        // directory under every index the new restore could use, in a
        // directory that stays and beside the root.
        let pid = std::process::id();
        for n in 0..16 {
            for dir in [&nm, &nm.join("kept"), &ws] {
                fs::write(dir.join(format!("{STAGING_PREFIX}{pid}-{n}")), b"left").unwrap();
            }
        }
        fs::create_dir_all(nm.join(format!("{STAGING_PREFIX}{pid}-99/deep"))).unwrap();
        let (store, config) = planted_store(
            t.path(),
            &[
                planted("node_modules", EntryKind::Dir, b"", None),
                planted("node_modules/kept", EntryKind::Dir, b"", None),
                planted("node_modules/kept/new.txt", EntryKind::File, b"new", None),
                planted("node_modules/kept/old.txt", EntryKind::File, b"old", None),
                planted("node_modules/new", EntryKind::Dir, b"", None),
                planted("node_modules/new/f", EntryKind::File, b"f", None),
                planted("node_modules/replaced.txt", EntryKind::File, b"new", None),
            ],
        );
        let opts = RestoreOptions {
            window: WindowCut::fixed(2),
            ..RestoreOptions::default()
        };
        restore(&ws, &config, &store, &crate::Silent, &opts).unwrap();
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&nm), ["kept", "new", "replaced.txt"]);
        assert_eq!(names(&nm.join("kept")), ["new.txt", "old.txt"]);
        assert_eq!(names(&ws), ["node_modules"]);
        assert_eq!(fs::read(nm.join("replaced.txt")).unwrap(), b"new");
        assert_eq!(fs::read(nm.join("new/f")).unwrap(), b"f");
    }

    /// A directory swapped for a symlink between planning and applying is
    /// not followed: nothing is written outside, the restore fails cleanly.
    #[test]
    fn a_symlink_swapped_in_after_planning_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        let outside = t.path().join("outside");
        fs::create_dir_all(ws.join("node_modules/x")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let (store, config) = planted_store(
            t.path(),
            &[
                planted("node_modules", EntryKind::Dir, b"", None),
                planted("node_modules/x", EntryKind::Dir, b"", None),
                planted("node_modules/x/f", EntryKind::File, b"pwned", None),
            ],
        );
        // Swap, once planned: the directory planned as existing becomes a
        // symlink outside.
        let swap = || {
            if !ws.join("node_modules/x").is_symlink() {
                fs::remove_dir(ws.join("node_modules/x")).unwrap();
                std::os::unix::fs::symlink(&outside, ws.join("node_modules/x")).unwrap();
            }
        };
        let res = restore_with(
            &ws,
            &config,
            &store,
            &crate::Silent,
            &RestoreOptions::default(),
            &swap,
        );
        assert!(
            res.is_err(),
            "the swapped symlink must not be written through"
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing outside"
        );
        let left: Vec<_> = fs::read_dir(ws.join("node_modules"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("x")],
            "no staged leftovers"
        );
    }
}
