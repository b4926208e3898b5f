//! The issuer's JWKS, cached per isolate (a `thread_local`: one isolate,
//! one thread) and refreshed by the trust crate's policy
//! ([`should_fetch_jwks`]): when nothing is cached or it is too old, and
//! once on an unknown `kid`, never more often than the floor.

use std::cell::RefCell;

use stateful_ci_protocol::wire::ErrorCode;
use stateful_ci_worker_core::auth::{Jwks, parse_jwks, should_fetch_jwks};
use stateful_ci_worker_core::config::Config;
use worker::*;

use crate::refusal::{ApiResult, Refusal};

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
        Refusal::new(
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
pub async fn current(cfg: &Config, now: i64) -> ApiResult<Jwks> {
    match cached_jwks(cfg) {
        Some((jwks, at)) if !should_fetch_jwks(Some(at), now, false) => Ok(jwks),
        _ => fetch_jwks(cfg, now).await,
    }
}

/// After a token named an unknown `kid`: a fresh JWKS when the refresh floor
/// allows, else None (the key is really unknown).
pub async fn after_unknown_kid(cfg: &Config, now: i64) -> ApiResult<Option<Jwks>> {
    let at = cached_jwks(cfg).map(|(_, at)| at);
    if should_fetch_jwks(at, now, true) {
        fetch_jwks(cfg, now).await.map(Some)
    } else {
        Ok(None)
    }
}
