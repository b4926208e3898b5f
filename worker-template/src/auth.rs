//! Who is asking: the bearer token verified and classified (through
//! `stateful_ci_worker_core::auth`, which calls the trust crate), the
//! repository pin checked, the run recorded; then the policy for one
//! workspace. Refusals here are [`Refusal::counted`] (before a run is known)
//! or [`Refusal::decided`] (a decision about an authenticated run).

use stateful_ci_protocol::wire::{self, ErrorBody, ErrorCode};
use stateful_ci_worker_core::auth::{self, AuthError, RunContext, Scope, Verified};
use stateful_ci_worker_core::config::Config;
use worker::*;

use crate::refusal::{ApiResult, Refusal};
use crate::settings::now_secs;
use crate::storage::{jwks, pins, runs};

/// The `Authorization: Bearer` value, if any.
pub fn bearer(req: &Request) -> Option<String> {
    let h = req.headers().get("authorization").ok().flatten()?;
    let (scheme, value) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Verifies the request's OIDC token and records the run. Refusals are
/// counted in aggregate (`storage::denials`), never written one row each.
pub async fn authenticate(req: &Request, env: &Env, cfg: &Config) -> ApiResult<Verified> {
    let Some(token) = bearer(req) else {
        return Err(Refusal::new(
            ErrorCode::MissingToken,
            "send Authorization: Bearer <GitHub Actions OIDC token> (the job needs permissions: id-token: write)",
        )
        .counted("missing_token"));
    };
    let now = now_secs();
    let keys = jwks::current(cfg, now).await?;
    let mut result = auth::authenticate(&token, &keys, cfg, now);
    if let Err(e) = &result
        && e.is_unknown_kid()
        && let Some(fresh) = jwks::after_unknown_kid(cfg, now).await?
    {
        result = auth::authenticate(&token, &fresh, cfg, now);
    }
    let verified = result.map_err(refused)?;
    // Allowed by name only: the ids must be the ones pinned for it.
    if let Some(e) = pins::check(env, &verified, now).await? {
        return Err(refused(e));
    }
    runs::record_run(env, &verified, now).await;
    Ok(verified)
}

fn refused(e: AuthError) -> Refusal {
    let code = if e.is_repository_not_allowed() {
        ErrorCode::RepositoryNotAllowed
    } else {
        ErrorCode::InvalidToken
    };
    let mut body = ErrorBody::new(code, e.message);
    body.reason = Some(e.reason.to_string());
    Refusal::from_body(body).counted(e.reason)
}

/// The policy for one workspace of a verified run.
pub fn decide(v: &Verified, workspace: &str) -> ApiResult<RunContext> {
    if !wire::valid_workspace(workspace) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "workspace {:?} is not a valid name: use 1-64 of A-Z a-z 0-9 . _ - (not starting with .)",
                workspace.chars().take(80).collect::<String>()
            ),
        ));
    }
    v.decide(workspace)
        .map_err(|m| Refusal::new(ErrorCode::BadRequest, m))
}

/// The scope this run saves to, or the refusal (a recorded decision).
pub fn save_scope(ctx: &RunContext) -> ApiResult<Scope> {
    ctx.save_scope().cloned().ok_or_else(|| {
        let message = format!(
            "this run ({}) may not save: {}",
            ctx.class().as_str(),
            ctx.save_denied_reason().unwrap_or_default()
        );
        Refusal::new(ErrorCode::SaveNotAllowed, message.clone()).decided(
            ctx,
            "save_not_allowed",
            "",
            message,
        )
    })
}

/// The decision as the wire states it.
pub fn wire_decision(ctx: &RunContext) -> wire::RunDecision {
    wire::RunDecision {
        class: ctx.class().as_str().into(),
        restore_scopes: ctx.restore_scopes().iter().map(|s| s.to_string()).collect(),
        save_scope: ctx.save_scope().map(|s| s.to_string()),
        save_denied_reason: ctx.save_denied_reason(),
    }
}
