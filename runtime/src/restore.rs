//! `restore`: make the configured paths equal to a snapshot.
//!
//! Two phases keep a failed restore from damaging the workspace:
//!
//! 1. *Stage*: fetch every frame the workspace lacks, decode it, verify every
//!    blob in it against its hash, and only then write the files it belongs
//!    to, under private names: a directory that does not exist yet (or is
//!    to replace a file or symlink) is built whole under a private name
//!    beside its final place (`.stateful-ci-staging-<pid>-<n>`), so a
//!    restore into an empty workspace writes every file once, in its own
//!    directory, with no rename; a file to replace in an existing directory
//!    is written to a private name in that same directory. Nothing else is
//!    touched, so a corrupt or unreachable store leaves the workspace as it
//!    was (the staged names are removed again).
//! 2. *Apply*: only when everything is staged, remove what the snapshot does
//!    not have, rename the staged trees and files into place (one rename per
//!    new directory tree, one per replaced file) and set metadata.
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
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use stateful_ci_protocol::format::is_within;
use stateful_ci_protocol::limits::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, CHUNK_THRESHOLD};
use stateful_ci_protocol::{BlobId, EntryKind, Frame, Manifest, ObjectKey};

use crate::config::Config;
use crate::deny::is_denied;
use crate::error::{Error, Result, io_ctx};
use crate::fsat::{self, AsRawFd, Dirs, Kind};
use crate::objects::{
    Fetched, Loc, Node, PieceDigest, PieceFp, blob_of, decode_frame_into, for_each_node,
    load_manifest,
};
use crate::report::{Phase, Reporter};
use crate::scan::{Filter, Stat};
use crate::statindex::{Base, IndexStream, IndexWriter, Record};
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
/// Planning reserves room for at most this many entries before the root's
/// count is verified (72-byte entries: about 150 MB of address space); a
/// larger snapshot grows the vector as it streams in.
const MAX_RESERVED_ENTRIES: u64 = 1 << 21;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Refuse a snapshot that would write more than this many bytes.
    pub max_bytes: u64,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            max_bytes: 512 * 1024 * 1024 * 1024,
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
/// ([`staging_name`]), in its real parent, and is not stored.
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
}

impl Places {
    /// Name a staged directory; its index is what a [`Place::Fresh`] holds
    /// (fewer directories than entries, and entries fit in a `u32`).
    fn add_dir(&mut self, path: String) -> u32 {
        self.dirs.push(path.into());
        (self.dirs.len() - 1) as u32
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

/// Everything decided before the first write.
struct Plan {
    nodes: Vec<Node>,
    action: Vec<Action>,
    /// The stat of each file as it will be after the restore, where it is
    /// known: planned for a file kept as it is, set when a file is written
    /// into a new tree (from its open descriptor; moving the tree into
    /// place does not change it). What else was on disk is not kept.
    written: Vec<OnceLock<Seen>>,
    place: Places,
    /// Missing ancestors of configured roots, to create (outermost first).
    ancestors: Vec<String>,
    skipped_credentials: u64,
    /// What reading the snapshot's pieces fetched (counted in the summary
    /// with the frames staged for writing).
    listing: Fetched,
}

pub fn restore(
    workspace: &Path,
    config: &Config,
    store: &dyn Store,
    reporter: &dyn Reporter,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let Some(point) = store.restore_point()? else {
        return Ok(RestoreSummary::miss(started));
    };
    let manifest = load_manifest(store, &point.head.snapshot)?;
    let filter = Filter::new(&config.exclude)?;
    clean_stale_staging(workspace, &config.paths);

    reporter.phase(Phase::Compare, None);
    // Each piece's digest goes to the stat index.
    let (plan, digests) = make_plan(workspace, config, store, &manifest, &filter)?;
    if plan.skipped_credentials > 0 {
        reporter.warn(&format!(
            "the snapshot contains {} credential file(s) that were not restored",
            plan.skipped_credentials
        ));
    }
    let base = Base::of_manifest(store.describe(), point.head.snapshot, &manifest, digests);
    let summary = execute(
        workspace, store, &manifest, &filter, plan, &base, reporter, opts,
    )?;
    Ok(RestoreSummary {
        source: Some(point),
        duration: started.elapsed(),
        ..summary
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

fn staging_name(n: usize) -> String {
    format!("{STAGING_PREFIX}{}-{n}", std::process::id())
}

/// What the stat index recorded of each file node whose blobs it lists as
/// the node's (the stat that proves the file on disk is that content),
/// `None` for the others; empty without an index. The index is streamed
/// beside the nodes (both are in path order) and only these stats are
/// kept: loaded whole, the index of 500,000 files was a quarter of the
/// restore's peak.
fn recorded_files(workspace: &Path, nodes: &[Node]) -> Vec<Option<Record>> {
    let Some(stream) = IndexStream::open(workspace) else {
        return Vec::new();
    };
    let mut records = stream.read_ahead();
    let mut next = records.next();
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        if n.kind != EntryKind::File {
            out.push(None);
            continue;
        }
        while next.as_ref().is_some_and(|(p, _, _)| **p < *n.path) {
            next = records.next();
        }
        let found = match &next {
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
    // Records past a damaged one were not given out: those files are
    // compared by content instead.
    records.finish();
    out
}

fn make_plan(
    workspace: &Path,
    config: &Config,
    store: &dyn Store,
    manifest: &Manifest,
    filter: &Filter,
) -> Result<(Plan, Vec<PieceFp>)> {
    // Every entry is verified (pieces hashed, rules checked, collisions
    // refused) while it streams in; only the selected ones are kept.
    let mut skipped_credentials = 0;
    // Sized for the root's claimed count up front (only the pages used
    // become resident; the claim is capped, as it is not verified until
    // the pieces are). Grown by doubling, the vector was the largest part
    // of the restore's peak at 500,000 entries: 100 MB of 241 MB of live
    // heap while it grew (heaptrack); sized up front, the peak is 225 MB.
    let mut nodes = Vec::with_capacity(manifest.entries.min(MAX_RESERVED_ENTRIES) as usize);
    // Each piece's local digest, over all its entries (selected or not), for
    // the stat index: the next save reuses a piece whose entries it finds
    // unchanged without building it again.
    let mut digests = Vec::with_capacity(manifest.pieces.len());
    let mut digest = PieceDigest::default();
    let mut checker = PathChecker::default();
    let listing = for_each_node(store, manifest, |n, piece| {
        while digests.len() < piece {
            digests.push(digest.finish());
        }
        digest.add_node(&n);
        if !config.paths.iter().any(|p| is_within(&n.path, p)) {
            return Ok(());
        }
        match checker.check(&n.path, n.kind, filter) {
            Skip::No => nodes.push(n),
            Skip::Excluded => {}
            Skip::Denied => skipped_credentials += 1,
        }
        Ok(())
    })?;
    drop(checker);
    while digests.len() < manifest.pieces.len() {
        digests.push(digest.finish());
    }
    // A parent the snapshot does not list (only a hand-made snapshot lacks
    // one) is restored as a plain directory, like any other.
    let listed: HashSet<&str> = nodes.iter().map(|n| &*n.path).collect();
    let mut implied: Vec<Node> = Vec::new();
    let mut implied_set: HashSet<String> = HashSet::new();
    for n in &nodes {
        let mut p = &*n.path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if !config.paths.iter().any(|r| is_within(p, r)) {
                break;
            }
            // A listed or already implied parent had its own parents
            // looked at when it was.
            if listed.contains(p) || !implied_set.insert(p.to_string()) {
                break;
            }
            implied.push(Node {
                path: p.into(),
                kind: EntryKind::Dir,
                mode: 0o755,
                mtime_ns: 0,
                size: 0,
                target: None,
                blobs: Box::default(),
            });
        }
    }
    drop(listed);
    if !implied.is_empty() {
        nodes.extend(implied);
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
    }
    // Entries outside the configured paths, excluded or denied were not
    // kept: the unused capacity goes back.
    nodes.shrink_to_fit();
    // Sorted by path, as the snapshot is (`apply` looks paths up in it).
    debug_assert!(nodes.windows(2).all(|w| w[0].path < w[1].path));
    let mut ancestors = Vec::new();
    for root in &config.paths {
        for a in check_root_ancestors(workspace, root)? {
            if !ancestors.contains(&a) {
                ancestors.push(a);
            }
        }
    }
    ancestors.sort();

    let recorded = recorded_files(workspace, &nodes);
    // Directories first, parents before children: below a directory that
    // is not on disk nothing is, so those paths need no stat (a fresh
    // runner restores into nothing).
    let mut dir_disk: HashMap<&str, OnDisk> = HashMap::new();
    for e in nodes.iter().filter(|e| e.kind == EntryKind::Dir) {
        let parent = fsat::split(&e.path).0;
        let disk = match dir_disk.get(parent) {
            Some(d) if *d != OnDisk::Dir => OnDisk::Missing,
            _ => on_disk(&workspace.join(&*e.path)),
        };
        dir_disk.insert(&e.path, disk);
    }
    let (action, written): (Vec<Action>, Vec<OnceLock<Seen>>) = nodes
        .par_iter()
        .enumerate()
        .map(|(i, e)| {
            // Only a path that may be on disk is looked at (none below a
            // missing directory: on a fresh runner, none at all).
            let abs = || workspace.join(&*e.path);
            let disk = if e.kind == EntryKind::Dir {
                dir_disk[&*e.path]
            } else {
                match dir_disk.get(fsat::split(&e.path).0) {
                    Some(d) if *d != OnDisk::Dir => OnDisk::Missing,
                    _ => on_disk(&abs()),
                }
            };
            let action = match (e.kind, disk) {
                (EntryKind::Dir, OnDisk::Dir) => Action::FixMeta,
                (EntryKind::Symlink, OnDisk::Symlink) => {
                    let same = fs::read_link(abs()).ok().is_some_and(|t| {
                        Some(t.as_os_str().as_encoded_bytes())
                            == e.target.as_deref().map(str::as_bytes)
                    });
                    if same { Action::FixMeta } else { Action::Write }
                }
                (EntryKind::File, OnDisk::File(st)) => {
                    let same = recorded
                        .get(i)
                        .and_then(Option::as_ref)
                        .is_some_and(|r| r.matches(&st))
                        || (st.size == e.size
                            && hash_file(&abs())
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
            let known = match (action, disk) {
                (Action::Keep, OnDisk::File(st)) => OnceLock::from(Seen::of(&st)),
                _ => OnceLock::new(),
            };
            (action, known)
        })
        .unzip();

    // Placement: a directory that is not a directory on disk is built whole
    // under a private name; everything below it goes there too.
    let mut fresh: HashMap<&str, u32> = HashMap::new();
    let mut place = Places {
        at: Vec::with_capacity(nodes.len()),
        dirs: Vec::new(),
    };
    for (i, e) in nodes.iter().enumerate() {
        let (parent, name) = fsat::split(&e.path);
        let p = if let Some(&dir) = fresh.get(parent) {
            if e.kind == EntryKind::Dir {
                let path = join(&place.dirs[dir as usize], name);
                fresh.insert(&e.path, place.add_dir(path));
            }
            Place::Fresh { dir }
        } else if e.kind == EntryKind::Dir && dir_disk[&*e.path] != OnDisk::Dir {
            fresh.insert(&e.path, place.add_dir(join(parent, &staging_name(i))));
            Place::FreshTop
        } else if e.kind != EntryKind::Dir && action[i] == Action::Write {
            Place::Temp
        } else {
            Place::None
        };
        place.at.push(p);
    }
    Ok((
        Plan {
            nodes,
            action,
            written,
            place,
            ancestors,
            skipped_credentials,
            listing,
        },
        digests,
    ))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// What was created while staging, to remove again if staging fails.
#[derive(Default)]
struct Undo {
    ancestors: Vec<String>,
    /// The entries staged under a private name in their real parent (new
    /// trees and replaced files).
    staged: Vec<usize>,
}

impl Undo {
    fn roll_back(&self, dirs: &Dirs, nodes: &[Node], place: &Places) {
        for &i in self.staged.iter().rev() {
            let Some((dir, name)) = staged_at(place, nodes, i) else {
                continue;
            };
            if let Ok(d) = dirs.get(dir) {
                let _ = fsat::remove_at(d.as_raw_fd(), &name);
            }
        }
        for a in self.ancestors.iter().rev() {
            let (p, n) = fsat::split(a);
            if let Ok(d) = dirs.get(p) {
                let _ = fsat::rmdir_at(d.as_raw_fd(), n);
            }
        }
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

/// Stage and apply a plan, then write the workspace's new stat index (with
/// `base`). Separate from planning so that tests can change the disk in
/// between.
#[allow(clippy::too_many_arguments)]
fn execute(
    workspace: &Path,
    store: &dyn Store,
    manifest: &Manifest,
    filter: &Filter,
    plan: Plan,
    base: &Base,
    reporter: &dyn Reporter,
    opts: &RestoreOptions,
) -> Result<RestoreSummary> {
    let Plan {
        nodes,
        action,
        written,
        place,
        ancestors,
        skipped_credentials,
        listing,
    } = plan;
    let to_write: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].kind == EntryKind::File && action[i] == Action::Write)
        .collect();
    let bytes_to_write: u64 = to_write.iter().map(|&i| nodes[i].size).sum();
    if bytes_to_write > opts.max_bytes {
        return Err(Error::corrupt(format!(
            "the snapshot would write {bytes_to_write} bytes, more than the limit of {}",
            opts.max_bytes
        )));
    }
    check_free_space(workspace, bytes_to_write)?;
    let dirs = Dirs::open(workspace).map_err(|e| io_ctx("open", workspace, e))?;

    // Stage.
    reporter.phase(Phase::Fetch, Some(bytes_to_write));
    let mut undo = Undo::default();
    let staged = stage(
        store, manifest, &dirs, &nodes, &place, &to_write, &ancestors, &mut undo, &written,
        reporter,
    );
    let (bytes_fetched, objects_fetched) = match staged {
        Ok(x) => x,
        Err(e) => {
            undo.roll_back(&dirs, &nodes, &place);
            return Err(e);
        }
    };

    // Apply.
    reporter.phase(Phase::Apply, None);
    let result = apply(&dirs, &nodes, &action, &place, filter);
    let removed = match result {
        Ok(n) => n,
        Err(e) => {
            // Whatever was not moved into place yet is removed; what was is
            // the snapshot's content, verified.
            undo.roll_back(&dirs, &nodes, &place);
            return Err(e);
        }
    };

    // The new stat index: every file as it is now on disk (the stat of a
    // file kept or written into a new tree is known; the others are read).
    nodes.par_iter().zip(&written).for_each(|(e, w)| {
        if e.kind == EntryKind::File && w.get().is_none() {
            if let Ok(m) = fs::symlink_metadata(workspace.join(&*e.path)) {
                let _ = w.set(Seen::of(&Stat::of(&m)));
            }
        }
    });
    let files = nodes.iter().filter(|e| e.kind == EntryKind::File);
    let (file_count, file_bytes) = (files.clone().count() as u64, files.map(|e| e.size).sum());
    drop(place);
    // The index is written as the nodes are let go, one at a time and in
    // path order (the snapshot's), as a save writes it: built in memory
    // first, its list of records (36 MB at 500,000 files) sat beside the
    // nodes it was taken from.
    let index = IndexWriter::create(workspace).and_then(|w| {
        let Some(mut w) = w else {
            return Ok(());
        };
        for (e, st) in nodes.into_iter().zip(written) {
            if let Some(seen) = st.into_inner() {
                w.push_file(&e.path, &seen.stat(&e), true, &e.blobs);
            }
        }
        w.finish(Some(base))
    });
    if let Err(err) = index {
        reporter.warn(&format!(
            "could not write the local stat index ({err}); the next save will re-read every file"
        ));
    }

    let summary = RestoreSummary {
        outcome: RestoreOutcome::Restored,
        source: None,
        files: file_count,
        bytes: file_bytes,
        files_written: to_write.len() as u64,
        bytes_written: bytes_to_write,
        bytes_fetched: bytes_fetched + listing.bytes,
        objects_fetched: objects_fetched + listing.requests,
        removed,
        skipped_credentials,
        duration: Duration::ZERO,
    };
    Ok(summary)
}

/// Makes the staged entries that are not written whole (see [`stage`]):
/// `groups` holds them by the directory they are made in.
struct Maker<'a> {
    dirs: &'a Dirs,
    nodes: &'a [Node],
    place: &'a Places,
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
            if let Err(e) = create_staged(self.dirs, self.nodes, self.place, i) {
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
        Place::FreshTop | Place::Temp => Some((fsat::split(path).0, Cow::Owned(staging_name(i)))),
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

#[allow(clippy::too_many_arguments)]
fn stage(
    store: &dyn Store,
    manifest: &Manifest,
    dirs: &Dirs,
    nodes: &[Node],
    place: &Places,
    to_write: &[usize],
    ancestors: &[String],
    undo: &mut Undo,
    written: &[OnceLock<Seen>],
    reporter: &dyn Reporter,
) -> Result<(u64, u64)> {
    for a in ancestors {
        let (p, n) = fsat::split(a);
        let d = dirs.get(p).map_err(|e| ws_err("open", p, e))?;
        fsat::mkdir_at(d.as_raw_fd(), n, 0o755).map_err(|e| ws_err("create", a, e))?;
        undo.ancestors.push(a.clone());
    }
    // Every private name this stage may create in a real directory goes on
    // the undo list first (removing one that was never made is a no-op), so
    // a failure part way leaves nothing behind whichever thread made what.
    undo.staged
        .extend((0..nodes.len()).filter(|&i| matches!(place[i], Place::FreshTop | Place::Temp)));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(store.parallelism().clamp(1, MAX_TRANSFERS))
        .build()
        .map_err(|e| Error::workspace(format!("cannot start transfer threads: {e}")))?;
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
            .map_err(|e| ws_err("set the mode of", &nodes[i].path, e))
        })?;
    Ok((fetched, requests))
}

/// Create staged entry `i` (a directory, a symlink, or a file that is empty
/// or written in several blobs) under its staged name.
fn create_staged(dirs: &Dirs, nodes: &[Node], place: &Places, i: usize) -> Result<()> {
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
        if matches!(place[i], Place::Fresh { .. }) {
            if let Ok(m) = f.metadata() {
                let _ = written.set(Seen::of(&Stat::of(&m)));
            }
        }
        Ok(())
    } else {
        let f: File = fsat::open_file_at(d.as_raw_fd(), name, true)
            .map_err(|err| ws_err("open", &e.path, err))?;
        fsat::write_all_at(&f, bytes, off).map_err(|err| ws_err("write", &e.path, err))
    }
}

/// Move everything staged into place; returns how many paths were removed.
fn apply(
    dirs: &Dirs,
    nodes: &[Node],
    action: &[Action],
    place: &Places,
    filter: &Filter,
) -> Result<u64> {
    // Remove what the snapshot does not have from directories that stay.
    // The nodes are sorted by path (the plan keeps the snapshot's order), so
    // a name is looked up by binary search, with no set of every path.
    let present = |rel: &str| nodes.binary_search_by(|e| e.path[..].cmp(rel)).is_ok();
    let own = format!("{STAGING_PREFIX}{}-", std::process::id());
    let removed: u64 = nodes
        .par_iter()
        .enumerate()
        .filter(|(i, e)| e.kind == EntryKind::Dir && place[*i] == Place::None)
        .map(|(_, e)| -> Result<u64> {
            let d = dirs
                .get(&e.path)
                .map_err(|err| ws_err("open", &e.path, err))?;
            let mut n = 0;
            for name in
                fsat::read_names(d.as_raw_fd()).map_err(|err| ws_err("list", &e.path, err))?
            {
                let rel = join(&e.path, &name);
                if name.starts_with(&own)
                    || present(&rel)
                    || is_denied(&rel)
                    || filter.excluded(&rel)
                {
                    continue;
                }
                fsat::remove_at(d.as_raw_fd(), &name).map_err(|err| ws_err("remove", &rel, err))?;
                n += 1;
            }
            Ok(n)
        })
        .sum::<Result<u64>>()?;

    for (i, e) in nodes.iter().enumerate() {
        let (parent, name) = fsat::split(&e.path);
        match &place[i] {
            Place::Fresh { .. } => {}
            Place::FreshTop | Place::Temp => {
                move_into_place(dirs, e, parent, &staging_name(i), name)?;
            }
            Place::None => {
                if action[i] == Action::FixMeta && e.kind != EntryKind::Dir {
                    let d = dirs
                        .get(parent)
                        .map_err(|err| ws_err("open", parent, err))?;
                    match e.kind {
                        EntryKind::Symlink => {
                            fsat::set_mtime_nofollow_at(d.as_raw_fd(), name, e.mtime_ns)
                        }
                        _ => fsat::set_meta_at(
                            d.as_raw_fd(),
                            name,
                            false,
                            e.mode & 0o777,
                            e.mtime_ns,
                        ),
                    }
                    .map_err(|err| ws_err("set the metadata of", &e.path, err))?;
                }
            }
        }
    }
    // Directory modes and times last, since filling a directory changes
    // its mtime (setting a child's time or mode does not, so any order).
    nodes
        .par_iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .try_for_each(|e| {
            let (parent, name) = fsat::split(&e.path);
            let d = dirs
                .get(parent)
                .map_err(|err| ws_err("open", parent, err))?;
            fsat::set_meta_at(d.as_raw_fd(), name, true, e.mode & 0o777, e.mtime_ns)
                .map_err(|err| ws_err("set the metadata of", &e.path, err))
        })?;
    Ok(removed)
}

/// Move a staged entry (`sname` in `dir`) over its real name, replacing
/// what is there now (re-checked at this moment, not taken from the plan).
fn move_into_place(dirs: &Dirs, e: &Node, dir: &str, sname: &str, name: &str) -> Result<()> {
    let d = dirs.get(dir).map_err(|err| ws_err("open", dir, err))?;
    match fsat::kind_at(d.as_raw_fd(), name).map_err(|err| ws_err("stat", &e.path, err))? {
        Kind::Missing => {}
        Kind::Dir => {
            fsat::remove_at(d.as_raw_fd(), name).map_err(|err| ws_err("remove", &e.path, err))?;
            dirs.forget(&e.path);
        }
        _ if e.kind == EntryKind::Dir => {
            fsat::remove_at(d.as_raw_fd(), name).map_err(|err| ws_err("remove", &e.path, err))?;
        }
        // A file or symlink is replaced by the rename itself.
        _ => {}
    }
    fsat::rename_at(d.as_raw_fd(), sname, d.as_raw_fd(), name)
        .map_err(|err| ws_err("move into place", &e.path, err))
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
                .is_ok_and(|pid| pid == std::process::id() || fsat::process_alive(pid));
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

    /// A directory swapped for a symlink between planning and applying is
    /// not followed: nothing is written outside, the restore fails cleanly.
    #[test]
    fn a_symlink_swapped_in_after_planning_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        let outside = t.path().join("outside");
        fs::create_dir_all(ws.join("node_modules/x")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        let store = LocalStore::open(&t.path().join("store"), "default").unwrap();
        let roots = vec!["node_modules".to_string()];
        plant(
            &store,
            &roots,
            &[
                planted("node_modules", EntryKind::Dir, b"", None),
                planted("node_modules/x", EntryKind::Dir, b"", None),
                planted("node_modules/x/f", EntryKind::File, b"pwned", None),
            ],
        )
        .unwrap();
        let config = Config {
            paths: roots.clone(),
            ..Config::default()
        };
        let head = store.restore_point().unwrap().unwrap().head;
        let manifest = load_manifest(&store, &head.snapshot).unwrap();
        let filter = Filter::new(&[]).unwrap();
        let (plan, digests) = make_plan(&ws, &config, &store, &manifest, &filter).unwrap();
        let base = Base::of_manifest(store.describe(), head.snapshot, &manifest, digests);
        // Swap: the directory planned as existing becomes a symlink outside.
        fs::remove_dir(ws.join("node_modules/x")).unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("node_modules/x")).unwrap();
        let res = execute(
            &ws,
            &store,
            &manifest,
            &filter,
            plan,
            &base,
            &crate::Silent,
            &RestoreOptions::default(),
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
