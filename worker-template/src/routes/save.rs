//! `POST /v1/save/prepare` (which of the snapshot's objects this run must
//! upload, and the head generation to commit against) and
//! `POST /v1/save/commit` (every listed object stored and visible to this
//! run, then compare-and-set in the scope's Durable Object, then the D1
//! records).

use stateful_ci_protocol::ObjectKey;
use stateful_ci_protocol::limits::MAX_OBJECT_SIZE;
use stateful_ci_protocol::wire::{self, ErrorBody, ErrorCode};
use stateful_ci_worker_core::commit::{CommitCall, Outcome};
use stateful_ci_worker_core::visibility::{self as vis, Sight};
use worker::*;

use crate::refusal::{ApiResult, Refusal, json};
use crate::settings::{load_config, now_secs};
use crate::storage::{objects, runs, snapshots};
use crate::{auth, body, coordinator};

/// Route names in `decisions` and `denial_counts`.
pub const PREPARE: &str = "save_prepare";
pub const COMMIT: &str = "save_commit";

fn list_error(e: vis::ListError) -> Refusal {
    Refusal::new(e.code, e.message)
}

pub async fn prepare(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let cfg = load_config(env)?;
    let verified = auth::authenticate(req, env, &cfg).await?;
    let body: wire::SavePrepareRequest = body::read_json(req).await?;
    let ctx = auth::decide(&verified, &body.workspace)?;
    let wanted = vis::prepare_objects(&body.objects).map_err(list_error)?;
    let scope = auth::save_scope(&ctx)?;
    let head = coordinator::head(env, &ctx.coordinator_name(&scope)).await?;
    let scope = scope.to_string();
    // "Missing" means not visible to this run (see worker_core::visibility).
    let present = objects::visible(env, &ctx.tenant().key(), &Sight::of(&ctx), &wanted).await?;
    let missing = wanted
        .into_iter()
        .filter(|k| !present.contains_key(k))
        .collect();
    runs::record_decision(env, PREPARE, &ctx, true, "save_allowed", &scope, "").await;
    json(
        200,
        &wire::SavePrepareResponse {
            scope,
            expected_generation: head.as_ref().map_or(0, |h| h.generation),
            head,
            missing,
            max_object_size: MAX_OBJECT_SIZE,
        },
    )
}

pub async fn commit(req: &mut Request, env: &Env) -> ApiResult<Response> {
    let cfg = load_config(env)?;
    let verified = auth::authenticate(req, env, &cfg).await?;
    let body: wire::SaveCommitRequest = body::read_json(req).await?;
    let ctx = auth::decide(&verified, &body.workspace)?;
    let listed = vis::commit_objects(body.manifest, &body.packs).map_err(list_error)?;
    if !wire::valid_idempotency_key(&body.idempotency_key) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "idempotency_key must be 1-128 printable ASCII characters without spaces",
        ));
    }
    let scope = auth::save_scope(&ctx)?;
    let name = ctx.coordinator_name(&scope);
    let scope = scope.to_string();
    // Every listed object must be stored and visible to this run: uploaded
    // for its save scope or in a snapshot of a scope it may read. The Worker
    // does not read the manifest: a client that lists fewer objects than its
    // snapshot needs only breaks its own restores (they fail verification),
    // and listing more can only name objects this run can already read.
    let present = objects::visible(env, &ctx.tenant().key(), &Sight::of(&ctx), &listed).await?;
    let missing: Vec<ObjectKey> = listed
        .iter()
        .filter(|k| !present.contains_key(k))
        .copied()
        .collect();
    if !missing.is_empty() {
        let mut e = ErrorBody::new(
            ErrorCode::MissingObjects,
            format!(
                "{} of the snapshot's objects are not stored for this run (objects of scopes it may not read count as missing); upload them (PUT /v1/objects/{{key}}) and commit again",
                missing.len()
            ),
        );
        let detail = format!("{} missing", missing.len());
        e.missing = missing;
        return Err(Refusal::from_body(e).decided(&ctx, "missing_objects", &scope, detail));
    }
    let now = now_secs();
    let outcome = coordinator::commit(
        env,
        &name,
        &CommitCall {
            manifest: body.manifest,
            expected_generation: body.expected_generation,
            idempotency_key: body.idempotency_key.clone(),
            now,
        },
    )
    .await?;
    let (head, replayed) = match outcome {
        Outcome::Applied(head) => (head, false),
        Outcome::Replayed(head) => (head, true),
        Outcome::Conflict(head) => {
            let mut e = ErrorBody::new(
                ErrorCode::GenerationConflict,
                format!(
                    "the scope's head moved since save/prepare (expected generation {}); prepare again and commit with the new generation",
                    body.expected_generation
                ),
            );
            e.head = head;
            return Err(Refusal::from_body(e).decided(&ctx, "generation_conflict", &scope, ""));
        }
        Outcome::KeyReused => {
            return Err(Refusal::new(
                ErrorCode::IdempotencyKeyReused,
                "this idempotency_key was used for a different manifest; use a new key per snapshot",
            )
            .decided(&ctx, "idempotency_key_reused", &scope, ""));
        }
    };
    let stored: u64 = present.values().sum();
    snapshots::record_snapshot(env, &ctx, &body, &scope, &head, &listed, stored, now).await?;
    runs::record_decision(
        env,
        COMMIT,
        &ctx,
        true,
        if replayed {
            "commit_replayed"
        } else {
            "commit_applied"
        },
        &scope,
        &format!("generation {}", head.generation),
    )
    .await;
    json(
        200,
        &wire::SaveCommitResponse {
            scope,
            head,
            replayed,
        },
    )
}
