//! What the Worker reads from a stored manifest (zstd-compressed JSON, see
//! `FORMAT.md`): its format version and the packs it lists. A commit is
//! accepted only when the packs it names are exactly the manifest's, so a
//! restore grant covers what the snapshot really uses and nothing a client
//! merely claimed. Decompression streams and is capped; the rest of the
//! manifest (entries, blob locations) is skipped, not kept.

use std::collections::BTreeSet;
use std::io::Read;

use serde::Deserialize;
use stateful_ci_protocol::{FORMAT_VERSION, ObjectKey, ObjectKind};

/// The largest stored manifest the Worker reads (Worker memory is 128 MB).
pub const MAX_STORED: u64 = 32 * 1024 * 1024;
/// The most decompressed bytes the Worker reads from one manifest.
pub const MAX_RAW: u64 = 256 * 1024 * 1024;

#[derive(Deserialize)]
struct Head {
    version: u32,
    packs: Vec<ObjectKey>,
}

/// The set of packs `stored` (the manifest object's bytes) lists.
pub fn packs(stored: &[u8]) -> Result<BTreeSet<ObjectKey>, String> {
    if stored.len() as u64 > MAX_STORED {
        return Err(format!(
            "the manifest is {} bytes stored; the Worker reads at most {MAX_STORED}",
            stored.len()
        ));
    }
    let decoder = ruzstd::decoding::StreamingDecoder::new(stored).map_err(|e| {
        format!(
            "the manifest is not a zstd frame ({e}); upload the manifest as the runtime writes it"
        )
    })?;
    let reader = std::io::BufReader::new(decoder.take(MAX_RAW));
    let head: Head = serde_json::from_reader(reader).map_err(|e| {
        format!("the manifest does not decode as manifest JSON ({e}); upload the manifest as the runtime writes it")
    })?;
    if head.version != FORMAT_VERSION {
        return Err(format!(
            "the manifest has format version {}, this Worker reads version {FORMAT_VERSION}; upgrade the backend (stateful-ci upgrade)",
            head.version
        ));
    }
    if let Some(k) = head.packs.iter().find(|k| k.kind != ObjectKind::Pack) {
        return Err(format!("the manifest lists {k} as a pack"));
    }
    Ok(head.packs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pack(b: &[u8]) -> ObjectKey {
        ObjectKey::for_bytes(ObjectKind::Pack, b)
    }

    fn stored(v: serde_json::Value) -> Vec<u8> {
        zstd::bulk::compress(v.to_string().as_bytes(), 3).unwrap()
    }

    #[test]
    fn reads_the_packs_of_a_manifest() {
        let (a, b) = (pack(b"a"), pack(b"b"));
        let m = stored(
            json!({"version": 1, "created_at": 0, "roots": ["x"], "packs": [a, b], "blobs": [],
            "entries": [{"path": "x", "kind": "dir", "mode": 493, "mtime_ns": 0}]}),
        );
        assert_eq!(packs(&m).unwrap(), [a, b].into_iter().collect());
    }

    #[test]
    fn refuses_what_is_not_a_manifest() {
        assert!(packs(b"plain bytes").unwrap_err().contains("zstd"));
        assert!(
            packs(&stored(json!({"version": 1})))
                .unwrap_err()
                .contains("decode")
        );
        assert!(
            packs(&stored(json!({"version": 9, "packs": []})))
                .unwrap_err()
                .contains("version 9")
        );
        let m = ObjectKey::for_bytes(ObjectKind::Manifest, b"m");
        assert!(
            packs(&stored(json!({"version": 1, "packs": [m]})))
                .unwrap_err()
                .contains("as a pack")
        );
    }
}
