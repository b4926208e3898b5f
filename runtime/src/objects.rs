//! Encoding and verified decoding of stored objects: root manifests, the
//! pieces of the entry list, and the frames inside packs. Everything read
//! from a store passes through here, and nothing leaves here unverified.

use foldhash::{HashMap, HashMapExt};
use std::cell::RefCell;
use std::io::Read;

use stateful_ci_protocol::limits::{
    MAX_FRAME_RAW, MAX_MANIFEST_RAW, MAX_MANIFEST_STORED, MAX_OBJECT_SIZE,
};
use stateful_ci_protocol::{
    BlobId, Codec, Entry, EntryChecker, EntryKeys, EntryKind, FORMAT_VERSION, Frame, Manifest,
    ObjectKey, ObjectKind, Piece, PieceFrame, PieceRef,
};

use crate::error::{Error, Result};
use crate::store::Store;

/// Where a blob's plaintext is: `length` bytes at `offset` in a decoded
/// frame (whose `pack` indexes the snapshot's pack list).
///
/// A save and a restore hold one per blob until they are done, so it keeps
/// the frame in 32-bit fields: 28 bytes where the protocol's [`Frame`] and
/// two `u64`s took 56 (14 MB at 500,000 blobs, in a save's location table
/// and again in its files' blob lists). Every value fits: a frame lies
/// within an object of at most [`MAX_OBJECT_SIZE`] bytes and decodes to at
/// most [`MAX_FRAME_RAW`], and a blob is inside its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Loc {
    pack: u32,
    frame_offset: u32,
    frame_length: u32,
    raw_len: u32,
    codec: Codec,
    offset: u32,
    length: u32,
}

const _: () = assert!(MAX_OBJECT_SIZE <= u32::MAX as u64);
const _: () = assert!(MAX_FRAME_RAW <= u32::MAX as u64);

impl Loc {
    /// `length` bytes at `offset` of `frame`'s plaintext. `None` when a
    /// value is past the limits (which [`Frame::validate`] and
    /// [`Piece::from_json`] refuse before any location is built).
    pub fn new(frame: Frame, offset: u64, length: u64) -> Option<Loc> {
        let small = |v: u64, max: u64| (v <= max).then_some(v as u32);
        Some(Loc {
            pack: frame.pack,
            frame_offset: small(frame.offset, MAX_OBJECT_SIZE)?,
            frame_length: small(frame.length, MAX_OBJECT_SIZE)?,
            raw_len: small(frame.raw_len, MAX_FRAME_RAW)?,
            codec: frame.codec,
            offset: small(offset, MAX_FRAME_RAW)?,
            length: small(length, MAX_FRAME_RAW)?,
        })
    }

    /// [`Loc::new`] for a location a writer made itself or one that was
    /// validated: a value past the limits is a bug here, not bad input.
    pub fn of(frame: Frame, offset: u64, length: u64) -> Loc {
        Loc::new(frame, offset, length).expect("frame and blob within the format's limits")
    }

    pub fn frame(&self) -> Frame {
        Frame::new(
            self.pack,
            self.frame_offset.into(),
            self.frame_length.into(),
            self.raw_len.into(),
            self.codec,
        )
    }

    /// Where the blob starts in the decoded frame.
    pub fn offset(&self) -> u64 {
        self.offset.into()
    }

    /// The blob's length.
    pub fn length(&self) -> u64 {
        self.length.into()
    }

    /// The index of the frame's pack in the snapshot's pack list.
    pub fn pack(&self) -> u32 {
        self.pack
    }
}

/// An entry's blobs, in order, with where each is. Boxed, not growable: a
/// save or a restore holds one list per file until it is done.
pub type Blobs = Box<[(BlobId, Loc)]>;

/// An entry with its blobs resolved to snapshot-wide locations.
///
/// A restore holds one per entry of the snapshot until it is done, so the
/// strings and the blob list are boxed, not growable: 72 bytes a node
/// where `String`s and a `Vec` took 96 (13 MB at 500,000 files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: Box<str>,
    pub kind: EntryKind,
    pub mode: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub target: Option<Box<str>>,
    pub blobs: Blobs,
}

impl Node {
    /// The entry's blob ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &BlobId> {
        self.blobs.iter().map(|(id, _)| id)
    }

    fn from_entry(e: Entry, frames: &[Frame]) -> Node {
        Node {
            blobs: e
                .blobs
                .iter()
                .map(|b| {
                    (
                        b.id,
                        // Piece::from_json checked the frame and the blob's
                        // place in it.
                        Loc::of(frames[b.frame as usize], b.offset, b.length),
                    )
                })
                .collect(),
            path: e.path.into_boxed_str(),
            kind: e.kind,
            mode: e.mode,
            mtime_ns: e.mtime_ns,
            size: e.size,
            target: e.target.map(String::into_boxed_str),
        }
    }
}

/// Build one piece from nodes: a piece-local frame table, in order of
/// first use, so the bytes depend only on these nodes.
pub fn make_piece(nodes: &[Node]) -> Piece {
    let mut frames: Vec<Frame> = Vec::new();
    let mut index: HashMap<Frame, u32> = HashMap::new();
    let entries = nodes
        .iter()
        .map(|n| Entry {
            path: n.path.to_string(),
            kind: n.kind,
            mode: n.mode,
            mtime_ns: n.mtime_ns,
            size: n.size,
            target: n.target.as_deref().map(str::to_string),
            blobs: n
                .blobs
                .iter()
                .map(|(id, loc)| {
                    let frame = loc.frame();
                    let f = *index.entry(frame).or_insert_with(|| {
                        frames.push(frame);
                        (frames.len() - 1) as u32
                    });
                    stateful_ci_protocol::BlobRef {
                        id: *id,
                        frame: f,
                        offset: loc.offset(),
                        length: loc.length(),
                    }
                })
                .collect(),
        })
        .collect();
    Piece { frames, entries }
}

/// A local digest of one piece's entries (see [`PieceDigest`]).
pub type PieceFp = [u8; 16];

/// Digests everything [`make_piece`] serialises for a run of entries, in a
/// compact unambiguous binary form: equal digests mean equal piece bytes.
/// A save compares a piece's digest with the ones recorded in the local
/// stat index and reuses the stored piece without building or hashing its
/// JSON, so the cost of an unchanged piece is a few hundred bytes of
/// hashing. The digest never leaves this machine and is never trusted from
/// a store: a wrong one (a stale or hand-edited index) could only name a
/// piece of the same snapshot lineage, which the store still verifies.
#[derive(Default)]
pub struct PieceDigest {
    buf: Vec<u8>,
}

impl PieceDigest {
    /// Add one entry, with the fields a [`Node`] carries.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        path: &str,
        kind: EntryKind,
        mode: u32,
        mtime_ns: i64,
        size: u64,
        target: Option<&str>,
        blobs: &[(BlobId, Loc)],
    ) {
        let b = &mut self.buf;
        b.extend_from_slice(&(path.len() as u64).to_le_bytes());
        b.extend_from_slice(path.as_bytes());
        b.push(match kind {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
        });
        b.extend_from_slice(&mode.to_le_bytes());
        b.extend_from_slice(&mtime_ns.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        match target {
            None => b.push(0),
            Some(t) => {
                b.push(1);
                b.extend_from_slice(&(t.len() as u64).to_le_bytes());
                b.extend_from_slice(t.as_bytes());
            }
        }
        b.extend_from_slice(&(blobs.len() as u64).to_le_bytes());
        for (id, loc) in blobs {
            b.extend_from_slice(&id.0);
            let f = &loc.frame();
            b.extend_from_slice(&f.pack.to_le_bytes());
            b.extend_from_slice(&f.offset.to_le_bytes());
            b.extend_from_slice(&f.length.to_le_bytes());
            b.extend_from_slice(&f.raw_len.to_le_bytes());
            b.push(matches!(f.codec, Codec::Zstd) as u8);
            b.extend_from_slice(&loc.offset().to_le_bytes());
            b.extend_from_slice(&loc.length().to_le_bytes());
        }
    }

    pub fn add_node(&mut self, n: &Node) {
        self.add(
            &n.path,
            n.kind,
            n.mode,
            n.mtime_ns,
            n.size,
            n.target.as_deref(),
            &n.blobs,
        );
    }

    /// The digest of the entries added since the last call; starts anew.
    pub fn finish(&mut self) -> PieceFp {
        let h = blake3::hash(&self.buf);
        self.buf.clear();
        h.as_bytes()[..16].try_into().expect("16 of 32 bytes")
    }
}

/// Compress a frame's plaintext, or keep it raw when compression does not
/// pay. Reuses one zstd context per thread.
pub fn encode_frame(data: &[u8], level: i32) -> (Codec, Vec<u8>) {
    let mut out = Vec::new();
    match encode_frame_into(data, level, &mut out) {
        Codec::Zstd => (Codec::Zstd, out),
        Codec::Raw => (Codec::Raw, data.to_vec()),
    }
}

/// The zstd window of a solid frame: 8 MiB, more than a frame a writer
/// fills (`FRAME_TARGET` plus one blob).
const FRAME_WINDOW_LOG: u32 = 23;
const _: () = assert!(
    (1u64 << FRAME_WINDOW_LOG)
        >= stateful_ci_protocol::limits::FRAME_TARGET + stateful_ci_protocol::limits::MAX_BLOB_RAW
);

/// [`encode_frame`] into `out` (cleared first), for a caller that encodes
/// many frames and reuses one buffer. Returns the codec: for
/// [`Codec::Raw`] the frame is `data` itself and `out` is to be ignored.
pub fn encode_frame_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> Codec {
    thread_local! {
        static CTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    }
    out.clear();
    if data.len() < 64 {
        return Codec::Raw;
    }
    // Exactly: `out` is reused, and doubling left it twice a frame's size.
    out.reserve_exact(zstd::zstd_safe::compress_bound(data.len()));
    let compressed = CTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            let mut cctx = zstd::bulk::Compressor::new(level).expect("zstd level is valid");
            // A window over the whole frame: levels 1 to 4 look back only
            // 2 MiB (their default window), so the second half of a 4 MiB
            // frame could not refer to its first half. zstd still shrinks
            // the window to a smaller input's size; decoders accept up to
            // 2^27 by default.
            cctx.set_parameter(zstd::zstd_safe::CParameter::WindowLog(FRAME_WINDOW_LOG))
                .expect("zstd window log is valid");
            *c = Some((level, cctx));
        }
        c.as_mut().unwrap().1.compress_to_buffer(data, out).is_ok()
    });
    if compressed && out.len() + out.len() / 32 < data.len() {
        Codec::Zstd
    } else {
        Codec::Raw
    }
}

/// Whether a chunk looks incompressible (archives, images, compiled
/// artefacts): a sample at its start, middle and end does not shrink.
/// Such chunks go to raw frames and cost no compression time.
pub fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 8 * 1024;
    if data.len() < 4 * SAMPLE {
        return false;
    }
    thread_local! {
        static CTX: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    }
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        let c = c.get_or_insert_with(|| zstd::bulk::Compressor::new(1).expect("zstd level"));
        [0, data.len() / 2 - SAMPLE / 2, data.len() - SAMPLE]
            .iter()
            .all(|&at| {
                c.compress(&data[at..at + SAMPLE])
                    .is_ok_and(|z| z.len() > SAMPLE * 97 / 100)
            })
    })
}

/// The zstd window that lets a delta frame's matches reach back over its
/// whole dictionary: the dictionary and the data fit in it.
fn delta_window_log(total: usize) -> u32 {
    (usize::BITS - total.max(1 << 10).saturating_sub(1).leading_zeros()).clamp(10, 27)
}

/// Compress a frame's plaintext against `dict`, the plaintext of the frame
/// named by its [`PieceFrame::dict`] (a raw-content prefix: zstd matches into it
/// as if it came just before the data). Always zstd.
pub fn encode_delta_frame(data: &[u8], dict: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let fail = |e: usize| {
        Error::store(format!(
            "internal error: zstd cannot delta-code a frame: {}",
            zstd::zstd_safe::get_error_name(e)
        ))
    };
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(fail)?;
    cctx.set_parameter(CParameter::WindowLog(delta_window_log(
        dict.len() + data.len(),
    )))
    .map_err(fail)?;
    // Long-distance matching indexes the whole prefix for long matches
    // (what a rewritten piece mostly is); without it the level's small hash
    // tables forget most of a 4 MiB dictionary (measured: 10x larger).
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(fail)?;
    cctx.ref_prefix(dict).map_err(fail)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data).map_err(fail)?;
    Ok(out)
}

/// Decode a frame's stored bytes. The output is exactly `frame.raw_len`
/// bytes (decompression is bounded by it) or an error. A delta-coded frame
/// ([`PieceFrame::dict`]) needs its dictionary: use [`decode_frame_with`].
pub fn decode_frame(frame: &Frame, stored: &[u8]) -> Result<Vec<u8>> {
    decode_frame_with(frame, stored, None)
}

/// [`decode_frame`], given the decoded plaintext of the frame's dictionary
/// when it is delta-coded. A wrong dictionary yields wrong bytes, never
/// more than `raw_len` of them; the ids of the blobs in the frame catch them.
pub fn decode_frame_with(frame: &Frame, stored: &[u8], dict: Option<&[u8]>) -> Result<Vec<u8>> {
    if stored.len() as u64 != frame.length {
        return Err(Error::corrupt("a frame is truncated in its pack"));
    }
    let data = match (frame.codec, dict) {
        (Codec::Zstd, Some(plain)) => {
            let mut dctx = zstd::zstd_safe::DCtx::create();
            dctx.ref_prefix(plain)
                .and_then(|_| {
                    let mut out = Vec::with_capacity(frame.raw_len as usize);
                    dctx.decompress(&mut out, stored).map(|_| out)
                })
                .map_err(|e| {
                    Error::corrupt(format!(
                        "a delta-coded frame does not decompress: {}",
                        zstd::zstd_safe::get_error_name(e)
                    ))
                })?
        }
        (Codec::Raw, Some(_)) => {
            return Err(Error::corrupt("a raw frame cannot have a dictionary"));
        }
        (_, None) => {
            let mut out = Vec::new();
            decode_frame_into(frame, stored, &mut out)?;
            return Ok(out);
        }
    };
    if data.len() as u64 != frame.raw_len {
        return Err(Error::corrupt(
            "a frame decodes to another length than claimed",
        ));
    }
    Ok(data)
}

/// [`decode_frame`] into `out` (cleared first), for a caller that decodes
/// many frames: reusing one buffer spares the page faults of a fresh
/// multi-megabyte allocation per frame (7% of a restore's CPU at 120,000
/// files). Never writes more than `out`'s capacity or `raw_len`, whichever
/// is larger.
pub fn decode_frame_into(frame: &Frame, stored: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if stored.len() as u64 != frame.length {
        return Err(Error::corrupt("a frame is truncated in its pack"));
    }
    out.clear();
    match frame.codec {
        Codec::Raw => out.extend_from_slice(stored),
        Codec::Zstd => {
            thread_local! {
                static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
            }
            // Exactly: `out` is reused, and grown by doubling it held 8 MiB
            // for frames a little over 4 MiB.
            out.reserve_exact(frame.raw_len as usize);
            DCTX.with(|d| {
                let mut d = d.borrow_mut();
                let d =
                    d.get_or_insert_with(|| zstd::bulk::Decompressor::new().expect("zstd context"));
                d.decompress_to_buffer(stored, out)
            })
            .map_err(|e| Error::corrupt(format!("a frame does not decompress: {e}")))?;
        }
    }
    if out.len() as u64 != frame.raw_len {
        return Err(Error::corrupt(
            "a frame decodes to another length than claimed",
        ));
    }
    Ok(())
}

/// The plaintext of one blob of a decoded frame, checked against its id.
/// `offset` and `length` place it in the frame; out of range is an error.
pub fn blob_of<'a>(
    id: &BlobId,
    offset: u64,
    length: u64,
    frame_plain: &'a [u8],
) -> Result<&'a [u8]> {
    let data = offset
        .checked_add(length)
        .and_then(|end| frame_plain.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?))
        .ok_or_else(|| Error::corrupt(format!("blob {id} lies outside its frame")))?;
    if BlobId::of(data) != *id {
        return Err(Error::corrupt(format!(
            "blob {id} does not match its hash (damaged store)"
        )));
    }
    Ok(data)
}

/// Fetch one frame from its pack and decode it.
pub fn fetch_frame(store: &dyn Store, packs: &[ObjectKey], frame: &Frame) -> Result<Vec<u8>> {
    fetch_frame_with(store, packs, frame, None)
}

/// [`fetch_frame`] for a frame that may be delta-coded, given its
/// dictionary's plaintext.
pub fn fetch_frame_with(
    store: &dyn Store,
    packs: &[ObjectKey],
    frame: &Frame,
    dict: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let key = packs
        .get(frame.pack as usize)
        .ok_or_else(|| Error::corrupt("a frame names a pack the snapshot does not list"))?;
    let stored = store.get(key, Some(frame.offset..frame.offset + frame.length))?;
    decode_frame_with(frame, &stored, dict)
}

/// Serialise and compress a root manifest; returns its key and stored bytes.
pub fn encode_manifest(m: &Manifest) -> (ObjectKey, Vec<u8>) {
    let json = m.to_json();
    let bytes = zstd::bulk::compress(&json, 3).expect("zstd compresses in memory");
    (ObjectKey::for_bytes(ObjectKind::Manifest, &bytes), bytes)
}

fn inflate_manifest(key: &ObjectKey, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut json = Vec::new();
    let dec = zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| Error::corrupt(format!("manifest {key}: {e}")))?;
    dec.take(MAX_MANIFEST_RAW + 1)
        .read_to_end(&mut json)
        .map_err(|e| Error::corrupt(format!("manifest {key} does not decompress: {e}")))?;
    Ok(json)
}

fn version_error(key: &ObjectKey, v: u32) -> Error {
    Error::corrupt(format!(
        "snapshot {key} has format version {v}, and this build of stateful-ci reads format version {FORMAT_VERSION} only"
    ))
    .with_hint(if v < FORMAT_VERSION {
        "the store was written by an older stateful-ci: start a new store (another --store directory, or let the next save on the default branch write a new snapshot); FORMAT.md explains why v1 is not migrated"
    } else {
        "upgrade stateful-ci to read this store"
    })
}

/// Fetch, verify and parse a root manifest.
pub fn load_manifest(store: &dyn Store, key: &ObjectKey) -> Result<Manifest> {
    if key.kind != ObjectKind::Manifest {
        return Err(Error::corrupt(format!("{key} is not a manifest key")));
    }
    let bytes = store.get(key, None)?;
    if bytes.len() as u64 > MAX_MANIFEST_STORED {
        return Err(Error::corrupt(format!(
            "manifest {key} is larger than any manifest may be"
        )));
    }
    if !key.matches(&bytes) {
        // A format-1 store names objects by BLAKE3: say so rather than
        // calling it damaged.
        if let Ok(json) = inflate_manifest(key, &bytes) {
            if let Ok(v) = Manifest::peek_version(&json) {
                if v != FORMAT_VERSION {
                    return Err(version_error(key, v));
                }
            }
        }
        return Err(Error::corrupt(format!(
            "manifest {key} does not match its hash (damaged store)"
        )));
    }
    let json = inflate_manifest(key, &bytes)?;
    match Manifest::from_json(&json) {
        Ok(m) => Ok(m),
        Err(stateful_ci_protocol::ManifestError::Version(v)) => Err(version_error(key, v)),
        Err(e) => Err(Error::corrupt(format!("manifest {key}: {e}"))),
    }
}

/// A batch of pieces spans at most this many frames (its fetches, at most
/// the store's parallelism, run at once).
const MAX_BATCH_FRAMES: usize = 32;
/// A batch's frames decode to at most this many bytes (or one frame, if it
/// is larger): its pieces are held parsed, at about three times their JSON
/// size, while the batch before is checked. Batches of the Worker store's 8
/// fetches held 64 MiB of parsed entries at the peak of a 500,000-file
/// restore; listing is bound by parsing, not by fetching, so smaller
/// batches cost no time.
const BATCH_RAW: u64 = 8 * 1024 * 1024;
/// Decoded piece frames kept between batches, in plaintext bytes (a frame
/// is usually 4 MiB). A batch's own frames are kept whatever this says.
const KEEP_BYTES: u64 = 16 * 1024 * 1024;

/// Stream a snapshot's entries, in order, each fully verified: the pieces'
/// frames are fetched and decoded, every piece is checked against its
/// BLAKE3 id, parsed and validated, and every entry passes an
/// [`EntryChecker`]. `f` receives each entry and the piece it came from.
///
/// Pieces are read in batches of a few frames: fetching, decoding, hashing
/// and parsing run in parallel within a batch (they are most of the cost),
/// the order-dependent checks and `f` run in order, beside the next
/// batch's reading. Memory is bounded by two batches and [`KEEP_BYTES`],
/// not by the snapshot. A delta-coded frame
/// is decoded with its dictionary, fetched like any frame. Returns what it
/// read from the store.
pub fn for_each_node(
    store: &dyn Store,
    m: &Manifest,
    mut f: impl FnMut(Node, usize) -> Result<()> + Send,
) -> Result<Fetched> {
    let mut reader = PieceReader {
        store,
        m,
        kept: HashMap::new(),
        fetch_window: store.parallelism().clamp(2, 8),
        batch_no: 0,
        fetched: Fetched::default(),
    };
    let mut checker = EntryChecker::new(&m.roots);
    // The order-dependent part of one batch runs while the next batch is
    // fetched and parsed. Parsing is most of the work, so the gain is the
    // checks' share: at 120,000 entries, 0.49 s to 0.46 s before a restore
    // writes its first file. An error of the earlier batch is the one
    // reported.
    let mut next = 0;
    let mut pending = if m.pieces.is_empty() {
        None
    } else {
        Some(reader.batch(0)?)
    };
    while let Some((end, parsed)) = pending.take() {
        let (checked, ahead) = rayon::join(
            || -> Result<()> {
                for (k, (piece, keys)) in parsed.into_iter().enumerate() {
                    let frames = piece.frames;
                    for (e, key) in piece.entries.into_iter().zip(keys) {
                        checker
                            .check_keyed(&e, &key)
                            .map_err(|err| Error::corrupt(format!("snapshot: {err}")))?;
                        f(Node::from_entry(e, &frames), next + k)?;
                    }
                }
                Ok(())
            },
            || (end < m.pieces.len()).then(|| reader.batch(end)),
        );
        checked?;
        pending = ahead.transpose()?;
        next = end;
    }
    checker
        .finish(m)
        .map_err(|err| Error::corrupt(format!("snapshot: {err}")))?;
    Ok(reader.fetched)
}

/// Fetches, decodes and parses a snapshot's pieces a batch at a time, for
/// [`for_each_node`].
struct PieceReader<'a> {
    store: &'a dyn Store,
    m: &'a Manifest,
    /// Decoded frames (and dictionaries, keyed the same way: a dictionary
    /// is a frame without one), with the batch that last used each. Pieces
    /// of one stretch of paths may lie in several frames (the cold save's,
    /// and one per later save that rewrote some), so frames stay until the
    /// budget needs the room, least recently used first.
    kept: HashMap<Frame, (std::sync::Arc<Vec<u8>>, usize)>,
    fetch_window: usize,
    batch_no: usize,
    fetched: Fetched,
}

/// A batch's pieces, parsed, each with its entries' keys for the
/// [`EntryChecker`].
type ParsedBatch = Vec<(Piece, Vec<EntryKeys>)>;

impl PieceReader<'_> {
    /// The batch of pieces from `next` on: consecutive pieces whose frames
    /// (and dictionaries) need at most `fetch_window` fetches. Returns
    /// where it ends and its pieces, verified against their ids and parsed.
    fn batch(&mut self, next: usize) -> Result<(usize, ParsedBatch)> {
        use rayon::prelude::*;
        use std::sync::Arc;
        let (store, m) = (self.store, self.m);
        self.batch_no += 1;
        let batch_no = self.batch_no;
        let kept = &mut self.kept;
        let mut frames: Vec<PieceFrame> = Vec::new();
        let mut fetches = 0;
        let mut raw = 0;
        let mut end = next;
        while end < m.pieces.len() {
            let pf = m.frames[m.pieces[end].frame as usize];
            if !frames.contains(&pf) {
                let needs = usize::from(!kept.contains_key(&pf.frame))
                    + pf.dict.map_or(0, |d| usize::from(!kept.contains_key(&d)));
                if !frames.is_empty()
                    && (fetches + needs > self.fetch_window
                        || frames.len() == MAX_BATCH_FRAMES
                        || raw + pf.frame.raw_len > BATCH_RAW)
                {
                    break;
                }
                fetches += needs;
                raw += pf.frame.raw_len;
                frames.push(pf);
            }
            end += 1;
        }
        // Frames without a dictionary and the dictionaries the others
        // need, in parallel; then the delta-coded frames.
        let mut plain: Vec<Frame> = Vec::new();
        for pf in &frames {
            let want = pf.dict.unwrap_or(pf.frame);
            if !kept.contains_key(&want) && !plain.contains(&want) {
                plain.push(want);
            }
        }
        let fetch = |fr: &Frame, dict: Option<&[u8]>| -> Result<(Frame, Arc<Vec<u8>>)> {
            fetch_frame_with(store, &m.packs, fr, dict).map(|b| (*fr, Arc::new(b)))
        };
        let got: Vec<(Frame, Arc<Vec<u8>>)> = plain
            .par_iter()
            .map(|fr| fetch(fr, None))
            .collect::<Result<_>>()?;
        for (fr, b) in got {
            self.fetched.requests += 1;
            self.fetched.bytes += fr.length;
            kept.insert(fr, (b, batch_no));
        }
        let delta: Vec<(Frame, Frame)> = frames
            .iter()
            .filter_map(|pf| pf.dict.map(|d| (pf.frame, d)))
            .filter(|(fr, _)| !kept.contains_key(fr))
            .collect();
        let got: Vec<(Frame, Arc<Vec<u8>>)> = delta
            .par_iter()
            .map(|(fr, d)| fetch(fr, Some(kept[d].0.as_slice())))
            .collect::<Result<_>>()?;
        for (fr, b) in got {
            self.fetched.requests += 1;
            self.fetched.bytes += fr.length;
            kept.insert(fr, (b, batch_no));
        }
        for pf in &frames {
            for k in [Some(pf.frame), pf.dict].into_iter().flatten() {
                if let Some(e) = kept.get_mut(&k) {
                    e.1 = batch_no;
                }
            }
        }
        let parsed: ParsedBatch = m.pieces[next..end]
            .par_iter()
            .map(|p| {
                let piece =
                    parse_piece(p, &kept[&m.frames[p.frame as usize].frame].0, m.packs.len())?;
                if piece.entries.len() != p.entries as usize {
                    return Err(Error::corrupt(format!(
                        "piece {} holds another number of entries than its reference says",
                        p.id
                    )));
                }
                let keys = piece.entries.iter().map(EntryKeys::of).collect();
                Ok((piece, keys))
            })
            .collect::<Result<_>>()?;
        // Keep what fits, most recently used first.
        let mut held: u64 = kept.values().map(|(b, _)| b.len() as u64).sum();
        while held > KEEP_BYTES {
            let Some((&oldest, _)) = kept
                .iter()
                .filter(|(_, (_, used))| *used < batch_no)
                .min_by_key(|(_, (_, used))| *used)
            else {
                break;
            };
            held -= kept.remove(&oldest).map_or(0, |(b, _)| b.len() as u64);
        }
        Ok((end, parsed))
    }
}

/// Stored bytes read from a store, and in how many requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: u64,
    pub requests: u64,
}

fn parse_piece(p: &PieceRef, frame_plain: &[u8], packs: usize) -> Result<Piece> {
    let bytes = blob_of(&p.id, p.offset, p.length, frame_plain)?;
    Piece::from_json(bytes, packs).map_err(|e| Error::corrupt(format!("snapshot: {e}")))
}

/// Load a whole snapshot's entries (for callers that need them all).
pub fn load_nodes(store: &dyn Store, m: &Manifest) -> Result<Vec<Node>> {
    let mut out = Vec::with_capacity(m.entries.min(1 << 20) as usize);
    for_each_node(store, m, |n, _| {
        out.push(n);
        Ok(())
    })?;
    Ok(out)
}

/// One entry of a hand-made snapshot (see [`plant`]).
pub struct Planted {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub target: Option<String>,
    /// File content; each file is one blob in a frame of its own.
    pub data: Vec<u8>,
    /// Replace the frame's stored bytes (and codec) with these, to plant
    /// damage; the frame still claims `data.len()` plaintext bytes.
    pub stored: Option<(Codec, Vec<u8>)>,
}

/// Write a hand-made snapshot with exactly these entries into `store` and
/// point the head at it, bypassing every check a save makes. For tests of
/// what a reader does with hostile or damaged snapshots.
pub fn plant(store: &dyn Store, roots: &[String], entries: &[Planted]) -> Result<ObjectKey> {
    let mut pack = Vec::new();
    let mut nodes = Vec::new();
    for p in entries {
        let mut blobs = Vec::new();
        if p.kind == EntryKind::File && !p.data.is_empty() {
            let (codec, stored) = p
                .stored
                .clone()
                .unwrap_or_else(|| (Codec::Raw, p.data.clone()));
            let frame = Frame::new(
                0,
                pack.len() as u64,
                stored.len() as u64,
                p.data.len() as u64,
                codec,
            );
            pack.extend_from_slice(&stored);
            blobs.push((BlobId::of(&p.data), Loc::of(frame, 0, p.data.len() as u64)));
        }
        nodes.push(Node {
            path: p.path.as_str().into(),
            kind: p.kind,
            mode: p.mode,
            mtime_ns: 0,
            size: if p.kind == EntryKind::File {
                p.data.len() as u64
            } else {
                0
            },
            target: p.target.as_deref().map(Into::into),
            blobs: blobs.into(),
        });
    }
    let piece = make_piece(&nodes).to_json();
    let pframe = Frame::new(
        0,
        pack.len() as u64,
        piece.len() as u64,
        piece.len() as u64,
        Codec::Raw,
    );
    pack.extend_from_slice(&piece);
    let pkey = ObjectKey::for_bytes(ObjectKind::Pack, &pack);
    store.put(&pkey, &pack)?;
    let m = Manifest {
        version: FORMAT_VERSION,
        created_at: 0,
        parent: None,
        roots: roots.to_vec(),
        packs: vec![pkey],
        frames: vec![PieceFrame::plain(pframe)],
        pieces: vec![PieceRef {
            id: BlobId::of(&piece),
            frame: 0,
            offset: 0,
            length: piece.len() as u64,
            entries: nodes.len() as u32,
        }],
        entries: nodes.len() as u64,
        files: nodes.iter().filter(|n| n.kind == EntryKind::File).count() as u64,
        bytes: nodes.iter().map(|n| n.size).sum(),
    };
    let (mkey, mbytes) = encode_manifest(&m);
    store.put(&mkey, &mbytes)?;
    let expected = store.save_head()?.map_or(0, |h| h.generation);
    store.commit(&crate::store::Commit {
        expected,
        snapshot: mkey,
        packs: vec![pkey],
        idempotency_key: mkey.hash.to_hex(),
        total_bytes: m.bytes,
        entries: m.entries,
        files: m.files,
        stored_bytes: (pack.len() + mbytes.len()) as u64,
    })?;
    Ok(mkey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let frame = Frame::new(2, 10, 20, 30, Codec::Zstd);
        Node {
            path: "node_modules/a/index.js".into(),
            kind: EntryKind::File,
            mode: 0o644,
            mtime_ns: 1_600_000_000_123_456_789,
            size: 5,
            target: None,
            blobs: vec![(BlobId::of(b"hello"), Loc::of(frame, 3, 5))].into(),
        }
    }

    #[test]
    fn a_location_is_compact_and_refuses_values_past_the_limits() {
        assert_eq!(std::mem::size_of::<(BlobId, Loc)>(), 60);
        let f = Frame::new(3, MAX_OBJECT_SIZE - 10, 10, MAX_FRAME_RAW, Codec::Zstd);
        let loc = Loc::new(f, MAX_FRAME_RAW - 5, 5).unwrap();
        assert_eq!(
            (loc.frame(), loc.offset(), loc.length(), loc.pack()),
            (f, MAX_FRAME_RAW - 5, 5, 3)
        );
        let far = MAX_OBJECT_SIZE + 1;
        assert_eq!(Loc::new(Frame { offset: far, ..f }, 0, 1), None);
        assert_eq!(Loc::new(Frame { length: far, ..f }, 0, 1), None);
        assert_eq!(
            Loc::new(
                Frame {
                    raw_len: MAX_FRAME_RAW + 1,
                    ..f
                },
                0,
                1
            ),
            None
        );
        assert_eq!(Loc::new(f, u64::from(u32::MAX) + 1, 1), None);
        assert_eq!(Loc::new(f, 0, MAX_FRAME_RAW + 1), None);
    }

    /// Changes the first blob's location of `n`.
    fn edit_loc(n: &mut Node, edit: fn(&mut Frame, &mut u64, &mut u64)) {
        let loc = n.blobs[0].1;
        let (mut f, mut o, mut l) = (loc.frame(), loc.offset(), loc.length());
        edit(&mut f, &mut o, &mut l);
        n.blobs[0].1 = Loc::of(f, o, l);
    }

    fn digest(nodes: &[Node]) -> PieceFp {
        let mut d = PieceDigest::default();
        for n in nodes {
            d.add_node(n);
        }
        d.finish()
    }

    /// Every field make_piece serialises changes the digest, so a piece is
    /// only reused when its bytes would be the same.
    #[test]
    fn a_piece_digest_covers_every_serialised_field() {
        let base = vec![
            node(),
            Node {
                path: "node_modules/b".into(),
                ..node()
            },
        ];
        let d0 = digest(&base);
        assert_eq!(d0, digest(&base.clone()), "deterministic");
        let mut d = PieceDigest::default();
        d.add_node(&base[0]);
        d.finish();
        d.add_node(&base[0]);
        d.add_node(&base[1]);
        assert_eq!(d.finish(), d0, "finish starts anew");
        let edits: Vec<fn(&mut Node)> = vec![
            |n| n.path = format!("{}x", n.path).into(),
            |n| n.kind = EntryKind::Symlink,
            |n| n.mode = 0o755,
            |n| n.mtime_ns += 1,
            |n| n.size += 1,
            |n| n.target = Some("".into()),
            |n| n.blobs[0].0 = BlobId::of(b"other"),
            |n| edit_loc(n, |_, o, _| *o += 1),
            |n| edit_loc(n, |_, _, l| *l += 1),
            |n| edit_loc(n, |f, _, _| f.pack += 1),
            |n| edit_loc(n, |f, _, _| f.offset += 1),
            |n| edit_loc(n, |f, _, _| f.length += 1),
            |n| edit_loc(n, |f, _, _| f.raw_len += 1),
            |n| edit_loc(n, |f, _, _| f.codec = Codec::Raw),
            |n| n.blobs = [n.blobs[0], n.blobs[0]].into(),
            |n| n.blobs = Box::default(),
        ];
        for (k, edit) in edits.iter().enumerate() {
            let mut changed = base.clone();
            edit(&mut changed[1]);
            assert_ne!(
                make_piece(&changed).to_json(),
                make_piece(&base).to_json(),
                "edit {k} changes the piece"
            );
            assert_ne!(digest(&changed), d0, "edit {k} changes the digest");
        }
        // Moving a byte from one path to the next is not the same piece.
        let a = vec![
            Node {
                path: "ab".into(),
                ..node()
            },
            Node {
                path: "c".into(),
                ..node()
            },
        ];
        let b = vec![
            Node {
                path: "a".into(),
                ..node()
            },
            Node {
                path: "bc".into(),
                ..node()
            },
        ];
        assert_ne!(digest(&a), digest(&b));
    }

    /// A delta-coded frame decodes only with its own dictionary: without it
    /// it is an error; with other bytes it is an error or other bytes (which
    /// the pieces' ids then refuse), never more than `raw_len`.
    #[test]
    fn delta_frames_need_their_dictionary() {
        let dict: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{{\"path\":\"node_modules/p{}/f{i}.js\"}}", i % 97).into_bytes())
            .take(1 << 20)
            .collect();
        let mut data = dict[300_000..700_000].to_vec();
        data.extend_from_slice(b"a changed entry");
        let stored = encode_delta_frame(&data, &dict, 3).unwrap();
        let plain = encode_frame(&data, 3).1;
        assert!(
            stored.len() * 20 < plain.len(),
            "{} vs {}",
            stored.len(),
            plain.len()
        );
        let frame = Frame::new(1, 0, stored.len() as u64, data.len() as u64, Codec::Zstd);
        assert_eq!(
            decode_frame_with(&frame, &stored, Some(&dict)).unwrap(),
            data
        );
        assert!(
            decode_frame(&frame, &stored).is_err(),
            "decoded without its dictionary"
        );
        assert!(
            decode_frame_with(&frame, &stored, Some(&dict[..dict.len() - 1]))
                .map_or(true, |d| d != data),
            "a shifted dictionary gave the same bytes"
        );
        let mut other = dict.clone();
        other[400_000..400_100].fill(b'#');
        assert!(
            decode_frame_with(&frame, &stored, Some(&other)).map_or(true, |d| d != data),
            "another dictionary gave the same bytes"
        );
        let short = Frame {
            raw_len: data.len() as u64 - 1,
            ..frame
        };
        assert!(
            decode_frame_with(&short, &stored, Some(&dict)).is_err(),
            "past raw_len"
        );
    }

    /// A reused buffer holds only the frame it was last given, and its
    /// spare room never lets a frame decode past the length it claims.
    #[test]
    fn a_reused_buffer_is_checked_like_a_fresh_one() {
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let small = b"a small frame".repeat(100);
        let frame_of = |data: &[u8]| {
            let stored = encode_frame(data, 3).1;
            let frame = Frame::new(1, 0, stored.len() as u64, data.len() as u64, Codec::Zstd);
            (frame, stored)
        };
        let (fb, sb) = frame_of(&big);
        let (fs, ss) = frame_of(&small);
        let mut out = Vec::new();
        decode_frame_into(&fb, &sb, &mut out).unwrap();
        assert_eq!(out, big);
        decode_frame_into(&fs, &ss, &mut out).unwrap();
        assert_eq!(out, small);
        // The buffer has room for the big frame; one that claims less than
        // it decodes to is refused all the same.
        let short = Frame {
            raw_len: big.len() as u64 - 1,
            ..fb
        };
        assert!(out.capacity() >= big.len());
        assert!(decode_frame_into(&short, &sb, &mut out).is_err());
        assert!(decode_frame_into(&fs, &ss[..ss.len() - 1], &mut out).is_err());
    }
}
