//! `PUT` and `GET /v1/objects/{key}`: object bytes stream between the
//! request and R2 and never pass through wasm (issue 9 item 1).
//!
//! Upload: the request body stream goes to `R2Bucket.put` together with the
//! `sha256` the key names; R2 hashes while it stores and refuses a mismatch,
//! so nothing becomes visible under a key its bytes do not hash to. R2 needs
//! the length up front: the body must carry `content-length` (at most
//! `MAX_OBJECT_SIZE`), and the runtime enforces it while streaming (the HTTP
//! layer delivers exactly that many bytes or fails the stream; a shorter
//! body fails the put and stores nothing). No buffer of the declared length
//! is ever allocated, so memory stays flat whatever the uploads.
//!
//! Download: the R2 body stream becomes the response body; `Range` reads
//! ask R2 for just that range.

use stateful_ci_protocol::ObjectKey;
use stateful_ci_protocol::limits::MAX_OBJECT_SIZE;
use stateful_ci_protocol::wire::{self, ErrorCode};
use stateful_ci_worker_core::grant;
use stateful_ci_worker_core::range::{self, ByteRange};
use stateful_ci_worker_core::visibility::{Sight, key_hex, key_sha256};
use worker::*;

use crate::{ApiError, ApiResult, store, visibility};

/// The length the upload declares: required, a number, at most
/// `MAX_OBJECT_SIZE`.
fn declared_length(req: &Request) -> ApiResult<u64> {
    if req
        .headers()
        .get("transfer-encoding")?
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Err(ApiError::new(
            ErrorCode::LengthRequired,
            "object uploads must not be chunked: send the object with content-length (R2 needs the length before the first byte)",
        ));
    }
    let length: u64 = match req.headers().get("content-length")? {
        Some(v) => v.trim().parse().map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                "content-length is not a number; send the object's exact length",
            )
        })?,
        None => {
            return Err(ApiError::new(
                ErrorCode::LengthRequired,
                "send content-length with the object upload (R2 needs the length before the first byte)",
            ));
        }
    };
    if length > MAX_OBJECT_SIZE {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "objects may not exceed {MAX_OBJECT_SIZE} bytes; this one has {length}; write smaller packs"
            ),
        ));
    }
    Ok(length)
}

pub async fn put_object(req: &mut Request, env: &Env, key: &ObjectKey) -> ApiResult<Response> {
    let cfg = crate::load_config(env)?;
    let verified = crate::authenticate(req, env, &cfg, "put_object").await?;
    // Whether a run may save does not depend on the workspace; uploads are
    // tied to the run's save scope, not to a workspace.
    let ctx = crate::decide(&verified, "default")?;
    let Some(scope) = ctx.save_scope.clone() else {
        return Err(ApiError::new(
            ErrorCode::SaveNotAllowed,
            format!(
                "this run ({}) may not save, so it may not upload",
                ctx.class.as_str()
            ),
        ));
    };
    let length = declared_length(req)?;
    let tenant = ctx.tenant.id();
    let sight = Sight::of(&ctx);
    if let Some(size) = visibility::visible(env, &tenant, &sight, &[*key])
        .await?
        .get(key)
    {
        // Already visible to this run: the body is not read.
        return crate::json(
            200,
            &wire::PutObjectResponse {
                key: *key,
                size: *size,
                created: false,
            },
        );
    }
    stream_to_r2(env, req, &store::r2_key(&tenant, key), key, length).await?;
    visibility::record_upload(env, &tenant, &scope, key, length, crate::now_secs()).await?;
    crate::json(
        200,
        &wire::PutObjectResponse {
            key: *key,
            size: length,
            created: true,
        },
    )
}

/// `BUCKET.put(r2_key, request.body, { sha256 })`. Also used when the object
/// is already stored but not visible to this run: the same bytes replace the
/// same bytes (R2 checked the hash), and the run has proven it holds them.
async fn stream_to_r2(
    env: &Env,
    req: &Request,
    r2_key: &str,
    key: &ObjectKey,
    length: u64,
) -> ApiResult<()> {
    let value = match req.inner().body() {
        Some(stream) if length > 0 => Data::ReadableStream(stream),
        _ if length == 0 => Data::Bytes(Vec::new()),
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("content-length says {length} bytes but the request has no body"),
            ));
        }
    };
    bucket(env)?
        .put(r2_key, value)
        .sha256(key_sha256(key))
        .execute()
        .await
        .map_err(|e| refused(&e.to_string(), key, length))?;
    Ok(())
}

/// Turns a refused R2 put into the client's error: a checksum mismatch
/// (R2 error 10037), a body that did not have the declared length, or
/// anything else (retryable).
fn refused(message: &str, key: &ObjectKey, length: u64) -> ApiError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("10037") || lower.contains("checksum") || lower.contains("digest") {
        ApiError::new(
            ErrorCode::HashMismatch,
            format!(
                "the uploaded bytes do not hash to the key {key}: nothing was stored; upload each object under the SHA-256 of its bytes"
            ),
        )
    } else if lower.contains("known length") {
        ApiError::new(
            ErrorCode::LengthRequired,
            "the upload's length is not known; send the object with content-length",
        )
    } else if lower.contains("length")
        || lower.contains("eof")
        || lower.contains("disconnect")
        || lower.contains("expected")
        || lower.contains("bytes")
    {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "the body did not have the {length} bytes content-length declared ({message}); nothing was stored; send the whole object"
            ),
        )
    } else {
        ApiError::internal(
            "R2 put failed (nothing was stored; a body that ends before its content-length fails this way too)",
            message,
        )
    }
}

pub async fn get_object(req: &mut Request, env: &Env, key: &ObjectKey) -> ApiResult<Response> {
    let Some(token) = crate::bearer(req) else {
        return Err(ApiError::new(
            ErrorCode::InvalidGrant,
            "send Authorization: Bearer <grant from POST /v1/restore>",
        ));
    };
    if !grant::is_grant(&token) {
        return Err(ApiError::new(
            ErrorCode::InvalidGrant,
            "objects are read with the grant from POST /v1/restore, not with the OIDC token",
        ));
    }
    let claims = grant::verify(&crate::grant_key(env)?, &token, crate::now_secs())
        .map_err(|e| ApiError::new(ErrorCode::InvalidGrant, e.message()))?;
    if !store::snapshot_has_object(env, &claims, key).await? {
        return Err(ApiError::new(
            ErrorCode::InvalidGrant,
            "this grant does not cover that object; it covers only the objects of the restored snapshot",
        ));
    }
    let wanted = match req.headers().get("range")? {
        Some(h) => {
            Some(range::parse(&h).map_err(|m| ApiError::new(ErrorCode::RangeNotSatisfiable, m))?)
        }
        None => None,
    };
    serve_object(env, &claims.t, key, wanted).await
}

fn bucket(env: &Env) -> ApiResult<Bucket> {
    env.bucket("BUCKET").map_err(|e| {
        ApiError::new(
            ErrorCode::Misconfigured,
            format!("the R2 binding BUCKET is missing ({e}); redeploy with stateful-ci deploy"),
        )
    })
}

/// Streams the object (or a range of it) from R2 into the response.
async fn serve_object(
    env: &Env,
    tenant: &str,
    key: &ObjectKey,
    wanted: Option<ByteRange>,
) -> ApiResult<Response> {
    let b = bucket(env)?;
    let r2k = store::r2_key(tenant, key);
    let not_found = || {
        ApiError::new(
            ErrorCode::NotFound,
            format!("object {key} is not stored (it may have been swept); restore again"),
        )
    };
    let headers = Headers::new();
    headers.set("content-type", "application/octet-stream")?;
    headers.set("accept-ranges", "bytes")?;
    headers.set("cache-control", "private, max-age=3600, immutable")?;
    headers.set("etag", &format!("\"{}\"", key_hex(key)))?;
    let (status, object) = match wanted {
        None => (
            200,
            b.get(r2k)
                .execute()
                .await
                .map_err(|e| ApiError::internal("R2 get failed", e))?
                .ok_or_else(not_found)?,
        ),
        Some(r) => {
            let size = b
                .head(r2k.clone())
                .await
                .map_err(|e| ApiError::internal("R2 head failed", e))?
                .ok_or_else(not_found)?
                .size();
            let (offset, length) = r.resolve(size).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::RangeNotSatisfiable,
                    format!("the range is outside the object ({size} bytes)"),
                )
            })?;
            headers.set("content-range", &range::content_range(offset, length, size))?;
            let o = b
                .get(r2k)
                .range(worker::Range::OffsetWithLength { offset, length })
                .execute()
                .await
                .map_err(|e| ApiError::internal("R2 get failed", e))?
                .ok_or_else(not_found)?;
            (206, o)
        }
    };
    let body = object.body().ok_or_else(not_found)?.response_body()?;
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .body(body))
}
