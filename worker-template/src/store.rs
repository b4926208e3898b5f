//! I/O against the bindings: D1 (runs, snapshots, decisions, sizes), R2
//! (objects, stored per tenant under `r/<owner_id>/<repository_id>/<key>`),
//! and the issuer's JWKS (cached per isolate). Retention sweeps are in
//! `retention`, refused-request counts in `denials`.

use std::cell::RefCell;

use futures_util::future::join_all;
use js_sys::{Function, Promise, Reflect, Uint8Array};
use serde::Deserialize;
use stateful_ci_protocol::wire::{self, ErrorCode};
use stateful_ci_protocol::{BlobId, Head, ObjectKey};
use stateful_ci_worker_core::auth::{
    Jwks, RunContext, Tenant, Verified, parse_jwks, should_fetch_jwks,
};
use stateful_ci_worker_core::config::Config;
use stateful_ci_worker_core::grant::GrantClaims;
use stateful_ci_worker_core::manifest;
use stateful_ci_worker_core::range::{self, ByteRange};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::*;

use crate::{ApiError, ApiResult};

fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

fn n(v: i64) -> JsValue {
    JsValue::from_f64(v as f64)
}

fn db(env: &Env) -> ApiResult<D1Database> {
    env.d1("DB").map_err(|e| {
        ApiError::new(
            ErrorCode::Misconfigured,
            format!("the D1 binding DB is missing ({e}); redeploy with stateful-ci deploy"),
        )
    })
}

fn d1_err(context: &str) -> impl Fn(worker::Error) -> ApiError + '_ {
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

// ---------------------------------------------------------------- R2 objects

fn bucket(env: &Env) -> ApiResult<Bucket> {
    env.bucket("BUCKET").map_err(|e| {
        ApiError::new(
            ErrorCode::Misconfigured,
            format!("the R2 binding BUCKET is missing ({e}); redeploy with stateful-ci deploy"),
        )
    })
}

/// Stored size of each key (None: not stored), in the order given.
pub async fn object_sizes(
    env: &Env,
    tenant: &Tenant,
    keys: &[ObjectKey],
) -> ApiResult<Vec<Option<u64>>> {
    let b = bucket(env)?;
    let t = tenant.id();
    let mut out = Vec::with_capacity(keys.len());
    // Bounded parallelism keeps the Worker under the subrequest limits.
    for chunk in keys.chunks(32) {
        let heads = join_all(chunk.iter().map(|k| b.head(r2_key(&t, k)))).await;
        for h in heads {
            out.push(
                h.map_err(|e| ApiError::internal("R2 head failed", e))?
                    .map(|o| o.size()),
            );
        }
    }
    Ok(out)
}

/// Streams the request body, hashing it, into one buffer of exactly
/// `length` bytes; stores it only when its BLAKE3 hash is the key's. Returns
/// whether it was newly stored (false: it already was; the body is not read).
pub async fn put_verified(
    env: &Env,
    req: &Request,
    tenant: &Tenant,
    key: &ObjectKey,
    length: u64,
) -> ApiResult<bool> {
    let t = tenant.id();
    let r2k = r2_key(&t, key);
    let b = bucket(env)?;
    if b.head(r2k.clone())
        .await
        .map_err(|e| ApiError::internal("R2 head failed", e))?
        .is_some()
    {
        return Ok(false);
    }
    let js = |e: JsValue| ApiError::internal("reading the upload failed", format!("{e:?}"));
    let target = Uint8Array::new_with_length(length as u32);
    let mut hasher = blake3::Hasher::new();
    let mut offset: u64 = 0;
    let mut buf = Vec::new();
    if let Some(stream) = req.inner().body() {
        let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
        loop {
            let res = JsFuture::from(reader.read()).await.map_err(js)?;
            if Reflect::get(&res, &s("done"))
                .map_err(js)?
                .as_bool()
                .unwrap_or(true)
            {
                break;
            }
            let chunk: Uint8Array = Reflect::get(&res, &s("value"))
                .map_err(js)?
                .dyn_into()
                .map_err(|v: JsValue| js(v))?;
            let len = u64::from(chunk.length());
            if offset + len > length {
                let _ = reader.cancel();
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "the body is longer than content-length ({length}); send the exact length"
                    ),
                ));
            }
            buf.resize(len as usize, 0);
            chunk.copy_to(&mut buf);
            hasher.update(&buf);
            target.set(&chunk, offset as u32);
            offset += len;
        }
    }
    if offset != length {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "the body has {offset} bytes but content-length said {length}; send the whole object"
            ),
        ));
    }
    let got = BlobId::from(hasher.finalize());
    if got != key.hash {
        return Err(ApiError::new(
            ErrorCode::HashMismatch,
            format!(
                "the uploaded bytes hash to {got}, not to the key {key}; nothing was stored; upload the object under the BLAKE3 hash of its bytes"
            ),
        ));
    }
    // Only verified bytes reach the final key.
    let raw = Reflect::get(env.as_ref(), &s("BUCKET")).map_err(js)?;
    let put: Function = Reflect::get(&raw, &s("put"))
        .map_err(js)?
        .dyn_into()
        .map_err(|v: JsValue| js(v))?;
    let promise: Promise = put
        .call2(&raw, &s(&r2k), &target)
        .map_err(js)?
        .dyn_into()
        .map_err(|v: JsValue| js(v))?;
    JsFuture::from(promise)
        .await
        .map_err(|e| ApiError::internal("R2 put failed", format!("{e:?}")))?;
    let r = db(env)?
        .prepare("INSERT OR IGNORE INTO objects (tenant, object_key, size, created_at) VALUES (?, ?, ?, ?)")
        .bind(&[s(&t), s(&key.to_string()), n(length as i64), n(crate::now_secs())])?
        .run()
        .await;
    if let Err(e) = r {
        console_error!("recording an object's size failed: {}", e);
    }
    Ok(true)
}

/// The packs the stored manifest lists (see `worker_core::manifest`).
pub async fn manifest_packs(
    env: &Env,
    tenant: &Tenant,
    key: &ObjectKey,
) -> ApiResult<std::collections::BTreeSet<ObjectKey>> {
    let invalid =
        |m: String| ApiError::new(ErrorCode::ManifestInvalid, format!("manifest {key}: {m}"));
    let object = bucket(env)?
        .get(r2_key(&tenant.id(), key))
        .execute()
        .await
        .map_err(|e| ApiError::internal("R2 get failed", e))?
        .ok_or_else(|| invalid("it is not stored; upload it and commit again".into()))?;
    if object.size() > manifest::MAX_STORED {
        return Err(invalid(format!(
            "it is {} bytes; the Worker reads manifests up to {} bytes",
            object.size(),
            manifest::MAX_STORED
        )));
    }
    let bytes = object
        .body()
        .ok_or_else(|| invalid("it has no body".into()))?
        .bytes()
        .await?;
    manifest::packs(&bytes).map_err(invalid)
}

pub async fn serve_object(
    env: &Env,
    tenant: &str,
    key: &ObjectKey,
    wanted: Option<ByteRange>,
) -> ApiResult<Response> {
    let b = bucket(env)?;
    let r2k = r2_key(tenant, key);
    let not_found = || {
        ApiError::new(
            ErrorCode::NotFound,
            format!("object {key} is not stored (it may have been swept); restore again"),
        )
    };
    let headers = Headers::new();
    headers.set("content-type", "application/octet-stream")?;
    headers.set("accept-ranges", "bytes")?;
    headers.set("cache-control", "private, max-age=3600, immutable")?;
    headers.set("etag", &format!("\"{}\"", key.hash))?;
    let (status, object) = match wanted {
        None => (
            200,
            b.get(r2k)
                .execute()
                .await
                .map_err(|e| ApiError::internal("R2 get failed", e))?
                .ok_or_else(not_found)?,
        ),
        Some(r) => {
            let size = b
                .head(r2k.clone())
                .await
                .map_err(|e| ApiError::internal("R2 head failed", e))?
                .ok_or_else(not_found)?
                .size();
            let (offset, length) = r.resolve(size).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::RangeNotSatisfiable,
                    format!("the range is outside the object ({size} bytes)"),
                )
            })?;
            headers.set("content-range", &range::content_range(offset, length, size))?;
            let o = b
                .get(r2k)
                .range(worker::Range::OffsetWithLength { offset, length })
                .execute()
                .await
                .map_err(|e| ApiError::internal("R2 get failed", e))?
                .ok_or_else(not_found)?;
            (206, o)
        }
    };
    let body = object.body().ok_or_else(not_found)?.response_body()?;
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .body(body))
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

/// Writes the snapshot, its objects and the head mirror (idempotent: a
/// replayed commit re-runs it harmlessly).
pub async fn record_snapshot(
    env: &Env,
    ctx: &RunContext,
    body: &wire::SaveCommitRequest,
    scope: &str,
    head: &Head,
    objects: &[(ObjectKey, u64)],
    now: i64,
) -> ApiResult<()> {
    #[derive(Deserialize)]
    struct Id {
        id: i64,
    }
    let d = db(env)?;
    let c = &ctx.claims;
    let t = ctx.tenant.id();
    let stored: u64 = objects.iter().map(|(_, s)| s).sum();
    d.prepare(
        "INSERT OR IGNORE INTO snapshots (tenant, workspace, scope, generation, manifest_key, created_at, total_bytes, stored_bytes, entries,
           repository, workflow_ref, job_workflow_ref, git_ref, event, sha, actor, run_id, run_attempt, runner_environment, class)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&[
        s(&t),
        s(&body.workspace),
        s(scope),
        n(head.generation as i64),
        s(&head.snapshot.to_string()),
        n(now),
        n(body.total_bytes as i64),
        n(stored as i64),
        n(body.entries as i64),
        s(&c.repository),
        s(&c.workflow_ref),
        s(&c.job_workflow_ref),
        s(&c.git_ref),
        s(&c.event_name),
        s(&c.sha),
        s(&c.actor),
        s(&c.run_id),
        s(&c.run_attempt),
        s(&c.runner_environment),
        s(ctx.class.as_str()),
    ])?
    .run()
    .await
    .map_err(d1_err("recording the snapshot"))?;
    let id: Id = d
        .prepare("SELECT id FROM snapshots WHERE tenant = ? AND workspace = ? AND scope = ? AND generation = ?")
        .bind(&[s(&t), s(&body.workspace), s(scope), n(head.generation as i64)])?
        .first(None)
        .await
        .map_err(d1_err("recording the snapshot"))?
        .ok_or_else(|| ApiError::internal("recording the snapshot", "row vanished"))?;
    let mut stmts = Vec::with_capacity(objects.len() + 2);
    for (k, size) in objects {
        stmts.push(
            d.prepare("INSERT OR IGNORE INTO snapshot_objects (snapshot_id, object_key, size) VALUES (?, ?, ?)")
                .bind(&[n(id.id), s(&k.to_string()), n(*size as i64)])?,
        );
        stmts.push(
            d.prepare("INSERT OR IGNORE INTO objects (tenant, object_key, size, created_at) VALUES (?, ?, ?, ?)")
                .bind(&[s(&t), s(&k.to_string()), n(*size as i64), n(now)])?,
        );
    }
    stmts.push(
        d.prepare(
            "INSERT INTO heads (tenant, workspace, scope, manifest_key, generation, updated_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, workspace, scope) DO UPDATE SET manifest_key = excluded.manifest_key,
               generation = excluded.generation, updated_at = excluded.updated_at
             WHERE excluded.generation > heads.generation",
        )
        .bind(&[s(&t), s(&body.workspace), s(scope), s(&head.snapshot.to_string()), n(head.generation as i64), n(now)])?,
    );
    d.batch(stmts)
        .await
        .map_err(d1_err("recording the snapshot's objects"))?;
    Ok(())
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
