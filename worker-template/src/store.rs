//! I/O against the bindings: D1 (runs, snapshots, decisions, sizes), R2
//! (objects, stored per tenant under `r/<owner_id>/<repository_id>/<key>`),
//! and the issuer's JWKS (cached per isolate). Object bytes are in
//! `objects`, object visibility and snapshot records in `visibility`,
//! retention sweeps in `retention`, refused-request counts in `denials`.

use std::cell::RefCell;

use serde::Deserialize;
use stateful_ci_protocol::wire::{self, ErrorCode};
use stateful_ci_protocol::{Head, ObjectKey};
use stateful_ci_worker_core::auth::{Jwks, RunContext, Verified, parse_jwks, should_fetch_jwks};
use stateful_ci_worker_core::config::Config;
use stateful_ci_worker_core::grant::GrantClaims;
use wasm_bindgen::JsValue;
use worker::*;

use crate::{ApiError, ApiResult};

/// D1 bind helpers shared by every module that queries D1.
pub(crate) fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

pub(crate) fn n(v: i64) -> JsValue {
    JsValue::from_f64(v as f64)
}

pub(crate) fn db(env: &Env) -> ApiResult<D1Database> {
    env.d1("DB").map_err(|e| {
        ApiError::new(
            ErrorCode::Misconfigured,
            format!("the D1 binding DB is missing ({e}); redeploy with stateful-ci deploy"),
        )
    })
}

pub(crate) fn d1_err(context: &str) -> impl Fn(worker::Error) -> ApiError + '_ {
    move |e| ApiError::internal(context, e)
}

pub fn r2_key(tenant: &str, key: &ObjectKey) -> String {
    format!("r/{tenant}/{key}")
}

// ---------------------------------------------------------------- migrations

pub async fn applied_migrations(env: &Env) -> ApiResult<Vec<String>> {
    #[derive(Deserialize)]
    struct Row {
        name: String,
    }
    let rows: Vec<Row> = db(env)?
        .prepare("SELECT name FROM d1_migrations ORDER BY id")
        .all()
        .await
        .map_err(d1_err("reading d1_migrations"))?
        .results()
        .map_err(d1_err("reading d1_migrations"))?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

// ---------------------------------------------------------------- JWKS

struct CachedJwks {
    issuer: String,
    jwks: Jwks,
    fetched_at: i64,
}

thread_local! {
    static JWKS: RefCell<Option<CachedJwks>> = const { RefCell::new(None) };
}

async fn fetch_jwks(cfg: &Config, now: i64) -> ApiResult<Jwks> {
    let url = cfg.jwks_url();
    let unavailable = |why: String| {
        ApiError::new(
            ErrorCode::JwksUnavailable,
            format!("could not fetch the issuer's keys from {url}: {why}; retry later"),
        )
    };
    let mut resp = Fetch::Url(url.parse().map_err(|e| unavailable(format!("{e}")))?)
        .send()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if resp.status_code() != 200 {
        return Err(unavailable(format!("HTTP {}", resp.status_code())));
    }
    let text = resp.text().await.map_err(|e| unavailable(e.to_string()))?;
    let jwks = parse_jwks(&text).map_err(unavailable)?;
    JWKS.with(|c| {
        *c.borrow_mut() = Some(CachedJwks {
            issuer: cfg.issuer.clone(),
            jwks: jwks.clone(),
            fetched_at: now,
        })
    });
    Ok(jwks)
}

fn cached_jwks(cfg: &Config) -> Option<(Jwks, i64)> {
    JWKS.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|j| j.issuer == cfg.issuer)
            .map(|j| (j.jwks.clone(), j.fetched_at))
    })
}

/// The issuer's JWKS: the isolate's cached copy unless the refresh policy
/// says to fetch (nothing cached, or too old).
pub async fn jwks_current(cfg: &Config, now: i64) -> ApiResult<Jwks> {
    match cached_jwks(cfg) {
        Some((jwks, at)) if !should_fetch_jwks(Some(at), now, false) => Ok(jwks),
        _ => fetch_jwks(cfg, now).await,
    }
}

/// After a token named an unknown `kid`: a fresh JWKS when the refresh floor
/// allows, else None (the key is really unknown).
pub async fn jwks_after_unknown_kid(cfg: &Config, now: i64) -> ApiResult<Option<Jwks>> {
    let at = cached_jwks(cfg).map(|(_, at)| at);
    if should_fetch_jwks(at, now, true) {
        fetch_jwks(cfg, now).await.map(Some)
    } else {
        Ok(None)
    }
}

// ---------------------------------------------------------------- runs and decisions

pub async fn record_run(env: &Env, ctx: &Verified, now: i64) {
    let c = &ctx.claims;
    let r = async {
        db(env)?
            .prepare(
                "INSERT INTO runs (tenant, repository, run_id, run_attempt, workflow_ref, job_workflow_ref, git_ref, event, sha, actor, runner_environment, class, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
                 ON CONFLICT (tenant, run_id, run_attempt) DO UPDATE SET last_seen = excluded.last_seen",
            )
            .bind(&[
                s(&ctx.tenant.id()),
                s(&c.repository),
                s(&c.run_id),
                s(&c.run_attempt),
                s(&c.workflow_ref),
                s(&c.job_workflow_ref),
                s(&c.git_ref),
                s(&c.event_name),
                s(&c.sha),
                s(&c.actor),
                s(&c.runner_environment),
                s(ctx.class.as_str()),
                n(now),
            ])?
            .run()
            .await?;
        Ok::<(), ApiError>(())
    };
    if let Err(e) = r.await {
        console_error!("recording the run failed: {}", e.0.message);
    }
}

async fn insert_decision(env: &Env, values: [JsValue; 10]) {
    let r = async {
        db(env)?
            .prepare("INSERT INTO decisions (at, route, tenant, repository, run_id, class, allowed, reason, scope, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&values)?
            .run()
            .await?;
        Ok::<(), ApiError>(())
    };
    if let Err(e) = r.await {
        console_error!("recording a decision failed: {}", e.0.message);
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn record_decision(
    env: &Env,
    route: &str,
    ctx: &RunContext,
    allowed: bool,
    reason: &str,
    scope: &str,
    detail: &str,
) {
    let detail: String = detail.chars().take(500).collect();
    insert_decision(
        env,
        [
            n(crate::now_secs()),
            s(route),
            s(&ctx.tenant.id()),
            s(&ctx.claims.repository),
            s(&ctx.claims.run_id),
            s(ctx.class.as_str()),
            n(allowed as i64),
            s(reason),
            s(scope),
            s(&detail),
        ],
    )
    .await;
}

// ---------------------------------------------------------------- snapshots

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

// ---------------------------------------------------------------- admin

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

pub async fn admin_runs(env: &Env, limit: u32) -> ApiResult<wire::AdminRunsResponse> {
    let runs = rows(
        env,
        "SELECT repository, run_id, run_attempt, workflow_ref, git_ref, event, actor, class, first_seen, last_seen
         FROM runs ORDER BY last_seen DESC, id DESC LIMIT ?",
        limit,
    )
    .await?;
    Ok(wire::AdminRunsResponse { runs })
}

pub async fn admin_snapshots(env: &Env, limit: u32) -> ApiResult<wire::AdminSnapshotsResponse> {
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

pub async fn admin_decisions(env: &Env, limit: u32) -> ApiResult<wire::AdminDecisionsResponse> {
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

pub async fn admin_sizes(env: &Env, limit: u32) -> ApiResult<wire::AdminSizesResponse> {
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
