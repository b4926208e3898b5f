//! Types shared by everything that reads or writes stateful-ci snapshots: the
//! CLI's runtime (native) and the Worker (wasm32).
//!
//! This crate owns the *shape* of the data: object keys, blob ids, the
//! snapshot manifest, scope heads and the limits that every reader enforces.
//! It must stay free of I/O, async runtimes and HTTP clients so that it
//! compiles unchanged for `wasm32-unknown-unknown`. Behaviour (chunking,
//! packing, restoring) lives in `stateful-ci-runtime`; the byte-level format
//! is described in `FORMAT.md` at the repository root.

pub mod format;
pub mod limits;
pub mod path;
pub mod wire;

pub use format::{
    BlobId, BlobRef, Codec, Entry, EntryChecker, EntryKeys, EntryKind, FORMAT_VERSION, Frame, Head,
    Manifest, ManifestError, ObjectHash, ObjectKey, ObjectKind, Piece, PieceFrame, PieceRef,
};
