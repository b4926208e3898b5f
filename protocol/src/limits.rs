//! Hard limits every reader enforces, so a hostile manifest cannot make a
//! restore allocate, decompress or write without bound.

/// Files at or below this size are stored as one blob; larger files are split
/// by content-defined chunking.
pub const CHUNK_THRESHOLD: u64 = 1024 * 1024;
/// FastCDC parameters for large files.
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

/// The largest plaintext a single blob may claim. Equal to the biggest blob a
/// writer can produce (a small file at the threshold, or a maximal chunk).
pub const MAX_BLOB_RAW: u64 = CHUNK_MAX as u64;
/// The largest stored (compressed) size of a blob. zstd's worst case on
/// incompressible input is a little over the input; writers store such blobs
/// raw, so this leaves headroom only for framing.
pub const MAX_BLOB_STORED: u64 = MAX_BLOB_RAW + 64 * 1024;

/// Packs are closed once they reach this many stored bytes.
pub const PACK_TARGET: u64 = 32 * 1024 * 1024;
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
