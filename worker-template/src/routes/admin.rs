//! `/v1/admin/...` (bearer `ADMIN_TOKEN`, compared in constant time):
//! `GET runs, snapshots, decisions, sizes, denials?limit=N` for
//! `stateful-ci status` and the dashboard; `POST sweep` (retention now) and
//! `POST purge` ([`super::purge`], for `destroy`).

use stateful_ci_protocol::wire::ErrorCode;
use stateful_ci_worker_core::config::vars;
use worker::*;

use crate::refusal::{ApiResult, Refusal, json};
use crate::settings::{now_secs, var};
use crate::storage::{admin, denials};
use crate::{auth, retention};

/// Route name for the router.
pub const ROUTE: &str = "admin";

pub async fn handle(
    req: &mut Request,
    env: &Env,
    what: &str,
    method: Method,
) -> ApiResult<Response> {
    let Some(expected) = var(env, vars::ADMIN_TOKEN).filter(|t| !t.is_empty()) else {
        return Err(Refusal::new(
            ErrorCode::AdminDisabled,
            "admin routes are disabled: no ADMIN_TOKEN secret is set; run stateful-ci deploy to set one",
        ));
    };
    let given = auth::bearer(req).unwrap_or_default();
    if !ct_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(Refusal::new(
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
        ("purge", Method::Post) => super::purge::purge(req, env).await,
        ("sweep", Method::Post) => json(200, &retention::sweep(env, now_secs()).await?),
        ("denials", Method::Get) => json(200, &denials::report(env, limit).await?),
        ("purge" | "sweep", _) | (_, Method::Post) => Err(Refusal::new(
            ErrorCode::MethodNotAllowed,
            "POST admin routes are purge and sweep",
        )),
        ("runs", _) => json(200, &admin::runs(env, limit).await?),
        ("snapshots", _) => json(200, &admin::snapshots(env, limit).await?),
        ("decisions", _) => json(200, &admin::decisions(env, limit).await?),
        ("sizes", _) => json(200, &admin::sizes(env, limit).await?),
        _ => Err(Refusal::new(
            ErrorCode::NotFound,
            "admin routes are runs, snapshots, decisions, sizes, denials (GET) and purge, sweep (POST)",
        )),
    }
}

/// Constant-time comparison (length leaks, content does not).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
