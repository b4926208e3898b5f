//! Which stored objects a run may name (issue 10 item 5), and the checks on
//! the object lists of `save/prepare` and `save/commit`.
//!
//! Objects are stored once per repository, but a run must not gain anything
//! by learning a key: `save/prepare` reports as present, and `save/commit`
//! accepts, only objects that are *visible* to the run. An object is visible
//! when it is stored and either
//! - it was uploaded for the run's save scope (by this run or an earlier run
//!   of the same scope: R2 verified that the uploader had exactly those
//!   bytes, since the key is their SHA-256), or
//! - a committed snapshot in a scope the run may restore (or save to) lists
//!   it, so the run can already read it through a restore grant.
//!
//! Anything else is "missing" for that run: it must upload the bytes itself,
//! which proves it has them. A pull-request run that learns a pack key of
//! another scope therefore can neither commit it into its own scope nor read
//! it through that scope's grant.
//!
//! The Worker answers these questions with one D1 query per request (the key
//! list travels as one JSON parameter and is expanded with `json_each`); this
//! module builds the parameters and checks the lists, without I/O.

use std::collections::BTreeSet;

use stateful_ci_protocol::wire::{ErrorCode, MAX_KEYS_PER_REQUEST};
use stateful_ci_protocol::{ObjectKey, ObjectKind};

use crate::auth::{RunContext, Scope};

/// The scopes that make an object visible to one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sight {
    /// Uploads recorded for this scope count (the run's save scope; `None`
    /// for a run that may not save).
    pub upload_scope: Option<String>,
    /// Snapshots in these scopes count: the run's restore scopes and its save
    /// scope, without duplicates.
    pub snapshot_scopes: Vec<String>,
}

impl Sight {
    pub fn of(ctx: &RunContext) -> Sight {
        Sight::new(ctx.restore_scopes(), ctx.save_scope())
    }

    /// The sight of a run with these restore scopes and save scope.
    pub fn new(restore: &[Scope], save: Option<&Scope>) -> Sight {
        let mut snapshot_scopes: Vec<String> = restore.iter().map(|s| s.to_string()).collect();
        let upload_scope = save.map(|s| s.to_string());
        if let Some(s) = &upload_scope
            && !snapshot_scopes.contains(s)
        {
            snapshot_scopes.push(s.clone());
        }
        Sight {
            upload_scope,
            snapshot_scopes,
        }
    }

    /// `snapshot_scopes` as a JSON array (one D1 parameter).
    pub fn snapshot_scopes_json(&self) -> String {
        serde_json::to_string(&self.snapshot_scopes).expect("strings serialise")
    }
}

/// Keys as a JSON array of strings (one D1 parameter for `json_each`).
pub fn keys_json<'a>(keys: impl IntoIterator<Item = &'a ObjectKey>) -> String {
    let keys: Vec<String> = keys.into_iter().map(|k| k.to_string()).collect();
    serde_json::to_string(&keys).expect("strings serialise")
}

/// The lowercase hex hash a key names (what R2's `sha256` option takes).
pub fn key_hex(key: &ObjectKey) -> String {
    let s = key.to_string();
    match s.split_once('/') {
        Some((_, hex)) => hex.to_string(),
        None => s,
    }
}

/// The 32 bytes of the SHA-256 a key names.
pub fn key_sha256(key: &ObjectKey) -> Vec<u8> {
    let hex = key_hex(key);
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// A refused object list: the error code and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    pub code: ErrorCode,
    pub message: String,
}

fn too_many(n: usize) -> ListError {
    ListError {
        code: ErrorCode::TooLarge,
        message: format!(
            "{n} object keys listed; at most {MAX_KEYS_PER_REQUEST} per request (a snapshot references at most {MAX_KEYS_PER_REQUEST} objects, its manifest included)"
        ),
    }
}

/// The distinct keys of a `save/prepare`, sorted; at most
/// [`MAX_KEYS_PER_REQUEST`] listed.
pub fn prepare_objects(keys: &[ObjectKey]) -> Result<Vec<ObjectKey>, ListError> {
    if keys.len() > MAX_KEYS_PER_REQUEST {
        return Err(too_many(keys.len()));
    }
    let set: BTreeSet<ObjectKey> = keys.iter().copied().collect();
    Ok(set.into_iter().collect())
}

/// Every object a commit names (the root manifest and the packs), distinct
/// and sorted. The manifest must be a `manifests/` key, the others `packs/`
/// keys, and the whole list at most [`MAX_KEYS_PER_REQUEST`] long: a
/// snapshot never references more (the client repacks before it would).
pub fn commit_objects(
    manifest: ObjectKey,
    packs: &[ObjectKey],
) -> Result<Vec<ObjectKey>, ListError> {
    if packs.len() + 1 > MAX_KEYS_PER_REQUEST {
        return Err(too_many(packs.len() + 1));
    }
    if manifest.kind != ObjectKind::Manifest || packs.iter().any(|p| p.kind != ObjectKind::Pack) {
        return Err(ListError {
            code: ErrorCode::BadRequest,
            message: "manifest must be a manifests/ key and packs must be packs/ keys".into(),
        });
    }
    let mut set: BTreeSet<ObjectKey> = packs.iter().copied().collect();
    set.insert(manifest);
    Ok(set.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: ObjectKind, n: u8) -> ObjectKey {
        format!("{}{}", kind.prefix(), format!("{n:02x}").repeat(32))
            .parse()
            .unwrap()
    }

    #[test]
    fn commit_lists_are_capped_typed_and_deduplicated() {
        let m = key(ObjectKind::Manifest, 1);
        let p = key(ObjectKind::Pack, 2);
        assert_eq!(commit_objects(m, &[p, p]).unwrap(), vec![p, m]);
        let packs: Vec<ObjectKey> = (0..MAX_KEYS_PER_REQUEST - 1)
            .map(|i| {
                format!("packs/{:064x}", i + 1)
                    .parse::<ObjectKey>()
                    .unwrap()
            })
            .collect();
        assert!(
            commit_objects(m, &packs).is_ok(),
            "999 packs + the manifest fit"
        );
        let mut more = packs.clone();
        more.push(p);
        let e = commit_objects(m, &more).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert!(e.message.contains("1001"), "{}", e.message);
        assert_eq!(
            commit_objects(p, &[]).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            commit_objects(m, &[m]).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn prepare_lists_are_capped() {
        let k = key(ObjectKind::Pack, 3);
        assert_eq!(prepare_objects(&[k, k]).unwrap(), vec![k]);
        let many = vec![k; MAX_KEYS_PER_REQUEST + 1];
        assert_eq!(
            prepare_objects(&many).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    fn sight(restore: &[&str], save: Option<&str>) -> Sight {
        let restore: Vec<Scope> = restore.iter().map(|s| s.parse().unwrap()).collect();
        let save: Option<Scope> = save.map(|s| s.parse().unwrap());
        Sight::new(&restore, save.as_ref())
    }

    #[test]
    fn a_run_sees_its_own_uploads_and_the_snapshots_it_may_read() {
        let pr = sight(&["pr:9", "branch:refs/heads/main"], Some("pr:9"));
        assert_eq!(pr.upload_scope.as_deref(), Some("pr:9"));
        assert_eq!(pr.snapshot_scopes, vec!["pr:9", "branch:refs/heads/main"]);
        // A save scope that is not among the restore scopes still counts.
        let odd = sight(&["branch:refs/heads/main"], Some("branch:refs/heads/x"));
        assert_eq!(
            odd.snapshot_scopes,
            vec!["branch:refs/heads/main", "branch:refs/heads/x"]
        );
        // A run that may not save sees no uploads at all.
        let release = sight(&["branch:refs/heads/main"], None);
        assert_eq!(release.upload_scope, None);
        assert_eq!(release.snapshot_scopes, vec!["branch:refs/heads/main"]);
    }

    #[test]
    fn parameters_are_json_arrays_and_hex() {
        let k = key(ObjectKind::Pack, 0xab);
        assert_eq!(keys_json([&k]), format!("[\"packs/{}\"]", "ab".repeat(32)));
        assert_eq!(key_hex(&k), "ab".repeat(32));
        assert_eq!(key_sha256(&k), vec![0xab; 32]);
        let s = Sight {
            upload_scope: Some("pr:9".into()),
            snapshot_scopes: vec!["pr:9".into(), "branch:refs/heads/main".into()],
        };
        assert_eq!(
            s.snapshot_scopes_json(),
            r#"["pr:9","branch:refs/heads/main"]"#
        );
    }
}
