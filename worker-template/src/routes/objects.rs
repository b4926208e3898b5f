//! `PUT` and `GET /v1/objects/{key}`: object bytes stream between the
//! request and R2 and never pass through wasm (issue 9 item 1).
//!
//! Upload: the request body stream goes to `R2Bucket.put` together with the
//! `sha256` the key names; R2 hashes while it stores and refuses a mismatch,
//! so nothing becomes visible under a key its bytes do not hash to. R2 needs
//! the length up front: the body must carry `content-length` (at most
//! `MAX_OBJECT_SIZE`), and the body goes through a `FixedLengthStream` of
//! that length, piped by the runtime: a body that ends early or breaks fails
//! the pipe and the put, stores nothing, and is answered 400 (the pipe's
//! result tells a broken body from an R2 failure). No buffer of the declared
//! length is ever allocated, so memory stays flat whatever the uploads
//! (tested in `tests/worker/test/data-path.test.mjs` by the isolate's own
//! wasm and heap figures).
//!
//! Download: the R2 body stream becomes the response body; `Range` reads
//! ask R2 for just that range.

use stateful_ci_protocol::ObjectKey;
use stateful_ci_protocol::limits::MAX_OBJECT_SIZE;
use stateful_ci_protocol::wire::{self, ErrorCode};
use stateful_ci_worker_core::grant;
use stateful_ci_worker_core::range::{self, ByteRange};
use stateful_ci_worker_core::visibility::{Sight, key_hex, key_sha256};
use wasm_bindgen_futures::JsFuture;
use worker::*;

use crate::auth;
use crate::refusal::{ApiResult, Refusal, json};
use crate::settings::{grant_key, load_config, now_secs};
use crate::storage::r2::bucket;
use crate::storage::{objects, r2, snapshots};

/// The length the upload declares: required, a number, at most
/// `MAX_OBJECT_SIZE`.
fn declared_length(req: &Request) -> ApiResult<u64> {
    if req
        .headers()
        .get("transfer-encoding")?
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Err(Refusal::new(
            ErrorCode::LengthRequired,
            "object uploads must not be chunked: send the object with content-length (R2 needs the length before the first byte)",
        ));
    }
    let length: u64 = match req.headers().get("content-length")? {
        Some(v) => v.trim().parse().map_err(|_| {
            Refusal::new(
                ErrorCode::BadRequest,
                "content-length is not a number; send the object's exact length",
            )
        })?,
        None => {
            return Err(Refusal::new(
                ErrorCode::LengthRequired,
                "send content-length with the object upload (R2 needs the length before the first byte)",
            ));
        }
    };
    if length > MAX_OBJECT_SIZE {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!(
                "objects may not exceed {MAX_OBJECT_SIZE} bytes; this one has {length}; write smaller packs"
            ),
        ));
    }
    Ok(length)
}

/// Route names in `denial_counts`.
pub const PUT: &str = "put_object";
pub const GET: &str = "get_object";

pub async fn put_object(req: &mut Request, env: &Env, key: &ObjectKey) -> ApiResult<Response> {
    let cfg = load_config(env)?;
    let verified = auth::authenticate(req, env, &cfg).await?;
    // Whether a run may save does not depend on the workspace; uploads are
    // tied to the run's save scope, not to a workspace.
    let ctx = auth::decide(&verified, "default")?;
    let Some(scope) = ctx.save_scope().map(|s| s.to_string()) else {
        return Err(Refusal::new(
            ErrorCode::SaveNotAllowed,
            format!(
                "this run ({}) may not save, so it may not upload",
                ctx.class().as_str()
            ),
        ));
    };
    let length = declared_length(req)?;
    let tenant = ctx.tenant().key();
    let sight = Sight::of(&ctx);
    if let Some(size) = objects::visible(env, &tenant, &sight, &[*key])
        .await?
        .get(key)
    {
        // Already visible to this run: the body is not read.
        return json(
            200,
            &wire::PutObjectResponse {
                key: *key,
                size: *size,
                created: false,
            },
        );
    }
    stream_to_r2(env, req, &r2::r2_key(&tenant, key), key, length).await?;
    objects::record_upload(env, &tenant, &scope, key, length, now_secs()).await?;
    json(
        200,
        &wire::PutObjectResponse {
            key: *key,
            size: length,
            created: true,
        },
    )
}

/// `BUCKET.put(r2_key, body, { sha256 })`, where `body` is the request body
/// piped (natively, by the runtime: no byte enters wasm) through a
/// `FixedLengthStream` of the declared length. The pipe tells whose fault a
/// failed put is: if it failed, the client's body broke or ended before its
/// content-length (400, nothing stored); if it completed, R2 refused the
/// bytes (422 on a checksum mismatch) or failed (500, retryable). Also used
/// when the object is already stored but not visible to this run: the same
/// bytes replace the same bytes (R2 checked the hash), and the run has
/// proven it holds them.
async fn stream_to_r2(
    env: &Env,
    req: &Request,
    r2_key: &str,
    key: &ObjectKey,
    length: u64,
) -> ApiResult<()> {
    let bucket = bucket(env)?;
    let Some(body) = req.inner().body().filter(|_| length > 0) else {
        if length > 0 {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("content-length says {length} bytes but the request has no body"),
            ));
        }
        bucket
            .put(r2_key, Data::Bytes(Vec::new()))
            .sha256(key_sha256(key))
            .execute()
            .await
            .map_err(|e| refused(&e.to_string(), key, length, false))?;
        return Ok(());
    };
    let fixed = worker_sys::FixedLengthStream::new_big_int(js_sys::BigInt::from(length))
        .map_err(|e| Refusal::internal("could not make a FixedLengthStream", format!("{e:?}")))?;
    let pipe = JsFuture::from(body.pipe_to(&fixed.writable()));
    let put = bucket
        .put(r2_key, Data::ReadableStream(fixed.readable()))
        .sha256(key_sha256(key))
        .execute();
    let (put, pipe) = futures_join(put, pipe).await;
    match put {
        Ok(_) => Ok(()),
        Err(e) => Err(refused(&e.to_string(), key, length, pipe.is_err())),
    }
}

/// Both futures to completion (the put consumes what the pipe writes).
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// Turns a refused R2 put into the client's error: a checksum mismatch
/// (R2 error 10037), a request body that broke or did not have the declared
/// length (`body_failed`: the pipe from the request failed), or anything
/// else (retryable).
fn refused(message: &str, key: &ObjectKey, length: u64, body_failed: bool) -> Refusal {
    let lower = message.to_ascii_lowercase();
    if lower.contains("10037") || lower.contains("checksum") || lower.contains("digest") {
        Refusal::new(
            ErrorCode::HashMismatch,
            format!(
                "the uploaded bytes do not hash to the key {key}: nothing was stored; upload each object under the SHA-256 of its bytes"
            ),
        )
    } else if body_failed {
        Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "the request body ended or broke before the {length} bytes its content-length declared: nothing was stored; send the whole object"
            ),
        )
    } else if lower.contains("known length") {
        Refusal::new(
            ErrorCode::LengthRequired,
            "the upload's length is not known; send the object with content-length",
        )
    } else {
        Refusal::internal("R2 put failed (nothing was stored)", message)
    }
}

pub async fn get_object(req: &mut Request, env: &Env, key: &ObjectKey) -> ApiResult<Response> {
    let Some(token) = auth::bearer(req) else {
        return Err(Refusal::new(
            ErrorCode::InvalidGrant,
            "send Authorization: Bearer <grant from POST /v1/restore>",
        ));
    };
    if !grant::is_grant(&token) {
        return Err(Refusal::new(
            ErrorCode::InvalidGrant,
            "objects are read with the grant from POST /v1/restore, not with the OIDC token",
        ));
    }
    let claims = grant::verify(&grant_key(env)?, &token, now_secs())
        .map_err(|e| Refusal::new(ErrorCode::InvalidGrant, e.message()))?;
    if !snapshots::snapshot_has_object(env, &claims, key).await? {
        return Err(Refusal::new(
            ErrorCode::InvalidGrant,
            "this grant does not cover that object; it covers only the objects of the restored snapshot",
        ));
    }
    let wanted = match req.headers().get("range")? {
        Some(h) => {
            Some(range::parse(&h).map_err(|m| Refusal::new(ErrorCode::RangeNotSatisfiable, m))?)
        }
        None => None,
    };
    serve_object(env, &claims.t, key, wanted).await
}

/// Streams the object (or a range of it) from R2 into the response.
async fn serve_object(
    env: &Env,
    tenant: &str,
    key: &ObjectKey,
    wanted: Option<ByteRange>,
) -> ApiResult<Response> {
    let b = bucket(env)?;
    let r2k = r2::r2_key(tenant, key);
    let not_found = || {
        Refusal::new(
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
                .map_err(|e| Refusal::internal("R2 get failed", e))?
                .ok_or_else(not_found)?,
        ),
        Some(r) => {
            let size = b
                .head(r2k.clone())
                .await
                .map_err(|e| Refusal::internal("R2 head failed", e))?
                .ok_or_else(not_found)?
                .size();
            let (offset, length) = r.resolve(size).ok_or_else(|| {
                Refusal::new(
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
                .map_err(|e| Refusal::internal("R2 get failed", e))?
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
