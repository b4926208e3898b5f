//! What the Worker reads from a stored manifest (zstd-compressed JSON, see
//! `FORMAT.md`): its format version and the packs it lists. A commit is
//! accepted only when the packs it names are exactly the manifest's, so a
//! restore grant covers what the snapshot really uses and nothing a client
//! merely claimed. Decompression streams and is capped, and reading stops as
//! soon as `version` and `packs` are known (the runtime writes them before
//! the blob locations and entries).

use std::collections::BTreeSet;
use std::io::Read;

use std::cell::RefCell;

use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use stateful_ci_protocol::{FORMAT_VERSION, ObjectKey, ObjectKind};

/// The largest stored manifest the Worker reads (Worker memory is 128 MB).
pub const MAX_STORED: u64 = 32 * 1024 * 1024;
/// The most decompressed bytes the Worker reads from one manifest.
pub const MAX_RAW: u64 = 256 * 1024 * 1024;

/// What a commit needs from the manifest.
#[derive(Default)]
struct Wanted {
    version: Option<u32>,
    packs: Option<Vec<ObjectKey>>,
}

/// Marks "stopped early on purpose" in the error channel.
const STOP: &str = "stateful-ci: stop reading, the fields are found";

/// Reads the top-level object field by field and stops as soon as `version`
/// and `packs` are known (writers put them before the large `blobs` and
/// `entries`), so the rest of the manifest is neither decompressed nor parsed.
struct Fields<'a>(&'a RefCell<Wanted>);

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a manifest object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let mut w = self.0.borrow_mut();
            match key.as_str() {
                "version" => w.version = Some(map.next_value()?),
                "packs" => w.packs = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if w.version.is_some() && w.packs.is_some() {
                return Err(A::Error::custom(STOP));
            }
        }
        Ok(())
    }
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
    let wanted = RefCell::new(Wanted::default());
    let mut de = serde_json::Deserializer::from_reader(reader);
    if let Err(e) = Fields(&wanted).deserialize(&mut de) {
        if !e.to_string().starts_with(STOP) {
            return Err(format!(
                "the manifest does not decode as manifest JSON ({e}); upload the manifest as the runtime writes it"
            ));
        }
    }
    let w = wanted.into_inner();
    let (Some(version), Some(packs)) = (w.version, w.packs) else {
        return Err("the manifest does not decode as manifest JSON (no version or packs); upload the manifest as the runtime writes it".into());
    };
    if version != FORMAT_VERSION {
        return Err(format!(
            "the manifest has format version {version}, this Worker reads version {FORMAT_VERSION}; upgrade the backend (stateful-ci upgrade)"
        ));
    }
    if let Some(k) = packs.iter().find(|k| k.kind != ObjectKind::Pack) {
        return Err(format!("the manifest lists {k} as a pack"));
    }
    Ok(packs.into_iter().collect())
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
            json!({"version": 2, "created_at": 0, "roots": ["x"], "packs": [a, b], "blobs": [],
            "entries": [{"path": "x", "kind": "dir", "mode": 493, "mtime_ns": 0}]}),
        );
        assert_eq!(packs(&m).unwrap(), [a, b].into_iter().collect());
    }

    #[test]
    fn stops_reading_once_version_and_packs_are_known() {
        let a = pack(b"a");
        // Everything after `packs` is never parsed, so even a broken tail passes.
        let json = format!(
            r#"{{"version":2,"created_at":0,"roots":["x"],"packs":["{a}"],"frames":[ this is not json"#
        );
        let m = zstd::bulk::compress(json.as_bytes(), 3).unwrap();
        assert_eq!(packs(&m).unwrap(), [a].into_iter().collect());
        // A real manifest as the protocol crate serialises it.
        let manifest = stateful_ci_protocol::Manifest {
            version: FORMAT_VERSION,
            created_at: 1,
            parent: None,
            roots: vec!["x".into()],
            packs: vec![a],
            frames: vec![],
            pieces: vec![],
            entries: 0,
            files: 0,
            bytes: 0,
        };
        let m = zstd::bulk::compress(&manifest.to_json(), 3).unwrap();
        assert_eq!(packs(&m).unwrap(), [a].into_iter().collect());
    }

    #[test]
    fn refuses_what_is_not_a_manifest() {
        assert!(packs(b"plain bytes").unwrap_err().contains("zstd"));
        assert!(
            packs(&stored(json!({"version": 2})))
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
            packs(&stored(json!({"version": 2, "packs": [m]})))
                .unwrap_err()
                .contains("as a pack")
        );
    }
}
