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
//! sorted by path, so that loading the index of 100,000 files costs a few
//! milliseconds: a no-change save is dominated by it.

use std::path::{Path, PathBuf};

use stateful_ci_protocol::{
    BlobId, Codec, Frame, Manifest, ObjectHash, ObjectKey, ObjectKind, PieceFrame, PieceRef,
};

use crate::objects::{Blobs, Loc, PieceFp};
use crate::scan::Stat;

/// An entry whose ctime is this close to the time it was recorded may have
/// been modified within the same timestamp tick; it is not trusted.
const RACY_NS: i64 = 2_000_000_000;
const MAGIC: &[u8; 8] = b"SCISTAT4";

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

#[derive(Debug, Default)]
pub struct StatIndex {
    pub base: Option<Base>,
    /// Sorted by path.
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

    /// Load the index, or an empty one if it is missing or unreadable.
    pub fn load(root: &Path) -> StatIndex {
        Self::location(root)
            .and_then(|p| std::fs::File::open(p).ok())
            .and_then(|f| {
                let len = f.metadata().ok()?.len();
                decode(std::io::BufReader::with_capacity(1 << 16, f), len)
            })
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
        let tmp = dir.join(format!(".tmp-{}", std::process::id()));
        // encode_to writes in chunks of about 64 KiB: no second buffer.
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| self.encode_to(&mut f))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// The record of `path` if its stat matches it.
    pub fn lookup(&self, path: &str, stat: &Stat) -> Option<&Record> {
        let i = self.files.binary_search_by(|(p, _)| (**p).cmp(path)).ok()?;
        let r = &self.files[i].1;
        r.matches(stat).then_some(r)
    }

    /// The records, sorted by path, given up (so a caller walking a sorted
    /// scan beside them can move blob lists out instead of copying them).
    pub fn into_files(self) -> Vec<(Box<str>, Record)> {
        self.files
    }

    /// Record a file whose content was read at `read_at_ns`. Racy entries
    /// (changed too close to the read) are recorded as untrusted.
    pub fn record_read(&mut self, path: String, stat: &Stat, blobs: Blobs, read_at_ns: i64) {
        let trusted = stat.ctime_ns <= read_at_ns - RACY_NS;
        self.record(path, stat, blobs, trusted);
    }

    /// Make room for `n` more records (grown by doubling, the list of a
    /// 500,000-file workspace would hold room for a million).
    pub fn reserve(&mut self, n: usize) {
        self.files.reserve_exact(n);
    }

    /// Record a file whose content is known without a race (written by this
    /// process, or matched against an earlier trusted record).
    pub fn record_written(&mut self, path: String, stat: &Stat, blobs: Blobs) {
        self.record(path, stat, blobs, true);
    }

    fn record(&mut self, path: String, stat: &Stat, blobs: Blobs, trusted: bool) {
        self.files.push((
            path.into_boxed_str(),
            Record {
                size: stat.size,
                mtime_ns: stat.mtime_ns,
                ctime_ns: stat.ctime_ns,
                ino: stat.ino,
                trusted,
                blobs,
            },
        ));
    }

    /// Sort after recording (records may arrive in any order).
    pub fn finish(&mut self) {
        self.files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.files.dedup_by(|a, b| a.0 == b.0);
    }

    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode_to(&mut w).expect("writing to a Vec");
        w
    }

    /// Write the index to `out` a record at a time (the index of a
    /// 500,000-file workspace is about 100 MB: it is never built in memory).
    fn encode_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut w = Vec::with_capacity(64 * 1024);
        w.extend_from_slice(MAGIC);
        match &self.base {
            None => w.push(0),
            Some(b) => {
                w.push(1);
                put_str(&mut w, &b.store);
                match &b.snapshot {
                    None => w.push(0),
                    Some(k) => {
                        w.push(1);
                        w.extend_from_slice(&k.hash.0);
                    }
                }
                put_u64(&mut w, b.roots.len() as u64);
                for r in &b.roots {
                    put_str(&mut w, r);
                }
                put_u64(&mut w, b.packs.len() as u64);
                for p in &b.packs {
                    w.extend_from_slice(&p.hash.0);
                }
                put_u64(&mut w, b.pieces.len() as u64);
                for (p, f) in &b.pieces {
                    w.extend_from_slice(&p.id.0);
                    put_u64(&mut w, p.frame as u64);
                    put_u64(&mut w, p.offset);
                    put_u64(&mut w, p.length);
                    put_u64(&mut w, p.entries as u64);
                    put_piece_frame(&mut w, f);
                    if w.len() >= 60 * 1024 {
                        out.write_all(&w)?;
                        w.clear();
                    }
                }
                put_u64(&mut w, b.digests.len() as u64);
                for d in &b.digests {
                    w.extend_from_slice(d);
                    if w.len() >= 60 * 1024 {
                        out.write_all(&w)?;
                        w.clear();
                    }
                }
            }
        }
        put_u64(&mut w, self.files.len() as u64);
        for (path, r) in &self.files {
            put_str(&mut w, path);
            put_u64(&mut w, r.size);
            put_u64(&mut w, r.mtime_ns as u64);
            put_u64(&mut w, r.ctime_ns as u64);
            put_u64(&mut w, r.ino);
            w.push(r.trusted as u8);
            put_u64(&mut w, r.blobs.len() as u64);
            for (id, loc) in &r.blobs {
                w.extend_from_slice(&id.0);
                put_frame(&mut w, &loc.frame());
                put_u64(&mut w, loc.offset());
                put_u64(&mut w, loc.length());
            }
            if w.len() >= 60 * 1024 {
                out.write_all(&w)?;
                w.clear();
            }
        }
        out.write_all(&w)
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

fn decode(inner: impl std::io::Read, len: u64) -> Option<StatIndex> {
    let mut r = Reader { inner, left: len };
    if r.array::<8>()? != *MAGIC {
        return None;
    }
    let base = match r.u8()? {
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
    };
    let n = r.count()?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
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
        files.push((
            path.into_boxed_str(),
            Record {
                size,
                mtime_ns,
                ctime_ns,
                ino,
                trusted,
                blobs: blobs.into_boxed_slice(),
            },
        ));
    }
    if !files.is_sorted_by(|a: &(Box<str>, Record), b| a.0 < b.0) {
        return None;
    }
    Some(StatIndex { base, files })
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
        let back = decode(&enc[..], enc.len() as u64).unwrap();
        assert_eq!(back.base, ix.base);
        assert_eq!(*back.lookup("a/b", &st).unwrap().blobs, *blobs);
        assert!(back.lookup("a/b", &Stat { ino: 4, ..st }).is_none());
        let enc = ix.encode();
        assert!(decode(&enc[..enc.len() - 3], enc.len() as u64 - 3).is_none());
        // A file cut short while it is read.
        assert!(decode(&enc[..enc.len() - 3], enc.len() as u64).is_none());
        assert!(decode(&b"garbage!"[..], 8).is_none());
        // The last blob's length (the index's last 8 bytes) past the limits.
        let mut far = ix.encode();
        let n = far.len();
        far[n - 8..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&far[..], n as u64).is_none());
    }
}
