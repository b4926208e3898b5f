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

/// Where a save and a restore end their windows of the entry list (both
/// take the snapshot's entries, in path order, a window at a time).
///
/// A save packs each window's files into frames of their own, so a
/// restore whose windows end where the save's did fetches each frame
/// once. Windows cut every so many entries would line up for the first
/// save only: a file added early in path order shifts every later cut,
/// and the frames of a later generation's unchanged files (packed by the
/// save that first stored them) straddle the restore's windows (at
/// 120,300 files, 300 added at the front: 13% more fetched). So a window
/// ends, once it holds `min` entries, after the first path whose hash has
/// its `mask` bits clear (or at `max`): the cuts depend on the paths, as
/// the pieces' do on their entries, and two generations cut alike around
/// whatever did not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCut {
    pub min: usize,
    pub max: usize,
    pub mask: u64,
}

impl WindowCut {
    /// 49,152 to 98,304 entries, about 65,000 on average (a 120,000-file
    /// workspace is two windows; a window of a restore's plan is about
    /// 20 MB).
    pub const DEFAULT: WindowCut = WindowCut {
        min: 3 << 14,
        max: 3 << 15,
        mask: (1 << 14) - 1,
    };

    /// Windows of exactly `n` entries (at least 1): for tests, which spread
    /// a small tree over many windows, and for measuring.
    pub fn fixed(n: usize) -> WindowCut {
        let n = n.max(1);
        WindowCut {
            min: n,
            max: n,
            mask: 0,
        }
    }

    /// Whether a window that holds `len` entries, the last at `path`,
    /// ends there.
    pub fn ends_after(&self, path: &str, len: usize) -> bool {
        len >= self.max.max(1) || (len >= self.min && path_hash(path) & self.mask == 0)
    }
}

impl Default for WindowCut {
    fn default() -> Self {
        WindowCut::DEFAULT
    }
}

/// A fixed, portable hash of a path for [`WindowCut`]: FNV-1a, then the
/// finaliser of MurmurHash3 so that the low bits depend on every byte.
/// Only where windows end depends on it (never what a snapshot holds).
fn path_hash(path: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod window_tests {
    use super::*;

    /// Windows of many paths stay within their bounds, average about what
    /// the default says, and cut at the same paths after entries are added
    /// in front (all but the windows the addition falls in).
    #[test]
    fn windows_end_at_the_same_paths_whatever_comes_before() {
        let paths: Vec<String> = (0..1_000_000)
            .map(|i| format!("node_modules/p{}/f{i}.js", i % 977))
            .collect();
        let cuts = |paths: &[String], cut: WindowCut| -> Vec<String> {
            let mut out = Vec::new();
            let mut len = 0;
            for p in paths {
                len += 1;
                if cut.ends_after(p, len) {
                    out.push(p.clone());
                    len = 0;
                }
            }
            out
        };
        let cut = WindowCut::DEFAULT;
        let a = cuts(&paths, cut);
        let mean = paths.len() / a.len();
        assert!((50_000..90_000).contains(&mean), "{mean}");
        let mut more: Vec<String> = (0..311).map(|i| format!("0-added/{i}")).collect();
        more.extend(paths.iter().cloned());
        let b = cuts(&more, cut);
        let same = a.iter().filter(|p| b.contains(p)).count();
        assert!(same + 2 >= a.len(), "{same} of {}", a.len());
        // Fixed windows: every n entries.
        assert_eq!(cuts(&paths[..100], WindowCut::fixed(7)).len(), 14);
        assert_eq!(cuts(&paths[..3], WindowCut::fixed(0)).len(), 3);
    }
}
