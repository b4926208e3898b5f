//! `save`: scan the workspace, store what the store does not have yet,
//! write the manifest, then move the head.
//!
//! Ordering is what makes a save safe to interrupt: packs first, then the
//! manifest that names them, then the head that names the manifest. A save
//! killed at any point leaves the previous head, and everything it refers
//! to, untouched.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use stateful_ci_protocol::limits::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, CHUNK_THRESHOLD, PACK_TARGET};
use stateful_ci_protocol::{
    BlobCodec, BlobId, BlobLocation, Entry, EntryKind, FORMAT_VERSION, Head, Manifest, ObjectKey,
    ObjectKind,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::objects::{compress_blob, encode_manifest, load_manifest};
use crate::report::{Phase, Reporter};
use crate::scan::{Filter, Scanned, Stat, scan};
use crate::statindex::{StatIndex, now_ns};
use crate::store::{CasOutcome, Commit, Store};

#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// zstd level for blobs.
    pub level: i32,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions { level: 3 }
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

/// Where a blob's bytes are, for a blob in an existing or a new pack.
#[derive(Clone, Copy)]
enum PackRef {
    Existing(ObjectKey),
    New(u32),
}

#[derive(Clone, Copy)]
struct Loc {
    pack: PackRef,
    offset: u64,
    length: u64,
    raw_len: u64,
    codec: BlobCodec,
}

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
    let scanned = scan(workspace, &config.paths, &filter)?;

    // What the store already has: the blobs of the current head and of the
    // snapshot this workspace was restored from, in packs still present.
    let head = store.save_head()?;
    let old_index = StatIndex::load(workspace);
    let store_id = store.describe();
    let mut bases: Vec<ObjectKey> = head.iter().map(|h| h.snapshot).collect();
    if let Some((sid, key)) = &old_index.base {
        if *sid == store_id && !bases.contains(key) {
            bases.push(*key);
        }
    }
    let mut known: HashMap<BlobId, Loc> = HashMap::new();
    let mut head_manifest = None;
    for key in &bases {
        match load_manifest(store, key) {
            Ok(m) => {
                let present = pack_presence(store, &m)?;
                for b in &m.blobs {
                    let pack = m.packs[b.pack as usize];
                    if present.contains(&pack) {
                        known.entry(b.id).or_insert(Loc {
                            pack: PackRef::Existing(pack),
                            offset: b.offset,
                            length: b.length,
                            raw_len: b.raw_len,
                            codec: b.codec,
                        });
                    }
                }
                // The head only counts as "unchanged" if it is still whole.
                if head.as_ref().is_some_and(|h| h.snapshot == *key)
                    && present.len() == m.packs.len()
                {
                    head_manifest = Some(m);
                }
            }
            Err(e) if e.is_cache_failure() => {
                reporter.warn(&format!(
                    "ignoring the previous snapshot {key} ({e}); saving everything anew"
                ));
            }
            Err(e) => return Err(e),
        }
    }

    // Files whose stat matches the index and whose blobs are stored are not read.
    let mut to_read = Vec::new();
    let mut reused: HashMap<&str, Vec<BlobId>> = HashMap::new();
    for s in scanned.entries.iter().filter(|s| s.kind == EntryKind::File) {
        match old_index.lookup(&s.path, &s.stat) {
            Some(blobs) if blobs.iter().all(|b| known.contains_key(b)) => {
                reused.insert(&s.path, blobs.to_vec());
            }
            _ => to_read.push(s),
        }
    }

    let total: u64 = to_read.iter().map(|s| s.stat.size).sum();
    reporter.phase(Phase::Pack, Some(total));
    let packer = Packer::new(store, opts.level, &known);
    // Full packs go to a few upload threads through a one-slot channel, so
    // reading and compressing go on while a pack travels, and at most a
    // handful of packs are in memory at once.
    let uploaders = store.parallelism().clamp(1, 3);
    let (tx, rx) = std::sync::mpsc::sync_channel::<FullPack>(1);
    let rx = Mutex::new(rx);
    *packer.sender.lock().unwrap() = Some(tx);
    let outcomes: Result<Vec<(&Scanned, FileOutcome)>> = std::thread::scope(|scope| {
        for _ in 0..uploaders {
            scope.spawn(|| {
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok((ord, buf)) = job else { break };
                    if let Err(e) = packer.upload(ord, &buf) {
                        packer.failed.lock().unwrap().get_or_insert(e);
                    }
                }
            });
        }
        let outcomes = to_read
            .par_iter()
            .map(|s| Ok((*s, read_file_twice(workspace, s, &packer, reporter)?)))
            .collect::<Result<_>>();
        let finished = packer.finish();
        // Closing the channel lets the upload threads drain and stop.
        packer.sender.lock().unwrap().take();
        finished.and(outcomes)
    });
    if let Some(e) = packer.failed.lock().unwrap().take() {
        return Err(e);
    }
    let outcomes = outcomes?;
    let Packer {
        new_locs,
        pack_keys,
        objects_sent,
        stored_bytes,
        new_bytes,
        ..
    } = packer;
    let new_locs = new_locs.into_inner().unwrap();
    let pack_keys = pack_keys.into_inner().unwrap();
    let mut stored_bytes = stored_bytes.into_inner();
    let mut objects_sent = objects_sent.into_inner();

    // Assemble the manifest.
    reporter.phase(Phase::Commit, None);
    let mut read: HashMap<&str, (Vec<BlobId>, Stat)> = HashMap::new();
    let mut skipped_changing = Vec::new();
    let mut index = StatIndex::default();
    for (s, outcome) in outcomes {
        match outcome {
            FileOutcome::Read {
                blobs,
                stat,
                read_at,
            } => {
                index.record_read(s.path.clone(), &stat, blobs.clone(), read_at);
                read.insert(&s.path, (blobs, stat));
            }
            FileOutcome::Changing => skipped_changing.push(s.path.clone()),
            FileOutcome::Vanished => {}
        }
    }
    let mut entries = Vec::with_capacity(scanned.entries.len());
    let (mut files, mut dirs, mut symlinks, mut bytes) = (0, 0, 0, 0);
    for s in &scanned.entries {
        let (stat, blobs) = match s.kind {
            EntryKind::File => {
                if let Some(blobs) = reused.get(s.path.as_str()) {
                    index.record_written(s.path.clone(), &s.stat, blobs.clone());
                    (s.stat, blobs.clone())
                } else if let Some((blobs, stat)) = read.get(s.path.as_str()) {
                    (*stat, blobs.clone())
                } else {
                    continue;
                }
            }
            _ => (s.stat, Vec::new()),
        };
        match s.kind {
            EntryKind::File => {
                files += 1;
                bytes += stat.size;
            }
            EntryKind::Dir => dirs += 1,
            EntryKind::Symlink => symlinks += 1,
        }
        entries.push(Entry {
            path: s.path.clone(),
            kind: s.kind,
            mode: stat.mode,
            mtime_ns: stat.mtime_ns,
            size: if s.kind == EntryKind::File {
                stat.size
            } else {
                0
            },
            target: s.target.clone(),
            blobs,
        });
    }

    let roots = config.paths.clone();
    let base_summary = |outcome, head: Head, objects_sent: u64, stored_bytes: u64| SaveSummary {
        outcome,
        head,
        files,
        dirs,
        symlinks,
        bytes,
        new_bytes: new_bytes.load(Ordering::Relaxed),
        stored_bytes,
        objects_sent,
        files_read: to_read.len() as u64,
        skipped_credentials: scanned.skipped_credentials,
        skipped_changing: skipped_changing.clone(),
        duration: started.elapsed(),
    };

    if let (Some(h), Some(m)) = (&head, &head_manifest) {
        if m.entries == entries && m.roots == roots {
            index.base = Some((store_id, h.snapshot));
            let _ = index.store(workspace);
            return Ok(base_summary(
                SaveOutcome::Unchanged,
                h.clone(),
                objects_sent,
                stored_bytes,
            ));
        }
    }

    let manifest = build_manifest(
        entries,
        roots,
        &known,
        &new_locs,
        &pack_keys,
        head.as_ref().map(|h| h.snapshot),
    )?;
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
            entries: manifest.entries.len() as u64,
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
    index.base = Some((store_id, mkey));
    if let Err(e) = index.store(workspace) {
        reporter.warn(&format!(
            "could not write the local stat index ({e}); the next save will re-read every file"
        ));
    }
    Ok(base_summary(
        SaveOutcome::Saved,
        new_head,
        objects_sent,
        stored_bytes,
    ))
}

/// Which of a manifest's packs are still in the store.
fn pack_presence(store: &dyn Store, m: &Manifest) -> Result<HashSet<ObjectKey>> {
    let missing = store.missing(&m.packs)?;
    Ok(m.packs
        .iter()
        .filter(|p| !missing.contains(p))
        .copied()
        .collect())
}

fn build_manifest(
    entries: Vec<Entry>,
    roots: Vec<String>,
    known: &HashMap<BlobId, Loc>,
    new_locs: &HashMap<BlobId, Loc>,
    pack_keys: &[Option<ObjectKey>],
    parent: Option<ObjectKey>,
) -> Result<Manifest> {
    let mut ids: Vec<BlobId> = entries
        .iter()
        .flat_map(|e| e.blobs.iter().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut packs: Vec<ObjectKey> = Vec::new();
    let mut pack_index: HashMap<ObjectKey, u32> = HashMap::new();
    let mut blobs = Vec::with_capacity(ids.len());
    for id in ids {
        let loc = new_locs
            .get(&id)
            .or_else(|| known.get(&id))
            .ok_or_else(|| {
                Error::store(format!("internal error: blob {id} has no stored location"))
            })?;
        let key = match loc.pack {
            PackRef::Existing(k) => k,
            PackRef::New(ord) => pack_keys[ord as usize].ok_or_else(|| {
                Error::store(format!("internal error: pack {ord} was never written"))
            })?,
        };
        let pack = *pack_index.entry(key).or_insert_with(|| {
            packs.push(key);
            (packs.len() - 1) as u32
        });
        blobs.push(BlobLocation {
            id,
            pack,
            offset: loc.offset,
            length: loc.length,
            raw_len: loc.raw_len,
            codec: loc.codec,
        });
    }
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let m = Manifest {
        version: FORMAT_VERSION,
        created_at,
        parent,
        roots,
        packs,
        blobs,
        entries,
    };
    m.validate()
        .map_err(|e| Error::store(format!("internal error: the new manifest is invalid: {e}")))?;
    Ok(m)
}

enum FileOutcome {
    Read {
        blobs: Vec<BlobId>,
        stat: Stat,
        read_at: i64,
    },
    /// Changed on both attempts.
    Changing,
    /// Gone, or no longer a regular file.
    Vanished,
}

/// Read a file, retrying once if it changes while being read.
fn read_file_twice(
    workspace: &Path,
    s: &Scanned,
    packer: &Packer,
    reporter: &dyn Reporter,
) -> Result<FileOutcome> {
    let abs = workspace.join(&s.path);
    for attempt in 0..2 {
        match read_file(&abs, packer, reporter)? {
            Attempt::Stable(blobs, stat, read_at) => {
                return Ok(FileOutcome::Read {
                    blobs,
                    stat,
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
        s.path
    ));
    Ok(FileOutcome::Changing)
}

enum Attempt {
    Stable(Vec<BlobId>, Stat, i64),
    Changed,
    Vanished,
}

fn read_file(abs: &Path, packer: &Packer, reporter: &dyn Reporter) -> Result<Attempt> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(abs)
    {
        Ok(f) => f,
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound)
                || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            return Ok(Attempt::Vanished);
        }
        Err(e) => {
            return Err(Error::workspace(format!(
                "cannot read {}: {e}",
                abs.display()
            )));
        }
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
    let mut blobs = Vec::new();
    let mut len = 0u64;
    if before.size <= CHUNK_THRESHOLD {
        let mut buf = Vec::with_capacity(before.size as usize + 1);
        (&mut f)
            .take(CHUNK_THRESHOLD + 1)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        len = buf.len() as u64;
        if len <= CHUNK_THRESHOLD && len > 0 {
            blobs.push(packer.add(&buf)?);
        }
    } else {
        let chunker = fastcdc::v2020::StreamCDC::new(&mut f, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
        for chunk in chunker {
            let chunk = chunk
                .map_err(|e| Error::workspace(format!("cannot read {}: {e}", abs.display())))?;
            len += chunk.length as u64;
            blobs.push(packer.add(&chunk.data)?);
            reporter.advance(chunk.length as u64);
        }
    }
    let after = f.metadata().map(|m| Stat::of(&m)).map_err(io_err)?;
    if after != before || len != before.size {
        return Ok(Attempt::Changed);
    }
    if before.size <= CHUNK_THRESHOLD {
        reporter.advance(len);
    }
    Ok(Attempt::Stable(blobs, before, read_at))
}

/// A sealed pack and its ordinal in this save.
type FullPack = (u32, Vec<u8>);

/// Collects new blobs into packs and writes each pack when it is full.
struct Packer<'a> {
    store: &'a dyn Store,
    /// Where full packs go to be uploaded.
    sender: Mutex<Option<SyncSender<FullPack>>>,
    /// The first upload failure; the save stops at the next blob.
    failed: Mutex<Option<Error>>,
    level: i32,
    known: &'a HashMap<BlobId, Loc>,
    claimed: Mutex<HashSet<BlobId>>,
    new_locs: Mutex<HashMap<BlobId, Loc>>,
    current: Mutex<(u32, Vec<u8>)>,
    pack_keys: Mutex<Vec<Option<ObjectKey>>>,
    objects_sent: AtomicU64,
    stored_bytes: AtomicU64,
    new_bytes: AtomicU64,
}

impl<'a> Packer<'a> {
    fn new(store: &'a dyn Store, level: i32, known: &'a HashMap<BlobId, Loc>) -> Self {
        Packer {
            store,
            sender: Mutex::new(None),
            failed: Mutex::new(None),
            level,
            known,
            claimed: Mutex::new(HashSet::new()),
            new_locs: Mutex::new(HashMap::new()),
            current: Mutex::new((0, Vec::new())),
            pack_keys: Mutex::new(Vec::new()),
            objects_sent: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            new_bytes: AtomicU64::new(0),
        }
    }

    /// Make sure `data` is stored; returns its id.
    fn add(&self, data: &[u8]) -> Result<BlobId> {
        if let Some(e) = &*self.failed.lock().unwrap() {
            return Err(e.clone());
        }
        let id = BlobId::of(data);
        if self.known.contains_key(&id) || !self.claimed.lock().unwrap().insert(id) {
            return Ok(id);
        }
        let (codec, stored) = compress_blob(data, self.level);
        self.new_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let (ord, offset, full) = {
            let mut cur = self.current.lock().unwrap();
            let offset = cur.1.len() as u64;
            cur.1.extend_from_slice(&stored);
            let ord = cur.0;
            let full = if cur.1.len() as u64 >= PACK_TARGET {
                cur.0 += 1;
                Some(std::mem::take(&mut cur.1))
            } else {
                None
            };
            (ord, offset, full)
        };
        self.new_locs.lock().unwrap().insert(
            id,
            Loc {
                pack: PackRef::New(ord),
                offset,
                length: stored.len() as u64,
                raw_len: data.len() as u64,
                codec,
            },
        );
        if let Some(buf) = full {
            self.write_pack(ord, buf)?;
        }
        Ok(id)
    }

    /// Hand a full pack to the upload threads (or upload it here if there
    /// are none).
    fn write_pack(&self, ord: u32, buf: Vec<u8>) -> Result<()> {
        let sender = self.sender.lock().unwrap().clone();
        match sender {
            Some(tx) => tx
                .send((ord, buf))
                .map_err(|_| Error::store("internal error: the upload threads stopped early")),
            None => self.upload(ord, &buf),
        }
    }

    fn upload(&self, ord: u32, buf: &[u8]) -> Result<()> {
        let key = ObjectKey::for_bytes(ObjectKind::Pack, buf);
        if self.store.missing(&[key])?.contains(&key) {
            self.store.put(&key, buf)?;
            self.objects_sent.fetch_add(1, Ordering::Relaxed);
            self.stored_bytes
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
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
            (cur.0, std::mem::take(&mut cur.1))
        };
        if !buf.is_empty() {
            self.write_pack(ord, buf)
        } else {
            Ok(())
        }
    }
}
