//! The D1 queries behind `GET /v1/admin/{runs,snapshots,decisions,sizes}`.

use serde::Deserialize;
use stateful_ci_protocol::wire;
use worker::*;

use super::{d1_err, db, n};
use crate::refusal::ApiResult;

async fn rows<T: serde::de::DeserializeOwned>(
    env: &Env,
    sql: &str,
    limit: u32,
) -> ApiResult<Vec<T>> {
    db(env)?
        .prepare(sql)
        .bind(&[n(i64::from(limit))])?
        .all()
        .await
        .map_err(d1_err("admin query"))?
        .results()
        .map_err(d1_err("admin query"))
}

pub async fn runs(env: &Env, limit: u32) -> ApiResult<wire::AdminRunsResponse> {
    let runs = rows(
        env,
        "SELECT repository, run_id, run_attempt, workflow_ref, git_ref, event, actor, class, first_seen, last_seen
         FROM runs ORDER BY last_seen DESC, id DESC LIMIT ?",
        limit,
    )
    .await?;
    Ok(wire::AdminRunsResponse { runs })
}

pub async fn snapshots(env: &Env, limit: u32) -> ApiResult<wire::AdminSnapshotsResponse> {
    let snapshots = rows(
        env,
        "SELECT repository, workspace, scope, manifest_key AS manifest, generation, created_at, total_bytes, stored_bytes, entries,
                workflow_ref, job_workflow_ref, git_ref, event, sha, actor, run_id, runner_environment, class
         FROM snapshots ORDER BY created_at DESC, id DESC LIMIT ?",
        limit,
    )
    .await?;
    Ok(wire::AdminSnapshotsResponse { snapshots })
}

pub async fn decisions(env: &Env, limit: u32) -> ApiResult<wire::AdminDecisionsResponse> {
    #[derive(Deserialize)]
    struct Row {
        at: i64,
        route: String,
        repository: String,
        run_id: String,
        class: String,
        allowed: i64,
        reason: String,
        scope: String,
        detail: String,
    }
    let r: Vec<Row> = rows(env, "SELECT at, route, repository, run_id, class, allowed, reason, scope, detail FROM decisions ORDER BY id DESC LIMIT ?", limit).await?;
    Ok(wire::AdminDecisionsResponse {
        decisions: r
            .into_iter()
            .map(|r| wire::AdminDecision {
                at: r.at,
                route: r.route,
                repository: r.repository,
                run_id: r.run_id,
                class: r.class,
                allowed: r.allowed != 0,
                reason: r.reason,
                scope: r.scope,
                detail: r.detail,
            })
            .collect(),
    })
}

pub async fn sizes(env: &Env, limit: u32) -> ApiResult<wire::AdminSizesResponse> {
    #[derive(Deserialize)]
    struct Total {
        total: i64,
    }
    let scopes = rows(
        env,
        "SELECT sn.repository AS repository, sn.workspace AS workspace, sn.scope AS scope, COUNT(DISTINCT sn.id) AS snapshots,
                COALESCE(MAX(h.generation), 0) AS head_generation,
                (SELECT COALESCE(SUM(o.size), 0) FROM objects o WHERE o.tenant = sn.tenant AND o.object_key IN (
                   SELECT so.object_key FROM snapshot_objects so JOIN snapshots s2 ON s2.id = so.snapshot_id
                   WHERE s2.tenant = sn.tenant AND s2.workspace = sn.workspace AND s2.scope = sn.scope)) AS stored_bytes
         FROM snapshots sn LEFT JOIN heads h ON h.tenant = sn.tenant AND h.workspace = sn.workspace AND h.scope = sn.scope
         GROUP BY sn.tenant, sn.workspace, sn.scope ORDER BY stored_bytes DESC LIMIT ?",
        limit,
    )
    .await?;
    let total: Option<Total> = db(env)?
        .prepare("SELECT COALESCE(SUM(size), 0) AS total FROM objects")
        .first(None)
        .await
        .map_err(d1_err("admin query"))?;
    Ok(wire::AdminSizesResponse {
        scopes,
        total_object_bytes: total.map_or(0, |t| t.total as u64),
    })
}
