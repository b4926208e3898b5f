//! The R2 bucket: objects are stored per tenant under
//! `r/<owner_id>/<repository_id>/<key>`. Bytes never pass through the
//! Worker (see `crate::routes::objects`).

use stateful_ci_protocol::wire::ErrorCode;
use worker::*;

use crate::refusal::{ApiResult, Refusal};

/// The R2 key of `key` (an `ObjectKey` or its string form) for `tenant`
/// (`Tenant::key()`).
pub fn r2_key(tenant: &str, key: impl std::fmt::Display) -> String {
    format!("r/{tenant}/{key}")
}

/// The `BUCKET` binding.
pub fn bucket(env: &Env) -> ApiResult<Bucket> {
    env.bucket("BUCKET").map_err(|e| {
        Refusal::new(
            ErrorCode::Misconfigured,
            format!("the R2 binding BUCKET is missing ({e}); redeploy with stateful-ci deploy"),
        )
    })
}
