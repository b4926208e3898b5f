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
//!
//! Module map (also in `docs/WORKER.md`):
//!
//! | Module | Owns |
//! | --- | --- |
//! | `lib.rs` | the events (`fetch`, `scheduled`) and the router below |
//! | [`routes`] | one module per route: `health`, `restore`, `save` (prepare, commit), `objects` (PUT/GET bytes), `admin` (+ `purge`) |
//! | [`auth`] | bearer token → verified run (JWKS, pin, run record) → policy for a workspace |
//! | [`refusal`] | the one refusal type: the API error and what it records (denial count or decision row) |
//! | [`storage`] | D1 tables, R2 and the JWKS cache, one module per table group |
//! | [`coordinator`] | the Durable Object per scope (head CAS, idempotency) and the Worker's calls to it |
//! | [`retention`] | the scheduled sweep (snapshots, unreferenced objects, old log rows) |
//! | [`body`] | JSON request bodies read with a cap that holds while streaming |
//! | [`settings`] | vars and secrets, the grant key, the clock |

mod auth;
mod body;
mod coordinator;
mod refusal;
mod retention;
mod routes;
mod settings;
mod storage;

use stateful_ci_protocol::ObjectKey;
use stateful_ci_protocol::wire::ErrorCode;
use worker::*;

pub use coordinator::ScopeCoordinator;
use refusal::{ApiResult, Refusal};
use routes::{admin, health, objects, restore, save};

/// The release this Worker was built from.
pub const WORKER_VERSION: &str = env!("CARGO_PKG_VERSION");

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    let method = req.method();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, result) = match (method.clone(), segments.as_slice()) {
        (Method::Get, ["v1", "health"]) => ("health", health::get(&env).await),
        (Method::Post, ["v1", "restore"]) => (restore::ROUTE, restore::post(&mut req, &env).await),
        (Method::Post, ["v1", "save", "prepare"]) => {
            (save::PREPARE, save::prepare(&mut req, &env).await)
        }
        (Method::Post, ["v1", "save", "commit"]) => {
            (save::COMMIT, save::commit(&mut req, &env).await)
        }
        (Method::Put, ["v1", "objects", kind, hash]) => (
            objects::PUT,
            match object_key(kind, hash) {
                Ok(key) => objects::put_object(&mut req, &env, &key).await,
                Err(e) => Err(e),
            },
        ),
        (Method::Get, ["v1", "objects", kind, hash]) => (
            objects::GET,
            match object_key(kind, hash) {
                Ok(key) => objects::get_object(&mut req, &env, &key).await,
                Err(e) => Err(e),
            },
        ),
        (Method::Get | Method::Post, ["v1", "admin", what]) => (
            admin::ROUTE,
            admin::handle(&mut req, &env, what, method.clone()).await,
        ),
        (_, ["v1", "health" | "restore" | "objects" | "admin", ..] | ["v1", "save", ..]) => (
            "other",
            Err(Refusal::new(
                ErrorCode::MethodNotAllowed,
                format!("{method:?} is not allowed on {path}; see docs/PROTOCOL.md"),
            )),
        ),
        _ => (
            "other",
            Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no route {path}; this Worker speaks protocol v1 (see docs/PROTOCOL.md)"),
            )),
        ),
    };
    Ok(match result {
        Ok(r) => r,
        Err(refusal) => refusal.settle(&env, route).await,
    })
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    // Real time, not the event's: the grace period protects saves in flight.
    match retention::sweep(&env, settings::now_secs()).await {
        Ok(r) => console_log!(
            "retention sweep: {} scopes, {} snapshots dropped, {} objects marked, {} deleted ({} bytes), {} log rows",
            r.scopes_checked,
            r.snapshots_dropped,
            r.objects_marked,
            r.objects_deleted,
            r.bytes_deleted,
            r.log_rows_deleted
        ),
        Err(e) => console_error!("retention sweep failed: {}", e.message()),
    }
}

fn object_key(kind: &str, hash: &str) -> ApiResult<ObjectKey> {
    format!("{kind}/{hash}").parse().map_err(|_| {
        Refusal::new(
            ErrorCode::BadRequest,
            "the object key must be packs/<64 hex> or manifests/<64 hex> (SHA-256 of the bytes)",
        )
    })
}
