//! `save`: scan the workspace, store what the store does not have yet,
//! write the manifest, then move the head.
//!
//! Ordering is what makes a save safe to interrupt: packs first, then the
//! manifest that names them, then the head that names the manifest. A save
//! killed at any point leaves the previous head, and everything it refers
//! to, untouched.
//!
//! Format 2 (FORMAT.md): files that changed are read in parallel in groups
//! in pack order (by package, module and kind: [`pack_order`]), and
//! variants of one large file together, their chunks interleaved
//! ([`families`]); their new blobs are compressed together in solid frames
//! of about [`FRAME_TARGET`] bytes (incompressible chunks of large files go
//! to raw frames), frames are appended to packs of about [`PACK_TARGET`]
//! bytes, and a few upload threads send full packs while
//! reading goes on, through a one-slot channel (bounded memory). The entry
//! list is cut into content-defined pieces (boundaries chosen by a hash of
//! the path, so they do not move when content changes); a piece whose bytes
//! are already stored is referenced, not written again, and a rewritten
//! piece is delta-coded against the frame that held its previous version
//! (`DeltaPieces`), so it costs about its changed entries. The local stat index
//! holds the previous snapshot's pack list, pieces (with a local digest of
//! each piece's entries, so an unchanged piece is recognised without
//! building its JSON) and file locations, so a save that finds nothing
//! changed loads nothing from the store but the head, and writes nothing.
//!
//! ## Windows
//!
//! The walk's entries come in path order and are taken [`WINDOW`] at a
//! time. Each window is matched against the old stat index's records
//! (streamed beside it), its changed files are read and packed, its files'
//! new index records are written out ([`IndexSink`]) and its entries are
//! cut into pieces ([`PieceCutter`], which carries the unfinished last
//! piece to the next window); then the window is let go. So what a save
//! holds for the workspace's entries, their paths, their blob lists and
//! the new index is one window, whatever the file count. What still grows
//! with the workspace:
//! - the blobs this save stores ([`NewBlobs`], about 70 bytes a new blob:
//!   the deduplication of a cold save; a save that changes little holds
//!   little), up to [`MAX_NEW_BLOBS`], past which they are forgotten at the
//!   next window;
//! - the pieces' references (about 10 bytes an entry: 16 entries a piece);
//! - when the stat index cannot be used, the blobs of the snapshot the save
//!   builds on, loaded from the store to deduplicate against (44 bytes a
//!   blob, at most [`MAX_NEW_BLOBS`] of them). With the index, a window's
//!   read files are deduplicated against that window's own records (an
//!   edited or reinstalled file is found at its own path); a file moved to
//!   another window is stored again, which costs bytes, never correctness.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use stateful_ci_protocol::limits::{
    CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, CHUNK_THRESHOLD, FRAME_TARGET, MAX_BLOB_RAW,
    MAX_PIECE_ENTRIES, PACK_TARGET, WindowCut,
};
use stateful_ci_protocol::{
    BlobId, Codec, EntryKind, FORMAT_VERSION, Frame, Head, Manifest, ObjectKey, ObjectKind,
    PieceFrame, PieceRef,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::objects::{
    Blobs, Loc, Node, PieceDigest, PieceFp, blob_of, encode_delta_frame, encode_frame_into,
    encode_manifest, fetch_frame, for_each_node, load_manifest, looks_incompressible, make_piece,
};
use crate::report::{Phase, Reporter};
use crate::scan::{Filter, Scanned, SortedWalk, Stat};
use crate::statindex::{
    self, Base, IndexStream, IndexWriter, RECORDS_AT, ReadAhead, Streamed, now_ns,
};
use crate::store::{CasOutcome, Commit, Spare, Store};

/// Files are read, hashed and compressed by at most this many threads,
/// whatever the machine: each holds two frame buffers, a compressed frame,
/// a zstd context and a window to cut large files in (about 16 MiB), and
/// threads grow the allocator's arenas too. With one reader per core, a
/// 500,000-file save peaked at 245 MiB on 2 threads, 261 MiB on 4 and 301
/// MiB on 8; four compress faster than a runner's disk or network moves
/// the result.
const MAX_READERS: usize = 4;

/// A save remembers at most about this many of the file blobs it stores,
/// to store each once however many files hold it (a blob takes 45 to 90
/// bytes of the map: its id, its place, the table's slack). Past it, at the
/// next window, it forgets them all and starts over. Building on a
/// snapshot without the stat index, it loads at most this many of that
/// snapshot's blobs to deduplicate against (44 bytes each). So memory stays
/// bounded whatever the file count, and a file holding a blob forgotten or
/// not loaded costs its bytes again, never correctness. 500,000 files of a
/// large `node_modules` hold fewer.
pub const MAX_NEW_BLOBS: usize = 1 << 20;

/// The number of threads that read files (and compress new pieces).
fn readers() -> usize {
    rayon::current_num_threads().clamp(1, MAX_READERS)
}

/// A piece of the entry list ends after an entry whose path hash is 0
/// modulo this (so pieces hold this many entries on average)...
const PIECE_AVG: u64 = 16;
/// ...or after this many entries.
const PIECE_MAX: usize = 256;
/// A snapshot may reference at most 1000 objects (MAX_KEYS_PER_REQUEST);
/// once the previous snapshot's pack list is this long, a save writes
/// everything anew into fresh packs instead of appending (compaction).
const COMPACT_AT: usize = 700;

#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// zstd level for blobs.
    pub level: i32,
    /// Where the walk's entries are cut into windows ([`WINDOW`]).
    /// Smaller windows hold less and pause more; tests use tiny ones so a
    /// small tree spans many windows.
    pub window: WindowCut,
    /// How many new file blobs a save remembers for deduplication
    /// ([`MAX_NEW_BLOBS`]); tests use a few.
    pub max_new_blobs: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            level: 3,
            window: WINDOW,
            max_new_blobs: MAX_NEW_BLOBS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    /// A new snapshot is the head.
    Saved,
    /// The workspace equals the current head; nothing was written.
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct SaveSummary {
    pub outcome: SaveOutcome,
    pub head: Head,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Plaintext bytes of all files in the snapshot.
    pub bytes: u64,
    /// Plaintext bytes that were not in the store before.
    pub new_bytes: u64,
    /// Bytes sent to the store (compressed packs and the manifest).
    pub stored_bytes: u64,
    pub objects_sent: u64,
    /// Files read and hashed (the rest were known from the stat index).
    pub files_read: u64,
    pub skipped_credentials: u64,
    /// Paths left out because they collide with another path after case
    /// folding or Unicode normalisation (not restorable on macOS/Windows).
    pub skipped_collisions: Vec<String>,
    /// Files skipped because they kept changing while being read.
    pub skipped_changing: Vec<String>,
    pub duration: Duration,
}

impl SaveSummary {
    /// Share of the snapshot's bytes that were already stored.
    pub fn dedup_ratio(&self) -> f64 {
        if self.bytes == 0 {
            1.0
        } else {
            1.0 - self.new_bytes as f64 / self.bytes as f64
        }
    }
}

/// What the store already has, from the snapshot this save builds on.
struct Known {
    base: Option<Base>,
    /// Whether the stat index's file records belong to `base` (then a file
    /// whose stat matches is not read at all).
    index_valid: bool,
    /// Sorted (see [`BlobLocs::sorted`]).
    blobs: BlobLocs,
    pieces: HashMap<BlobId, (PieceRef, PieceFrame)>,
    /// The base's pieces by their local digest (from the stat index).
    by_digest: HashMap<PieceFp, (PieceRef, PieceFrame)>,
}

fn known_from(
    store: &dyn Store,
    head: Option<&Head>,
    index_base: Option<Base>,
    store_id: &str,
    max_blobs: usize,
    reporter: &dyn Reporter,
) -> Result<Known> {
    let empty = Known {
        base: None,
        index_valid: false,
        blobs: BlobLocs::default(),
        pieces: HashMap::new(),
        by_digest: HashMap::new(),
    };
    // The stat index's snapshot, if it is in this store and whole.
    if let Some(b) = index_base {
        if b.store == store_id && b.packs.len() <= COMPACT_AT {
            if let Some(snap) = b.snapshot {
                let mut keys = b.packs.clone();
                keys.push(snap);
                if store.missing(&keys)?.is_empty() {
                    // No `blobs`: a window's read files are deduplicated
                    // against that window's records (see `window_blobs`).
                    let pieces = b.pieces.iter().map(|(p, f)| (p.id, (*p, *f))).collect();
                    let by_digest = if b.digests.len() == b.pieces.len() {
                        b.digests
                            .iter()
                            .copied()
                            .zip(b.pieces.iter().copied())
                            .collect()
                    } else {
                        HashMap::new()
                    };
                    return Ok(Known {
                        base: Some(b),
                        index_valid: true,
                        blobs: BlobLocs::default(),
                        pieces,
                        by_digest,
                    });
                }
            }
        }
    }
    // Otherwise the head's snapshot, loaded and verified.
    let Some(h) = head else { return Ok(empty) };
    let loaded = load_manifest(store, &h.snapshot).and_then(|m| {
        if m.packs.len() > COMPACT_AT || !store.missing(&m.packs)?.is_empty() {
            return Ok(None);
        }
        // At most `max_blobs` of them (the first in path order), as for
        // the blobs a save stores: memory bounded whatever the file count,
        // and a file holding one left out is stored again.
        let mut blobs = BlobLocs::with_capacity(m.files.min(max_blobs as u64) as usize);
        for_each_node(store, &m, |n, _| {
            for (id, loc) in &n.blobs {
                if blobs.locs.len() < max_blobs {
                    blobs.push(*id, loc);
                }
            }
            Ok(())
        })?;
        Ok(Some((m, blobs.sorted())))
    });
    match loaded {
        Ok(Some((m, blobs))) => {
            let base = Base::of_manifest(store_id.to_string(), h.snapshot, &m, Vec::new());
            Ok(Known {
                blobs,
                pieces: base.pieces.iter().map(|(p, f)| (p.id, (*p, *f))).collect(),
                base: Some(base),
                index_valid: false,
                by_digest: HashMap::new(),
            })
        }
        Ok(None) => Ok(empty),
        Err(e) if e.is_cache_failure() => {
            reporter.warn(&format!(
                "ignoring the previous snapshot {} ({e}); saving everything anew",
                h.snapshot
            ));
            Ok(empty)
        }
        Err(e) => Err(e),
    }
}

/// Where a file goes in the order files are packed: its package's name
/// (what follows the innermost `node_modules/`: `react`, `@mui/material`),
/// or outside a package its directory, then its name up to the first dot
/// (`Button` of `esm/Button.js`, `Button.d.ts`, `Button.js.map`), then the
/// rest of the name (`js`, `d.ts`, `js.map`).
///
/// Solid frames compress a file against the ones packed just before it
/// (about 4 MiB). What is alike in a real `node_modules` is one package's
/// builds of one module (CommonJS, ES modules, types, source maps that
/// embed the source), its variants of one bundle, and the same module in
/// two versions of the package (`node_modules/x` and
/// `node_modules/y/node_modules/x`, or pnpm's `.pnpm/x@1/node_modules/x`
/// and `.pnpm/x@2/node_modules/x`), not files of one extension across
/// packages. Outside `node_modules` (a Rust `target`, a Python virtualenv)
/// a directory's files are kept together, as in a tar stream. Measured
/// (docs/BENCHMARKS.md, session 27) against ordering by extension, all
/// else equal: an `npm install` of 594 packages stores 141.6 MB instead of
/// 147.2 MB, a Rust `target/release` 114.3 MB instead of 125.7 MB.
fn pack_order(path: &str) -> (&str, &str, &str) {
    const NM: &str = "node_modules/";
    let package: Option<&str> = match path.rfind(NM) {
        Some(k) if k == 0 || path.as_bytes()[k - 1] == b'/' => {
            let rest = &path[k + NM.len()..];
            let mut names = rest.split('/');
            let first = names.next().unwrap_or("");
            let mut len = first.len();
            if first.starts_with('@') {
                len += names.next().map_or(0, |n| 1 + n.len());
            }
            // A file directly in node_modules/ is in no package.
            (len < rest.len()).then(|| &rest[..len])
        }
        _ => None,
    };
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let (stem, rest) = name.split_once('.').unwrap_or((name, ""));
    (package.unwrap_or(dir), stem, rest)
}

/// A fast, stable 64-bit hash (FNV-1a then a final mix); not a security
/// boundary, only a choice of piece boundaries and a set key.
fn xxh(b: &[u8]) -> u64 {
    xxh_iter(b.iter().copied())
}

fn xxh_iter(b: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Where the entry list is cut: after an entry whose path hashes to 0
/// modulo [`PIECE_AVG`], or after [`PIECE_MAX`] entries. Returns the
/// pieces and where the entries not in one begin: the list is cut a window
/// at a time, and the entries after the last cut wait for the next window
/// (unless this is the `last`), so the cuts are those of the whole list.
fn piece_bounds<'a>(
    paths: impl Iterator<Item = &'a str>,
    last: bool,
) -> (Vec<std::ops::Range<usize>>, usize) {
    let mut out = Vec::new();
    let mut start = 0;
    let mut len = 0;
    for (i, p) in paths.enumerate() {
        len = i + 1;
        if xxh(p.as_bytes()) % PIECE_AVG == 0 || i + 1 - start >= PIECE_MAX.min(MAX_PIECE_ENTRIES) {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if last && start < len {
        out.push(start..len);
        start = len;
    }
    (out, start)
}

/// Pieces are built (JSON, then hashed) this many at a time, so the entry
/// list is never held as JSON, or as nodes, all at once.
const PIECE_BATCH: usize = 1024;

/// The mode, mtime and size an entry has in the snapshot (a directory or
/// symlink is recorded with size 0).
fn node_parts(s: &Scanned) -> (u32, i64, u64) {
    let size = if s.kind == EntryKind::File {
        s.stat.size
    } else {
        0
    };
    (s.stat.mode, s.stat.mtime_ns, size)
}

/// The node an entry becomes in the snapshot.
fn node_of(s: &Scanned, blobs: &[(BlobId, Loc)]) -> Node {
    let (mode, mtime_ns, size) = node_parts(s);
    Node {
        path: s.path().into(),
        kind: s.kind,
        mode,
        mtime_ns,
        size,
        target: s.target().map(Into::into),
        blobs: blobs.into(),
    }
}

/// An entry's index as the save's per-file lists keep it (4 bytes, not 8:
/// a cold save lists every file more than once). The walk cannot return
/// four billion entries in the memory a save runs in.
fn entry_ix(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 2^32 entries")
}

/// A save takes the walk's entries a window at a time (49,152 to 98,304
/// entries, cut where a restore cuts them: see [`WindowCut`]): it matches
/// them against the old stat index, reads and packs the files that
/// changed, writes their index records and cuts them into pieces, then lets
/// them go. What a save holds per entry is a window's worth, not the
/// workspace's. A window ends in a pause while the last group of its files
/// is read (one core idle for a group's time), so windows are large enough
/// that a 120,000-file workspace is two of them.
pub const WINDOW: WindowCut = WindowCut::DEFAULT;

pub fn save(
    workspace: &Path,
    config: &Config,
    store: &dyn Store,
    reporter: &dyn Reporter,
    opts: &SaveOptions,
) -> Result<SaveSummary> {
    let started = Instant::now();
    reporter.phase(Phase::Scan, None);
    let filter = Filter::new(&config.exclude)?;
    let store_id = store.describe();
    // The walk starts at once, on threads of its own, and lists a bounded
    // window ahead; what the store's head and the stat index say does not
    // depend on it, so it is asked for meanwhile (through a backend, two
    // round trips; locally, the index's base), and the index's records are
    // decoded on a thread of their own, a bounded window ahead too.
    let mut walk = SortedWalk::start(workspace, &config.paths, &filter);
    let previous = (|| -> Result<_> {
        let head = store.save_head()?;
        // Only the index's base is read now; its records are read one at
        // a time beside the walk, below.
        let mut old_index = IndexStream::open(workspace);
        let base = old_index.as_mut().and_then(|ix| ix.base.take());
        let known = known_from(
            store,
            head.as_ref(),
            base,
            &store_id,
            opts.max_new_blobs,
            reporter,
        )?;
        let old_index = old_index.filter(|_| known.index_valid);
        Ok((head, old_index.map(IndexStream::read_ahead), known))
    })();
    let window = opts.window;
    let mut next_window = || walk.next_window(&window);

    let (head, old_index, known) = previous?;
    let base_packs = known.base.as_ref().map_or(0, |b| b.packs.len());
    let mut sink = IndexSink::new(workspace, old_index.is_some());
    let mut old = OldRecords {
        rec: old_index,
        peeked: None,
        base_packs,
        end: RECORDS_AT,
    };

    let packer = Packer::new(store, opts.level, base_packs as u32);
    let uploaders = store.parallelism().clamp(1, 3);
    let reading = rayon::ThreadPoolBuilder::new()
        .num_threads(readers())
        .build()
        .map_err(|e| Error::workspace(format!("cannot start reading threads: {e}")))?;
    // A full pack waits in its filler's hands until an upload thread is
    // free (a rendezvous, not a queue): packs in memory are at most the
    // uploads, one waiting and one filling, about 100 MiB on a slow link.
    let (tx, rx) = std::sync::mpsc::sync_channel::<FullPack>(0);
    let rx = Mutex::new(rx);
    *packer.sender.lock().unwrap() = Some(tx);

    let mut tally = Tally::default();
    let result: Result<Cut> = std::thread::scope(|scope| {
        for _ in 0..uploaders {
            scope.spawn(|| {
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok((ord, buf)) = job else { break };
                    if let Err(e) = packer.upload(ord, buf) {
                        packer.failed.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
        let mut run = || -> Result<Cut> {
            let mut cutter = PieceCutter::new(&packer, &known);
            let mut packing = false;
            while let Some(mut entries) = next_window()? {
                let window_start = old.end;
                let Matched {
                    mut blobs_of,
                    to_read,
                    stale,
                    skipped,
                } = old.take(&entries);
                // The first window that differs from the old index starts
                // the new one (with the old one's records so far, copied).
                if skipped || !to_read.is_empty() {
                    sink.start(window_start);
                }
                let mut read_at = Vec::new();
                if !to_read.is_empty() {
                    // Past the cap, the blobs of earlier windows are let go
                    // (every one of them is packed and resolved by now).
                    if packer.blobs.len() > opts.max_new_blobs {
                        packer.blobs.forget();
                    }
                    if !packing {
                        reporter.phase(Phase::Pack, None);
                        packing = true;
                    }
                    // A read file is deduplicated against the blobs of this
                    // window's unchanged and changed files (an edited or
                    // reinstalled file is found at its own path).
                    let here;
                    let dedup = if known.index_valid {
                        here = window_blobs(&stale, &blobs_of);
                        &here
                    } else {
                        &known.blobs
                    };
                    tally.files_read += to_read.len() as u64;
                    let window = Window {
                        workspace,
                        packer: &packer,
                        known: dedup,
                        reading: &reading,
                        reporter,
                    };
                    let changing;
                    (read_at, changing) = window.read(&mut entries, &mut blobs_of, to_read)?;
                    tally.changing.extend(changing);
                }
                drop(stale);
                let mut at = read_at.into_iter().peekable();
                for (i, (s, b)) in entries.iter().zip(&blobs_of).enumerate() {
                    let at = at.next_if(|(j, _)| *j as usize == i).map(|(_, t)| t);
                    let Some(b) = b else { continue };
                    match s.kind {
                        EntryKind::File => {
                            tally.files += 1;
                            tally.bytes += s.stat.size;
                            sink.push(s, b, at);
                        }
                        EntryKind::Dir => tally.dirs += 1,
                        EntryKind::Symlink => tally.symlinks += 1,
                    }
                }
                cutter.add(entries, blobs_of, store, reporter)?;
            }
            // Records past the last entry are of files deleted since.
            let before = old.end;
            if old.drain() {
                sink.start(before);
            }
            cutter.finish(store, reporter)
        };
        let result = run();
        let finished = packer.finish();
        packer.sender.lock().unwrap().take();
        finished.and(result)
    });
    // No more packs: the rest of the save does not hold a spare one.
    packer.spare.take();
    if let Some(e) = packer.failed.lock().unwrap().take() {
        return Err(e);
    }
    let Cut {
        pieces,
        ids,
        digests,
    } = result?;
    let walked = walk.finish()?;
    let skipped_credentials = walked.skipped_credentials;
    let skipped_collisions = walked.skipped_collisions;
    if !skipped_collisions.is_empty() {
        reporter.warn(&format!(
            "{} path(s) differ from another only by letter case or Unicode normalisation and are not in this snapshot (they could not be restored on macOS or Windows), e.g. {}",
            skipped_collisions.len(),
            skipped_collisions[0]
        ));
    }
    let old_end = old.end;
    let index_damaged = old.finish();
    let same_as_base = known.base.as_ref().is_some_and(|b| {
        head.as_ref()
            .is_some_and(|h| Some(h.snapshot) == b.snapshot)
            && b.roots == config.paths
            && b.pieces.len() == ids.len()
            && b.pieces.iter().zip(&ids).all(|((p, _), id)| p.id == *id)
    });
    let Packer {
        pack_keys,
        objects_sent,
        stored_bytes,
        new_bytes,
        ..
    } = packer;
    let pack_keys = pack_keys.into_inner().unwrap();
    let mut stored_bytes = stored_bytes.into_inner();
    let mut objects_sent = objects_sent.into_inner();
    let new_bytes = new_bytes.into_inner();
    let Tally {
        files,
        dirs,
        symlinks,
        bytes,
        files_read,
        changing: skipped_changing,
    } = tally;

    reporter.phase(Phase::Commit, None);
    // The index on disk already says all this when nothing changed, every
    // file matched it and it has these digests: then it is not rewritten.
    let index_current = same_as_base
        && files_read == 0
        && known.index_valid
        && !index_damaged
        && known.base.as_ref().is_some_and(|b| b.digests == digests);
    if !index_current {
        sink.start(old_end);
    }
    let entry_count = files + dirs + symlinks;

    let summary = |outcome, head: Head, objects_sent: u64, stored_bytes: u64| SaveSummary {
        outcome,
        head,
        files,
        dirs,
        symlinks,
        bytes,
        new_bytes,
        stored_bytes,
        objects_sent,
        files_read,
        skipped_credentials,
        skipped_collisions: skipped_collisions.clone(),
        skipped_changing: skipped_changing.clone(),
        duration: started.elapsed(),
    };

    if same_as_base {
        let h = head.clone().expect("unchanged implies a head");
        let base = known.base.clone().map(|b| Base { digests, ..b });
        let _ = sink.finish(base.as_ref());
        return Ok(summary(
            SaveOutcome::Unchanged,
            h,
            objects_sent,
            stored_bytes,
        ));
    }

    // The root manifest: the base's packs (append-only, so the frames that
    // reused pieces and blobs name keep their indices), then the new ones.
    let mut packs: Vec<ObjectKey> = known.base.as_ref().map_or(Vec::new(), |b| b.packs.clone());
    for (ord, k) in pack_keys.iter().enumerate() {
        packs.push(k.ok_or_else(|| {
            Error::store(format!("internal error: pack {ord} was never written"))
        })?);
    }
    let mut frames: Vec<PieceFrame> = Vec::new();
    let mut frame_ix: HashMap<PieceFrame, u32> = HashMap::new();
    let mut refs = Vec::with_capacity(pieces.len());
    for (p, f) in &pieces {
        let fi = *frame_ix.entry(*f).or_insert_with(|| {
            frames.push(*f);
            (frames.len() - 1) as u32
        });
        refs.push(PieceRef { frame: fi, ..*p });
    }
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let manifest = Manifest {
        version: FORMAT_VERSION,
        created_at,
        parent: head.as_ref().map(|h| h.snapshot),
        roots: config.paths.clone(),
        packs,
        frames,
        pieces: refs,
        entries: entry_count,
        files,
        bytes,
    };
    manifest
        .validate()
        .map_err(|e| Error::store(format!("internal error: the new manifest is invalid: {e}")))?;
    let (mkey, mbytes) = encode_manifest(&manifest);
    if store.missing(&[mkey])?.contains(&mkey) {
        store.put(&mkey, &mbytes)?;
        objects_sent += 1;
        stored_bytes += mbytes.len() as u64;
    }

    // Move the head. Every snapshot is complete on its own, so on a
    // conflict the newer save simply goes on top of whatever won.
    let mut expected = head.as_ref().map_or(0, |h| h.generation);
    let run = std::env::var("GITHUB_RUN_ID").ok().map(|id| {
        format!(
            "run-{id}-{}-",
            std::env::var("GITHUB_RUN_ATTEMPT").unwrap_or_default()
        )
    });
    let mut attempts = 0;
    let new_head = loop {
        let commit = Commit {
            expected,
            snapshot: mkey,
            packs: manifest.packs.clone(),
            idempotency_key: format!(
                "{}{}-{expected}",
                run.as_deref().unwrap_or(""),
                &mkey.hash.to_hex()[..48]
            ),
            total_bytes: bytes,
            entries: manifest.entries,
            files,
            stored_bytes,
        };
        match store.commit(&commit)? {
            CasOutcome::Updated(h) => break h,
            CasOutcome::Conflict(current) => {
                attempts += 1;
                if attempts >= 8 {
                    return Err(Error::store(
                        "the head kept moving under concurrent saves; gave up after 8 attempts",
                    ));
                }
                expected = current.map_or(0, |h| h.generation);
            }
        }
    };
    let base = Base::of_manifest(store_id, mkey, &manifest, digests);
    if let Err(e) = sink.finish(Some(&base)) {
        reporter.warn(&format!(
            "could not write the local stat index ({e}); the next save will re-read every file"
        ));
    }
    Ok(summary(
        SaveOutcome::Saved,
        new_head,
        objects_sent,
        stored_bytes,
    ))
}

/// What a save counts as its windows go by.
#[derive(Default)]
struct Tally {
    files: u64,
    dirs: u64,
    symlinks: u64,
    bytes: u64,
    files_read: u64,
    /// Files left out because they kept changing while being read.
    changing: Vec<String>,
}

/// The old stat index's records, walked beside the entries (both are in
/// path order).
struct OldRecords {
    rec: Option<ReadAhead>,
    peeked: Option<Streamed>,
    /// Blobs in packs past these are not in the base: never trusted.
    base_packs: usize,
    /// The old index's bytes up to the end of the last record taken.
    end: u64,
}

/// What the old index says of one window of entries.
struct Matched {
    /// Each entry's blobs: `Some` once known, `None` for a file to read
    /// (and still `None` after reading if it vanished or kept changing:
    /// such a file is left out). Directories and symlinks have none.
    blobs_of: Vec<Option<Blobs>>,
    /// The files to read, by index in the window.
    to_read: Vec<u32>,
    /// Blobs of records no unchanged file holds (changed, moved or
    /// deleted files): a read file may well have one of them.
    stale: Vec<(BlobId, Loc)>,
    /// Whether a record was passed over (its file changed or is gone).
    skipped: bool,
}

impl OldRecords {
    fn peek_order(&mut self, path: &str) -> Option<std::cmp::Ordering> {
        if self.peeked.is_none() {
            self.peeked = self.rec.as_mut()?.next();
        }
        self.peeked.as_ref().map(|(p, _, _)| (**p).cmp(path))
    }

    /// Match the window's entries with the records for their paths. A
    /// file whose stat matches its record is not read; the record's blob
    /// list is moved, not copied.
    fn take(&mut self, entries: &[Scanned]) -> Matched {
        use std::cmp::Ordering::{Equal, Greater};
        let mut m = Matched {
            blobs_of: Vec::with_capacity(entries.len()),
            to_read: Vec::new(),
            stale: Vec::new(),
            skipped: false,
        };
        let base_packs = self.base_packs;
        let in_base = |l: &Loc| (l.pack() as usize) < base_packs;
        for (i, s) in entries.iter().enumerate() {
            if s.kind != EntryKind::File {
                m.blobs_of.push(Some(Box::default()));
                continue;
            }
            let mut hit = None;
            while let Some(order) = self.peek_order(s.path()) {
                if order == Greater {
                    break;
                }
                let (_, r, at) = self.peeked.take().expect("peeked");
                if order == Equal && r.matches(&s.stat) && r.blobs.iter().all(|(_, l)| in_base(l)) {
                    self.end = at;
                    hit = Some(r.blobs);
                    break;
                }
                m.skipped = true;
                m.stale.extend(r.blobs.iter().filter(|(_, l)| in_base(l)));
                if order == Equal {
                    break;
                }
            }
            if hit.is_none() {
                m.to_read.push(entry_ix(i));
            }
            m.blobs_of.push(hit);
        }
        m
    }

    /// Pass over the records left (files deleted since); whether there
    /// were any.
    fn drain(&mut self) -> bool {
        let mut any = self.peeked.take().is_some();
        if let Some(r) = &mut self.rec {
            for _ in r {
                any = true;
            }
        }
        any
    }

    /// Stop reading the old index; whether it turned out damaged in what
    /// was read.
    fn finish(self) -> bool {
        self.rec.is_some_and(ReadAhead::finish)
    }
}

/// Where the new stat index goes. While every window so far matched the
/// old index (nothing read, no record passed over), nothing is written: a
/// save that finds nothing changed leaves the old index as it is. The first
/// window that differs starts the new index with the old one's records up
/// to that window, copied as bytes.
enum IndexSink<'w> {
    /// Nothing written yet: the records so far are the old index's.
    Idle(&'w Path),
    Writing(IndexWriter),
    /// No index this time: no cache directory, or it could not be written
    /// (the error is told once the save is done).
    Off(Option<std::io::Error>),
}

impl<'w> IndexSink<'w> {
    fn new(workspace: &'w Path, has_old: bool) -> Self {
        let mut sink = IndexSink::Idle(workspace);
        if !has_old {
            sink.start(RECORDS_AT);
        }
        sink
    }

    /// Write from now on, beginning with the old index's records up to
    /// byte `end` (those of the files matched so far).
    fn start(&mut self, end: u64) {
        let IndexSink::Idle(workspace) = *self else {
            return;
        };
        let begun = IndexWriter::create(workspace).and_then(|w| match w {
            Some(mut w) => w.copy_old_records(end).map(|()| Some(w)),
            None => Ok(None),
        });
        *self = match begun {
            Ok(Some(w)) => IndexSink::Writing(w),
            Ok(None) => IndexSink::Off(None),
            Err(e) => IndexSink::Off(Some(e)),
        };
    }

    /// The record of a file in the snapshot, read at `read_at` (or known
    /// from the old index).
    fn push(&mut self, s: &Scanned, blobs: &[(BlobId, Loc)], read_at: Option<i64>) {
        if let IndexSink::Writing(w) = self {
            let trusted = read_at.is_none_or(|at| statindex::trusted(&s.stat, at));
            w.push_file(s.path(), &s.stat, trusted, blobs);
        }
    }

    fn finish(self, base: Option<&Base>) -> std::io::Result<()> {
        match self {
            IndexSink::Idle(_) | IndexSink::Off(None) => Ok(()),
            IndexSink::Writing(w) => w.finish(base),
            IndexSink::Off(Some(e)) => Err(e),
        }
    }
}

/// The blobs a window's read files are deduplicated against: those of its
/// unchanged files and of the records its changed files had.
fn window_blobs(stale: &[(BlobId, Loc)], blobs_of: &[Option<Blobs>]) -> BlobLocs {
    let held = blobs_of.iter().flatten().flatten();
    let n = stale.len() + blobs_of.iter().flatten().map(|b| b.len()).sum::<usize>();
    let mut blobs = BlobLocs::with_capacity(n);
    for (id, loc) in stale.iter().chain(held) {
        blobs.push(*id, loc);
    }
    blobs.sorted()
}

/// When each read file of a window was read (by index in the window, in
/// order), and the files left out because they kept changing.
type WindowRead = (Vec<(u32, i64)>, Vec<String>);

/// What reading one window's files needs.
struct Window<'w, 'p, 'a> {
    workspace: &'w Path,
    packer: &'p Packer<'a>,
    /// Blobs already stored (not stored again).
    known: &'w BlobLocs,
    reading: &'w rayon::ThreadPool,
    reporter: &'w dyn Reporter,
}

impl Window<'_, '_, '_> {
    /// Read the files `to_read` (indices in `entries`), store their new
    /// blobs, and fill in their blob lists (and the stat each was read
    /// under). Returns when each read file was read (by index), and the
    /// files left out because they kept changing.
    fn read(
        &self,
        entries: &mut [Scanned],
        blobs_of: &mut [Option<Blobs>],
        mut to_read: Vec<u32>,
    ) -> Result<WindowRead> {
        let Window {
            workspace,
            packer,
            known,
            reading,
            reporter,
        } = *self;
        // Group the files to read: in pack order (like compresses with
        // like, [`pack_order`]), then cut into groups of about one frame,
        // large files too: one group is packed by one thread in order, so
        // two builds of one bundle side by side share a frame instead of
        // going to two threads' frames. Each key is computed once and
        // borrows the path (a sort comparing freshly allocated keys was
        // 0.4 s of one core before anything was read in a cold save of
        // 120,000 files). `to_read` is in path order, so the index breaks
        // ties by path.
        to_read.par_sort_by_cached_key(|&i| (pack_order(entries[i as usize].path()), i));
        // Variants of one large file are read together, their chunks
        // interleaved ([`families`]); the other files in groups.
        let (families, in_family) = families(entries, &to_read);
        let mut groups: Vec<(u64, Group)> = families
            .into_iter()
            .map(|f| {
                let bytes = f.iter().map(|&i| entries[i as usize].stat.size).sum();
                (bytes, Group::Family(f))
            })
            .collect();
        let mut cur: Vec<u32> = Vec::new();
        let mut cur_bytes = 0;
        for &i in to_read.iter().filter(|i| !in_family.contains(i)) {
            cur.push(i);
            cur_bytes += entries[i as usize].stat.size;
            if cur_bytes >= FRAME_TARGET {
                groups.push((cur_bytes, Group::Files(std::mem::take(&mut cur))));
                cur_bytes = 0;
            }
        }
        if !cur.is_empty() {
            groups.push((cur_bytes, Group::Files(cur)));
        }
        drop(in_family);
        // The largest groups first keeps both cores busy to the end.
        groups.sort_by_key(|g| std::cmp::Reverse(g.0));
        let groups: Vec<Group> = groups.into_iter().map(|(_, g)| g).collect();
        let files_read = to_read.len();
        drop(to_read);

        // Each group's outcomes, with the blob ids of all its files in one
        // list (a file's ids are the next run of it): no allocation per
        // file, 64 bytes a file where a list each took 136.
        let scanned: &[Scanned] = entries;
        let outcomes: Vec<GroupRead> = reading.install(|| {
            groups
                .par_iter()
                // One frame builder per run of groups, not per group: its
                // buffers (a frame's plaintext and its compressed form, 4
                // MiB each) are reused instead of faulted in anew.
                .map_init(
                    || FrameBuilder::new(packer, known),
                    |fb, g| {
                        let mut out = Vec::with_capacity(g.len());
                        let mut ids = Vec::with_capacity(g.len());
                        match g {
                            Group::Files(g) => {
                                for &i in g {
                                    let o = read_file_twice(
                                        workspace,
                                        &scanned[i as usize],
                                        fb,
                                        &mut ids,
                                        reporter,
                                    )?;
                                    out.push((i, o));
                                }
                            }
                            Group::Family(g) => read_family(
                                workspace, scanned, g, fb, &mut ids, &mut out, reporter,
                            )?,
                        }
                        fb.flush_all()?;
                        Ok((out, ids))
                    },
                )
                .collect::<Result<_>>()
        })?;
        drop(groups);
        // Every frame of the window is packed: each blob has a location.
        let resolve = |id: &BlobId| -> Result<(BlobId, Loc)> {
            packer
                .blobs
                .get(id)
                .or_else(|| known.get(id))
                .map(|l| (*id, l))
                .ok_or_else(|| {
                    Error::store(format!("internal error: blob {id} has no stored location"))
                })
        };
        // Each read file's blob list resolved to where its blobs are, a
        // group at a time in parallel. Each group's id list is dropped as
        // soon as it is resolved, so the ids and the lists they become are
        // not all held at once.
        type Resolved = (Vec<(u32, FileOutcome)>, Vec<Blobs>);
        let resolved: Vec<Resolved> = outcomes
            .into_par_iter()
            .map(|(out, ids)| -> Result<Resolved> {
                let mut ids = ids.iter();
                let mut lists = Vec::with_capacity(out.len());
                for (_, o) in &out {
                    if let FileOutcome::Read { blobs, .. } = o {
                        // Exactly as long as the file's blob list:
                        // collecting through `Result` would reserve room
                        // for four.
                        let mut list = Vec::with_capacity(*blobs as usize);
                        for id in ids.by_ref().take(*blobs as usize) {
                            list.push(resolve(id)?);
                        }
                        lists.push(list.into_boxed_slice());
                    }
                }
                Ok((out, lists))
            })
            .collect::<Result<_>>()?;
        let mut read_at = Vec::with_capacity(files_read);
        let mut changing = Vec::new();
        for (out, lists) in resolved {
            let mut lists = lists.into_iter();
            for (i, o) in out {
                let ix = i as usize;
                match o {
                    FileOutcome::Read {
                        stat, read_at: at, ..
                    } => {
                        blobs_of[ix] = Some(lists.next().expect("one blob list per read file"));
                        // The snapshot and the index record the stat the
                        // content was read under.
                        if let Some(stat) = stat {
                            entries[ix].stat = *stat;
                        }
                        read_at.push((i, at));
                    }
                    FileOutcome::Changing => changing.push(entries[ix].path().to_string()),
                    FileOutcome::Vanished => {}
                }
            }
        }
        read_at.sort_unstable();
        Ok((read_at, changing))
    }
}

/// The pieces of the new snapshot's entry list, in order.
struct Cut {
    pieces: Vec<(PieceRef, PieceFrame)>,
    ids: Vec<BlobId>,
    digests: Vec<PieceFp>,
}

/// Cuts the entry list into pieces as its windows come: reuses the stored
/// ones, packs the new. A piece whose digest the stat index recorded is
/// reused as it is; only the others are built as JSON and hashed. The
/// entries after the last boundary of a window wait for the next.
struct PieceCutter<'p, 'a> {
    packer: &'p Packer<'a>,
    known: &'p Known,
    /// Entries not in a piece yet (the last, unfinished one), with their blobs.
    pend: Vec<(Scanned, Blobs)>,
    ids: Vec<BlobId>,
    pieces: Vec<Option<(PieceRef, PieceFrame)>>,
    digests: Vec<PieceFp>,
    /// New pieces, located once every frame is packed: (slot, id, entries).
    pending: Vec<(usize, BlobId, u32)>,
    fb: PieceFrames<'p, 'a>,
    delta: Option<DeltaPieces<'p>>,
}

impl<'p, 'a> PieceCutter<'p, 'a> {
    fn new(packer: &'p Packer<'a>, known: &'p Known) -> Self {
        PieceCutter {
            packer,
            known,
            pend: Vec::new(),
            ids: Vec::new(),
            pieces: Vec::new(),
            digests: Vec::new(),
            pending: Vec::new(),
            fb: PieceFrames::new(packer),
            delta: DeltaPieces::new(known.base.as_ref()),
        }
    }

    /// A window's entries (those with blobs are in the snapshot).
    fn add(
        &mut self,
        entries: Vec<Scanned>,
        blobs_of: Vec<Option<Blobs>>,
        store: &dyn Store,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let included = entries.into_iter().zip(blobs_of);
        self.pend
            .extend(included.filter_map(|(s, b)| Some((s, b?))));
        self.cut(false, store, reporter)
    }

    /// Make the pieces that end in the entries waiting (all of them if
    /// `last`).
    fn cut(&mut self, last: bool, store: &dyn Store, reporter: &dyn Reporter) -> Result<()> {
        let (bounds, done) = piece_bounds(self.pend.iter().map(|(s, _)| s.path()), last);
        enum Built {
            Known(PieceRef, PieceFrame),
            New(Vec<u8>, BlobId),
        }
        let known = self.known;
        for batch in bounds.chunks(PIECE_BATCH) {
            let pend = &self.pend;
            let built: Vec<(Built, PieceFp, u32)> = batch
                .par_iter()
                .map_init(PieceDigest::default, |digest, r| {
                    let members = &pend[r.clone()];
                    for (s, blobs) in members {
                        let (mode, mtime_ns, size) = node_parts(s);
                        digest.add(s.path(), s.kind, mode, mtime_ns, size, s.target(), blobs);
                    }
                    let fp = digest.finish();
                    let n = r.len() as u32;
                    if let Some((p, f)) = known.by_digest.get(&fp) {
                        return (Built::Known(*p, *f), fp, n);
                    }
                    let nodes: Vec<Node> = members.iter().map(|(s, b)| node_of(s, b)).collect();
                    let json = make_piece(&nodes).to_json();
                    let id = BlobId::of(&json);
                    (Built::New(json, id), fp, n)
                })
                .collect();
            for (b, fp, n) in built {
                self.digests.push(fp);
                match b {
                    Built::Known(p, f) => {
                        self.ids.push(p.id);
                        DeltaPieces::reused(&mut self.delta, &p.id);
                        self.pieces.push(Some((PieceRef { entries: n, ..p }, f)));
                    }
                    Built::New(json, id) => {
                        self.ids.push(id);
                        if let Some((p, f)) = known.pieces.get(&id) {
                            DeltaPieces::reused(&mut self.delta, &id);
                            self.pieces.push(Some((PieceRef { entries: n, ..*p }, *f)));
                        } else {
                            self.pieces.push(None);
                            self.pending.push((self.pieces.len() - 1, id, n));
                            if !DeltaPieces::add(
                                &mut self.delta,
                                self.packer,
                                store,
                                &json,
                                id,
                                reporter,
                            )? {
                                self.fb.add(&json, id)?;
                            }
                        }
                    }
                }
            }
        }
        self.pend.drain(..done);
        Ok(())
    }

    /// The last piece; every new piece stored and located.
    fn finish(mut self, store: &dyn Store, reporter: &dyn Reporter) -> Result<Cut> {
        self.cut(true, store, reporter)?;
        DeltaPieces::flush(&mut self.delta, self.packer)?;
        let PieceCutter {
            packer,
            known,
            ids,
            mut pieces,
            digests,
            pending,
            fb,
            ..
        } = self;
        fb.finish()?;
        let deltas = packer.deltas.lock().unwrap();
        for (slot, id, n) in pending {
            let at = packer.pieces.get(&id).map(|l| {
                let frame = PieceFrame {
                    frame: l.frame(),
                    dict: deltas.get(&l.frame()).copied(),
                };
                (frame, l.offset(), l.length())
            });
            let at = at.or_else(|| known.pieces.get(&id).map(|(p, f)| (*f, p.offset, p.length)));
            let (frame, offset, length) = at.ok_or_else(|| {
                Error::store(format!("internal error: piece {id} was not packed"))
            })?;
            pieces[slot] = Some((
                PieceRef {
                    id,
                    frame: 0,
                    offset,
                    length,
                    entries: n,
                },
                frame,
            ));
        }
        Ok(Cut {
            pieces: pieces.into_iter().flatten().collect(),
            ids,
            digests,
        })
    }
}

/// What reading a group of files found: each file (by entry index) with
/// its outcome, and the blob ids of all of them in one list.
type GroupRead = (Vec<(u32, FileOutcome)>, Vec<BlobId>);

enum FileOutcome {
    /// Read as one stable version: its `blobs` ids are the next run of its
    /// group's id list.
    Read {
        blobs: u32,
        /// The stat it was read under, if not the one the scan saw (held
        /// for every file until all are read: 32 bytes a file with the
        /// stat inline took 64).
        stat: Option<Box<Stat>>,
        read_at: i64,
    },
    /// Changed on both attempts.
    Changing,
    /// Gone, or no longer a regular file.
    Vanished,
}

const _: () = assert!(std::mem::size_of::<(u32, FileOutcome)>() <= 32);

/// What one reading thread packs in one go.
enum Group {
    /// Files read one after another (about a frame's worth).
    Files(Vec<u32>),
    /// Variants of one large file, read together (see [`families`]).
    Family(Vec<u32>),
}

impl Group {
    fn len(&self) -> usize {
        match self {
            Group::Files(g) | Group::Family(g) => g.len(),
        }
    }
}

/// A file at most this large can be read into memory to be interleaved
/// with its variants ...
const FAMILY_FILE_MAX: u64 = 8 * 1024 * 1024;
/// ... and a family holds at most this many bytes, read at once.
const FAMILY_MAX: u64 = 24 * 1024 * 1024;

/// Families of large files that are probably variants of one another:
/// files over [`CHUNK_THRESHOLD`] (and up to [`FAMILY_FILE_MAX`]) of one
/// package (outside a package, one directory: [`pack_order`]), with the
/// same name after the first dot, whose names up to it start with the
/// first one's (`app-page`, `app-page-turbo`), and whose sizes are within
/// a quarter of the first one's. Next.js ships
/// `app-page.runtime.dev.js.map` with its `-turbo`, `-experimental` and
/// `-turbo-experimental` builds, 5.5 MB each and nearly the same. A
/// frame is decoded on its own, so one file's chunks only compress
/// against what shares their frame: packed one after the other, those
/// four maps took 5.52 MB; with their chunks interleaved (the first of
/// each, then the second of each, ...), 1.87 MB, less than one `zstd
/// --long=30` stream of all four (2.36 MB). Files that only look alike
/// cost little: each chunk still has its own file's previous chunk
/// within the frame's window. Returns the families (of two files or
/// more, in pack order within each) and the set of their files.
fn families(entries: &[Scanned], to_read: &[u32]) -> (Vec<Vec<u32>>, HashSet<u32>) {
    // (package or directory, the name after its first dot, the name up
    // to it).
    let key = |i: u32| {
        let (package, stem, rest) = pack_order(entries[i as usize].path());
        (package, rest, stem)
    };
    let mut large: Vec<u32> = to_read
        .iter()
        .copied()
        .filter(|&i| {
            (CHUNK_THRESHOLD + 1..=FAMILY_FILE_MAX).contains(&entries[i as usize].stat.size)
        })
        .collect();
    large.sort_by_cached_key(|&i| (key(i), i));
    // Sorted so, the files whose names start with one stem follow it: a
    // run. A file of the run joins its family if its size is within a
    // quarter of the family's first file (else it is read as any file),
    // and starts a new family of the run when the family is full.
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut cur: Vec<u32> = Vec::new();
    let mut cur_bytes = 0;
    let mut run: Option<(&str, &str, &str)> = None;
    let alike = |a: u64, b: u64| a.max(b) <= a.min(b) / 4 * 5;
    for i in large {
        let size = entries[i as usize].stat.size;
        let (package, rest, stem) = key(i);
        let in_run = run.is_some_and(|(p, r, s)| p == package && r == rest && stem.starts_with(s));
        if in_run && !alike(size, entries[cur[0] as usize].stat.size) {
            continue;
        }
        if !in_run || cur_bytes + size > FAMILY_MAX {
            if cur.len() > 1 {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
            cur_bytes = 0;
            if !in_run {
                run = Some((package, rest, stem));
            }
        }
        cur.push(i);
        cur_bytes += size;
    }
    if cur.len() > 1 {
        out.push(cur);
    }
    let members = out.iter().flatten().copied().collect();
    (out, members)
}

/// Read a family's files whole, cut each into chunks as a file read alone
/// is cut, and add the chunks to frames in the order of their place in
/// their file (so the n-th chunks of the variants sit side by side). A
/// file that changes or vanishes while it is read is then read alone.
fn read_family(
    workspace: &Path,
    scanned: &[Scanned],
    family: &[u32],
    fb: &mut FrameBuilder,
    ids: &mut Vec<BlobId>,
    out: &mut Vec<(u32, FileOutcome)>,
    reporter: &dyn Reporter,
) -> Result<()> {
    struct Whole {
        i: u32,
        buf: Vec<u8>,
        stat: Stat,
        read_at: i64,
        cuts: Vec<(usize, usize)>,
    }
    let mut wholes = Vec::with_capacity(family.len());
    let mut alone = Vec::new();
    for &i in family {
        match read_whole(&workspace.join(scanned[i as usize].path()))? {
            Some((buf, stat, read_at)) => {
                let cuts = fastcdc::v2020::FastCDC::new(&buf, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                    .map(|c| (c.offset, c.length))
                    .collect();
                wholes.push(Whole {
                    i,
                    buf,
                    stat,
                    read_at,
                    cuts,
                });
            }
            None => alone.push(i),
        }
    }
    // Each chunk at its start's fraction of its file, ties in family order.
    let mut order: Vec<(u64, usize, usize)> = Vec::new();
    for (m, w) in wholes.iter().enumerate() {
        let len = w.buf.len().max(1) as u128;
        for (c, &(offset, _)) in w.cuts.iter().enumerate() {
            order.push(((((offset as u128) << 32) / len) as u64, m, c));
        }
    }
    order.sort_unstable();
    let mut chunk_ids: Vec<Vec<Option<BlobId>>> =
        wholes.iter().map(|w| vec![None; w.cuts.len()]).collect();
    for (_, m, c) in order {
        let (offset, length) = wholes[m].cuts[c];
        chunk_ids[m][c] = Some(fb.add(&wholes[m].buf[offset..offset + length], true)?);
        reporter.advance(length as u64);
    }
    for (w, got) in wholes.into_iter().zip(chunk_ids) {
        ids.extend(got.into_iter().map(|id| id.expect("every chunk was added")));
        let s = &scanned[w.i as usize];
        out.push((
            w.i,
            FileOutcome::Read {
                blobs: w.cuts.len() as u32,
                stat: (w.stat != s.stat).then(|| Box::new(w.stat)),
                read_at: w.read_at,
            },
        ));
    }
    for i in alone {
        let o = read_file_twice(workspace, &scanned[i as usize], fb, ids, reporter)?;
        out.push((i, o));
    }
    Ok(())
}

/// A file read whole into memory, with the stat it had before and after
/// (the same) and when reading began; `None` if it changed, vanished or
/// is no longer a regular file over [`CHUNK_THRESHOLD`] and up to
/// [`FAMILY_FILE_MAX`] bytes.
fn read_whole(abs: &Path) -> Result<Option<(Vec<u8>, Stat, i64)>> {
    let Some(mut f) = open_to_read(abs)? else {
        return Ok(None);
    };
    let io_err =
        |e: std::io::Error| Error::workspace(format!("cannot read {}: {e}", abs.display()));
    let read_at = now_ns();
    let m1 = f.metadata().map_err(io_err)?;
    let before = Stat::of(&m1);
    // A file that shrank to one blob's size since the walk is read alone,
    // as one blob, as it would be by itself.
    if !m1.is_file() || before.size <= CHUNK_THRESHOLD || before.size > FAMILY_FILE_MAX {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(before.size as usize + 1);
    (&mut f)
        .take(FAMILY_FILE_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    let after = f.metadata().map(|m| Stat::of(&m)).map_err(io_err)?;
    if after != before || buf.len() as u64 != before.size {
        return Ok(None);
    }
    Ok(Some((buf, before, read_at)))
}

/// Read a file, retrying once if it changes while being read; a stable
/// read appends the file's blob ids to `ids`, any other leaves it as it was.
fn read_file_twice(
    workspace: &Path,
    s: &Scanned,
    fb: &mut FrameBuilder,
    ids: &mut Vec<BlobId>,
    reporter: &dyn Reporter,
) -> Result<FileOutcome> {
    let abs = workspace.join(s.path());
    let mark = ids.len();
    for attempt in 0..2 {
        let got = read_file(&abs, fb, ids, reporter)?;
        if !matches!(got, Attempt::Stable(..)) {
            ids.truncate(mark);
        }
        match got {
            Attempt::Stable(stat, read_at) => {
                let blobs = u32::try_from(ids.len() - mark).map_err(|_| {
                    Error::user(
                        format!(
                            "{} has more chunks than a snapshot can list (over 4 billion)",
                            s.path()
                        ),
                        "leave it out with an `exclude` pattern in stateful-ci.toml",
                    )
                })?;
                return Ok(FileOutcome::Read {
                    blobs,
                    stat: (stat != s.stat).then(|| Box::new(stat)),
                    read_at,
                });
            }
            Attempt::Vanished => return Ok(FileOutcome::Vanished),
            Attempt::Changed if attempt == 0 => continue,
            Attempt::Changed => {}
        }
    }
    reporter.warn(&format!(
        "{} kept changing while it was read; it is not in this snapshot",
        s.path()
    ));
    Ok(FileOutcome::Changing)
}

enum Attempt {
    /// Read whole and unchanged (its ids appended), with its stat and the
    /// time reading began.
    Stable(Stat, i64),
    Changed,
    Vanished,
}

/// The file at `abs` opened to be read, without following a symlink;
/// `None` if it is gone or a symlink now.
fn open_to_read(abs: &Path) -> Result<Option<std::fs::File>> {
    match crate::fsat::open_nofollow(abs) {
        Ok(f) => Ok(Some(f)),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) || crate::fsat::is_loop(&e) => {
            Ok(None)
        }
        Err(e) => Err(Error::workspace(format!(
            "cannot read {}: {e}",
            abs.display()
        ))),
    }
}

fn read_file(
    abs: &Path,
    fb: &mut FrameBuilder,
    ids: &mut Vec<BlobId>,
    reporter: &dyn Reporter,
) -> Result<Attempt> {
    let Some(mut f) = open_to_read(abs)? else {
        return Ok(Attempt::Vanished);
    };
    let read_at = now_ns();
    let m1 = f
        .metadata()
        .map_err(|e| Error::workspace(format!("cannot stat {}: {e}", abs.display())))?;
    if !m1.is_file() {
        return Ok(Attempt::Vanished);
    }
    let before = Stat::of(&m1);
    let io_err =
        |e: std::io::Error| Error::workspace(format!("cannot read {}: {e}", abs.display()));
    // A small file is one blob; a large one is cut into chunks.
    let added = if before.size <= CHUNK_THRESHOLD {
        fb.add_small(&mut f).map(|(len, id)| {
            ids.extend(id);
            reporter.advance(len);
            len
        })
    } else {
        // The window is lent out while its chunks are added to the frames.
        let mut window = std::mem::take(&mut fb.window);
        let cut = for_each_chunk(&mut f, &mut window, |chunk| {
            ids.push(fb.add(chunk, true)?);
            reporter.advance(chunk.len() as u64);
            Ok(())
        });
        fb.window = window;
        cut
    };
    let len = added.map_err(|e| match e {
        Added::Read(e) => io_err(e),
        Added::Store(e) => e,
    })?;
    let after = f.metadata().map(|m| Stat::of(&m)).map_err(io_err)?;
    if after != before || len != before.size {
        return Ok(Attempt::Changed);
    }
    Ok(Attempt::Stable(before, read_at))
}

/// One worker's frames being filled: a solid frame for compressible data
/// and a raw frame for incompressible chunks of large files.
struct FrameBuilder<'p, 'a> {
    packer: &'p Packer<'a>,
    /// Blobs stored before this save (not stored again).
    known: &'p BlobLocs,
    solid: Vec<u8>,
    solid_blobs: Vec<(BlobId, u64, u64)>,
    raw: Vec<u8>,
    raw_blobs: Vec<(BlobId, u64, u64)>,
    /// A frame's compressed form, before it is copied into the pack.
    compressed: Vec<u8>,
    /// Where large files are read to be cut ([`for_each_chunk`]).
    window: Vec<u8>,
}

/// Why adding a file's bytes failed: reading it, or storing (an earlier
/// upload failed).
enum Added {
    Read(std::io::Error),
    Store(Error),
}

impl From<Error> for Added {
    fn from(e: Error) -> Self {
        Added::Store(e)
    }
}

/// How much of a large file [`for_each_chunk`] holds at once.
const CUT_WINDOW: usize = 4 * CHUNK_MAX as usize;

/// Cut what `r` yields into FastCDC chunks, exactly where
/// `fastcdc::v2020::StreamCDC` cuts them, handing each to `each`; returns
/// the bytes read. `window` is reused from file to file: `StreamCDC` made a
/// buffer for each file and a new vector for each chunk, and with the
/// allocator giving blocks over 128 KiB their own mappings, every one of
/// them cost page faults and zeroed pages (3% of a cold save's CPU).
///
/// A chunk is taken from the window only when the window holds at least
/// [`CHUNK_MAX`] bytes from its start, or the file ends: FastCDC looks at
/// most that far to place a cut, so the cut is the one a stream would make.
fn for_each_chunk(
    r: &mut impl Read,
    window: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]) -> std::result::Result<(), Added>,
) -> std::result::Result<u64, Added> {
    window.clear();
    window.reserve_exact(CUT_WINDOW);
    let mut total = 0u64;
    loop {
        let want = (CUT_WINDOW - window.len()) as u64;
        let got = r.take(want).read_to_end(window).map_err(Added::Read)?;
        let end = (got as u64) < want;
        // Chunks are back to back: the next starts where the last ended,
        // so a cut is only looked for where it is final.
        let mut chunks = fastcdc::v2020::FastCDC::new(window, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
        let mut used = 0;
        while end || window.len() - used >= CHUNK_MAX as usize {
            let Some(c) = chunks.next() else { break };
            each(&window[c.offset..c.offset + c.length])?;
            total += c.length as u64;
            used = c.offset + c.length;
        }
        if end {
            return Ok(total);
        }
        window.drain(..used);
    }
}

impl<'p, 'a> FrameBuilder<'p, 'a> {
    fn new(packer: &'p Packer<'a>, known: &'p BlobLocs) -> Self {
        FrameBuilder {
            packer,
            known,
            solid: Vec::new(),
            solid_blobs: Vec::new(),
            raw: Vec::new(),
            raw_blobs: Vec::new(),
            compressed: Vec::new(),
            window: Vec::new(),
        }
    }

    /// Make sure `data` is stored; returns its id.
    fn add(&mut self, data: &[u8], chunk: bool) -> Result<BlobId> {
        self.upload_failed()?;
        let id = BlobId::of(data);
        if !self.is_new(&id, data.len()) {
            return Ok(id);
        }
        if chunk && looks_incompressible(data) {
            reserve_frame(&mut self.raw);
            self.raw_blobs
                .push((id, self.raw.len() as u64, data.len() as u64));
            self.raw.extend_from_slice(data);
            if self.raw.len() as u64 >= FRAME_TARGET {
                self.flush(true)?;
            }
        } else {
            reserve_frame(&mut self.solid);
            self.solid_blobs
                .push((id, self.solid.len() as u64, data.len() as u64));
            self.solid.extend_from_slice(data);
            if self.solid.len() as u64 >= FRAME_TARGET {
                self.flush(false)?;
            }
        }
        Ok(id)
    }

    /// A file of at most [`CHUNK_THRESHOLD`] bytes, read straight into the
    /// solid frame (not into a buffer of its own, then copied) and kept
    /// there if it is new. Returns how many bytes it held and, if that is 1
    /// to [`CHUNK_THRESHOLD`], its id; reads at most one byte more.
    fn add_small(
        &mut self,
        file: &mut std::fs::File,
    ) -> std::result::Result<(u64, Option<BlobId>), Added> {
        self.upload_failed()?;
        // Room for the threshold and one byte more: the frame is flushed
        // once it reaches FRAME_TARGET, and holds FRAME_TARGET + MAX_BLOB_RAW.
        reserve_frame(&mut self.solid);
        const _: () = assert!(CHUNK_THRESHOLD < MAX_BLOB_RAW);
        let start = self.solid.len();
        let read = file.take(CHUNK_THRESHOLD + 1).read_to_end(&mut self.solid);
        let len = self.solid.len() - start;
        if let Err(e) = read {
            self.solid.truncate(start);
            return Err(Added::Read(e));
        }
        if len == 0 || len as u64 > CHUNK_THRESHOLD {
            self.solid.truncate(start);
            return Ok((len as u64, None));
        }
        let id = BlobId::of(&self.solid[start..]);
        if !self.is_new(&id, len) {
            self.solid.truncate(start);
            return Ok((len as u64, Some(id)));
        }
        self.solid_blobs.push((id, start as u64, len as u64));
        if self.solid.len() as u64 >= FRAME_TARGET {
            self.flush(false)?;
        }
        Ok((len as u64, Some(id)))
    }

    /// The first upload failure, if any: the save stops at the next blob.
    fn upload_failed(&self) -> Result<()> {
        match &*self.packer.failed.lock().unwrap() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Whether blob `id` is to be stored by this builder: not stored
    /// before this save, nor taken on by another file of it. Counts it.
    fn is_new(&self, id: &BlobId, len: usize) -> bool {
        if self.known.contains(id) || !self.packer.blobs.claim(id) {
            return false;
        }
        self.packer
            .new_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        true
    }

    fn flush(&mut self, raw: bool) -> Result<()> {
        let (buf, blobs) = if raw {
            (&mut self.raw, &mut self.raw_blobs)
        } else {
            (&mut self.solid, &mut self.solid_blobs)
        };
        if buf.is_empty() {
            return Ok(());
        }
        let blobs = std::mem::take(blobs);
        let added = self
            .packer
            .add_frame(buf, blobs, Holds::Files, raw, &mut self.compressed);
        // Emptied, not dropped: the next frame fills the same memory.
        buf.clear();
        added
    }

    fn flush_all(&mut self) -> Result<()> {
        self.flush(false)?;
        self.flush(true)
    }
}

/// Give a frame buffer, on its first use, room for the largest frame it
/// can hold (one blob short of [`FRAME_TARGET`], plus the largest blob), so
/// it never doubles: grown by doubling, each of a reader's two buffers held
/// 8 MiB for frames a little over 4 MiB.
fn reserve_frame(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        buf.reserve_exact((FRAME_TARGET + MAX_BLOB_RAW) as usize);
    }
}

/// A frame's plaintext and its blobs (id, offset, length).
type OpenFrame = (Vec<u8>, Vec<(BlobId, u64, u64)>);

/// New pieces of the entry list (always new, never deduplicated here),
/// gathered into solid frames. Full frames are compressed as many at a time
/// as there are threads, in parallel: compressed one at a time as they
/// filled, they kept one core busy and the other waiting for a quarter of a
/// second at the end of a cold save of 120,000 files. At most that many
/// frames are held (memory stays bounded).
struct PieceFrames<'p, 'a> {
    packer: &'p Packer<'a>,
    open: OpenFrame,
    full: Vec<OpenFrame>,
}

impl<'p, 'a> PieceFrames<'p, 'a> {
    fn new(packer: &'p Packer<'a>) -> Self {
        PieceFrames {
            packer,
            open: OpenFrame::default(),
            full: Vec::new(),
        }
    }

    fn add(&mut self, json: &[u8], id: BlobId) -> Result<()> {
        if !self.packer.pieces.claim(&id) {
            return Ok(());
        }
        let (buf, blobs) = &mut self.open;
        reserve_frame(buf);
        blobs.push((id, buf.len() as u64, json.len() as u64));
        buf.extend_from_slice(json);
        if buf.len() as u64 >= FRAME_TARGET {
            self.full.push(std::mem::take(&mut self.open));
            if self.full.len() >= readers() {
                self.compress()?;
            }
        }
        Ok(())
    }

    fn compress(&mut self) -> Result<()> {
        let packer = self.packer;
        std::mem::take(&mut self.full)
            .into_par_iter()
            .try_for_each_init(Vec::new, |scratch, (buf, blobs)| {
                packer.add_frame(&buf, blobs, Holds::Pieces, false, scratch)
            })
    }

    fn finish(mut self) -> Result<()> {
        if !self.open.0.is_empty() {
            self.full.push(std::mem::take(&mut self.open));
        }
        self.compress()
    }
}

/// New pieces of the entry list, delta-coded against the frame that holds
/// their previous versions ([`PieceFrame::dict`]).
///
/// A save that changes a few files in many places rewrites many pieces,
/// each differing from its previous version in an entry or two; compressed
/// alone, each would cost its whole JSON (mostly blob ids that do not
/// compress). Compressed with the base snapshot's piece frame as a zstd
/// prefix, each costs about its changed entries.
///
/// The previous version of a new piece is found without reading any piece:
/// pieces are in path order in both snapshots, so it is the base piece just
/// after the last one this save reused unchanged. Its frame's plaintext (the
/// dictionary) is fetched once and checked against the base's piece ids
/// before use; a dictionary that cannot be fetched or does not verify is
/// not used, and the pieces are stored plainly instead. A dictionary is
/// always a frame without a dictionary of its own, so a reader needs at most
/// one more frame per frame.
struct DeltaPieces<'b> {
    base: &'b Base,
    /// Base pieces by id: where in the base's list each one is.
    position: HashMap<BlobId, usize>,
    /// Position in the base of the last piece reused unchanged.
    anchor: Option<usize>,
    /// The dictionary the open frame is coded against, and its plaintext.
    dict: Option<(Frame, Vec<u8>)>,
    /// Dictionaries that could not be used.
    refused: HashSet<Frame>,
    buf: Vec<u8>,
    blobs: Vec<(BlobId, u64, u64)>,
}

impl<'b> DeltaPieces<'b> {
    fn new(base: Option<&'b Base>) -> Option<Self> {
        let base = base.filter(|b| !b.pieces.is_empty())?;
        Some(DeltaPieces {
            position: base
                .pieces
                .iter()
                .enumerate()
                .map(|(i, (p, _))| (p.id, i))
                .collect(),
            base,
            anchor: None,
            dict: None,
            refused: HashSet::new(),
            buf: Vec::new(),
            blobs: Vec::new(),
        })
    }

    /// The base's piece `id` is part of the new snapshot unchanged.
    fn reused(this: &mut Option<Self>, id: &BlobId) {
        if let Some(d) = this {
            if let Some(&i) = d.position.get(id) {
                d.anchor = Some(i);
            }
        }
    }

    /// Store a new piece against a dictionary; `false` if there is none to
    /// use (the caller stores it plainly).
    fn add(
        this: &mut Option<Self>,
        packer: &Packer,
        store: &dyn Store,
        json: &[u8],
        id: BlobId,
        reporter: &dyn Reporter,
    ) -> Result<bool> {
        let Some(d) = this else { return Ok(false) };
        let at = d.anchor.map_or(0, |a| a + 1).min(d.base.pieces.len() - 1);
        let dict = d.base.pieces[at].1.base();
        if d.refused.contains(&dict) {
            return Ok(false);
        }
        if d.dict.as_ref().is_none_or(|(open, _)| *open != dict) {
            d.flush_frame(packer)?;
            match d.fetch(store, dict) {
                Ok(plain) => d.dict = Some((dict, plain)),
                Err(e) => {
                    reporter.warn(&format!(
                        "not delta-coding against a frame of the previous snapshot ({e}); storing those pieces whole"
                    ));
                    d.refused.insert(dict);
                    return Ok(false);
                }
            }
        }
        if !packer.pieces.claim(&id) {
            return Ok(true);
        }
        d.blobs.push((id, d.buf.len() as u64, json.len() as u64));
        d.buf.extend_from_slice(json);
        if d.buf.len() as u64 >= FRAME_TARGET {
            d.flush_frame(packer)?;
        }
        Ok(true)
    }

    /// The dictionary's plaintext, checked against every base piece it holds.
    fn fetch(&self, store: &dyn Store, dict: Frame) -> Result<Vec<u8>> {
        let plain = fetch_frame(store, &self.base.packs, &dict)?;
        for (p, f) in &self.base.pieces {
            if *f == PieceFrame::plain(dict) {
                blob_of(&p.id, p.offset, p.length, &plain)?;
            }
        }
        Ok(plain)
    }

    fn flush_frame(&mut self, packer: &Packer) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let (dict, plain) = self
            .dict
            .as_ref()
            .expect("a frame is open against a dictionary");
        let blobs = std::mem::take(&mut self.blobs);
        packer.add_delta_frame(&self.buf, blobs, *dict, plain)?;
        self.buf.clear();
        Ok(())
    }

    fn flush(this: &mut Option<Self>, packer: &Packer) -> Result<()> {
        match this {
            Some(d) => d.flush_frame(packer),
            None => Ok(()),
        }
    }
}

/// A sealed pack and its ordinal in this save.
type FullPack = (u32, Vec<u8>);

/// Blob locations, filled first and then sorted by id to be looked up: a
/// sorted vector takes half the memory of a hash map (500,000 blobs,
/// heaptrack: 40 MB against 85 MB, plus the map's old table while it
/// grows). Each blob names its frame by index in `frames` (frames are few,
/// blobs many): 44 bytes a blob, not 88. It holds blobs stored before the
/// save: a window's records ([`window_blobs`]), or, without a usable stat
/// index, every blob of the snapshot the save builds on.
#[derive(Default)]
struct BlobLocs {
    frames: Vec<Frame>,
    /// Index in `frames` of each frame (only while filling with [`BlobLocs::push`]).
    frame_index: HashMap<Frame, u32>,
    /// (blob, frame index, offset and length in the decoded frame).
    locs: Vec<(BlobId, u32, u32, u32)>,
}

impl BlobLocs {
    fn with_capacity(n: usize) -> Self {
        BlobLocs {
            locs: Vec::with_capacity(n),
            ..BlobLocs::default()
        }
    }

    /// Record a blob stored earlier.
    fn push(&mut self, id: BlobId, loc: &Loc) {
        let next = self.frames.len() as u32;
        let frame = loc.frame();
        let f = *self.frame_index.entry(frame).or_insert(next);
        if f == next {
            self.frames.push(frame);
        }
        // A `Loc` holds both in 32 bits.
        self.locs
            .push((id, f, loc.offset() as u32, loc.length() as u32));
    }

    /// Ready for lookups: sorted by id, each id once.
    fn sorted(mut self) -> Self {
        self.frame_index = HashMap::new();
        self.locs.par_sort_unstable_by_key(|a| a.0);
        self.locs.dedup_by_key(|a| a.0);
        self.locs.shrink_to_fit();
        self
    }

    fn get(&self, id: &BlobId) -> Option<Loc> {
        let i = self.locs.binary_search_by(|l| l.0.cmp(id)).ok()?;
        let (_, f, offset, length) = self.locs[i];
        Some(Loc::of(
            self.frames[f as usize],
            offset.into(),
            length.into(),
        ))
    }

    fn contains(&self, id: &BlobId) -> bool {
        self.locs.binary_search_by(|l| l.0.cmp(id)).is_ok()
    }
}

/// The blobs a save has taken on to store (claimed, so each is stored
/// once however many files hold it) and, once their frame is packed, where
/// they are. Files are resolved to their blobs' locations a window at a
/// time, so this answers lookups while it grows.
///
/// It is split by the id's first byte into shards, each a map of its own:
/// readers claim blobs from several threads without waiting on one lock,
/// and a shard that grows copies only its own table (one map of 500,000
/// blobs would hold its old table, 23 MB, beside the new one, 47 MB, while
/// it grows). An entry is the whole id (so a lookup never answers for
/// another blob) and its location: 44 bytes.
struct NewBlobs {
    frames: Mutex<Vec<Frame>>,
    shards: Box<[Mutex<HashMap<BlobId, Spot>>]>,
}

/// Where a blob is in the frames a save wrote: frame (by index in
/// [`NewBlobs::frames`]), offset and length in its plaintext.
#[derive(Clone, Copy)]
struct Spot {
    frame: u32,
    offset: u32,
    length: u32,
}

impl Spot {
    /// Claimed, not packed yet.
    const CLAIMED: Spot = Spot {
        frame: u32::MAX,
        offset: 0,
        length: 0,
    };
}

impl NewBlobs {
    const SHARDS: usize = 64;

    fn new() -> Self {
        NewBlobs {
            frames: Mutex::new(Vec::new()),
            shards: (0..Self::SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, id: &BlobId) -> &Mutex<HashMap<BlobId, Spot>> {
        // Ids are hashes: their first byte is uniform.
        &self.shards[id.0[0] as usize % Self::SHARDS]
    }

    /// Take on storing `id`; `false` if this save already has.
    fn claim(&self, id: &BlobId) -> bool {
        let mut shard = self.shard(id).lock().unwrap();
        match shard.entry(*id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Spot::CLAIMED);
                true
            }
        }
    }

    /// Record the blobs of a frame just appended (offsets and lengths in
    /// its plaintext, which a writer keeps near [`FRAME_TARGET`]).
    fn locate(&self, frame: Frame, blobs: Vec<(BlobId, u64, u64)>) {
        let f = {
            let mut frames = self.frames.lock().unwrap();
            frames.push(frame);
            u32::try_from(frames.len() - 1).expect("fewer than 2^32 frames")
        };
        let small = |v: u64| u32::try_from(v).expect("a frame's plaintext is far below 4 GiB");
        for (id, offset, length) in blobs {
            let spot = Spot {
                frame: f,
                offset: small(offset),
                length: small(length),
            };
            self.shard(&id).lock().unwrap().insert(id, spot);
        }
    }

    /// How many blobs it holds.
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }

    /// Let every blob go, and the memory that held them. Only between
    /// windows, when every blob claimed is packed and every file read is
    /// resolved: a later file with the content of one of them stores it
    /// again (bytes, never a wrong file).
    fn forget(&self) {
        for shard in self.shards.iter() {
            *shard.lock().unwrap() = HashMap::new();
        }
        *self.frames.lock().unwrap() = Vec::new();
    }

    /// Where `id` is, once its frame is packed.
    fn get(&self, id: &BlobId) -> Option<Loc> {
        let spot = *self.shard(id).lock().unwrap().get(id)?;
        if spot.frame == Spot::CLAIMED.frame {
            return None;
        }
        let frame = self.frames.lock().unwrap()[spot.frame as usize];
        Some(Loc::of(frame, spot.offset.into(), spot.length.into()))
    }
}

/// What a frame's blobs are: file content or pieces of the entry list.
#[derive(Clone, Copy)]
enum Holds {
    Files,
    Pieces,
}

/// Appends frames to packs and hands each full pack to the upload threads.
struct Packer<'a> {
    store: &'a dyn Store,
    /// Where full packs go to be uploaded.
    sender: Mutex<Option<SyncSender<FullPack>>>,
    /// The first upload failure; the save stops at the next blob.
    failed: Mutex<Option<Error>>,
    level: i32,
    /// Index of this save's first pack in the snapshot's pack list.
    first_pack: u32,
    /// The file blobs this save has taken on to store, and where each went
    /// once packed (forgotten between windows past `max_new_blobs`).
    blobs: NewBlobs,
    /// The same for the pieces of the entry list, kept to the end: the
    /// root manifest names each.
    pieces: NewBlobs,
    /// The delta-coded frames this save wrote, with their dictionaries.
    deltas: Mutex<HashMap<Frame, Frame>>,
    current: Mutex<(u32, Vec<u8>)>,
    /// A pack buffer the store gave back, for the next pack to fill.
    spare: Spare,
    pack_keys: Mutex<Vec<Option<ObjectKey>>>,
    objects_sent: AtomicU64,
    stored_bytes: AtomicU64,
    new_bytes: AtomicU64,
}

impl<'a> Packer<'a> {
    fn new(store: &'a dyn Store, level: i32, first_pack: u32) -> Self {
        Packer {
            store,
            sender: Mutex::new(None),
            failed: Mutex::new(None),
            level,
            first_pack,
            blobs: NewBlobs::new(),
            pieces: NewBlobs::new(),
            deltas: Mutex::new(HashMap::new()),
            current: Mutex::new((0, Vec::new())),
            spare: Spare::default(),
            pack_keys: Mutex::new(Vec::new()),
            objects_sent: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            new_bytes: AtomicU64::new(0),
        }
    }

    /// Encode a frame and append it to the current pack.
    /// `scratch` holds the compressed form until it is copied into the pack.
    fn add_frame(
        &self,
        data: &[u8],
        blobs: Vec<(BlobId, u64, u64)>,
        holds: Holds,
        raw: bool,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let raw_len = data.len() as u64;
        let codec = if raw {
            Codec::Raw
        } else {
            encode_frame_into(data, self.level, scratch)
        };
        let stored = match codec {
            Codec::Raw => data,
            Codec::Zstd => scratch.as_slice(),
        };
        self.append_frame(raw_len, stored, codec, None, blobs, holds)
    }

    /// Encode a frame against the plaintext of `dict` (see
    /// [`encode_delta_frame`]) and append it to the current pack.
    fn add_delta_frame(
        &self,
        data: &[u8],
        blobs: Vec<(BlobId, u64, u64)>,
        dict: Frame,
        dict_plain: &[u8],
    ) -> Result<()> {
        let stored = encode_delta_frame(data, dict_plain, self.level)?;
        self.append_frame(
            data.len() as u64,
            &stored,
            Codec::Zstd,
            Some(dict),
            blobs,
            Holds::Pieces,
        )
    }

    fn append_frame(
        &self,
        raw_len: u64,
        stored: &[u8],
        codec: Codec,
        dict: Option<Frame>,
        blobs: Vec<(BlobId, u64, u64)>,
        holds: Holds,
    ) -> Result<()> {
        let (frame, full) = {
            let mut cur = self.current.lock().unwrap();
            let frame = Frame::new(
                self.first_pack + cur.0,
                cur.1.len() as u64,
                stored.len() as u64,
                raw_len,
                codec,
            );
            if let Some(d) = dict {
                self.deltas.lock().unwrap().insert(frame, d);
            }
            if cur.1.capacity() == 0 {
                // A buffer an upload gave back, else room for a pack's
                // usual largest size (one frame short of the target, plus a
                // frame), so it is not doubled to 32 MiB and copied on the
                // way.
                if let Some(spare) = self.spare.take() {
                    cur.1 = spare;
                }
                cur.1
                    .reserve_exact((PACK_TARGET + FRAME_TARGET + MAX_BLOB_RAW) as usize);
            }
            cur.1.extend_from_slice(stored);
            let full = if cur.1.len() as u64 >= PACK_TARGET {
                let ord = cur.0;
                cur.0 += 1;
                Some((ord, std::mem::take(&mut cur.1)))
            } else {
                None
            };
            (frame, full)
        };
        match holds {
            Holds::Files => self.blobs.locate(frame, blobs),
            Holds::Pieces => self.pieces.locate(frame, blobs),
        }
        if let Some((ord, buf)) = full {
            self.write_pack(ord, buf)?;
        }
        Ok(())
    }

    /// Hand a full pack to the upload threads (or upload it here if there
    /// are none).
    fn write_pack(&self, ord: u32, buf: Vec<u8>) -> Result<()> {
        let sender = self.sender.lock().unwrap().clone();
        match sender {
            Some(tx) => tx
                .send((ord, buf))
                .map_err(|_| Error::store("internal error: the upload threads stopped early")),
            None => self.upload(ord, buf),
        }
    }

    fn upload(&self, ord: u32, buf: Vec<u8>) -> Result<()> {
        let key = ObjectKey::for_bytes(ObjectKind::Pack, &buf);
        if self.store.missing(&[key])?.contains(&key) {
            let len = buf.len() as u64;
            // One spare at most: the packs in memory stay as many as before.
            self.store.put_owned(&key, buf, &self.spare)?;
            self.objects_sent.fetch_add(1, Ordering::Relaxed);
            self.stored_bytes.fetch_add(len, Ordering::Relaxed);
        }
        let mut keys = self.pack_keys.lock().unwrap();
        if keys.len() <= ord as usize {
            keys.resize(ord as usize + 1, None);
        }
        keys[ord as usize] = Some(key);
        Ok(())
    }

    /// Write the last, partly filled pack.
    fn finish(&self) -> Result<()> {
        let (ord, buf) = {
            let mut cur = self.current.lock().unwrap();
            let ord = cur.0;
            let buf = std::mem::take(&mut cur.1);
            if !buf.is_empty() {
                cur.0 += 1;
            }
            (ord, buf)
        };
        if !buf.is_empty() {
            self.write_pack(ord, buf)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_locations_are_found_by_id_once_sorted() {
        let f1 = Frame::new(0, 0, 100, 400, Codec::Zstd);
        let f2 = Frame::new(1, 50, 10, 10, Codec::Raw);
        let loc = Loc::of;
        let (a, b, c, d) = (
            BlobId::of(b"a"),
            BlobId::of(b"b"),
            BlobId::of(b"c"),
            BlobId::of(b"d"),
        );
        let mut locs = BlobLocs::with_capacity(4);
        locs.push(b, &loc(f2, 3, 4));
        locs.push(a, &loc(f1, 0, 10));
        locs.push(a, &loc(f1, 0, 10));
        locs.push(c, &loc(f2, 0, 3));
        let locs = locs.sorted();
        assert_eq!(locs.locs.len(), 3, "each id once");
        assert_eq!(locs.frames.len(), 2, "a frame pushed twice is held once");
        assert_eq!(locs.get(&a), Some(loc(f1, 0, 10)));
        assert_eq!(locs.get(&b), Some(loc(f2, 3, 4)));
        assert_eq!(locs.get(&c), Some(loc(f2, 0, 3)));
        assert!(locs.contains(&c) && !locs.contains(&d));
        assert_eq!(locs.get(&d), None);
    }

    /// A claimed blob is claimed once and has no location until its frame
    /// is packed; then it is found by its whole id, never by another's.
    #[test]
    fn new_blobs_are_claimed_once_and_found_once_packed() {
        let blobs = NewBlobs::new();
        let (a, b) = (BlobId::of(b"a"), BlobId::of(b"b"));
        assert!(blobs.claim(&a));
        assert!(!blobs.claim(&a), "claimed twice");
        assert_eq!(blobs.get(&a), None, "claimed, not packed");
        let f = Frame::new(3, 10, 20, 30, Codec::Zstd);
        blobs.locate(f, vec![(a, 0, 1)]);
        assert_eq!(blobs.get(&a), Some(Loc::of(f, 0, 1)));
        assert!(!blobs.claim(&a), "packed blobs stay claimed");
        // Same first 16 bytes, another id.
        let mut near = a;
        near.0[31] ^= 1;
        assert_eq!(blobs.get(&near), None);
        assert_eq!(blobs.get(&b), None);
        assert!(blobs.claim(&b));
    }

    /// Cutting the entry list a window at a time, with the unfinished
    /// piece carried over, gives the cuts of the whole list.
    #[test]
    fn pieces_cut_by_windows_are_those_of_the_whole_list() {
        let paths: Vec<String> = (0..5000).map(|i| format!("p/{i:05}")).collect();
        let (whole, done) = piece_bounds(paths.iter().map(String::as_str), true);
        assert_eq!(done, paths.len());
        assert!(whole.len() > 100);
        for window in [1, 7, 300, 4999] {
            let mut cuts = Vec::new();
            let mut from = 0;
            let mut next = 0;
            while from < paths.len() {
                next = (next + window).min(paths.len());
                let last = next == paths.len();
                let (b, d) = piece_bounds(paths[from..next].iter().map(String::as_str), last);
                cuts.extend(b.into_iter().map(|r| r.start + from..r.end + from));
                from += d;
                if last {
                    break;
                }
            }
            assert_eq!(cuts, whole, "window of {window}");
        }
    }

    /// Variants of one large file of one package form a family; files that
    /// are alike only by kind or place do not.
    #[test]
    fn large_variants_of_one_file_form_families() {
        const MB: u64 = 1 << 20;
        let next = "node_modules/next/dist/compiled/next-server";
        let files: Vec<(String, u64)> = vec![
            (
                format!("{next}/app-page.runtime.dev.js.map"),
                5 * MB + 500_000,
            ),
            (
                format!("{next}/app-page-experimental.runtime.dev.js.map"),
                5 * MB + 600_000,
            ),
            (
                format!("{next}/app-page-turbo.runtime.dev.js.map"),
                5 * MB + 520_000,
            ),
            (format!("{next}/app-page.runtime.prod.js.map"), 4 * MB),
            (
                format!("{next}/app-page-turbo.runtime.prod.js.map"),
                4 * MB + 1000,
            ),
            // Same kind, another name: not a variant.
            (format!("{next}/server.runtime.prod.js.map"), 4 * MB),
            // A variant twice the size: not joined.
            (format!("{next}/app-page-huge.runtime.prod.js.map"), 8 * MB),
            // Too small to be cut into chunks, and too large to be read whole.
            (
                format!("{next}/app-page-small.runtime.prod.js.map"),
                200_000,
            ),
            (format!("{next}/app-page-big.runtime.dev.js.map"), 9 * MB),
            // Two versions of one package.
            ("node_modules/x/dist/index.js".to_string(), 2 * MB),
            (
                "node_modules/y/node_modules/x/dist/index.js".to_string(),
                2 * MB + 9,
            ),
            // Rust artefacts of one directory and kind: not variants.
            ("target/release/deps/libserde-1a2b.rlib".to_string(), 3 * MB),
            ("target/release/deps/libtokio-3c4d.rlib".to_string(), 3 * MB),
        ];
        let entries: Vec<Scanned> = files
            .iter()
            .map(|(p, size)| {
                let stat = Stat {
                    size: *size,
                    ..Stat::default()
                };
                Scanned::new(p, EntryKind::File, stat, None)
            })
            .collect();
        let to_read: Vec<u32> = (0..entries.len() as u32).collect();
        let (families, members) = families(&entries, &to_read);
        let names: Vec<Vec<&str>> = families
            .iter()
            .map(|f| f.iter().map(|&i| entries[i as usize].path()).collect())
            .collect();
        let short = |v: &[&str]| -> Vec<String> {
            v.iter()
                .map(|p| p.rsplit('/').next().unwrap().to_string())
                .collect()
        };
        let got: Vec<Vec<String>> = names.iter().map(|f| short(f)).collect();
        assert_eq!(
            got,
            vec![
                vec![
                    "app-page.runtime.dev.js.map",
                    "app-page-experimental.runtime.dev.js.map",
                    "app-page-turbo.runtime.dev.js.map",
                ],
                vec![
                    "app-page.runtime.prod.js.map",
                    "app-page-turbo.runtime.prod.js.map"
                ],
                vec!["index.js", "index.js"],
            ],
            "{names:?}"
        );
        assert_eq!(members.len(), 7);

        // A family holds at most FAMILY_MAX bytes: five 6 MB variants make
        // a family of four and a file read alone.
        let entries: Vec<Scanned> = (0..5)
            .map(|n| {
                let stat = Stat {
                    size: 6 * MB,
                    ..Stat::default()
                };
                Scanned::new(
                    &format!("node_modules/p/v{}.js", ["", "-1", "-2", "-3", "-4"][n]),
                    EntryKind::File,
                    stat,
                    None,
                )
            })
            .collect();
        let (split, _) = super::families(&entries, &[0, 1, 2, 3, 4]);
        assert_eq!(split, vec![vec![0, 1, 2, 3]]);
    }

    /// A family reads whole only a regular file that is still of a
    /// family's size; anything else is left to be read alone.
    #[test]
    fn a_family_reads_whole_only_a_large_regular_file() {
        let t = tempfile::tempdir().unwrap();
        let at = |n: &str| t.path().join(n);
        std::fs::write(at("large"), vec![7u8; 300_000]).unwrap();
        std::fs::write(at("shrunk"), vec![7u8; 1000]).unwrap();
        std::fs::write(at("grown"), vec![7u8; FAMILY_FILE_MAX as usize + 1]).unwrap();
        let (buf, stat, _) = read_whole(&at("large")).unwrap().expect("read whole");
        assert_eq!((buf.len(), stat.size), (300_000, 300_000));
        for n in ["shrunk", "grown", "gone"] {
            assert!(read_whole(&at(n)).unwrap().is_none(), "{n}");
        }
        // Unix only: Windows refuses to open a directory as a file (an
        // error, as for a file read alone), and Wine shows a symlink as
        // its target.
        #[cfg(unix)]
        {
            std::fs::create_dir(at("dir")).unwrap();
            assert!(read_whole(&at("dir")).unwrap().is_none(), "a directory");
            std::os::unix::fs::symlink(at("large"), at("link")).unwrap();
            assert!(
                read_whole(&at("link")).unwrap().is_none(),
                "a symlink is not followed"
            );
        }
    }

    /// `len` bytes of runs of text (every `every`-th run of `run` bytes)
    /// among xorshift bytes from `seed`: content FastCDC cuts in many
    /// places, some of them where the text makes the gear hash repeat.
    fn text_among_noise(len: usize, seed: u64, run: usize, every: usize) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / run) % every == 0 {
                    b'a' + (i % 7) as u8
                } else {
                    x as u8
                }
            })
            .collect()
    }

    /// A file of a family is cut where it is cut when read alone (so its
    /// chunks deduplicate against the same file saved either way).
    #[test]
    fn a_file_in_memory_is_cut_as_a_streamed_one() {
        let data = text_among_noise(3_000_000, 0x2545_F491_4F6C_DD1D, 4096, 3);
        let whole: Vec<(usize, usize)> =
            fastcdc::v2020::FastCDC::new(&data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                .map(|c| (c.offset, c.length))
                .collect();
        let streamed: Vec<(usize, usize)> =
            fastcdc::v2020::StreamCDC::new(&data[..], CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                .map(|c| c.unwrap())
                .map(|c| (c.offset as usize, c.length))
                .collect();
        assert!(whole.len() > 10, "{}", whole.len());
        assert_eq!(whole, streamed);
    }

    /// A reader that hands out at most `step` bytes a call, as a pipe or a
    /// slow file system may.
    struct Dribble<'d> {
        data: &'d [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_file_cut_through_the_window_is_cut_as_a_streamed_one() {
        let data = text_among_noise(5_000_000, 0x9E37_79B9_7F4A_7C15, 3000, 4);
        let mut window = Vec::new();
        // Lengths around the window's and a chunk's edges, and whole.
        for len in [
            CHUNK_THRESHOLD as usize + 1,
            CHUNK_MAX as usize,
            CUT_WINDOW - 1,
            CUT_WINDOW,
            CUT_WINDOW + 1,
            2 * CUT_WINDOW + CHUNK_MAX as usize / 2,
            data.len(),
        ] {
            let data = &data[..len];
            let streamed: Vec<Vec<u8>> =
                fastcdc::v2020::StreamCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                    .map(|c| c.unwrap().data)
                    .collect();
            for step in [usize::MAX, 7919, 65536] {
                let mut got: Vec<Vec<u8>> = Vec::new();
                let n = for_each_chunk(&mut Dribble { data, step }, &mut window, |c| {
                    got.push(c.to_vec());
                    Ok(())
                })
                .unwrap_or_else(|_| panic!("reading from memory fails"));
                assert_eq!(n, len as u64);
                assert_eq!(got, streamed, "{len} bytes read {step} at a time");
            }
        }
    }

    #[test]
    fn a_small_file_is_read_into_its_frame_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::LocalStore::open(&dir.path().join("store"), "default").unwrap();
        let packer = Packer::new(&store, 3, 0);
        let known = BlobLocs::default();
        let mut fb = FrameBuilder::new(&packer, &known);
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            std::fs::File::open(p).unwrap()
        };
        let one = vec![b'a'; 1000];
        let (n, id) = fb.add_small(&mut write("one", &one)).ok().unwrap();
        assert_eq!((n, id), (1000, Some(BlobId::of(&one))));
        // The same bytes again are not kept a second time.
        let (_, again) = fb.add_small(&mut write("two", &one)).ok().unwrap();
        assert_eq!(again, id);
        // Empty, and over the threshold: read, not kept, no id.
        assert_eq!(
            fb.add_small(&mut write("empty", b"")).ok().unwrap(),
            (0, None)
        );
        let big = vec![b'b'; CHUNK_THRESHOLD as usize + 10];
        let (n, none) = fb.add_small(&mut write("big", &big)).ok().unwrap();
        assert_eq!((n, none), (CHUNK_THRESHOLD + 1, None));
        assert_eq!(fb.solid, one);
        assert_eq!(fb.solid_blobs, vec![(BlobId::of(&one), 0, 1000)]);
    }

    #[test]
    fn files_are_packed_by_package_then_module_then_kind() {
        let k = |p| pack_order(p);
        assert_eq!(k("node_modules/react/index.js"), ("react", "index", "js"));
        assert_eq!(
            k("node_modules/@mui/material/esm/Button/Button.d.ts"),
            ("@mui/material", "Button", "d.ts")
        );
        // The innermost package, at any depth, in any root, by its name:
        // two versions of one package sort together.
        assert_eq!(
            k("web/node_modules/a/node_modules/b/lib/x.js.map"),
            ("b", "x", "js.map")
        );
        assert_eq!(
            k("node_modules/.pnpm/b@2.0.1/node_modules/b/lib/x.js.map"),
            ("b", "x", "js.map")
        );
        // Not in a package (outside node_modules, a file directly in it, or
        // in a directory merely ending in `node_modules`): by directory.
        assert_eq!(
            k("target/debug/deps/libfoo-1a2b.rlib"),
            ("target/debug/deps", "libfoo-1a2b", "rlib")
        );
        assert_eq!(
            k("node_modules/.package-lock.json"),
            ("node_modules", "", "package-lock.json")
        );
        assert_eq!(
            k("x/my_node_modules/a/b.js"),
            ("x/my_node_modules/a", "b", "js")
        );
        assert_eq!(k("node_modules/@scope"), ("node_modules", "@scope", ""));
        assert_eq!(k("README"), ("", "README", ""));
        // Builds of one module sort side by side within their package, and
        // with the same module of another version (the save breaks ties by
        // path).
        let mut paths = [
            "node_modules/p/esm/Button.js",
            "node_modules/p/Alert.js",
            "node_modules/q/node_modules/p/Button.js",
            "node_modules/p/Button.d.ts",
            "node_modules/p/Button.js",
            "node_modules/p/esm/Alert.js",
        ];
        paths.sort_by_key(|p| (pack_order(p), *p));
        assert_eq!(
            paths,
            [
                "node_modules/p/Alert.js",
                "node_modules/p/esm/Alert.js",
                "node_modules/p/Button.d.ts",
                "node_modules/p/Button.js",
                "node_modules/p/esm/Button.js",
                "node_modules/q/node_modules/p/Button.js",
            ]
        );
    }
}
