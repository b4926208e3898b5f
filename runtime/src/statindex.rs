//! The local stat index: what the engine last knew about each file (size,
//! mtime, ctime, inode → blobs and where they are stored), and which
//! snapshot that knowledge belongs to (its packs and its pieces). A save
//! skips reading files whose stat is unchanged and reuses the pieces of the
//! entry list that did not change, without loading the previous snapshot; a
//! restore skips files that already match.
//!
//! It lives outside the workspace (in the user's cache directory), keyed by
//! the workspace's absolute path, so it is never captured in a snapshot. It
//! is only a hint: losing it costs time, never correctness (every location
//! it names is checked against the store's pack list before use, and every
//! byte read back is verified), and an entry is only trusted when its ctime
//! is safely older than the moment it was recorded (the "racy" window that
//! git also guards against).
//!
//! The encoding is a compact binary one (little-endian, length-prefixed),
//! sorted by path, and read as a stream ([`IndexStream`]): a save walks the
//! records beside its sorted scan, a bounded window of them decoded ahead
//! on another thread, and keeps only the blob lists of the files that
//! match, so the index is never held whole (at 500,000 files it would be
//! about 40 MB more at the save's peak). The file's length is in its header:
//! an index cut short is refused before any of it is trusted.
//!
//! The records come first and the base after them (its offset is in the
//! header), so a save writes the new index a window of files at a time as
//! it goes ([`IndexWriter`]) and only knows the base, its pieces, at the
//! end; and a save that finds the first windows unchanged copies their
//! records byte for byte from the old index instead of encoding them again.

use std::path::{Path, PathBuf};

use stateful_ci_protocol::{
    BlobId, Codec, Frame, Manifest, ObjectHash, ObjectKey, ObjectKind, PieceFrame, PieceRef,
};

use crate::objects::{Blobs, Loc, PieceFp};
use crate::scan::Stat;

/// An entry whose ctime is this close to the time it was recorded may have
/// been modified within the same timestamp tick; it is not trusted.
const RACY_NS: i64 = 2_000_000_000;
/// Then the file's length (u64), so an index cut short or appended to is
/// refused when it is opened, before any record is trusted, and the offset
/// of the base (u64), which follows the records.
const MAGIC: &[u8; 8] = b"SCISTAT6";
/// Where the records begin.
pub const RECORDS_AT: u64 = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// False for a file recorded within the racy window: its blobs are
    /// known to be stored (so a save need not store them again), but its
    /// stat does not prove it unchanged.
    pub trusted: bool,
    pub blobs: Blobs,
}

impl Record {
    /// Whether a file with this stat is the one recorded (and the record is
    /// trusted to say so).
    pub fn matches(&self, stat: &Stat) -> bool {
        self.trusted
            && self.size == stat.size
            && self.mtime_ns == stat.mtime_ns
            && self.ctime_ns == stat.ctime_ns
            && self.ino == stat.ino
    }
}

/// The snapshot the index's locations refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base {
    /// The store it is in (`Store::describe`).
    pub store: String,
    pub snapshot: Option<ObjectKey>,
    pub roots: Vec<String>,
    /// Its pack list, in order (frames name packs by index).
    pub packs: Vec<ObjectKey>,
    /// Its pieces, in order, each with the frame it lives in.
    pub pieces: Vec<(PieceRef, PieceFrame)>,
    /// Each piece's [`PieceDigest`](crate::objects::PieceDigest), in the
    /// same order, or empty when they are not known (then a save builds
    /// every piece to compare it).
    pub digests: Vec<PieceFp>,
}

impl Base {
    /// The base that snapshot `key` (`m`, in the store `store`) is, with
    /// its pieces' digests (or none).
    pub fn of_manifest(store: String, key: ObjectKey, m: &Manifest, digests: Vec<PieceFp>) -> Base {
        Base {
            store,
            snapshot: Some(key),
            roots: m.roots.clone(),
            packs: m.packs.clone(),
            pieces: m
                .pieces
                .iter()
                .map(|p| (*p, m.frames[p.frame as usize]))
                .collect(),
            digests,
        }
    }
}

/// Where a workspace's index lives ([`StatIndex::location`]). Save and
/// restore write an index with [`IndexWriter`] and read it with
/// [`IndexStream`], never whole; the records held in memory are the tests'
/// way of building one.
#[derive(Debug, Default)]
pub struct StatIndex {
    pub base: Option<Base>,
    /// Sorted by path.
    #[cfg(test)]
    files: Vec<(Box<str>, Record)>,
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
        Some(dir.join("stat-index").join(format!("{}.v2", &id[..32])))
    }

    /// The record of `path` if its stat matches it.
    #[cfg(test)]
    fn lookup(&self, path: &str, stat: &Stat) -> Option<&Record> {
        let i = self.files.binary_search_by(|(p, _)| (**p).cmp(path)).ok()?;
        let r = &self.files[i].1;
        r.matches(stat).then_some(r)
    }

    /// Record a file whose content is known without a race (written by this
    /// process, or matched against an earlier trusted record).
    #[cfg(test)]
    pub fn record_written(&mut self, path: String, stat: &Stat, blobs: Blobs) {
        self.files.push((
            path.into_boxed_str(),
            Record {
                size: stat.size,
                mtime_ns: stat.mtime_ns,
                ctime_ns: stat.ctime_ns,
                ino: stat.ino,
                trusted: true,
                blobs,
            },
        ));
    }

    /// Sort after recording (records may arrive in any order).
    #[cfg(test)]
    pub fn finish(&mut self) {
        self.files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.files.dedup_by(|a, b| a.0 == b.0);
    }

    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut w = IndexWriter::to(std::io::Cursor::new(Vec::new())).expect("writing to a Vec");
        for (path, r) in &self.files {
            w.push(path, r);
        }
        w.finish_into(self.base.as_ref())
            .expect("writing to a Vec")
            .into_inner()
    }
}

/// Writes an index a record at a time, in path order, then its base (the
/// index of a 500,000-file workspace is about 100 MB: it is never built in
/// memory). [`IndexWriter::create`] writes beside the workspace's index and
/// renames over it only in [`IndexWriter::finish`]; dropped unfinished, it
/// removes what it wrote and the old index stays.
pub struct IndexWriter<W: std::io::Write + std::io::Seek = std::io::BufWriter<std::fs::File>> {
    out: W,
    /// Encoded records not written yet.
    buf: Vec<u8>,
    /// (temporary file, the index it becomes) for a file in the cache.
    paths: Option<(PathBuf, PathBuf)>,
    failed: Option<std::io::Error>,
}

impl IndexWriter {
    /// Start the index of the workspace at `root`; `None` when it has no
    /// place (no cache directory).
    pub fn create(root: &Path) -> std::io::Result<Option<IndexWriter>> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let Some(path) = StatIndex::location(root) else {
            return Ok(None);
        };
        let dir = path.parent().expect("index path has a parent");
        std::fs::create_dir_all(dir)?;
        // Unique within the process too: saves of other workspaces (or of
        // this one) may run beside this one.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let f = std::fs::File::create(&tmp)?;
        let mut w = IndexWriter::to(std::io::BufWriter::with_capacity(1 << 16, f))?;
        w.paths = Some((tmp, path));
        Ok(Some(w))
    }

    /// [`Self::copy_records`] from the index this one will replace (the
    /// one the save started from).
    pub fn copy_old_records(&mut self, end: u64) -> std::io::Result<()> {
        let Some((_, old)) = self.paths.clone() else {
            return Ok(());
        };
        self.copy_records(&old, end)
    }

    /// Write the base, then put the index in place of the old one.
    pub fn finish(mut self, base: Option<&Base>) -> std::io::Result<()> {
        let paths = self.paths.take();
        let written = self.finish_mut(base).and_then(|()| match &paths {
            Some((tmp, path)) => std::fs::rename(tmp, path),
            None => Ok(()),
        });
        if written.is_err() {
            if let Some((tmp, _)) = &paths {
                let _ = std::fs::remove_file(tmp);
            }
        }
        written
    }
}

impl<W: std::io::Write + std::io::Seek> Drop for IndexWriter<W> {
    fn drop(&mut self) {
        if let Some((tmp, _)) = self.paths.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl<W: std::io::Write + std::io::Seek> IndexWriter<W> {
    fn to(mut out: W) -> std::io::Result<Self> {
        let mut head = Vec::with_capacity(RECORDS_AT as usize);
        head.extend_from_slice(MAGIC);
        // The length and the base's offset, written once they are known.
        put_u64(&mut head, 0);
        put_u64(&mut head, 0);
        out.write_all(&head)?;
        Ok(IndexWriter {
            out,
            buf: Vec::with_capacity(64 * 1024),
            paths: None,
            failed: None,
        })
    }

    /// Add the record of `path` (after every path added before it). A
    /// write that fails is reported by `finish`.
    pub fn push(&mut self, path: &str, r: &Record) {
        let stat = Stat {
            size: r.size,
            mtime_ns: r.mtime_ns,
            ctime_ns: r.ctime_ns,
            ino: r.ino,
            mode: 0,
        };
        self.push_file(path, &stat, r.trusted, &r.blobs);
    }

    /// Add the record of a file with `stat` and `blobs` (see [`Self::push`]).
    pub fn push_file(&mut self, path: &str, stat: &Stat, trusted: bool, blobs: &[(BlobId, Loc)]) {
        let w = &mut self.buf;
        put_str(w, path);
        put_u64(w, stat.size);
        put_u64(w, stat.mtime_ns as u64);
        put_u64(w, stat.ctime_ns as u64);
        put_u64(w, stat.ino);
        w.push(trusted as u8);
        put_u64(w, blobs.len() as u64);
        for (id, loc) in blobs {
            w.extend_from_slice(&id.0);
            put_frame(w, &loc.frame());
            put_u64(w, loc.offset());
            put_u64(w, loc.length());
        }
        if self.buf.len() >= 60 * 1024 {
            if let Err(e) = self.flush_buf() {
                self.failed.get_or_insert(e);
            }
        }
    }

    /// Copy the records of the index at `old` (the one this save started
    /// from) up to byte `end`, unchanged: records of files whose stat
    /// matched, so their encoding is the one [`IndexWriter::push`] would
    /// write.
    pub fn copy_records(&mut self, old: &Path, end: u64) -> std::io::Result<()> {
        use std::io::{Read, Seek};
        if end <= RECORDS_AT {
            // Nothing to copy (there may be no old index at all).
            return Ok(());
        }
        self.flush_buf()?;
        let mut f = std::fs::File::open(old)?;
        f.seek(std::io::SeekFrom::Start(RECORDS_AT))?;
        let want = end.saturating_sub(RECORDS_AT);
        let copied = std::io::copy(&mut f.take(want), &mut self.out)?;
        if copied != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the old stat index changed while it was copied",
            ));
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn finish_mut(&mut self, base: Option<&Base>) -> std::io::Result<()> {
        self.flush_buf()?;
        let base_at = self.out.stream_position()?;
        let w = &mut self.buf;
        match base {
            None => w.push(0),
            Some(b) => {
                w.push(1);
                put_str(w, &b.store);
                match &b.snapshot {
                    None => w.push(0),
                    Some(k) => {
                        w.push(1);
                        w.extend_from_slice(&k.hash.0);
                    }
                }
                put_u64(w, b.roots.len() as u64);
                for r in &b.roots {
                    put_str(w, r);
                }
                put_u64(w, b.packs.len() as u64);
                for p in &b.packs {
                    w.extend_from_slice(&p.hash.0);
                }
                put_u64(w, b.pieces.len() as u64);
                for (p, f) in &b.pieces {
                    w.extend_from_slice(&p.id.0);
                    put_u64(w, p.frame as u64);
                    put_u64(w, p.offset);
                    put_u64(w, p.length);
                    put_u64(w, p.entries as u64);
                    put_piece_frame(w, f);
                }
                put_u64(w, b.digests.len() as u64);
                for d in &b.digests {
                    w.extend_from_slice(d);
                }
            }
        }
        self.flush_buf()?;
        let len = self.out.stream_position()?;
        self.out
            .seek(std::io::SeekFrom::Start(MAGIC.len() as u64))?;
        let mut head = Vec::with_capacity(16);
        put_u64(&mut head, len);
        put_u64(&mut head, base_at);
        self.out.write_all(&head)?;
        self.out.seek(std::io::SeekFrom::End(0))?;
        self.out.flush()
    }

    #[cfg(test)]
    fn finish_into(mut self, base: Option<&Base>) -> std::io::Result<W>
    where
        W: Default,
    {
        self.finish_mut(base)?;
        Ok(std::mem::take(&mut self.out))
    }
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u64(w, s.len() as u64);
    w.extend_from_slice(s.as_bytes());
}

fn put_frame(w: &mut Vec<u8>, f: &Frame) {
    put_u64(w, f.pack as u64);
    put_u64(w, f.offset);
    put_u64(w, f.length);
    put_u64(w, f.raw_len);
    w.push(matches!(f.codec, Codec::Zstd) as u8);
}

fn put_piece_frame(w: &mut Vec<u8>, f: &PieceFrame) {
    put_frame(w, &f.frame);
    match &f.dict {
        None => w.push(0),
        Some(d) => {
            w.push(1);
            put_frame(w, d);
        }
    }
}

/// Reads the index from a stream (never the whole file in memory: at
/// 500,000 files it is 87 MB), knowing how many bytes are left.
struct Reader<R> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Option<()> {
        if buf.len() as u64 > self.left {
            return None;
        }
        self.inner.read_exact(buf).ok()?;
        self.left -= buf.len() as u64;
        Some(())
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn count(&mut self) -> Option<usize> {
        let n = self.u64()?;
        // Each counted item takes at least a byte: a corrupt count cannot
        // make us allocate more than the file holds.
        (n <= self.left).then_some(n as usize)
    }
    fn str(&mut self) -> Option<String> {
        let n = self.count()?;
        let mut b = vec![0u8; n];
        self.fill(&mut b)?;
        String::from_utf8(b).ok()
    }
    fn h32(&mut self) -> Option<[u8; 32]> {
        self.array()
    }
    fn frame(&mut self) -> Option<Frame> {
        Some(Frame {
            pack: u32::try_from(self.u64()?).ok()?,
            offset: self.u64()?,
            length: self.u64()?,
            raw_len: self.u64()?,
            codec: if self.u8()? == 1 {
                Codec::Zstd
            } else {
                Codec::Raw
            },
        })
    }
    fn piece_frame(&mut self) -> Option<PieceFrame> {
        let frame = self.frame()?;
        let dict = match self.u8()? {
            0 => None,
            1 => Some(self.frame()?),
            _ => return None,
        };
        Some(PieceFrame { frame, dict })
    }
}

/// An index opened to be read one record at a time: its base (read when it
/// is opened), then its records in path order. A save walks them beside
/// its sorted scan and keeps none it does not need, so the index of a
/// 500,000-file workspace (about 90 MB once decoded) is never held whole.
pub struct IndexStream<R = std::io::BufReader<std::fs::File>> {
    pub base: Option<Base>,
    /// Bounded by the records' end: what is left of them.
    r: Reader<R>,
    /// Where the records end (the base's offset).
    end: u64,
    /// The path of the record given out last ("" before the first).
    last: String,
    damaged: bool,
}

/// A record as the stream gives it: its path, what it says, and the
/// offset in the index just past it (the old index's bytes up to there
/// are the records given out so far).
pub type Streamed = (Box<str>, Record, u64);

impl IndexStream {
    /// Open the index of the workspace at `root`, or `None` if it is
    /// missing or its header is unreadable.
    pub fn open(root: &Path) -> Option<IndexStream> {
        let f = std::fs::File::open(StatIndex::location(root)?).ok()?;
        let len = f.metadata().ok()?.len();
        IndexStream::new(std::io::BufReader::with_capacity(1 << 16, f), len)
    }
}

impl<R: std::io::Read + std::io::Seek> IndexStream<R> {
    fn new(mut inner: R, len: u64) -> Option<IndexStream<R>> {
        use std::io::SeekFrom;
        let mut r = Reader {
            inner: &mut inner,
            left: RECORDS_AT.min(len),
        };
        if r.array::<8>()? != *MAGIC || r.u64()? != len {
            return None;
        }
        let base_at = r.u64()?;
        if !(RECORDS_AT..=len).contains(&base_at) {
            return None;
        }
        inner.seek(SeekFrom::Start(base_at)).ok()?;
        let mut r = Reader {
            inner: &mut inner,
            left: len - base_at,
        };
        let base = decode_base(&mut r)?;
        // The base fills the rest of the file exactly.
        if r.left != 0 {
            return None;
        }
        inner.seek(SeekFrom::Start(RECORDS_AT)).ok()?;
        Some(IndexStream {
            base,
            r: Reader {
                inner,
                left: base_at - RECORDS_AT,
            },
            end: base_at,
            last: String::new(),
            damaged: false,
        })
    }
}

impl<R> IndexStream<R> {
    /// Whether reading stopped at a record that was cut short, malformed or
    /// out of order (the records before it were given out; none after).
    pub fn damaged(&self) -> bool {
        self.damaged
    }
}

impl<R: std::io::Read> Iterator for IndexStream<R> {
    type Item = Streamed;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.left == 0 || self.damaged {
            return None;
        }
        match decode_record(&mut self.r) {
            // Paths are never empty, so the first is always past "".
            Some((path, rec)) if *self.last < *path => {
                self.last.clear();
                self.last.push_str(&path);
                Some((path, rec, self.end - self.r.left))
            }
            _ => {
                self.damaged = true;
                None
            }
        }
    }
}

/// Records handed from the thread that decodes them to the one that walks
/// them, this many at a time...
const BATCH: usize = 4096;
/// ...with at most this many batches decoded ahead of the walk: about
/// 65,000 records (12 MB), so the decoding, which costs about 60 ms of one
/// core at 120,000 files, mostly happens while the save's scan runs, and
/// memory stays bounded whatever the index's size.
const BATCHES_AHEAD: usize = 16;

impl IndexStream {
    /// Start decoding the records on a thread of their own, ahead of the
    /// walk that will take them from the returned [`ReadAhead`] (or, if no
    /// thread can be started, as the walk takes them).
    pub fn read_ahead(self) -> ReadAhead {
        let (tx, rx) = std::sync::mpsc::sync_channel(BATCHES_AHEAD);
        // The stream goes to the thread once it runs, so it is still ours
        // if the thread cannot be started.
        let (give, take) = std::sync::mpsc::channel::<IndexStream>();
        let spawned = std::thread::Builder::new()
            .name("stat-index".into())
            .spawn(move || {
                let Ok(mut me) = take.recv() else {
                    return false;
                };
                loop {
                    let batch: Vec<_> = me.by_ref().take(BATCH).collect();
                    // Stops when the walk has gone (it no longer receives).
                    if batch.is_empty() || tx.send(batch).is_err() {
                        break;
                    }
                }
                me.damaged()
            });
        let source = match spawned {
            Ok(reader) => match give.send(self) {
                Ok(()) => Source::Thread { rx, reader },
                Err(back) => Source::Inline(Box::new(back.0)),
            },
            Err(_) => Source::Inline(Box::new(self)),
        };
        ReadAhead {
            source,
            batch: Vec::new().into_iter(),
        }
    }
}

/// The records of an [`IndexStream`], decoded by another thread.
pub struct ReadAhead {
    source: Source,
    batch: std::vec::IntoIter<Streamed>,
}

enum Source {
    Thread {
        rx: std::sync::mpsc::Receiver<Vec<Streamed>>,
        reader: std::thread::JoinHandle<bool>,
    },
    Inline(Box<IndexStream>),
}

impl Iterator for ReadAhead {
    type Item = Streamed;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.batch.next() {
                return Some(r);
            }
            match &mut self.source {
                Source::Thread { rx, .. } => self.batch = rx.recv().ok()?.into_iter(),
                Source::Inline(stream) => return stream.next(),
            }
        }
    }
}

impl ReadAhead {
    /// Stop reading; whether the index turned out
    /// [`damaged`](IndexStream::damaged) in what was read.
    pub fn finish(self) -> bool {
        match self.source {
            Source::Thread { rx, reader } => {
                drop(rx);
                reader
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }
            Source::Inline(stream) => stream.damaged(),
        }
    }
}

fn decode_base(r: &mut Reader<impl std::io::Read>) -> Option<Option<Base>> {
    Some(match r.u8()? {
        0 => None,
        _ => {
            let store = r.str()?;
            let snapshot = match r.u8()? {
                0 => None,
                _ => Some(ObjectKey::new(ObjectKind::Manifest, ObjectHash(r.h32()?))),
            };
            let n = r.count()?;
            let mut roots = Vec::with_capacity(n);
            for _ in 0..n {
                roots.push(r.str()?);
            }
            let n = r.count()?;
            let mut packs = Vec::with_capacity(n);
            for _ in 0..n {
                packs.push(ObjectKey::new(ObjectKind::Pack, ObjectHash(r.h32()?)));
            }
            let n = r.count()?;
            let mut pieces = Vec::with_capacity(n);
            for _ in 0..n {
                let p = PieceRef {
                    id: BlobId(r.h32()?),
                    frame: u32::try_from(r.u64()?).ok()?,
                    offset: r.u64()?,
                    length: r.u64()?,
                    entries: u32::try_from(r.u64()?).ok()?,
                };
                pieces.push((p, r.piece_frame()?));
            }
            let n = r.count()?;
            if n != 0 && n != pieces.len() {
                return None;
            }
            let mut digests = Vec::with_capacity(n);
            for _ in 0..n {
                digests.push(r.array::<16>()?);
            }
            Some(Base {
                store,
                snapshot,
                roots,
                packs,
                pieces,
                digests,
            })
        }
    })
}

fn decode_record(r: &mut Reader<impl std::io::Read>) -> Option<(Box<str>, Record)> {
    let path = r.str()?;
    let size = r.u64()?;
    let mtime_ns = r.u64()? as i64;
    let ctime_ns = r.u64()? as i64;
    let ino = r.u64()?;
    let trusted = r.u8()? == 1;
    let nb = r.count()?;
    let mut blobs = Vec::with_capacity(nb);
    for _ in 0..nb {
        let id = BlobId(r.h32()?);
        let frame = r.frame()?;
        // Past the format's limits only in a damaged index: unusable.
        blobs.push((id, Loc::new(frame, r.u64()?, r.u64()?)?));
    }
    Some((
        path.into_boxed_str(),
        Record {
            size,
            mtime_ns,
            ctime_ns,
            ino,
            trusted,
            blobs: blobs.into_boxed_slice(),
        },
    ))
}

/// The whole index, or `None` if any of it is damaged.
#[cfg(test)]
fn decode(inner: impl std::io::Read + std::io::Seek, len: u64) -> Option<StatIndex> {
    let mut stream = IndexStream::new(inner, len)?;
    let files = stream.by_ref().map(|(p, r, _)| (p, r)).collect();
    if stream.damaged() {
        return None;
    }
    Some(StatIndex {
        base: stream.base,
        files,
    })
}

/// Whether a file with `stat`, whose content was read at `read_at_ns`, can
/// be trusted to be unchanged while its stat is: its last change is safely
/// older than the read (outside the racy window).
pub fn trusted(stat: &Stat, read_at_ns: i64) -> bool {
    stat.ctime_ns <= read_at_ns - RACY_NS
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let frame = Frame::new(1, 7, 9, 20, Codec::Zstd);
        let delta = PieceFrame {
            frame: Frame::new(1, 30, 4, 50, Codec::Zstd),
            dict: Some(frame),
        };
        let mut ix = StatIndex {
            base: Some(Base {
                store: "local store /x".into(),
                snapshot: Some(ObjectKey::for_bytes(ObjectKind::Manifest, b"m")),
                roots: vec!["a".into()],
                packs: vec![ObjectKey::for_bytes(ObjectKind::Pack, b"p")],
                pieces: vec![(
                    PieceRef {
                        id: BlobId::of(b"piece"),
                        frame: 0,
                        offset: 1,
                        length: 2,
                        entries: 3,
                    },
                    delta,
                )],
                digests: vec![[7; 16]],
            }),
            files: vec![],
        };
        let st = Stat {
            size: 5,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: 3,
            mode: 0o644,
        };
        let blobs = vec![(BlobId::of(b"hello"), Loc::of(frame, 0, 5))];
        ix.record_written("a/z".into(), &st, blobs.clone().into());
        ix.record_written("a/b".into(), &st, blobs.clone().into());
        ix.finish();
        let enc = ix.encode();
        let back = decode(Cursor::new(&enc[..]), enc.len() as u64).unwrap();
        assert_eq!(back.base, ix.base);
        assert_eq!(*back.lookup("a/b", &st).unwrap().blobs, *blobs);
        assert!(back.lookup("a/b", &Stat { ino: 4, ..st }).is_none());
        let enc = ix.encode();
        assert!(decode(Cursor::new(&enc[..enc.len() - 3]), enc.len() as u64 - 3).is_none());
        // A file cut short while it is read.
        assert!(decode(Cursor::new(&enc[..enc.len() - 3]), enc.len() as u64).is_none());
        assert!(decode(Cursor::new(&b"garbage!"[..]), 8).is_none());
        // The last blob's length (the last 8 bytes of the records, just
        // before the base) past the limits.
        let mut far = ix.encode();
        let n = far.len();
        let base_at = u64::from_le_bytes(far[16..24].try_into().unwrap()) as usize;
        far[base_at - 8..base_at].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(Cursor::new(&far[..]), n as u64).is_none());
        // A base offset past the end, or one that leaves bytes after the base.
        let mut bad = ix.encode();
        bad[16..24].copy_from_slice(&(n as u64 + 1).to_le_bytes());
        assert!(decode(Cursor::new(&bad[..]), n as u64).is_none());
        let mut bad = ix.encode();
        bad[16..24].copy_from_slice(&(base_at as u64 - 1).to_le_bytes());
        assert!(decode(Cursor::new(&bad[..]), n as u64).is_none());
    }

    fn index_of(paths: &[String]) -> StatIndex {
        let frame = Frame::new(0, 0, 9, 20, Codec::Zstd);
        let mut ix = StatIndex::default();
        for (i, p) in paths.iter().enumerate() {
            let st = Stat {
                size: i as u64,
                ..Stat::default()
            };
            let blobs = vec![(BlobId::of(p.as_bytes()), Loc::of(frame, 0, 5))];
            ix.record_written(p.clone(), &st, blobs.into());
        }
        ix
    }

    fn stream(enc: &[u8]) -> IndexStream<Cursor<&[u8]>> {
        IndexStream::new(Cursor::new(enc), enc.len() as u64).unwrap()
    }

    /// Records come one at a time, in order; one out of order ends the
    /// stream there, marked damaged, and a file whose length is not the
    /// one it was written with is refused before any record is read.
    #[test]
    fn a_stream_stops_at_damage_and_a_cut_file_is_refused() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).into();
        let enc = index_of(&names).encode();
        let mut st = stream(&enc);
        let got: Vec<_> = st
            .by_ref()
            .map(|(p, r, _)| (p.to_string(), r.size))
            .collect();
        assert_eq!(got, [("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]);
        assert!(!st.damaged());

        let mut ix = index_of(&names);
        ix.files.swap(1, 2);
        let enc = ix.encode();
        let mut st = stream(&enc);
        let got: Vec<_> = st.by_ref().map(|(p, _, _)| p.to_string()).collect();
        assert_eq!(got, ["a", "c"]);
        assert!(st.damaged());
        assert!(decode(Cursor::new(&enc[..]), enc.len() as u64).is_none());

        let enc = index_of(&names).encode();
        let cut = &enc[..enc.len() - 1];
        assert!(IndexStream::new(Cursor::new(cut), cut.len() as u64).is_none());
        let mut longer = enc.clone();
        longer.push(0);
        assert!(IndexStream::new(Cursor::new(&longer[..]), longer.len() as u64).is_none());
    }

    /// The records of an old index up to a record's end, copied, then
    /// the rest pushed, make the index encoded whole.
    #[test]
    fn copied_records_are_the_ones_pushed() {
        let names: Vec<String> = (0..50).map(|i| format!("p/{i:03}")).collect();
        let ix = index_of(&names);
        let t = tempfile::tempdir().unwrap();
        let old = t.path().join("old");
        std::fs::write(&old, ix.encode()).unwrap();
        let f = std::fs::File::open(&old).unwrap();
        let len = f.metadata().unwrap().len();
        let mut st = IndexStream::new(std::io::BufReader::new(f), len).unwrap();
        let end = st.by_ref().take(20).last().unwrap().2;
        let mut w = IndexWriter::to(Cursor::new(Vec::new())).unwrap();
        w.copy_records(&old, end).unwrap();
        for (p, r) in &ix.files[20..] {
            w.push(p, r);
        }
        let got = w.finish_into(ix.base.as_ref()).unwrap().into_inner();
        assert_eq!(got, ix.encode());
        // Nothing copied: only the header.
        let mut w = IndexWriter::to(Cursor::new(Vec::new())).unwrap();
        w.copy_records(&old, RECORDS_AT).unwrap();
        let empty = w.finish_into(None).unwrap().into_inner();
        assert_eq!(empty, StatIndex::default().encode());
    }

    /// Read ahead on another thread, every record arrives in order, more
    /// than fit ahead at once; a walk that stops early still finishes; and
    /// without a thread the same records come inline.
    #[test]
    fn reading_ahead_gives_every_record_and_can_stop_early() {
        let n = BATCH * BATCHES_AHEAD + BATCH + 17;
        let names: Vec<String> = (0..n).map(|i| format!("p/{i:08}")).collect();
        let ix = index_of(&names);
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("ix");
        std::fs::write(&file, ix.encode()).unwrap();
        let open = || {
            let f = std::fs::File::open(&file).unwrap();
            let len = f.metadata().unwrap().len();
            IndexStream::new(std::io::BufReader::new(f), len).unwrap()
        };
        let mut ahead = open().read_ahead();
        let got: Vec<Box<str>> = ahead.by_ref().map(|(p, _, _)| p).collect();
        assert_eq!(got.len(), n);
        assert!(got.iter().zip(&names).all(|(a, b)| **a == **b));
        assert!(!ahead.finish());

        let mut ahead = open().read_ahead();
        assert_eq!(ahead.by_ref().take(10).count(), 10);
        assert!(!ahead.finish());

        // Where no thread could be started, the walk decodes as it goes.
        let mut inline = ReadAhead {
            source: Source::Inline(Box::new(open())),
            batch: Vec::new().into_iter(),
        };
        assert_eq!(inline.by_ref().count(), n);
        assert!(!inline.finish());
    }
}
