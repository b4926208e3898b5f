//! D1 `runs` (one row per verified run attempt) and `decisions` (one row
//! per policy decision about an authenticated run, allowed or refused).
//! Writes here never fail a request: a failed write is logged.

use stateful_ci_worker_core::auth::{RunContext, Verified, claim};
use wasm_bindgen::JsValue;
use worker::*;

use super::{db, n, s};
use crate::refusal::Refusal;

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
                s(&ctx.tenant().key()),
                s(&c.repository),
                s(claim(&c.run_id)),
                s(claim(&c.run_attempt)),
                s(claim(&c.workflow_ref)),
                s(claim(&c.job_workflow_ref)),
                s(claim(&c.git_ref)),
                s(&c.event_name),
                s(claim(&c.sha)),
                s(claim(&c.actor)),
                s(claim(&c.runner_environment)),
                s(ctx.class().as_str()),
                n(now),
            ])?
            .run()
            .await?;
        Ok::<(), Refusal>(())
    };
    if let Err(e) = r.await {
        console_error!("recording the run failed: {}", e.message());
    }
}

async fn insert_decision(env: &Env, values: [JsValue; 10]) {
    let r = async {
        db(env)?
            .prepare("INSERT INTO decisions (at, route, tenant, repository, run_id, class, allowed, reason, scope, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&values)?
            .run()
            .await?;
        Ok::<(), Refusal>(())
    };
    if let Err(e) = r.await {
        console_error!("recording a decision failed: {}", e.message());
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
            n(crate::settings::now_secs()),
            s(route),
            s(&ctx.tenant().key()),
            s(&ctx.claims.repository),
            s(claim(&ctx.claims.run_id)),
            s(ctx.class().as_str()),
            n(allowed as i64),
            s(reason),
            s(scope),
            s(&detail),
        ],
    )
    .await;
}
