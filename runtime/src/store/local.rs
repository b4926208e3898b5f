//! A store in a local directory, laid out exactly like the R2 bucket:
//!
//! ```text
//! DIR/STATEFUL-CI-STORE      marker with the format version
//! DIR/packs/<hash>           pack objects
//! DIR/manifests/<hash>       manifest objects
//! DIR/heads/<scope>.json     {"snapshot": "manifests/<hash>", "generation": N}
//! DIR/tmp/                   objects being written
//! ```
//!
//! Objects are written to `tmp/`, then renamed into place, so a
//! reader (or a killed writer) never sees a partial object. Heads move under
//! an exclusive `flock` so concurrent savers on one machine serialise.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use stateful_ci_protocol::{FORMAT_VERSION, Head, ObjectKey};

use super::{CasOutcome, Commit, RestorePoint, Store};
use crate::error::{Error, Result};

const MARKER: &str = "STATEFUL-CI-STORE";

pub struct LocalStore {
    root: PathBuf,
    scope: String,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// Open (creating if needed) the store at `root`, for `scope`.
    /// Refuses a non-empty directory that is not a store, so a typo in
    /// `--store` cannot scatter files into an unrelated folder.
    pub fn open(root: &Path, scope: &str) -> Result<Self> {
        let marker = root.join(MARKER);
        if let Ok(text) = fs::read_to_string(&marker) {
            let version = text
                .trim()
                .rsplit_once("format ")
                .and_then(|(_, v)| v.parse::<u32>().ok());
            if version != Some(FORMAT_VERSION) {
                let found = version.map_or("an unknown format".to_string(), |v| {
                    format!("format version {v}")
                });
                return Err(Error::user(
                    format!(
                        "{} is a stateful-ci store in {found}; this build reads and writes format version {FORMAT_VERSION} only",
                        root.display()
                    ),
                    "pass a new, empty directory to --store (format 1 stores are not migrated: FORMAT.md explains why), or use the stateful-ci release that wrote it",
                ));
            }
        }
        if !marker.exists() {
            let non_empty = fs::read_dir(root)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if non_empty {
                return Err(Error::user(
                    format!(
                        "{} is not empty and is not a stateful-ci store",
                        root.display()
                    ),
                    "pass an empty or new directory to --store",
                ));
            }
            fs::create_dir_all(root)
                .map_err(|e| store_io("create the store directory", root, e))?;
            write_atomic(
                root,
                &marker,
                format!("stateful-ci store, format {FORMAT_VERSION}\n").as_bytes(),
                false,
            )?;
        }
        for d in ["packs", "manifests", "heads", "tmp"] {
            fs::create_dir_all(root.join(d)).map_err(|e| store_io("create", &root.join(d), e))?;
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
            scope: scope.to_string(),
        })
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        // The key is `packs/<hex>` or `manifests/<hex>`: validated by
        // construction, so it cannot escape the root.
        self.root.join(key.to_string())
    }

    fn head_path(&self) -> PathBuf {
        self.root
            .join("heads")
            .join(format!("{}.json", encode_scope(&self.scope)))
    }

    fn read_head(&self) -> Result<Option<Head>> {
        let p = self.head_path();
        match fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::corrupt(format!("head file {} is damaged: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_io("read", &p, e)),
        }
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        // The directory itself, however `--store` spelled it (relative,
        // absolute, through a symlink): the stat index trusts what a
        // restore recorded only for the same store, so a save given
        // another spelling of it would otherwise read every file again.
        let root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("local store {}", root.display())
    }

    fn restore_point(&self) -> Result<Option<RestorePoint>> {
        Ok(self.read_head()?.map(|head| RestorePoint {
            head,
            scope: self.scope.clone(),
            trust: None,
        }))
    }

    fn save_head(&self) -> Result<Option<Head>> {
        self.read_head()
    }

    fn missing(&self, keys: &[ObjectKey]) -> Result<HashSet<ObjectKey>> {
        Ok(keys
            .iter()
            .filter(|k| !self.object_path(k).exists())
            .copied()
            .collect())
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<()> {
        let dest = self.object_path(key);
        if dest.exists() {
            return Ok(());
        }
        // Not synced: a power loss can at worst leave an object that fails
        // verification, which readers treat as a miss. The head is synced.
        write_atomic(&self.root, &dest, bytes, false)
    }

    fn get_into(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let p = self.object_path(key);
        let mut f = File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::corrupt(format!("object {key} is missing from {}", self.describe()))
            } else {
                store_io("open", &p, e)
            }
        })?;
        buf.clear();
        match range {
            None => {
                f.read_to_end(buf).map_err(|e| store_io("read", &p, e))?;
            }
            Some(r) => {
                let len = r
                    .end
                    .checked_sub(r.start)
                    .ok_or_else(|| Error::corrupt("inverted byte range"))?;
                f.seek(SeekFrom::Start(r.start))
                    .map_err(|e| store_io("seek", &p, e))?;
                // Exactly: a reused buffer grown by doubling held up to
                // twice the largest range for the rest of a restore.
                buf.reserve_exact(len as usize);
                buf.resize(len as usize, 0);
                f.read_exact(buf).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        Error::corrupt(format!("object {key} is shorter than its index says"))
                    } else {
                        store_io("read", &p, e)
                    }
                })?;
            }
        }
        Ok(())
    }

    fn commit(&self, commit: &Commit) -> Result<CasOutcome> {
        let (expected, snapshot) = (commit.expected, &commit.snapshot);
        if !self.object_path(snapshot).exists() {
            return Err(Error::corrupt(format!(
                "refusing to point the head at {snapshot}: it is not in the store"
            )));
        }
        let lock_path = self
            .root
            .join("heads")
            .join(format!("{}.lock", encode_scope(&self.scope)));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| store_io("open", &lock_path, e))?;
        // Released on close.
        crate::fsat::lock_exclusive(&lock).map_err(|e| store_io("lock", &lock_path, e))?;
        let current = self.read_head()?;
        let current_gen = current.as_ref().map_or(0, |h| h.generation);
        if let Some(h) = &current {
            if h.snapshot == *snapshot {
                // A repeated commit of the same snapshot returns the first result.
                return Ok(CasOutcome::Updated(h.clone()));
            }
        }
        if current_gen != expected {
            return Ok(CasOutcome::Conflict(current));
        }
        let head = Head {
            snapshot: *snapshot,
            generation: expected + 1,
        };
        let bytes = serde_json::to_vec(&head).expect("head serialises");
        write_atomic(&self.root, &self.head_path(), &bytes, true)?;
        drop(lock);
        Ok(CasOutcome::Updated(head))
    }
}

/// Write `bytes` to `dest` through a temporary file in `root/tmp`.
fn write_atomic(root: &Path, dest: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let tmp_dir = root.join("tmp");
    fs::create_dir_all(&tmp_dir).map_err(|e| store_io("create", &tmp_dir, e))?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("{}-{}-{n}", std::process::id(), nanos()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        fs::rename(&tmp, dest)?;
        if sync {
            if let Some(parent) = dest.parent() {
                crate::fsat::sync_dir(parent)?;
            }
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = fs::remove_file(&tmp);
        store_io("write", dest, e)
    })
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn store_io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::store(format!("cannot {what} {}: {e}", path.display()))
}

/// File-name-safe form of a scope name.
/// The inverse of [`encode_scope`] (lenient: a malformed escape is kept as is).
fn decode_scope(name: &str) -> String {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) if b[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One scope of a store, as [`LocalStore::inspect`] finds it.
#[derive(Debug, Clone)]
pub struct ScopeHead {
    pub scope: String,
    /// The head, or why its file could not be read.
    pub head: std::result::Result<Head, String>,
}

/// What a store directory holds, read without creating or changing anything.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// Every scope with a head, sorted by scope.
    pub scopes: Vec<ScopeHead>,
    /// Bytes of every object in the store (shared objects counted once).
    pub unique_bytes: u64,
}

impl LocalStore {
    /// Describe the store at `root` for `status`: the heads of every scope
    /// and the bytes it holds. Creates and changes nothing; an error (with
    /// a hint) when `root` is not a store of this format.
    pub fn inspect(root: &Path) -> Result<Inspection> {
        let store = LocalStore::open_existing(root, "")?;
        let mut scopes: Vec<ScopeHead> = fs::read_dir(root.join("heads"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                        let head =
                            fs::read(e.path())
                                .map_err(|err| err.to_string())
                                .and_then(|b| {
                                    serde_json::from_slice(&b).map_err(|err| err.to_string())
                                });
                        Some(ScopeHead {
                            scope: decode_scope(&name),
                            head,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        scopes.sort_by(|a, b| a.scope.cmp(&b.scope));
        let dir_bytes = |d: &str| -> u64 {
            fs::read_dir(store.root.join(d))
                .map(|d| {
                    d.filter_map(|e| e.ok()?.metadata().ok())
                        .filter(|m| m.is_file())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0)
        };
        Ok(Inspection {
            scopes,
            unique_bytes: dir_bytes("packs") + dir_bytes("manifests"),
        })
    }

    /// Open an existing store for reading, creating nothing.
    pub fn open_existing(root: &Path, scope: &str) -> Result<Self> {
        if !root.join(MARKER).exists() {
            return Err(Error::user(
                format!(
                    "{} is not a stateful-ci store (no {MARKER} marker)",
                    root.display()
                ),
                "pass the directory given to `save --store`",
            ));
        }
        // The marker's version is checked the same way as on open.
        LocalStore::open(root, scope)
    }

    /// The stored size of an object, if the store has it.
    pub fn object_len(&self, key: &ObjectKey) -> Option<u64> {
        fs::metadata(self.object_path(key)).ok().map(|m| m.len())
    }
}

fn encode_scope(scope: &str) -> String {
    let mut out = String::with_capacity(scope.len());
    for b in scope.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateful_ci_protocol::ObjectKind;

    #[test]
    fn a_pack_written_is_given_back_to_fill_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "default").unwrap();
        let spare = crate::store::Spare::default();
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(b"a pack");
        let key = ObjectKey::for_bytes(ObjectKind::Pack, &buf);
        store.put_owned(&key, buf, &spare).unwrap();
        assert_eq!(store.get(&key, None).unwrap(), b"a pack");
        let back = spare.take().expect("given back");
        assert!(back.is_empty() && back.capacity() >= 4096);
    }

    #[test]
    fn scope_names_round_trip_through_file_names() {
        for scope in [
            "default",
            "branch:refs/heads/main",
            "pr:42",
            "caf\u{e9} x/%",
        ] {
            assert_eq!(decode_scope(&encode_scope(scope)), scope);
        }
    }

    #[test]
    fn inspect_lists_scopes_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_store = dir.path().join("empty");
        fs::create_dir(&not_a_store).unwrap();
        let err = LocalStore::inspect(&not_a_store).unwrap_err();
        assert!(
            err.message.contains("not a stateful-ci store"),
            "{}",
            err.message
        );
        assert_eq!(
            fs::read_dir(&not_a_store).unwrap().count(),
            0,
            "inspect created files"
        );

        let root = dir.path().join("store");
        let s = LocalStore::open(&root, "branch:refs/heads/main").unwrap();
        let key = ObjectKey::for_bytes(ObjectKind::Manifest, b"m");
        s.put(&key, b"m").unwrap();
        assert!(matches!(cas(&s, 0, &key).unwrap(), CasOutcome::Updated(_)));
        let seen = LocalStore::inspect(&root).unwrap();
        assert_eq!(seen.scopes.len(), 1);
        assert_eq!(seen.scopes[0].scope, "branch:refs/heads/main");
        assert_eq!(seen.scopes[0].head.as_ref().unwrap().snapshot, key);
        assert_eq!(seen.unique_bytes, 1);
        assert_eq!(s.object_len(&key), Some(1));
    }

    fn cas(s: &LocalStore, expected: u64, snapshot: &ObjectKey) -> Result<CasOutcome> {
        s.commit(&Commit {
            expected,
            snapshot: *snapshot,
            packs: vec![],
            idempotency_key: snapshot.hash.to_hex(),
            total_bytes: 0,
            entries: 0,
            files: 0,
            stored_bytes: 0,
        })
    }

    #[test]
    fn put_get_range_missing_and_cas() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(&dir.path().join("s"), "branch:refs/heads/main").unwrap();
        let k = ObjectKey::for_bytes(ObjectKind::Manifest, b"hello world");
        assert_eq!(s.missing(&[k]).unwrap().len(), 1);
        s.put(&k, b"hello world").unwrap();
        s.put(&k, b"hello world").unwrap();
        assert!(s.missing(&[k]).unwrap().is_empty());
        assert_eq!(s.get(&k, Some(6..11)).unwrap(), b"world");
        assert!(s.get(&k, Some(6..20)).is_err());
        assert_eq!(s.save_head().unwrap(), None);
        let h1 = match cas(&s, 0, &k).unwrap() {
            CasOutcome::Updated(h) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(h1.generation, 1);
        let k2 = ObjectKey::for_bytes(ObjectKind::Manifest, b"second");
        s.put(&k2, b"second").unwrap();
        assert_eq!(
            cas(&s, 0, &k2).unwrap(),
            CasOutcome::Conflict(Some(h1.clone()))
        );
        assert!(matches!(
            cas(&s, 1, &k2).unwrap(),
            CasOutcome::Updated(Head { generation: 2, .. })
        ));
        let missing = ObjectKey::for_bytes(ObjectKind::Manifest, b"absent");
        assert!(cas(&s, 2, &missing).is_err());
    }

    #[test]
    fn refuses_a_format_1_store_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MARKER), "stateful-ci store, format 1\n").unwrap();
        let err = LocalStore::open(dir.path(), "s").err().unwrap();
        assert!(
            err.message.contains("format version 1") && err.message.contains("format version 2"),
            "{}",
            err.message
        );
    }

    #[test]
    fn refuses_a_directory_that_is_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), "x").unwrap();
        let err = LocalStore::open(dir.path(), "s").err().unwrap();
        assert!(err.message.contains("not a stateful-ci store"));
    }

    /// The stat index keys what it knows by this description: two
    /// spellings of one store must give the same one.
    #[cfg(unix)]
    #[test]
    fn one_store_is_described_alike_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("store");
        let plain = LocalStore::open(&real, "s").unwrap().describe();
        let dotted = LocalStore::open(&dir.path().join(".").join("store"), "s").unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let linked = LocalStore::open(&dir.path().join("link"), "s").unwrap();
        assert_eq!(dotted.describe(), plain);
        assert_eq!(linked.describe(), plain);
        let other = LocalStore::open(&dir.path().join("other"), "s").unwrap();
        assert_ne!(other.describe(), plain);
    }
}
