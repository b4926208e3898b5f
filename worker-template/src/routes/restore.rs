//! `POST /v1/restore`: the first of the run's restore scopes (policy order)
//! whose head has a recorded snapshot, with a short-lived read grant for
//! that snapshot's objects; or a miss.

use stateful_ci_protocol::wire;
use stateful_ci_worker_core::config;
use stateful_ci_worker_core::grant;
use worker::*;

use crate::refusal::{ApiResult, json};
use crate::settings::{grant_key, load_config, now_secs};
use crate::storage::{runs, snapshots};
use crate::{auth, body, coordinator};

/// The route name in `decisions` and `denial_counts`.
pub const ROUTE: &str = "restore";

pub async fn post(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let cfg = load_config(env)?;
    let verified = auth::authenticate(req, env, &cfg).await?;
    let body: wire::RestoreRequest = body::read_json(req).await?;
    let ctx = auth::decide(&verified, &body.workspace)?;
    let key = grant_key(env)?;
    let now = now_secs();
    let tenant = ctx.tenant().key();
    for scope in ctx.restore_scopes() {
        let Some(head) = coordinator::head(env, &ctx.coordinator_name(scope)).await? else {
            continue;
        };
        let scope = scope.to_string();
        let Some((snapshot_id, packs)) =
            snapshots::snapshot_objects(env, &tenant, &body.workspace, &scope, &head).await?
        else {
            // The head's D1 rows are not written yet (a commit in flight):
            // treat like a miss for this scope.
            continue;
        };
        let exp = now + config::GRANT_TTL_SECS;
        let g = grant::sign(
            &key,
            &grant::GrantClaims {
                t: tenant.clone(),
                s: snapshot_id,
                m: head.snapshot.to_string(),
                exp,
            },
        );
        runs::record_decision(
            env,
            ROUTE,
            &ctx,
            true,
            "restore_hit",
            &scope,
            &format!("generation {}", head.generation),
        )
        .await;
        return json(
            200,
            &wire::RestoreResponse {
                decision: auth::wire_decision(&ctx),
                hit: Some(wire::RestoreHit {
                    scope,
                    head,
                    packs,
                    grant: g,
                    grant_expires_at: exp,
                }),
            },
        );
    }
    let tried: Vec<String> = ctx.restore_scopes().iter().map(|s| s.to_string()).collect();
    runs::record_decision(env, ROUTE, &ctx, true, "restore_miss", "", &tried.join(",")).await;
    json(
        200,
        &wire::RestoreResponse {
            decision: auth::wire_decision(&ctx),
            hit: None,
        },
    )
}
