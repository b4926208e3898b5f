//! Hard limits every reader enforces, so a hostile manifest cannot make a
//! restore allocate, decompress or write without bound.

/// Files at or below this size are stored as one blob; larger files are split
/// by content-defined chunking.
pub const CHUNK_THRESHOLD: u64 = 256 * 1024;
/// FastCDC parameters for large files: small chunks, so that an edit inside
/// a large file stores little more than the edit (chunks are compressed
/// together in solid frames, so their size does not cost compression).
pub const CHUNK_MIN: u32 = 32 * 1024;
pub const CHUNK_AVG: u32 = 128 * 1024;
pub const CHUNK_MAX: u32 = 512 * 1024;

/// The largest plaintext a single blob may claim. Equal to the biggest blob a
/// writer can produce (a small file at the threshold, or a maximal chunk).
pub const MAX_BLOB_RAW: u64 = CHUNK_MAX as u64;
/// Solid frames are closed once their plaintext reaches this many bytes.
pub const FRAME_TARGET: u64 = 4 * 1024 * 1024;
/// The largest plaintext a frame may claim (a reader decodes a whole frame
/// in memory).
pub const MAX_FRAME_RAW: u64 = 16 * 1024 * 1024;
/// A piece of the entry list holds at most this many entries...
pub const MAX_PIECE_ENTRIES: usize = 4096;
/// ...and at most this many bytes of JSON.
pub const MAX_PIECE_RAW: u64 = 8 * 1024 * 1024;

/// Packs are closed once they reach this many stored bytes.
pub const PACK_TARGET: u64 = 20 * 1024 * 1024;
/// No object may exceed this. Cloudflare Workers accept request bodies up to
/// 100 MB on the free and pro plans; this stays well below it.
pub const MAX_OBJECT_SIZE: u64 = 64 * 1024 * 1024;
/// A manifest (compressed, as stored) may not exceed this.
pub const MAX_MANIFEST_STORED: u64 = 64 * 1024 * 1024;
/// A manifest (decompressed JSON) may not exceed this.
pub const MAX_MANIFEST_RAW: u64 = 512 * 1024 * 1024;
/// Longest relative path accepted in a manifest, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest symlink target accepted in a manifest, in bytes.
pub const MAX_LINK_TARGET_LEN: usize = 4096;
