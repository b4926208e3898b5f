//! The stateful-ci backend Worker (protocol v1; routes in `docs/PROTOCOL.md`
//! and `stateful_ci_protocol::wire`).
//!
//! Bindings: `DB` (D1, schema in `/migrations`), `BUCKET` (R2),
//! `COORDINATOR` (Durable Object namespace of [`coordinator::ScopeCoordinator`],
//! SQLite-backed), plain-text settings and secrets listed in
//! `stateful_ci_worker_core::config::vars`.
//!
//! This crate owns HTTP, bindings and I/O only; every decision that needs no
//! runtime (token checks, policy, grants, ranges, commit rules, retention)
//! lives in `stateful-ci-worker-core`, tested natively. It must never log a
//! token, a grant or a secret.

mod body;
mod coordinator;
mod denials;
mod objects;
mod pin;
mod purge;
mod retention;
mod store;
mod visibility;

use serde::Serialize;
use serde::de::DeserializeOwned;
use stateful_ci_protocol::limits::MAX_OBJECT_SIZE;
use stateful_ci_protocol::wire::{self, ErrorBody, ErrorCode};
use stateful_ci_protocol::{Head, ObjectKey};
use stateful_ci_worker_core::auth::{self, AuthError, RunContext, Verified};
use stateful_ci_worker_core::config::{self, Config, vars};
use stateful_ci_worker_core::grant;
use stateful_ci_worker_core::visibility::{self as vis, Sight};
use worker::*;

pub use coordinator::ScopeCoordinator;
use coordinator::{CommitAnswer, CommitCall, HeadAnswer};

/// The release this Worker was built from.
pub const WORKER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error answer: status from the code, JSON body.
#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorBody::new(code, message))
    }
    fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        ApiError::new(
            ErrorCode::Internal,
            format!("{context}: {e}; retry, and report it if it persists"),
        )
    }
    fn response(&self) -> Response {
        let body = serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into());
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        ResponseBuilder::new()
            .with_status(self.0.code.status())
            .with_headers(headers)
            .fixed(body.into_bytes())
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        ApiError::internal("the Worker runtime failed", e)
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

fn json<T: Serialize>(status: u16, value: &T) -> ApiResult<Response> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::internal("could not encode the answer", e))?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .fixed(body))
}

/// Reads a JSON body with a cap that holds while streaming (see [`body`]).
async fn read_json<T: DeserializeOwned>(req: &mut Request) -> ApiResult<T> {
    body::read_json(req).await
}

pub(crate) fn now_secs() -> i64 {
    (Date::now().as_millis() / 1000) as i64
}

pub(crate) fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| env.secret(name).ok().map(|v| v.to_string()))
}

fn load_config(env: &Env) -> ApiResult<Config> {
    Config::from_vars(|n| var(env, n)).map_err(|e| ApiError::new(ErrorCode::Misconfigured, e.0))
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    Ok(match route(&mut req, &env).await {
        Ok(r) => r,
        Err(e) => e.response(),
    })
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    // Real time, not the event's: the grace period protects saves in flight.
    match retention::sweep(&env, now_secs()).await {
        Ok(r) => console_log!(
            "retention sweep: {} scopes, {} snapshots dropped, {} objects marked, {} deleted ({} bytes), {} log rows",
            r.scopes_checked,
            r.snapshots_dropped,
            r.objects_marked,
            r.objects_deleted,
            r.bytes_deleted,
            r.log_rows_deleted
        ),
        Err(e) => console_error!("retention sweep failed: {}", e.0.message),
    }
}

async fn route(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let path = req.path();
    let method = req.method();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::Get, ["v1", "health"]) => health(env).await,
        (Method::Post, ["v1", "restore"]) => restore(req, env).await,
        (Method::Post, ["v1", "save", "prepare"]) => save_prepare(req, env).await,
        (Method::Post, ["v1", "save", "commit"]) => save_commit(req, env).await,
        (Method::Put, ["v1", "objects", kind, hash]) => {
            objects::put_object(req, env, &object_key(kind, hash)?).await
        }
        (Method::Get, ["v1", "objects", kind, hash]) => {
            objects::get_object(req, env, &object_key(kind, hash)?).await
        }
        (Method::Get | Method::Post, ["v1", "admin", what]) => {
            admin(req, env, what, method.clone()).await
        }
        (_, ["v1", "health" | "restore" | "objects" | "admin", ..] | ["v1", "save", ..]) => {
            Err(ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method:?} is not allowed on {path}; see docs/PROTOCOL.md"),
            ))
        }
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no route {path}; this Worker speaks protocol v1 (see docs/PROTOCOL.md)"),
        )),
    }
}

fn object_key(kind: &str, hash: &str) -> ApiResult<ObjectKey> {
    format!("{kind}/{hash}").parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the object key must be packs/<64 hex> or manifests/<64 hex> (SHA-256 of the bytes)",
        )
    })
}

// ---------------------------------------------------------------- health

async fn health(env: &Env) -> ApiResult<Response> {
    let mut warnings = Vec::new();
    let (issuer, test_mode) = match load_config(env) {
        Ok(c) => (c.issuer, c.test_mode),
        Err(e) => {
            warnings.push(e.0.message.clone());
            (String::new(), false)
        }
    };
    if test_mode {
        warnings.push(format!(
            "OIDC TEST MODE: this Worker trusts tokens from the test issuer {issuer}, not GitHub; never use it for real CI"
        ));
    }
    if var(env, vars::GRANT_KEY).is_none_or(|k| k.len() < config::MIN_GRANT_KEY_LEN) {
        warnings.push(format!(
            "secret {} is missing or shorter than {} bytes; restores will fail until it is set",
            vars::GRANT_KEY,
            config::MIN_GRANT_KEY_LEN
        ));
    }
    let migrations = match store::applied_migrations(env).await {
        Ok(m) => m,
        Err(e) => {
            warnings.push(format!(
                "could not read d1_migrations: {}; apply the migrations",
                e.0.message
            ));
            Vec::new()
        }
    };
    json(
        200,
        &wire::HealthResponse {
            service: wire::SERVICE_NAME.into(),
            protocol: wire::PROTOCOL_VERSION,
            worker_version: WORKER_VERSION.into(),
            migrations,
            oidc_test_mode: test_mode,
            oidc_issuer: issuer,
            warnings,
        },
    )
}

// ---------------------------------------------------------------- auth

fn bearer(req: &Request) -> Option<String> {
    let h = req.headers().get("authorization").ok().flatten()?;
    let (scheme, value) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Verifies the request's OIDC token and records the run. Refusals are
/// counted in aggregate (`denials`), never written one row each.
async fn authenticate(req: &Request, env: &Env, cfg: &Config, route: &str) -> ApiResult<Verified> {
    let Some(token) = bearer(req) else {
        denials::count(env, route, "missing_token").await;
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "send Authorization: Bearer <GitHub Actions OIDC token> (the job needs permissions: id-token: write)",
        ));
    };
    let now = now_secs();
    let jwks = store::jwks_current(cfg, now).await?;
    let mut result = auth::authenticate(&token, &jwks, cfg, now);
    if let Err(e) = &result
        && e.is_unknown_kid()
        && let Some(fresh) = store::jwks_after_unknown_kid(cfg, now).await?
    {
        result = auth::authenticate(&token, &fresh, cfg, now);
    }
    match result {
        Ok(v) => {
            // Allowed by name only: the ids must be the ones pinned for it.
            if let Some(e) = pin::check(env, &v, now).await? {
                denials::count(env, route, e.reason).await;
                return Err(auth_error(e));
            }
            store::record_run(env, &v, now).await;
            Ok(v)
        }
        Err(e) => {
            denials::count(env, route, e.reason).await;
            Err(auth_error(e))
        }
    }
}

/// The policy for one workspace of a verified run.
fn decide(v: &Verified, workspace: &str) -> ApiResult<RunContext> {
    check_workspace(workspace)?;
    v.decide(workspace)
        .map_err(|m| ApiError::new(ErrorCode::BadRequest, m))
}

fn auth_error(e: AuthError) -> ApiError {
    let code = if e.is_repository_not_allowed() {
        ErrorCode::RepositoryNotAllowed
    } else {
        ErrorCode::InvalidToken
    };
    let mut body = ErrorBody::new(code, e.message);
    body.reason = Some(e.reason.to_string());
    ApiError(body)
}

fn check_workspace(name: &str) -> ApiResult<()> {
    if wire::valid_workspace(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "workspace {:?} is not a valid name: use 1-64 of A-Z a-z 0-9 . _ - (not starting with .)",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

fn list_error(e: vis::ListError) -> ApiError {
    ApiError::new(e.code, e.message)
}

fn grant_key(env: &Env) -> ApiResult<Vec<u8>> {
    match var(env, vars::GRANT_KEY) {
        Some(k) if k.len() >= config::MIN_GRANT_KEY_LEN => Ok(k.into_bytes()),
        _ => Err(ApiError::new(
            ErrorCode::Misconfigured,
            format!(
                "secret {} is missing or too short; redeploy with stateful-ci deploy (it sets it)",
                vars::GRANT_KEY
            ),
        )),
    }
}

// ---------------------------------------------------------------- coordinator calls

async fn coordinator_head(env: &Env, name: &str) -> ApiResult<Option<Head>> {
    let stub = env
        .durable_object("COORDINATOR")?
        .id_from_name(name)?
        .get_stub()?;
    let mut resp = stub.fetch_with_str("https://coordinator/head").await?;
    if resp.status_code() != 200 {
        return Err(ApiError::internal(
            "the scope coordinator failed",
            resp.text().await.unwrap_or_default(),
        ));
    }
    let a: HeadAnswer = resp.json().await?;
    Ok(a.head)
}

async fn coordinator_commit(env: &Env, name: &str, call: &CommitCall) -> ApiResult<CommitAnswer> {
    let stub = env
        .durable_object("COORDINATOR")?
        .id_from_name(name)?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(
        serde_json::to_string(call)
            .map_err(|e| ApiError::internal("encode", e))?
            .into(),
    ));
    let mut resp = stub
        .fetch_with_request(Request::new_with_init("https://coordinator/commit", &init)?)
        .await?;
    if resp.status_code() != 200 {
        return Err(ApiError::internal(
            "the scope coordinator failed",
            resp.text().await.unwrap_or_default(),
        ));
    }
    Ok(resp.json().await?)
}

fn decision(ctx: &RunContext) -> wire::RunDecision {
    wire::RunDecision {
        class: ctx.class.as_str().into(),
        restore_scopes: ctx.restore_scopes.clone(),
        save_scope: ctx.save_scope.clone(),
        save_denied_reason: ctx.save_denied_reason.clone(),
    }
}

// ---------------------------------------------------------------- restore

async fn restore(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let cfg = load_config(env)?;
    let verified = authenticate(req, env, &cfg, "restore").await?;
    let body: wire::RestoreRequest = read_json(req).await?;
    let ctx = decide(&verified, &body.workspace)?;
    let key = grant_key(env)?;
    let now = now_secs();
    for scope in &ctx.restore_scopes {
        let Some(head) = coordinator_head(env, &ctx.coordinator_name(scope)).await? else {
            continue;
        };
        let Some((snapshot_id, packs)) =
            store::snapshot_objects(env, &ctx.tenant.id(), &body.workspace, scope, &head).await?
        else {
            // The head's D1 rows are not written yet (a commit in flight):
            // treat like a miss for this scope.
            continue;
        };
        let exp = now + config::GRANT_TTL_SECS;
        let g = grant::sign(
            &key,
            &grant::GrantClaims {
                t: ctx.tenant.id(),
                s: snapshot_id,
                m: head.snapshot.to_string(),
                exp,
            },
        );
        store::record_decision(
            env,
            "restore",
            &ctx,
            true,
            "restore_hit",
            scope,
            &format!("generation {}", head.generation),
        )
        .await;
        return json(
            200,
            &wire::RestoreResponse {
                decision: decision(&ctx),
                hit: Some(wire::RestoreHit {
                    scope: scope.clone(),
                    head,
                    packs,
                    grant: g,
                    grant_expires_at: exp,
                }),
            },
        );
    }
    store::record_decision(
        env,
        "restore",
        &ctx,
        true,
        "restore_miss",
        "",
        &ctx.restore_scopes.join(","),
    )
    .await;
    json(
        200,
        &wire::RestoreResponse {
            decision: decision(&ctx),
            hit: None,
        },
    )
}

// ---------------------------------------------------------------- save

fn save_scope(ctx: &RunContext) -> ApiResult<String> {
    ctx.save_scope.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::SaveNotAllowed,
            format!(
                "this run ({}) may not save: {}",
                ctx.class.as_str(),
                ctx.save_denied_reason.clone().unwrap_or_default()
            ),
        )
    })
}

async fn save_prepare(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let cfg = load_config(env)?;
    let verified = authenticate(req, env, &cfg, "save_prepare").await?;
    let body: wire::SavePrepareRequest = read_json(req).await?;
    let ctx = decide(&verified, &body.workspace)?;
    let wanted = vis::prepare_objects(&body.objects).map_err(list_error)?;
    let scope = match save_scope(&ctx) {
        Ok(s) => s,
        Err(e) => {
            store::record_decision(
                env,
                "save_prepare",
                &ctx,
                false,
                "save_not_allowed",
                "",
                &e.0.message,
            )
            .await;
            return Err(e);
        }
    };
    let head = coordinator_head(env, &ctx.coordinator_name(&scope)).await?;
    // "Missing" means not visible to this run (see worker_core::visibility).
    let present = visibility::visible(env, &ctx.tenant.id(), &Sight::of(&ctx), &wanted).await?;
    let missing = wanted
        .into_iter()
        .filter(|k| !present.contains_key(k))
        .collect();
    store::record_decision(env, "save_prepare", &ctx, true, "save_allowed", &scope, "").await;
    json(
        200,
        &wire::SavePrepareResponse {
            scope,
            expected_generation: head.as_ref().map_or(0, |h| h.generation),
            head,
            missing,
            max_object_size: MAX_OBJECT_SIZE,
        },
    )
}

async fn save_commit(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let cfg = load_config(env)?;
    let verified = authenticate(req, env, &cfg, "save_commit").await?;
    let body: wire::SaveCommitRequest = read_json(req).await?;
    let ctx = decide(&verified, &body.workspace)?;
    let objects = vis::commit_objects(body.manifest, &body.packs).map_err(list_error)?;
    if !wire::valid_idempotency_key(&body.idempotency_key) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "idempotency_key must be 1-128 printable ASCII characters without spaces",
        ));
    }
    let scope = match save_scope(&ctx) {
        Ok(s) => s,
        Err(e) => {
            store::record_decision(
                env,
                "save_commit",
                &ctx,
                false,
                "save_not_allowed",
                "",
                &e.0.message,
            )
            .await;
            return Err(e);
        }
    };
    // Every listed object must be stored and visible to this run: uploaded
    // for its save scope or in a snapshot of a scope it may read. The Worker
    // does not read the manifest: a client that lists fewer objects than its
    // snapshot needs only breaks its own restores (they fail verification),
    // and listing more can only name objects this run can already read.
    let present = visibility::visible(env, &ctx.tenant.id(), &Sight::of(&ctx), &objects).await?;
    let missing: Vec<ObjectKey> = objects
        .iter()
        .filter(|k| !present.contains_key(k))
        .copied()
        .collect();
    if !missing.is_empty() {
        store::record_decision(
            env,
            "save_commit",
            &ctx,
            false,
            "missing_objects",
            &scope,
            &format!("{} missing", missing.len()),
        )
        .await;
        let mut e = ErrorBody::new(
            ErrorCode::MissingObjects,
            format!(
                "{} of the snapshot's objects are not stored for this run (objects of scopes it may not read count as missing); upload them (PUT /v1/objects/{{key}}) and commit again",
                missing.len()
            ),
        );
        e.missing = missing;
        return Err(ApiError(e));
    }
    let now = now_secs();
    let name = ctx.coordinator_name(&scope);
    let answer = coordinator_commit(
        env,
        &name,
        &CommitCall {
            manifest: body.manifest,
            expected_generation: body.expected_generation,
            idempotency_key: body.idempotency_key.clone(),
            now,
        },
    )
    .await?;
    match answer.outcome.as_str() {
        "applied" | "replayed" => {
            let head = answer
                .head
                .ok_or_else(|| ApiError::internal("coordinator", "no head after commit"))?;
            let replayed = answer.outcome == "replayed";
            let stored: u64 = present.values().sum();
            visibility::record_snapshot(env, &ctx, &body, &scope, &head, &objects, stored, now)
                .await?;
            store::record_decision(
                env,
                "save_commit",
                &ctx,
                true,
                if replayed {
                    "commit_replayed"
                } else {
                    "commit_applied"
                },
                &scope,
                &format!("generation {}", head.generation),
            )
            .await;
            json(
                200,
                &wire::SaveCommitResponse {
                    scope,
                    head,
                    replayed,
                },
            )
        }
        "conflict" => {
            store::record_decision(
                env,
                "save_commit",
                &ctx,
                false,
                "generation_conflict",
                &scope,
                "",
            )
            .await;
            let mut e = ErrorBody::new(
                ErrorCode::GenerationConflict,
                format!(
                    "the scope's head moved since save/prepare (expected generation {}); prepare again and commit with the new generation",
                    body.expected_generation
                ),
            );
            e.head = answer.head;
            Err(ApiError(e))
        }
        _ => {
            store::record_decision(
                env,
                "save_commit",
                &ctx,
                false,
                "idempotency_key_reused",
                &scope,
                "",
            )
            .await;
            Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this idempotency_key was used for a different manifest; use a new key per snapshot",
            ))
        }
    }
}

// ---------------------------------------------------------------- admin

async fn admin(req: &mut Request, env: &Env, what: &str, method: Method) -> ApiResult<Response> {
    let Some(expected) = var(env, vars::ADMIN_TOKEN).filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::AdminDisabled,
            "admin routes are disabled: no ADMIN_TOKEN secret is set; run stateful-ci deploy to set one",
        ));
    };
    let given = bearer(req).unwrap_or_default();
    use subtle_eq::ct_eq;
    if !ct_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::new(
            ErrorCode::AdminUnauthorized,
            "send Authorization: Bearer <admin token> (stateful-ci status reads it from your keyring)",
        ));
    }
    let limit = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .unwrap_or(50)
        .clamp(1, 500);
    match (what, method) {
        ("purge", Method::Post) => purge::purge(req, env).await,
        ("sweep", Method::Post) => json(200, &retention::sweep(env, now_secs()).await?),
        ("denials", Method::Get) => json(200, &denials::report(env, limit).await?),
        ("purge" | "sweep", _) | (_, Method::Post) => Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "POST admin routes are purge and sweep",
        )),
        ("runs", _) => json(200, &store::admin_runs(env, limit).await?),
        ("snapshots", _) => json(200, &store::admin_snapshots(env, limit).await?),
        ("decisions", _) => json(200, &store::admin_decisions(env, limit).await?),
        ("sizes", _) => json(200, &store::admin_sizes(env, limit).await?),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            "admin routes are runs, snapshots, decisions, sizes, denials (GET) and purge, sweep (POST)",
        )),
    }
}

mod subtle_eq {
    /// Constant-time comparison (length leaks, content does not).
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
