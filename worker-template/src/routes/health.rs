//! `GET /v1/health`: service, protocol, Worker version, applied migrations,
//! and warnings about the settings (test issuer, missing grant key). No
//! authentication: it says nothing secret.

use stateful_ci_protocol::wire;
use stateful_ci_worker_core::config::{self, vars};
use worker::*;

use crate::refusal::{ApiResult, json};
use crate::settings::{load_config, var};
use crate::storage;

pub async fn get(env: &Env) -> ApiResult<Response> {
    let mut warnings = Vec::new();
    let (issuer, test_mode) = match load_config(env) {
        Ok(c) => (c.issuer, c.test_mode),
        Err(e) => {
            warnings.push(e.message().to_string());
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
    let migrations = match storage::applied_migrations(env).await {
        Ok(m) => m,
        Err(e) => {
            warnings.push(format!(
                "could not read d1_migrations: {}; apply the migrations",
                e.message()
            ));
            Vec::new()
        }
    };
    json(
        200,
        &wire::HealthResponse {
            service: wire::SERVICE_NAME.into(),
            protocol: wire::PROTOCOL_VERSION,
            worker_version: crate::WORKER_VERSION.into(),
            migrations,
            oidc_test_mode: test_mode,
            oidc_issuer: issuer,
            warnings,
        },
    )
}
