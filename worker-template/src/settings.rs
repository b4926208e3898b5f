//! The Worker's settings and clock: plain-text vars and secrets (names in
//! `stateful_ci_worker_core::config::vars`), parsed into a `Config`, the
//! grant key, and the time in Unix seconds.

use stateful_ci_protocol::wire::ErrorCode;
use stateful_ci_worker_core::config::{self, Config, vars};
use worker::*;

use crate::refusal::{ApiResult, Refusal};

pub(crate) fn now_secs() -> i64 {
    (Date::now().as_millis() / 1000) as i64
}

/// A plain-text var, else a secret of that name.
pub(crate) fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| env.secret(name).ok().map(|v| v.to_string()))
}

pub(crate) fn load_config(env: &Env) -> ApiResult<Config> {
    Config::from_vars(|n| var(env, n)).map_err(|e| Refusal::new(ErrorCode::Misconfigured, e.0))
}

/// The read-grant HMAC key (secret `GRANT_KEY`).
pub(crate) fn grant_key(env: &Env) -> ApiResult<Vec<u8>> {
    match var(env, vars::GRANT_KEY) {
        Some(k) if k.len() >= config::MIN_GRANT_KEY_LEN => Ok(k.into_bytes()),
        _ => Err(Refusal::new(
            ErrorCode::Misconfigured,
            format!(
                "secret {} is missing or too short; redeploy with stateful-ci deploy (it sets it)",
                vars::GRANT_KEY
            ),
        )),
    }
}
