//! D1 `snapshots`, `snapshot_objects` and `heads`: the snapshot a head
//! names and its packs (what a restore grant covers), whether a grant covers
//! an object, and recording a committed snapshot.

use serde::Deserialize;
use stateful_ci_protocol::wire;
use stateful_ci_protocol::{Head, ObjectKey};
use stateful_ci_worker_core::auth::{RunContext, claim};
use stateful_ci_worker_core::grant::GrantClaims;
use stateful_ci_worker_core::visibility::keys_json;
use worker::*;

use super::{d1_err, db, n, s};
use crate::refusal::ApiResult;

/// The D1 row id and packs of the snapshot a head names.
pub async fn snapshot_objects(
    env: &Env,
    tenant: &str,
    workspace: &str,
    scope: &str,
    head: &Head,
) -> ApiResult<Option<(i64, Vec<ObjectKey>)>> {
    #[derive(Deserialize)]
    struct Id {
        id: i64,
    }
    #[derive(Deserialize)]
    struct Obj {
        object_key: String,
    }
    let d = db(env)?;
    let id: Option<Id> = d
        .prepare("SELECT id FROM snapshots WHERE tenant = ? AND workspace = ? AND scope = ? AND generation = ? AND manifest_key = ?")
        .bind(&[s(tenant), s(workspace), s(scope), n(head.generation as i64), s(&head.snapshot.to_string())])?
        .first(None)
        .await
        .map_err(d1_err("reading a snapshot"))?;
    let Some(Id { id }) = id else { return Ok(None) };
    let objs: Vec<Obj> = d
        .prepare("SELECT object_key FROM snapshot_objects WHERE snapshot_id = ? AND object_key LIKE 'packs/%' ORDER BY object_key")
        .bind(&[n(id)])?
        .all()
        .await
        .map_err(d1_err("reading a snapshot's objects"))?
        .results()
        .map_err(d1_err("reading a snapshot's objects"))?;
    let packs = objs
        .iter()
        .filter_map(|o| o.object_key.parse().ok())
        .collect();
    Ok(Some((id, packs)))
}

pub async fn snapshot_has_object(env: &Env, g: &GrantClaims, key: &ObjectKey) -> ApiResult<bool> {
    #[derive(Deserialize)]
    struct One {
        #[allow(dead_code)]
        one: i64,
    }
    let row: Option<One> = db(env)?
        .prepare(
            "SELECT 1 AS one FROM snapshot_objects so JOIN snapshots sn ON sn.id = so.snapshot_id
             WHERE so.snapshot_id = ? AND sn.tenant = ? AND sn.manifest_key = ? AND so.object_key = ?",
        )
        .bind(&[n(g.s), s(&g.t), s(&g.m), s(&key.to_string())])?
        .first(None)
        .await
        .map_err(d1_err("checking a grant"))?;
    Ok(row.is_some())
}

/// Writes the snapshot row, its objects and the head mirror in one batch
/// (idempotent: a replayed commit re-runs it harmlessly). `objects` are the
/// snapshot's objects, already checked visible; their sizes come from the
/// `objects` rows written at upload.
pub async fn record_snapshot(
    env: &Env,
    ctx: &RunContext,
    body: &wire::SaveCommitRequest,
    scope: &str,
    head: &Head,
    objects: &[ObjectKey],
    stored_bytes: u64,
    now: i64,
) -> ApiResult<()> {
    let d = db(env)?;
    let c = &ctx.claims;
    let t = ctx.tenant().key();
    let generation = n(head.generation as i64);
    let manifest = head.snapshot.to_string();
    d.batch(vec![
        d.prepare(
            "INSERT OR IGNORE INTO snapshots (tenant, workspace, scope, generation, manifest_key, created_at, total_bytes, stored_bytes, entries,
               repository, workflow_ref, job_workflow_ref, git_ref, event, sha, actor, run_id, run_attempt, runner_environment, class)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&[
            s(&t),
            s(&body.workspace),
            s(scope),
            generation.clone(),
            s(&manifest),
            n(now),
            n(body.total_bytes as i64),
            n(stored_bytes as i64),
            n(body.entries as i64),
            s(&c.repository),
            s(claim(&c.workflow_ref)),
            s(claim(&c.job_workflow_ref)),
            s(claim(&c.git_ref)),
            s(&c.event_name),
            s(claim(&c.sha)),
            s(claim(&c.actor)),
            s(claim(&c.run_id)),
            s(claim(&c.run_attempt)),
            s(claim(&c.runner_environment)),
            s(ctx.class().as_str()),
        ])?,
        d.prepare(
            "INSERT OR IGNORE INTO snapshot_objects (snapshot_id, object_key, size)
             SELECT sn.id, o.object_key, o.size FROM snapshots sn JOIN objects o ON o.tenant = sn.tenant
             WHERE sn.tenant = ?1 AND sn.workspace = ?2 AND sn.scope = ?3 AND sn.generation = ?4
               AND o.object_key IN (SELECT value FROM json_each(?5))",
        )
        .bind(&[
            s(&t),
            s(&body.workspace),
            s(scope),
            generation.clone(),
            s(&keys_json(objects)),
        ])?,
        d.prepare(
            "INSERT INTO heads (tenant, workspace, scope, manifest_key, generation, updated_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, workspace, scope) DO UPDATE SET manifest_key = excluded.manifest_key,
               generation = excluded.generation, updated_at = excluded.updated_at
             WHERE excluded.generation > heads.generation",
        )
        .bind(&[s(&t), s(&body.workspace), s(scope), s(&manifest), generation, n(now)])?,
    ])
    .await
    .map_err(d1_err("recording the snapshot"))?;
    Ok(())
}
