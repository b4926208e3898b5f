//! `POST /v1/admin/purge` (admin token): deletes up to 1,000 objects of the
//! bucket per call, whatever they are, for `stateful-ci destroy`. One R2
//! binding call lists and one deletes the batch; binding calls are not
//! Cloudflare API requests, so emptying a 50,000-object bucket costs 50
//! Worker requests instead of 50,000 API requests against the account's
//! 1,200-per-5-minutes limit. The body must say
//! `{"confirm": "delete-every-object"}`: the route empties the cache.
//! Answer: `{"deleted": N, "more": bool}`; `more` is false once the bucket
//! is empty.

use serde::{Deserialize, Serialize};
use stateful_ci_protocol::wire::ErrorCode;
use worker::*;

use crate::refusal::{ApiResult, Refusal, json};
use crate::storage::r2;

#[derive(Deserialize)]
struct PurgeRequest {
    confirm: String,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize)]
struct PurgeAnswer {
    deleted: u32,
    more: bool,
}

pub async fn purge(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let body: PurgeRequest = crate::body::read_json(req).await?;
    if body.confirm != "delete-every-object" {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "send {\"confirm\": \"delete-every-object\"}: this route deletes every object of the bucket",
        ));
    }
    let limit = body.limit.unwrap_or(1000).clamp(1, 1000);
    let bucket = r2::bucket(env)?;
    let listed = bucket
        .list()
        .limit(limit)
        .execute()
        .await
        .map_err(|e| Refusal::internal("R2 list failed", e))?;
    let keys: Vec<String> = listed.objects().iter().map(|o| o.key()).collect();
    let deleted = keys.len() as u32;
    if !keys.is_empty() {
        bucket
            .delete_multiple(keys)
            .await
            .map_err(|e| Refusal::internal("R2 delete failed", e))?;
    }
    json(
        200,
        &PurgeAnswer {
            deleted,
            more: listed.truncated() || deleted == limit,
        },
    )
}
