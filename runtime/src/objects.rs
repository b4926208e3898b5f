//! Encoding and verified decoding of stored objects: manifests and the blobs
//! inside packs. Everything read from a store passes through here, and
//! nothing leaves here unverified.

use std::cell::RefCell;

use stateful_ci_protocol::limits::{MAX_MANIFEST_RAW, MAX_MANIFEST_STORED};
use stateful_ci_protocol::{BlobCodec, BlobId, BlobLocation, Manifest, ObjectKey, ObjectKind};

use crate::error::{Error, Result};
use crate::store::Store;

/// Compress `data` for a pack, or keep it raw when compression does not
/// pay. Reuses one zstd context per thread.
pub fn compress_blob(data: &[u8], level: i32) -> (BlobCodec, Vec<u8>) {
    thread_local! {
        static CTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    }
    if data.len() < 64 || looks_incompressible(data) {
        return (BlobCodec::Raw, data.to_vec());
    }
    let compressed = CTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((
                level,
                zstd::bulk::Compressor::new(level).expect("zstd level is valid"),
            ));
        }
        c.as_mut().unwrap().1.compress(data).ok()
    });
    match compressed {
        Some(z) if z.len() + z.len() / 32 < data.len() => (BlobCodec::Zstd, z),
        _ => (BlobCodec::Raw, data.to_vec()),
    }
}

/// For large blobs, compress a sample first: already-compressed or random
/// data (archives, images, compiled artefacts) is common in build outputs,
/// and trying to compress all of it costs more than the rest of a save.
fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 16 * 1024;
    if data.len() < 4 * SAMPLE {
        return false;
    }
    // Start, middle and end must all be incompressible.
    [0, data.len() / 2 - SAMPLE / 2, data.len() - SAMPLE]
        .iter()
        .all(|&at| {
            let sample = &data[at..at + SAMPLE];
            zstd::bulk::compress(sample, 1).is_ok_and(|z| z.len() > SAMPLE * 97 / 100)
        })
}

/// Decode one blob's stored bytes and check them against its id. The output
/// is never larger than the location's `raw_len`.
pub fn decode_blob(loc: &BlobLocation, stored: &[u8]) -> Result<Vec<u8>> {
    if stored.len() as u64 != loc.length {
        return Err(Error::corrupt(format!(
            "blob {} is truncated in its pack",
            loc.id
        )));
    }
    let data = match loc.codec {
        BlobCodec::Raw => stored.to_vec(),
        BlobCodec::Zstd => {
            thread_local! {
                static DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
            }
            DCTX.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new().expect("zstd context"));
                }
                d.as_mut().unwrap().decompress(stored, loc.raw_len as usize)
            })
            .map_err(|e| Error::corrupt(format!("blob {} does not decompress: {e}", loc.id)))?
        }
    };
    if data.len() as u64 != loc.raw_len || BlobId::of(&data) != loc.id {
        return Err(Error::corrupt(format!(
            "blob {} does not match its hash",
            loc.id
        )));
    }
    Ok(data)
}

/// Serialise and compress a manifest; returns its key and stored bytes.
pub fn encode_manifest(m: &Manifest) -> (ObjectKey, Vec<u8>) {
    let json = m.to_json();
    let bytes = zstd::bulk::compress(&json, 3).expect("zstd compresses in memory");
    (ObjectKey::for_bytes(ObjectKind::Manifest, &bytes), bytes)
}

/// Fetch, verify and parse a manifest.
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
        return Err(Error::corrupt(format!(
            "manifest {key} does not match its hash (damaged store)"
        )));
    }
    let mut json = Vec::new();
    let mut dec = zstd::stream::read::Decoder::new(&bytes[..])
        .map_err(|e| Error::corrupt(format!("manifest {key}: {e}")))?;
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut dec, MAX_MANIFEST_RAW + 1),
        &mut json,
    )
    .map_err(|e| Error::corrupt(format!("manifest {key} does not decompress: {e}")))?;
    Manifest::from_json(&json).map_err(|e| Error::corrupt(format!("manifest {key}: {e}")))
}
