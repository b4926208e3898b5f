//! The snapshot format, version [`FORMAT_VERSION`]. See `FORMAT.md`.
//!
//! Two kinds of object live in a store, each under a key that is the BLAKE3
//! hash of the object's stored bytes, so any reader can verify what it got:
//!
//! * `packs/<hex>`: concatenated blobs (each zstd-compressed or raw);
//! * `manifests/<hex>`: a zstd-compressed JSON [`Manifest`].
//!
//! Blobs are named by the BLAKE3 hash of their *plaintext*; a reader checks
//! it after decompression, before any byte reaches a file.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{
    MAX_BLOB_RAW, MAX_BLOB_STORED, MAX_LINK_TARGET_LEN, MAX_MANIFEST_RAW, MAX_OBJECT_SIZE,
};
use crate::path::{PathError, validate_relative};

/// Version of the manifest and pack layout written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// A BLAKE3 hash, rendered as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 32]);

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
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ManifestError::BadHash(s.chars().take(80).collect()));
        }
        let h = blake3::Hash::from_hex(s).map_err(|_| ManifestError::BadHash(s.to_string()))?;
        Ok(h.into())
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
/// `manifests/<hex>`, where `<hex>` is the BLAKE3 hash of the stored bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub hash: BlobId,
}

impl ObjectKey {
    pub fn new(kind: ObjectKind, hash: BlobId) -> Self {
        ObjectKey { kind, hash }
    }

    /// The key an object with these stored bytes must have.
    pub fn for_bytes(kind: ObjectKind, bytes: &[u8]) -> Self {
        ObjectKey::new(kind, BlobId::of(bytes))
    }

    /// Whether `bytes` are what this key names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        BlobId::of(bytes) == self.hash
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

/// How a blob is stored inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobCodec {
    /// Stored as is (incompressible data).
    Raw,
    /// One zstd frame.
    Zstd,
}

/// Where a blob's stored bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLocation {
    pub id: BlobId,
    /// Index into [`Manifest::packs`].
    pub pack: u32,
    pub offset: u64,
    /// Stored length inside the pack.
    pub length: u64,
    /// Plaintext length.
    pub raw_len: u64,
    pub codec: BlobCodec,
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
    pub blobs: Vec<BlobId>,
}

/// A complete, immutable description of one saved workspace.
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
    /// Every pack any blob of this snapshot lives in.
    pub packs: Vec<ObjectKey>,
    /// Where every blob referenced by `entries` is stored.
    pub blobs: Vec<BlobLocation>,
    /// Sorted by path; parents precede children.
    pub entries: Vec<Entry>,
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
        "manifest version {0} is not supported by this build (it reads version {FORMAT_VERSION})"
    )]
    Version(u32),
    #[error("manifest is not valid: {0}")]
    Decode(String),
    #[error("entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("blob {0}: {1}")]
    Blob(BlobId, String),
    #[error("manifest lists a pack that is not a pack key: {0}")]
    NotAPack(ObjectKey),
}

impl Manifest {
    /// Parse and fully validate decompressed manifest JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_RAW {
            return Err(ManifestError::Decode("manifest is too large".into()));
        }
        // Read the version first so a newer manifest gets a version error,
        // not a confusing field error.
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        if v.version != FORMAT_VERSION {
            return Err(ManifestError::Version(v.version));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialises")
    }

    /// Check every structural rule a reader relies on: paths are safe and
    /// unique, sizes agree with the blobs, every blob has exactly one
    /// location inside a listed pack, and no claim exceeds the limits.
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
        let mut sizes = std::collections::HashMap::with_capacity(self.blobs.len());
        for b in &self.blobs {
            if b.pack as usize >= self.packs.len() {
                return Err(ManifestError::Blob(b.id, "pack index out of range".into()));
            }
            if b.raw_len > MAX_BLOB_RAW || b.length > MAX_BLOB_STORED {
                return Err(ManifestError::Blob(
                    b.id,
                    "claims more bytes than a blob may hold".into(),
                ));
            }
            if b.codec == BlobCodec::Raw && b.length != b.raw_len {
                return Err(ManifestError::Blob(
                    b.id,
                    "raw blob with differing lengths".into(),
                ));
            }
            if b.offset
                .checked_add(b.length)
                .is_none_or(|end| end > MAX_OBJECT_SIZE)
            {
                return Err(ManifestError::Blob(
                    b.id,
                    "location is past the end of any pack".into(),
                ));
            }
            if sizes.insert(b.id, b.raw_len).is_some() {
                return Err(ManifestError::Blob(b.id, "listed twice".into()));
            }
        }
        let mut seen = HashSet::with_capacity(self.entries.len());
        let mut prev: Option<&str> = None;
        for e in &self.entries {
            validate_relative(&e.path).map_err(|err| entry_err(&e.path, err))?;
            if let Some(p) = prev {
                if p >= e.path.as_str() {
                    return Err(ManifestError::Entry {
                        path: e.path.clone(),
                        reason: "entries are not sorted or a path repeats".into(),
                    });
                }
            }
            prev = Some(&e.path);
            seen.insert(e.path.as_str());
            if e.mode > 0o7777 {
                return Err(bad(e, "mode has bits beyond 0o7777"));
            }
            if !self.roots.iter().any(|r| is_within(&e.path, r)) {
                return Err(bad(e, "is outside every root of the snapshot"));
            }
            match e.kind {
                EntryKind::File => {
                    if e.target.is_some() {
                        return Err(bad(e, "a file has a symlink target"));
                    }
                    let mut total: u64 = 0;
                    for id in &e.blobs {
                        let n = sizes
                            .get(id)
                            .ok_or_else(|| bad(e, &format!("blob {id} has no location")))?;
                        total = total
                            .checked_add(*n)
                            .ok_or_else(|| bad(e, "size overflows"))?;
                    }
                    if total != e.size {
                        return Err(bad(e, "size does not match its blobs"));
                    }
                }
                EntryKind::Dir => {
                    if e.target.is_some() || !e.blobs.is_empty() || e.size != 0 {
                        return Err(bad(e, "a directory carries content"));
                    }
                }
                EntryKind::Symlink => {
                    let t = e
                        .target
                        .as_deref()
                        .ok_or_else(|| bad(e, "symlink without target"))?;
                    if t.is_empty() || t.len() > MAX_LINK_TARGET_LEN || t.contains('\0') {
                        return Err(bad(e, "symlink target is empty, too long or has NUL"));
                    }
                    if !e.blobs.is_empty() || e.size != 0 {
                        return Err(bad(e, "a symlink carries content"));
                    }
                }
            }
        }
        // A path's parents must not be files or symlinks in the same
        // snapshot, or restoring it would write through them.
        for e in &self.entries {
            let mut p = e.path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                if seen.contains(p) {
                    let parent = self
                        .entries
                        .binary_search_by(|x| x.path.as_str().cmp(p))
                        .map(|i| &self.entries[i])
                        .ok();
                    if let Some(parent) = parent {
                        if parent.kind != EntryKind::Dir {
                            return Err(bad(e, "its parent is not a directory in the snapshot"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Total plaintext bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
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

    fn file(path: &str, blobs: Vec<BlobId>, size: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            mtime_ns: 0,
            size,
            target: None,
            blobs,
        }
    }

    fn sample() -> Manifest {
        let id = BlobId::of(b"hello");
        let pack = ObjectKey::for_bytes(ObjectKind::Pack, b"pack");
        Manifest {
            version: FORMAT_VERSION,
            created_at: 0,
            parent: None,
            roots: vec!["a".into()],
            packs: vec![pack],
            blobs: vec![BlobLocation {
                id,
                pack: 0,
                offset: 0,
                length: 5,
                raw_len: 5,
                codec: BlobCodec::Raw,
            }],
            entries: vec![
                Entry {
                    path: "a".into(),
                    kind: EntryKind::Dir,
                    mode: 0o755,
                    mtime_ns: 0,
                    size: 0,
                    target: None,
                    blobs: vec![],
                },
                file("a/x", vec![id], 5),
            ],
        }
    }

    #[test]
    fn keys_round_trip_and_reject_garbage() {
        let k = ObjectKey::for_bytes(ObjectKind::Pack, b"abc");
        let s = k.to_string();
        assert!(s.starts_with("packs/"));
        assert_eq!(s.parse::<ObjectKey>().unwrap(), k);
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
    fn manifest_round_trips_through_json() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn rejects_hostile_manifests() {
        let mut m = sample();
        m.entries[1].size = 6;
        assert!(m.validate().is_err(), "size mismatch");

        let mut m = sample();
        m.blobs[0].raw_len = MAX_BLOB_RAW + 1;
        m.blobs[0].length = MAX_BLOB_RAW + 1;
        m.entries[1].size = MAX_BLOB_RAW + 1;
        assert!(m.validate().is_err(), "oversize blob");

        let mut m = sample();
        m.entries[1].path = "a/../../etc/passwd".into();
        assert!(m.validate().is_err(), "escape");

        let mut m = sample();
        m.entries.push(file("b/y", vec![], 0));
        assert!(m.validate().is_err(), "outside roots");

        let mut m = sample();
        m.entries[0].kind = EntryKind::Symlink;
        m.entries[0].target = Some("/etc".into());
        assert!(m.validate().is_err(), "write through a symlink parent");

        let mut m = sample();
        m.entries.swap(0, 1);
        assert!(m.validate().is_err(), "unsorted");

        let mut m = sample();
        m.version = 99;
        let err = Manifest::from_json(&m.to_json()).unwrap_err();
        assert_eq!(err, ManifestError::Version(99));
    }

    #[test]
    fn is_within_respects_component_boundaries() {
        assert!(is_within("node_modules/x", "node_modules"));
        assert!(is_within("node_modules", "node_modules"));
        assert!(!is_within("node_modules2/x", "node_modules"));
    }
}
