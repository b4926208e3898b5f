//! The snapshot format, version [`FORMAT_VERSION`]. See `FORMAT.md`, which
//! is normative; this module is its executable form.
//!
//! Two kinds of object live in a store, each under a key that is the SHA-256
//! hash of the object's stored bytes, so any reader (and R2 itself, which
//! checks the checksum on upload) can verify what it got:
//!
//! * `packs/<hex>`: a run of *frames* back to back. A frame is either one
//!   zstd frame or raw bytes, and decodes to the concatenation of one or more
//!   blobs' plaintexts (small files are compressed together, "solid").
//! * `manifests/<hex>`: a zstd-compressed JSON [`Manifest`], the root of one
//!   snapshot. It lists the snapshot's entries indirectly, as [`PieceRef`]s:
//!   content-defined pieces of the sorted entry list, each a blob inside a
//!   pack ([`Piece`]), so that an unchanged part of the tree is stored once
//!   across snapshots.
//!
//! Blobs and pieces are named by the BLAKE3 hash of their *plaintext*
//! ([`BlobId`]); a reader checks it after decompression, before any byte
//! reaches a file.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest;

use crate::limits::{
    MAX_BLOB_RAW, MAX_FRAME_RAW, MAX_LINK_TARGET_LEN, MAX_MANIFEST_RAW, MAX_OBJECT_SIZE,
    MAX_PIECE_ENTRIES, MAX_PIECE_RAW,
};
use crate::path::{PathError, fold_key, validate_relative};

/// Version of the manifest and pack layout written by this crate.
pub const FORMAT_VERSION: u32 = 2;

/// A BLAKE3 hash, rendered as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobId(pub [u8; 32]);

/// Byte order, as derived, but decided by the first eight bytes as one
/// integer whenever they differ (as they do for all but one in 2^64 pairs
/// of hashes): a save looks up and sorts hundreds of thousands of ids, and a
/// call to `memcmp` for each comparison was most of that time.
impl Ord for BlobId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let head = |id: &BlobId| u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        head(self)
            .cmp(&head(other))
            .then_with(|| self.0[8..].cmp(&other.0[8..]))
    }
}

impl PartialOrd for BlobId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl BlobId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        BlobId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for BlobId {
    fn from(h: blake3::Hash) -> Self {
        BlobId(*h.as_bytes())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for BlobId {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(BlobId)
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor that reads the string where the parser holds it: an
        // entry list has one id per file, and `Cow<str>` would copy each
        // into a fresh `String` first.
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = BlobId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a BLAKE3 hash in 64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BlobId, E> {
                parse_hex32(s).map(BlobId).map_err(E::custom)
            }
        }
        d.deserialize_str(Hex)
    }
}

/// A SHA-256 hash of an object's stored bytes, rendered as 64 lowercase hex
/// digits. It names objects (the key R2 verifies on upload).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectHash(pub [u8; 32]);

impl ObjectHash {
    /// The SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        ObjectHash(sha2::Sha256::digest(data).into())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// 64 lowercase hex digits to 32 bytes, in one pass; anything else
/// (uppercase included: a hash has one spelling) is refused.
fn parse_hex32(s: &str) -> Result<[u8; 32], ManifestError> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bad = || ManifestError::BadHash(s.chars().take(80).collect());
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = (nibble(pair[0]).ok_or_else(bad)? << 4) | nibble(pair[1]).ok_or_else(bad)?;
    }
    Ok(out)
}

impl fmt::Debug for ObjectHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectHash({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ObjectHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for ObjectHash {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(ObjectHash)
    }
}

/// What an object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Pack,
    Manifest,
}

impl ObjectKind {
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Pack => "packs/",
            ObjectKind::Manifest => "manifests/",
        }
    }
}

/// The key of an object in a store (and in R2): `packs/<hex>` or
/// `manifests/<hex>`, where `<hex>` is the SHA-256 of the stored bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub hash: ObjectHash,
}

impl ObjectKey {
    pub fn new(kind: ObjectKind, hash: ObjectHash) -> Self {
        ObjectKey { kind, hash }
    }

    /// The key an object with these stored bytes must have.
    pub fn for_bytes(kind: ObjectKind, bytes: &[u8]) -> Self {
        ObjectKey::new(kind, ObjectHash::of(bytes))
    }

    /// Whether `bytes` are what this key names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        ObjectHash::of(bytes) == self.hash
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.prefix(), self.hash)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({self})")
    }
}

impl FromStr for ObjectKey {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        for kind in [ObjectKind::Pack, ObjectKind::Manifest] {
            if let Some(rest) = s.strip_prefix(kind.prefix()) {
                return Ok(ObjectKey::new(kind, rest.parse()?));
            }
        }
        Err(ManifestError::BadKey(s.chars().take(120).collect()))
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a frame is stored inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Stored as is (incompressible data).
    Raw,
    /// One zstd frame.
    Zstd,
}

/// A frame: `length` stored bytes at `offset` in pack number `pack` (an
/// index into [`Manifest::packs`]) that decode to `raw_len` bytes, the
/// concatenated plaintexts of the blobs that point into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub pack: u32,
    pub offset: u64,
    pub length: u64,
    pub raw_len: u64,
    pub codec: Codec,
}

impl Frame {
    pub fn new(pack: u32, offset: u64, length: u64, raw_len: u64, codec: Codec) -> Frame {
        Frame {
            pack,
            offset,
            length,
            raw_len,
            codec,
        }
    }

    /// Check the frame against the limits and the snapshot's pack count.
    pub fn validate(&self, packs: usize) -> Result<(), String> {
        let Frame {
            pack,
            offset,
            length,
            raw_len,
            codec,
        } = *self;
        if pack as usize >= packs {
            return Err("frame names a pack index out of range".into());
        }
        if raw_len > MAX_FRAME_RAW || raw_len == 0 {
            return Err("frame claims an empty or too large plaintext".into());
        }
        if codec == Codec::Raw && length != raw_len {
            return Err("raw frame with differing lengths".into());
        }
        if offset
            .checked_add(length)
            .is_none_or(|end| end > MAX_OBJECT_SIZE)
            || length == 0
        {
            return Err("frame lies past the end of any pack".into());
        }
        Ok(())
    }
}

/// A frame of the root's table, which holds pieces of the entry list. It
/// may be *delta-coded*: a zstd frame whose decoder is given, as a
/// raw-content prefix, the decoded plaintext of another frame (`dict`). A
/// save that rewrites a few entries of many pieces stores them against the
/// frame that holds their previous versions, so each rewritten piece costs
/// about its changed entries, not its whole JSON. A dictionary is a plain
/// [`Frame`], which cannot have one of its own, so decoding needs at most
/// one other frame; the frames inside pieces (file data) cannot have one
/// at all. In JSON, `dict` sits beside the frame's own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PieceFrame {
    #[serde(flatten)]
    pub frame: Frame,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dict: Option<Frame>,
}

impl PieceFrame {
    /// A frame stored without a dictionary.
    pub fn plain(frame: Frame) -> Self {
        PieceFrame { frame, dict: None }
    }

    /// What a writer codes a new version of this frame's pieces against:
    /// its dictionary, or the frame itself when it has none.
    pub fn base(&self) -> Frame {
        self.dict.unwrap_or(self.frame)
    }

    /// Check the frame and its dictionary against the limits and the
    /// snapshot's pack count.
    pub fn validate(&self, packs: usize) -> Result<(), String> {
        self.frame.validate(packs)?;
        if let Some(d) = &self.dict {
            if self.frame.codec != Codec::Zstd {
                return Err("a frame with a dictionary must be zstd".into());
            }
            d.validate(packs).map_err(|e| format!("dictionary: {e}"))?;
        }
        Ok(())
    }
}

/// A blob of a file: `length` plaintext bytes at `offset` in the decoded
/// frame number `frame` (an index into the piece's [`Piece::frames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    pub id: BlobId,
    #[serde(rename = "f")]
    pub frame: u32,
    #[serde(rename = "o")]
    pub offset: u64,
    #[serde(rename = "n")]
    pub length: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One path in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the workspace root, `/`-separated, validated by
    /// [`validate_relative`].
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Plaintext size for files, 0 otherwise.
    #[serde(default)]
    pub size: u64,
    /// Symlink target, only for symlinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The file's content, in order, only for files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobRef>,
}

impl Entry {
    /// Check one entry on its own (the rules that need no other entry).
    pub fn validate(&self, frames: &[Frame]) -> Result<(), ManifestError> {
        validate_relative(&self.path).map_err(|err| entry_err(&self.path, err))?;
        if self.mode > 0o7777 {
            return Err(bad(self, "mode has bits beyond 0o7777"));
        }
        match self.kind {
            EntryKind::File => {
                if self.target.is_some() {
                    return Err(bad(self, "a file has a symlink target"));
                }
                let mut total: u64 = 0;
                for b in &self.blobs {
                    let f = frames
                        .get(b.frame as usize)
                        .ok_or_else(|| bad(self, "a blob names a frame out of range"))?;
                    if b.length == 0
                        || b.length > MAX_BLOB_RAW
                        || b.offset.checked_add(b.length).is_none_or(|e| e > f.raw_len)
                    {
                        return Err(bad(self, "a blob lies outside its frame or is too large"));
                    }
                    total = total
                        .checked_add(b.length)
                        .ok_or_else(|| bad(self, "size overflows"))?;
                }
                if total != self.size {
                    return Err(bad(self, "size does not match its blobs"));
                }
            }
            EntryKind::Dir => {
                if self.target.is_some() || !self.blobs.is_empty() || self.size != 0 {
                    return Err(bad(self, "a directory carries content"));
                }
            }
            EntryKind::Symlink => {
                let t = self
                    .target
                    .as_deref()
                    .ok_or_else(|| bad(self, "symlink without target"))?;
                if t.is_empty() || t.len() > MAX_LINK_TARGET_LEN || t.contains('\0') {
                    return Err(bad(self, "symlink target is empty, too long or has NUL"));
                }
                if !self.blobs.is_empty() || self.size != 0 {
                    return Err(bad(self, "a symlink carries content"));
                }
            }
        }
        Ok(())
    }
}

/// A content-defined piece of a snapshot's sorted entry list, stored as a
/// blob (JSON) inside a frame. Frames are listed per piece, so a piece's
/// bytes depend only on its own entries and stay identical across
/// snapshots while those entries do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub frames: Vec<Frame>,
    pub entries: Vec<Entry>,
}

impl Piece {
    /// Parse and validate a piece's plaintext against its snapshot's pack
    /// count. Order and cross-entry rules are checked by [`EntryChecker`].
    pub fn from_json(bytes: &[u8], packs: usize) -> Result<Self, ManifestError> {
        let p: Piece =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        if p.entries.is_empty() || p.entries.len() > MAX_PIECE_ENTRIES {
            return Err(ManifestError::Decode(
                "a piece holds no entries or too many".into(),
            ));
        }
        for f in &p.frames {
            f.validate(packs).map_err(ManifestError::Decode)?;
        }
        for e in &p.entries {
            e.validate(&p.frames)?;
        }
        Ok(p)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("piece serialises")
    }
}

/// Where a piece is: `length` bytes at `offset` in the decoded frame number
/// `frame` of [`Manifest::frames`]; `entries` is how many entries it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PieceRef {
    pub id: BlobId,
    #[serde(rename = "f")]
    pub frame: u32,
    #[serde(rename = "o")]
    pub offset: u64,
    #[serde(rename = "n")]
    pub length: u64,
    #[serde(rename = "e")]
    pub entries: u32,
}

/// The root of one immutable snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// When the snapshot was written, seconds since the Unix epoch.
    pub created_at: i64,
    /// The snapshot this one was derived from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ObjectKey>,
    /// The configured roots this snapshot covers (relative paths).
    pub roots: Vec<String>,
    /// Every pack this snapshot references (frames name them by index).
    pub packs: Vec<ObjectKey>,
    /// The frames the pieces live in.
    pub frames: Vec<PieceFrame>,
    /// The entry list, in order.
    pub pieces: Vec<PieceRef>,
    /// Summary: entries, files and plaintext file bytes (checked on restore).
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A scope's current snapshot and its generation. Generations start at 1 for
/// the first snapshot and grow by one per successful compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub snapshot: ObjectKey,
    pub generation: u64,
}

/// Why bytes could not be accepted as a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("not a valid hash: {0:?}")]
    BadHash(String),
    #[error("not a valid object key: {0:?}")]
    BadKey(String),
    #[error(
        "the snapshot has format version {0}, this build reads format version {FORMAT_VERSION} only"
    )]
    Version(u32),
    #[error("manifest is not valid: {0}")]
    Decode(String),
    #[error("entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error(
        "path {0:?} names the same file as an earlier path of the snapshot on case-insensitive or Unicode-normalising file systems (they differ only by letter case or normal form)"
    )]
    Collision(String),
    #[error("manifest lists a pack that is not a pack key: {0}")]
    NotAPack(ObjectKey),
}

impl Manifest {
    /// Parse and validate decompressed root manifest JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_RAW {
            return Err(ManifestError::Decode("manifest is too large".into()));
        }
        let v = Self::peek_version(bytes)?;
        if v != FORMAT_VERSION {
            return Err(ManifestError::Version(v));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// The `version` field of manifest JSON of any version.
    pub fn peek_version(bytes: &[u8]) -> Result<u32, ManifestError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        serde_json::from_slice::<VersionOnly>(bytes)
            .map(|v| v.version)
            .map_err(|e| ManifestError::Decode(e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialises")
    }

    /// Check the root's own rules: keys, frames and piece locations.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != FORMAT_VERSION {
            return Err(ManifestError::Version(self.version));
        }
        for p in &self.packs {
            if p.kind != ObjectKind::Pack {
                return Err(ManifestError::NotAPack(*p));
            }
        }
        for r in &self.roots {
            validate_relative(r).map_err(|e| entry_err(r, e))?;
        }
        for f in &self.frames {
            f.validate(self.packs.len())
                .map_err(ManifestError::Decode)?;
        }
        let mut total: u64 = 0;
        for p in &self.pieces {
            let f = self
                .frames
                .get(p.frame as usize)
                .ok_or_else(|| ManifestError::Decode("piece names a frame out of range".into()))?;
            if p.length == 0
                || p.length > MAX_PIECE_RAW
                || p.offset
                    .checked_add(p.length)
                    .is_none_or(|e| e > f.frame.raw_len)
                || p.entries == 0
                || p.entries as usize > MAX_PIECE_ENTRIES
            {
                return Err(ManifestError::Decode(format!(
                    "piece {} lies outside its frame or claims too much",
                    p.id
                )));
            }
            total += p.entries as u64;
        }
        if total != self.entries {
            return Err(ManifestError::Decode(
                "the pieces' entry counts do not add up to `entries`".into(),
            ));
        }
        Ok(())
    }
}

/// The rules between entries of one snapshot, checked as the entries stream
/// by in order: sorted and unique, inside a root, no parent that is a file
/// or symlink, and no two paths that one file system could confuse (case
/// folding, Unicode normalisation).
///
/// Parents are checked against a chain, not a set of every path: in sorted
/// order, every entry between a path and one below it starts with that
/// path, so the earlier entries that are prefixes of the current one are
/// exactly those still on a stack that drops whatever is not a prefix of
/// the next path. The stack holds lengths into the last path, so it costs
/// a few bytes per level of depth.
///
/// Collisions are checked name by name, with no set of every path. Folding
/// works name by name ([`fold_key`] leaves `/` alone), so two paths of one
/// root fold equal only if they do where they first differ: in two names
/// of one directory. The entries below a directory (every path that starts
/// with `D/`) come in one run, so each directory whose run has not ended
/// keeps the folded names of its children ([`Level`]); the memory is that
/// of the directories open along one path, whatever the snapshot's size.
/// Two names folding equal are refused there, including names of
/// directories the snapshot does not list (only a hand-made snapshot
/// leaves a parent out). Paths of two roots can fold equal only where one
/// root folds to a prefix of the other (`A/x` beside `a`): then the whole
/// snapshot is checked with a set of every folded path (16 bytes an
/// entry; 17 MiB of table at 500,000 entries, which was the largest part
/// of a windowed restore's heap before this was done name by name).
pub struct EntryChecker<'a> {
    roots: &'a [String],
    /// The last entry's path.
    prev: String,
    /// Earlier entries whose paths are prefixes of `prev` (as strings),
    /// shortest first: each one's length and whether it is a directory.
    chain: Vec<(usize, bool)>,
    /// Directories of `prev` whose entries may still come, outermost (a
    /// root) first.
    levels: Vec<Level>,
    /// Every folded path, when two roots overlap once folded.
    folded: Option<HashSet<u128>>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A directory whose entries are still coming: its length in the current
/// path, and its children's names by the hash of their folded form.
struct Level {
    len: usize,
    names: HashMap<u128, Box<str>>,
}

impl<'a> EntryChecker<'a> {
    pub fn new(roots: &'a [String]) -> Self {
        let folded_roots: Vec<String> = roots.iter().map(|r| fold_key(r)).collect();
        let overlap = folded_roots.iter().enumerate().any(|(i, a)| {
            folded_roots
                .iter()
                .enumerate()
                .any(|(j, b)| i != j && is_within(b, a))
        });
        EntryChecker {
            roots,
            prev: String::new(),
            chain: Vec::new(),
            levels: Vec::new(),
            folded: overlap.then(HashSet::new),
            entries: 0,
            files: 0,
            bytes: 0,
        }
    }

    pub fn check(&mut self, e: &Entry) -> Result<(), ManifestError> {
        self.check_keyed(e, &EntryKeys::of(e))
    }

    /// [`EntryChecker::check`] with the entry's hash computed beforehand
    /// (it is the costly part and needs no order, so a reader computes them
    /// for many entries in parallel). `keys` must be `EntryKeys::of(e)`.
    pub fn check_keyed(&mut self, e: &Entry, keys: &EntryKeys) -> Result<(), ManifestError> {
        if self.entries > 0 && self.prev.as_str() >= e.path.as_str() {
            return Err(bad(e, "entries are not sorted or a path repeats"));
        }
        let Some(root) = self.roots.iter().find(|r| is_within(&e.path, r)) else {
            return Err(bad(e, "is outside every root of the snapshot"));
        };
        while let Some(&(len, _)) = self.chain.last() {
            if e.path.starts_with(&self.prev[..len]) {
                break;
            }
            self.chain.pop();
        }
        // What is left are the earlier entries that are prefixes of this
        // path; those followed by a `/` are its parents.
        let path = e.path.as_bytes();
        if self
            .chain
            .iter()
            .any(|&(len, is_dir)| !is_dir && path.get(len) == Some(&b'/'))
        {
            return Err(bad(e, "its parent is not a directory in the snapshot"));
        }
        self.check_names(e, root, keys)?;
        self.chain.push((e.path.len(), e.kind == EntryKind::Dir));
        self.entries += 1;
        if e.kind == EntryKind::File {
            self.files += 1;
            self.bytes += e.size;
        }
        self.prev.clear();
        self.prev.push_str(&e.path);
        Ok(())
    }

    /// No name of the entry's path folds equal to another name of its
    /// directory (see [`EntryChecker`]).
    fn check_names(
        &mut self,
        e: &Entry,
        root: &str,
        keys: &EntryKeys,
    ) -> Result<(), ManifestError> {
        let collision = || ManifestError::Collision(e.path.chars().take(200).collect());
        if let Some(set) = &mut self.folded {
            return match set.insert(h128(&fold_key(&e.path))) {
                true => Ok(()),
                false => Err(collision()),
            };
        }
        // Close the directories this path is not below.
        let path = e.path.as_str();
        while let Some(l) = self.levels.last() {
            if path.len() > l.len
                && path.starts_with(&self.prev[..l.len])
                && path.as_bytes()[l.len] == b'/'
            {
                break;
            }
            self.levels.pop();
        }
        if self.levels.is_empty() {
            self.levels.push(Level {
                len: root.len(),
                names: HashMap::new(),
            });
        }
        // Each name below the deepest open directory goes into its
        // directory: the names between are those of directories this path
        // enters again (after `D-x` left `D`) or that the snapshot does
        // not list.
        let mut at = self.levels.last().map_or(0, |l| l.len);
        while at < path.len() {
            let start = at + 1;
            let end = path[start..].find('/').map_or(path.len(), |i| start + i);
            let name = &path[start..end];
            let key = if end == path.len() {
                keys.folded
            } else {
                h128(&fold_key(name))
            };
            let level = self.levels.last_mut().expect("a root's level is open");
            match level.names.get(&key) {
                Some(seen) if **seen != *name => return Err(collision()),
                Some(_) => {}
                None => {
                    level.names.insert(key, name.into());
                }
            }
            if end < path.len() || e.kind == EntryKind::Dir {
                self.levels.push(Level {
                    len: end,
                    names: HashMap::new(),
                });
            }
            at = end;
        }
        Ok(())
    }

    /// Check the totals against the root's summary.
    pub fn finish(&self, m: &Manifest) -> Result<(), ManifestError> {
        if self.entries != m.entries || self.files != m.files || self.bytes != m.bytes {
            return Err(ManifestError::Decode(
                "the entries do not match the manifest's summary".into(),
            ));
        }
        Ok(())
    }
}

/// What [`EntryChecker`] keeps of one entry: the hash of its last name's
/// folded form (case, Unicode normalisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryKeys {
    folded: u128,
}

impl EntryKeys {
    pub fn of(e: &Entry) -> EntryKeys {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        EntryKeys {
            folded: h128(&fold_key(name)),
        }
    }
}

fn h128(s: &str) -> u128 {
    let h = blake3::hash(s.as_bytes());
    u128::from_le_bytes(h.as_bytes()[..16].try_into().expect("16 bytes"))
}

/// Whether `path` is `root` or lies below it.
pub fn is_within(path: &str, root: &str) -> bool {
    path == root
        || (path.len() > root.len()
            && path.starts_with(root)
            && path.as_bytes()[root.len()] == b'/')
}

fn entry_err(path: &str, e: PathError) -> ManifestError {
    ManifestError::Entry {
        path: path.chars().take(200).collect(),
        reason: e.to_string(),
    }
}

fn bad(e: &Entry, reason: &str) -> ManifestError {
    ManifestError::Entry {
        path: e.path.chars().take(200).collect(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_order_as_their_bytes() {
        let mut ids: Vec<BlobId> = (0u32..200).map(|i| BlobId::of(&i.to_le_bytes())).collect();
        // Ids that share their first eight bytes, or all but the last.
        for k in [0usize, 7, 8, 9, 31] {
            let mut id = ids[k % ids.len()];
            id.0[31] ^= 1;
            ids.push(id);
            id.0[k] ^= 0x80;
            ids.push(id);
        }
        for a in &ids {
            for b in &ids {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0), "{a} against {b}");
                assert_eq!(a.partial_cmp(b), Some(a.0.cmp(&b.0)));
            }
        }
    }

    fn file(path: &str, len: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            mtime_ns: 0,
            size: len,
            target: None,
            blobs: vec![BlobRef {
                id: BlobId::of(b"x"),
                frame: 0,
                offset: 0,
                length: len,
            }],
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode: 0o755,
            mtime_ns: 0,
            size: 0,
            target: None,
            blobs: vec![],
        }
    }

    fn frame() -> Frame {
        Frame::new(0, 0, 5, 5, Codec::Raw)
    }

    fn check_all(entries: &[Entry]) -> Result<(), ManifestError> {
        let roots = vec!["a".to_string()];
        let mut c = EntryChecker::new(&roots);
        for e in entries {
            e.validate(&[frame()])?;
            c.check(e)?;
        }
        Ok(())
    }

    #[test]
    fn keys_are_sha256_and_reject_garbage() {
        let k = ObjectKey::for_bytes(ObjectKind::Pack, b"abc");
        assert_eq!(
            k.to_string(),
            "packs/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(k.to_string().parse::<ObjectKey>().unwrap(), k);
        assert!(k.matches(b"abc") && !k.matches(b"abd"));
        for bad in [
            "packs/xyz",
            "blobs/00",
            "packs/../x",
            &format!("packs/{}", "A".repeat(64)),
        ] {
            assert!(bad.parse::<ObjectKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pieces_round_trip_and_validate() {
        let p = Piece {
            frames: vec![frame()],
            entries: vec![dir("a"), file("a/x", 5)],
        };
        assert_eq!(Piece::from_json(&p.to_json(), 1).unwrap(), p);
        assert!(
            Piece::from_json(&p.to_json(), 0).is_err(),
            "pack out of range"
        );
        let mut q = p.clone();
        q.entries[1].blobs[0].length = 6;
        q.entries[1].size = 6;
        assert!(Piece::from_json(&q.to_json(), 1).is_err(), "past the frame");
    }

    #[test]
    fn piece_frames_may_be_delta_coded_one_level_deep() {
        let base = Frame::new(0, 0, 90, 400, Codec::Zstd);
        let delta = PieceFrame {
            frame: Frame::new(1, 0, 20, 300, Codec::Zstd),
            dict: Some(base),
        };
        assert!(delta.validate(2).is_ok());
        // The dictionary's own location is checked like any frame's.
        assert!(delta.validate(1).is_err(), "dictionary pack out of range");
        let bad_dict = PieceFrame {
            dict: Some(Frame {
                raw_len: MAX_FRAME_RAW + 1,
                ..base
            }),
            ..delta
        };
        assert!(bad_dict.validate(2).is_err(), "dictionary too large");
        let raw = PieceFrame {
            frame: Frame::new(1, 0, 300, 300, Codec::Raw),
            ..delta
        };
        assert!(
            raw.validate(2).is_err(),
            "a raw frame cannot use a dictionary"
        );
        assert_eq!(delta.base(), base);
        assert_eq!(PieceFrame::plain(base).base(), base);
        // In JSON the dictionary sits beside the frame's fields, and a
        // frame without one reads and writes as a plain frame.
        let json = serde_json::to_string(&delta).unwrap();
        assert!(json.starts_with(r#"{"pack":1,"offset":0,"#), "{json}");
        assert!(json.contains(r#""dict":{"pack":0,"#), "{json}");
        assert_eq!(serde_json::from_str::<PieceFrame>(&json).unwrap(), delta);
        let plain = serde_json::to_string(&PieceFrame::plain(base)).unwrap();
        assert_eq!(plain, serde_json::to_string(&base).unwrap());
    }

    #[test]
    fn rejects_hostile_entry_lists() {
        assert!(check_all(&[dir("a"), file("a/x", 5)]).is_ok());
        let mut f = file("a/x", 5);
        f.size = 4;
        assert!(check_all(&[dir("a"), f]).is_err(), "size mismatch");
        assert!(check_all(&[dir("a"), file("a/../../etc/passwd", 5)]).is_err());
        assert!(
            check_all(&[dir("a"), file("b/y", 5)]).is_err(),
            "outside roots"
        );
        let mut l = dir("a/l");
        l.kind = EntryKind::Symlink;
        l.target = Some("/etc".into());
        assert!(
            check_all(&[dir("a"), l, file("a/l/x", 5)]).is_err(),
            "through a symlink"
        );
        assert!(check_all(&[file("a/x", 5), dir("a")]).is_err(), "unsorted");
        assert!(check_all(&[dir("a"), file("a/x", 5), file("a/x", 5)]).is_err());
    }

    #[test]
    fn a_file_parent_is_found_however_far_back_it_sorts() {
        // `-` and `.` sort before `/`: the file `a/x` and its would-be child
        // `a/x/f` are separated by siblings and their subtrees.
        let between = [
            dir("a"),
            file("a/x", 5),
            dir("a/x-1"),
            dir("a/x-1/d"),
            file("a/x-1/d/f", 5),
            file("a/x.txt", 5),
        ];
        assert!(check_all(&between).is_ok());
        let mut deep = between.to_vec();
        deep.push(file("a/x/f", 5));
        let err = check_all(&deep).unwrap_err().to_string();
        assert!(err.contains("parent is not a directory"), "{err}");
        // Not only the direct parent: a file two levels up.
        let mut two = between.to_vec();
        two.push(dir("a/x/d"));
        assert!(check_all(&two).is_err());
        // A directory of the same name is a parent like any other, and a
        // file whose name merely starts like a directory's is not one.
        assert!(check_all(&[dir("a"), dir("a/x"), file("a/x-y", 5), file("a/x/f", 5)]).is_ok());
        assert!(check_all(&[dir("a"), file("a/x-y", 5), file("a/x-y2", 5)]).is_ok());
        // Hidden behind a deeper chain, a symlink two levels up.
        let mut l = dir("a/l");
        l.kind = EntryKind::Symlink;
        l.target = Some("/etc".into());
        assert!(check_all(&[dir("a"), l, file("a/l-0", 5), file("a/l/m/n", 5)]).is_err());
    }

    #[test]
    fn refuses_paths_that_collide_by_case_or_normalisation() {
        let mut link = dir("a/X");
        link.kind = EntryKind::Symlink;
        link.target = Some("/tmp".into());
        let err = check_all(&[dir("a"), link, dir("a/x"), file("a/x/f", 5)]).unwrap_err();
        assert!(matches!(err, ManifestError::Collision(..)), "{err}");
        // NFC "é" against NFD "e" + combining acute.
        let err = check_all(&[dir("a"), file("a/cafe\u{301}", 5), file("a/caf\u{e9}", 5)]);
        assert!(matches!(err, Err(ManifestError::Collision(..))), "{err:?}");
    }

    fn check_in(roots: &[&str], entries: &[Entry]) -> Result<(), ManifestError> {
        let roots: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
        let mut c = EntryChecker::new(&roots);
        for e in entries {
            c.check(e)?;
        }
        Ok(())
    }

    /// Names are checked in their directory, also when the directory's run
    /// of entries is interrupted by a sibling that sorts between (`b-c`,
    /// `b.d` between `b` and `b/...`), when parents are not listed, and
    /// across roots only where roots overlap once folded.
    #[test]
    fn collisions_are_found_name_by_name() {
        let ok = |roots: &[&str], e: &[Entry]| check_in(roots, e).is_ok();
        let collides = |roots: &[&str], e: &[Entry]| {
            matches!(check_in(roots, e), Err(ManifestError::Collision(..)))
        };
        let entered_again = [dir("a"), dir("a/b"), file("a/b-c", 1), file("a/b.d", 1)];
        let mut e = entered_again.to_vec();
        e.extend([file("a/b/x", 1), file("a/b/y", 1)]);
        assert!(ok(&["a"], &e));
        e.push(file("a/b/Y", 1));
        e.sort_by(|x, y| x.path.cmp(&y.path));
        assert!(collides(&["a"], &e));
        // Deep, after the run was interrupted.
        let mut e = entered_again.to_vec();
        e.extend([dir("a/b/X"), file("a/b/X/f", 1), file("a/b/x", 1)]);
        assert!(collides(&["a"], &e));
        // Parents not listed: the same file twice, and (conservatively) two
        // spellings of one directory.
        assert!(collides(&["a"], &[file("a/P/x", 1), file("a/p/x", 1)]));
        assert!(collides(&["a"], &[file("a/P/x", 1), file("a/p/y", 1)]));
        // Roots of one length do not share names.
        assert!(ok(
            &["aa", "bb"],
            &[dir("aa"), file("aa/x", 1), dir("bb"), file("bb/X", 1)]
        ));
        // Roots that overlap once folded: a tree on a case-sensitive disk
        // may hold both; only the same path twice is refused.
        let overlap = [dir("A/x"), file("A/x/f", 1), dir("a"), file("a/y", 1)];
        assert!(ok(&["A/x", "a"], &overlap));
        let mut e = overlap.to_vec();
        e.extend([dir("a/x"), file("a/x/f", 1)]);
        e.sort_by(|x, y| x.path.cmp(&y.path));
        assert!(collides(&["A/x", "a"], &e));
    }

    /// On random trees whose names differ by case, normal form and the
    /// characters that sort around `/`, checking name by name finds a
    /// collision exactly when two whole paths fold equal.
    #[test]
    fn name_by_name_agrees_with_every_path() {
        let names = [
            "a",
            "A",
            "b",
            "a-b",
            "a.b",
            "a0",
            "caf\u{e9}",
            "CAFE\u{301}",
            "z",
        ];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut found, mut clean) = (0, 0);
        for _ in 0..400 {
            let mut paths = std::collections::BTreeSet::new();
            for _ in 0..1 + next(6) {
                let depth = 1 + next(3);
                let mut p = "r".to_string();
                for _ in 0..depth {
                    p.push('/');
                    p.push_str(names[next(names.len())]);
                }
                paths.insert(p);
            }
            // Every parent listed, as a writer does.
            let mut dirs = std::collections::BTreeSet::new();
            for p in &paths {
                let mut q = p.as_str();
                while let Some(i) = q.rfind('/') {
                    q = &q[..i];
                    dirs.insert(q.to_string());
                }
            }
            let files: Vec<&String> = paths.iter().filter(|p| !dirs.contains(*p)).collect();
            let mut all: Vec<Entry> = dirs.iter().map(|d| dir(d)).collect();
            all.extend(files.iter().map(|f| file(f, 1)));
            all.sort_by(|x, y| x.path.cmp(&y.path));
            let mut folds = HashSet::new();
            let expected = !all.iter().all(|e| folds.insert(fold_key(&e.path)));
            let got = matches!(check_in(&["r"], &all), Err(ManifestError::Collision(..)));
            assert_eq!(
                got,
                expected,
                "{:?}",
                all.iter().map(|e| &e.path).collect::<Vec<_>>()
            );
            if expected { found += 1 } else { clean += 1 }
        }
        assert!(found > 20 && clean > 20, "{found} {clean}");
    }

    #[test]
    fn a_v1_manifest_is_refused_naming_both_versions() {
        let err = Manifest::from_json(br#"{"version":1,"entries":[]}"#).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("version 1") && msg.contains("version 2"),
            "{msg}"
        );
    }

    #[test]
    fn is_within_respects_component_boundaries() {
        assert!(is_within("node_modules/x", "node_modules"));
        assert!(is_within("node_modules", "node_modules"));
        assert!(!is_within("node_modules2/x", "node_modules"));
    }

    #[test]
    fn hashes_have_one_spelling() {
        let id = BlobId::of(b"x");
        let hex = id.to_hex();
        assert_eq!(hex.parse::<BlobId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{hex}\""));
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
        // A JSON escape is the same string once decoded.
        let escaped = format!("\"\\u00{:x}{}\"", hex.as_bytes()[0], &hex[1..]);
        assert_eq!(serde_json::from_str::<BlobId>(&escaped).unwrap(), id);
        for bad in [
            hex.to_uppercase(),
            hex[..63].to_string(),
            format!("{hex}0"),
            format!("{}g", &hex[..63]),
            format!("{}é", &hex[..62]),
            String::new(),
        ] {
            assert!(bad.parse::<BlobId>().is_err(), "{bad}");
            assert!(bad.parse::<ObjectHash>().is_err(), "{bad}");
            let json = serde_json::to_string(&bad).unwrap();
            assert!(serde_json::from_str::<BlobId>(&json).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<BlobId>("7").is_err());
        let key = ObjectHash::of(b"x");
        assert_eq!(key.to_hex().parse::<ObjectHash>().unwrap(), key);
    }
}
