//! D1 `objects` and `object_uploads`: object visibility (rules in
//! `stateful_ci_worker_core::visibility`): which of a list of keys a run may
//! name, and recording an upload for a scope (a committed snapshot's objects
//! are recorded by [`super::snapshots::record_snapshot`]). Each is one D1 query or one
//! batch, whatever the number of keys (the list is one JSON parameter,
//! expanded with SQLite's `json_each`), so a prepare or commit of 1,000 keys
//! costs the Worker about as much CPU as one of a single key.

use std::collections::HashMap;

use serde::Deserialize;
use stateful_ci_protocol::ObjectKey;
use stateful_ci_worker_core::visibility::{Sight, keys_json};
use worker::*;

use super::{d1_err, db, n, s};
use crate::refusal::ApiResult;

/// The keys among `keys` that are visible to a run with `sight`, with their
/// stored sizes. Keys not in the answer are "missing" for this run.
pub async fn visible(
    env: &Env,
    tenant: &str,
    sight: &Sight,
    keys: &[ObjectKey],
) -> ApiResult<HashMap<ObjectKey, u64>> {
    #[derive(Deserialize)]
    struct Row {
        k: String,
        size: f64,
    }
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<Row> = db(env)?
        .prepare(
            "SELECT o.object_key AS k, o.size AS size FROM objects o
             WHERE o.tenant = ?1 AND o.object_key IN (SELECT value FROM json_each(?2))
               AND (EXISTS (SELECT 1 FROM object_uploads u
                            WHERE u.tenant = ?1 AND u.object_key = o.object_key AND u.scope = ?3)
                    OR EXISTS (SELECT 1 FROM snapshot_objects so JOIN snapshots sn ON sn.id = so.snapshot_id
                               WHERE so.object_key = o.object_key AND sn.tenant = ?1
                                 AND sn.scope IN (SELECT value FROM json_each(?4))))",
        )
        .bind(&[
            s(tenant),
            s(&keys_json(keys)),
            // No save scope: no upload row has an empty scope.
            s(sight.upload_scope.as_deref().unwrap_or("")),
            s(&sight.snapshot_scopes_json()),
        ])?
        .all()
        .await
        .map_err(d1_err("checking which objects are stored"))?
        .results()
        .map_err(d1_err("checking which objects are stored"))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.k.parse().ok()?, r.size as u64)))
        .collect())
}

/// Records that `key` (`size` bytes, just verified and stored by R2) was
/// uploaded for `scope`. `created_at` moves to now, so a sweep of old
/// unreferenced uploads does not take an object a run has just sent again.
pub async fn record_upload(
    env: &Env,
    tenant: &str,
    scope: &str,
    key: &ObjectKey,
    size: u64,
    now: i64,
) -> ApiResult<()> {
    let d = db(env)?;
    let k = key.to_string();
    d.batch(vec![
        d.prepare(
            "INSERT INTO objects (tenant, object_key, size, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, object_key) DO UPDATE SET size = excluded.size, created_at = excluded.created_at",
        )
        .bind(&[s(tenant), s(&k), n(size as i64), n(now)])?,
        d.prepare(
            "INSERT INTO object_uploads (tenant, object_key, scope, uploaded_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, object_key, scope) DO UPDATE SET uploaded_at = excluded.uploaded_at",
        )
        .bind(&[s(tenant), s(&k), s(scope), n(now)])?,
    ])
    .await
    .map_err(d1_err("recording the upload"))?;
    Ok(())
}
