//! The HTTP wire protocol between the runtime (client) and the Worker,
//! version [`PROTOCOL_VERSION`]: request and response bodies for every route,
//! and the error body. Types only: no I/O. `docs/PROTOCOL.md` is the prose
//! version of this page.
//!
//! Every route lives under `/v1/`. Bodies are JSON (`content-type:
//! application/json`) except object bytes. Unless a route says otherwise, the
//! request carries `Authorization: Bearer <GitHub Actions OIDC JWT>`; the
//! Worker derives the repository, the run's trust class and the scopes it may
//! read and write from the verified token only, never from request fields.
//!
//! | Route | Auth | Request | Response |
//! | --- | --- | --- | --- |
//! | `GET /v1/health` | none | - | [`HealthResponse`] |
//! | `POST /v1/restore` | OIDC | [`RestoreRequest`] | [`RestoreResponse`] |
//! | `POST /v1/save/prepare` | OIDC | [`SavePrepareRequest`] | [`SavePrepareResponse`] |
//! | `PUT /v1/objects/{key}` | OIDC (a run allowed to save) | object bytes, `content-length` required (not chunked), at most [`crate::limits::MAX_OBJECT_SIZE`] | [`PutObjectResponse`] |
//! | `GET /v1/objects/{key}` | grant: `Authorization: Bearer <grant>` from [`RestoreHit::grant`] | optional `Range: bytes=a-b` | bytes (200 or 206) |
//! | `POST /v1/save/commit` | OIDC | [`SaveCommitRequest`] | [`SaveCommitResponse`] |
//! | `GET /v1/admin/runs`, `/v1/admin/snapshots`, `/v1/admin/decisions`, `/v1/admin/sizes` | `Authorization: Bearer <admin token>` | `?limit=N` (default 50, max 500) | [`AdminRunsResponse`], [`AdminSnapshotsResponse`], [`AdminDecisionsResponse`], [`AdminSizesResponse`] |
//!
//! `{key}` is an [`ObjectKey`] (`packs/<hex>` or `manifests/<hex>`, the hex
//! being the lowercase SHA-256 of the object's stored bytes). Objects are
//! stored per repository: the same key in two repositories names two
//! objects. The Worker never reads object bytes: an upload streams into R2
//! with the SHA-256 the key names, R2 refuses a mismatch (nothing is stored:
//! [`ErrorCode::HashMismatch`]), and a download streams R2 into the response.
//!
//! Within a repository, an object is *visible* to a run when it was uploaded
//! for the run's save scope or a committed snapshot in a scope the run may
//! restore (or save to) lists it. `save/prepare` reports every other key as
//! missing and `save/commit` refuses it ([`ErrorCode::MissingObjects`]):
//! knowing a key is never enough, the run must upload the bytes itself.
//!
//! A save is: `save/prepare` with every object key the snapshot needs (its
//! root manifest and every pack it references, at most
//! [`MAX_KEYS_PER_REQUEST`] in all), `PUT` each key listed as missing, then
//! `save/commit` with the `expected_generation` from prepare. A commit whose
//! expectation is stale fails with [`ErrorCode::GenerationConflict`] (the body
//! carries the current head); the client may then re-prepare and commit again.
//! A retried commit with the same `idempotency_key` returns the first result.
//!
//! A restore is: `restore`, then, on a hit, `GET` the manifest key and the
//! listed packs with the grant (valid until `grant_expires_at`, for exactly
//! that snapshot's objects).
//!
//! Every error has a JSON body [`ErrorBody`] with a stable [`ErrorCode`] and a
//! message that says what to do. Clients should retry 429 and 5xx with backoff
//! and treat every other error as final.

use serde::{Deserialize, Serialize};

use crate::format::{Head, ObjectKey};

/// Version of this wire protocol; the path prefix is `/v{PROTOCOL_VERSION}`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The `service` field of [`HealthResponse`].
pub const SERVICE_NAME: &str = "stateful-ci";
/// The audience clients request for their OIDC token unless configured.
pub const DEFAULT_AUDIENCE: &str = "stateful-ci";
/// The most object keys one `save/prepare` may list, and the most objects
/// one `save/commit` may name (its manifest included): a snapshot references
/// at most this many objects.
pub const MAX_KEYS_PER_REQUEST: usize = 1000;
/// Longest accepted `idempotency_key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Longest accepted workspace name.
pub const MAX_WORKSPACE_LEN: usize = 64;

/// Whether `name` is an acceptable workspace name: 1 to
/// [`MAX_WORKSPACE_LEN`] bytes of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_workspace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_WORKSPACE_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `key` is an acceptable idempotency key: 1 to
/// [`MAX_IDEMPOTENCY_KEY_LEN`] printable ASCII bytes without spaces.
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
}

/// `GET /v1/health`. No authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Always [`SERVICE_NAME`].
    pub service: String,
    /// [`PROTOCOL_VERSION`] of the Worker.
    pub protocol: u32,
    /// The Worker build's version (the `stateful-ci` release that deployed it).
    pub worker_version: String,
    /// Names of the D1 migrations applied, in order (from `d1_migrations`).
    pub migrations: Vec<String>,
    /// True when the Worker trusts a local test OIDC issuer instead of
    /// GitHub's: never the case for a `deploy`ed Worker.
    pub oidc_test_mode: bool,
    /// The issuer whose tokens are accepted.
    pub oidc_issuer: String,
    /// Human-readable warnings (test mode, missing migrations, missing
    /// secrets). Empty when all is well.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `POST /v1/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The workspace name from the project's config (see [`valid_workspace`]).
    pub workspace: String,
}

/// What the Worker decided for this run, from its verified token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDecision {
    /// `trusted`, `internal`, `external` or `privileged`.
    pub class: String,
    /// Scopes this run may restore from, in the order they are tried.
    pub restore_scopes: Vec<String>,
    /// The one scope this run may save to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_scope: Option<String>,
    /// Why saving is not allowed, when `save_scope` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_denied_reason: Option<String>,
}

/// `POST /v1/restore` answer. `hit` is absent on a miss (no candidate scope
/// has a head); that is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResponse {
    pub decision: RunDecision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit: Option<RestoreHit>,
}

/// The snapshot a restore may use and the grant to read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreHit {
    /// The scope the snapshot came from (one of `restore_scopes`).
    pub scope: String,
    /// Its head: the manifest key and generation.
    pub head: Head,
    /// The packs the snapshot uses, as recorded at commit.
    pub packs: Vec<ObjectKey>,
    /// Bearer credential for `GET /v1/objects/{key}`, valid for the manifest
    /// and `packs` only, until `grant_expires_at`.
    pub grant: String,
    /// Unix seconds.
    pub grant_expires_at: i64,
}

/// `POST /v1/save/prepare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavePrepareRequest {
    pub workspace: String,
    /// Every object the snapshot needs (manifest and packs); at most
    /// [`MAX_KEYS_PER_REQUEST`].
    pub objects: Vec<ObjectKey>,
}

/// `POST /v1/save/prepare` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavePrepareResponse {
    /// The scope this run saves to.
    pub scope: String,
    /// The scope's current head, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// The generation `save/commit` must name: the head's, or 0 when the
    /// scope has no head yet.
    pub expected_generation: u64,
    /// The listed keys that are not stored or not visible to this run (see
    /// the module docs); upload exactly these.
    pub missing: Vec<ObjectKey>,
    /// The largest object `PUT` accepts, in bytes.
    pub max_object_size: u64,
}

/// `PUT /v1/objects/{key}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutObjectResponse {
    pub key: ObjectKey,
    pub size: u64,
    /// False when the object was already stored and visible to this run (the
    /// body was not read).
    pub created: bool,
}

/// `POST /v1/save/commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveCommitRequest {
    pub workspace: String,
    /// The snapshot's root manifest (a `manifests/` key), already uploaded.
    pub manifest: ObjectKey,
    /// Every other object the snapshot references (`packs/` keys), already
    /// uploaded; with the manifest at most [`MAX_KEYS_PER_REQUEST`]. The
    /// Worker does not read the manifest: it checks that each listed object
    /// is stored and visible to this run, and records the list as the
    /// snapshot's objects (what a restore grant covers and retention keeps).
    /// Listing fewer than the snapshot needs only breaks this snapshot's own
    /// restores (they fail verification); listing more can only name objects
    /// the run can already read.
    pub packs: Vec<ObjectKey>,
    /// From `save/prepare`: the head generation this snapshot was based on.
    pub expected_generation: u64,
    /// Chosen by the client, unique per attempted snapshot (e.g. run id +
    /// attempt + manifest hash); a retry with the same key returns the first
    /// result.
    pub idempotency_key: String,
    /// Plaintext bytes of the snapshot's files, for the dashboard.
    #[serde(default)]
    pub total_bytes: u64,
    /// Number of entries, for the dashboard.
    #[serde(default)]
    pub entries: u64,
}

/// `POST /v1/save/commit` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveCommitResponse {
    pub scope: String,
    /// The new head (or, for a replayed idempotency key, the head the first
    /// commit produced).
    pub head: Head,
    /// True when this answer repeats an earlier commit's result.
    pub replayed: bool,
}

/// A stable machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body or a parameter is malformed.
    BadRequest,
    /// 401: no bearer token.
    MissingToken,
    /// 401: the OIDC token failed verification; the message says which check.
    InvalidToken,
    /// 403: the token's repository is not in the deployment's allow-list.
    RepositoryNotAllowed,
    /// 403: policy does not let this run save (e.g. an external run without
    /// a pull request number).
    SaveNotAllowed,
    /// 401/403: the grant is missing, expired, forged or does not cover the
    /// object.
    InvalidGrant,
    /// 401: admin route without the right admin token.
    AdminUnauthorized,
    /// 503: admin routes are disabled (no admin token configured).
    AdminDisabled,
    /// 404: route or object not found.
    NotFound,
    /// 405: method not allowed on this route.
    MethodNotAllowed,
    /// 411: `PUT` without `content-length` (or chunked).
    LengthRequired,
    /// 413: the body exceeds the limit in the message.
    TooLarge,
    /// 416: the `Range` cannot be satisfied.
    RangeNotSatisfiable,
    /// 422: uploaded bytes do not hash (SHA-256) to the key; nothing was
    /// stored.
    HashMismatch,
    /// 409: the scope's head moved since `save/prepare`; body has `head`.
    GenerationConflict,
    /// 409: the idempotency key was used for a different commit.
    IdempotencyKeyReused,
    /// 422: a commit names objects that are not stored or not visible to
    /// this run; body lists them.
    MissingObjects,
    /// 422: kept for older clients; the Worker no longer reads manifests and
    /// does not send it.
    ManifestInvalid,
    /// 502: the OIDC issuer's keys could not be fetched.
    JwksUnavailable,
    /// 500: the Worker is misconfigured (e.g. a secret is missing).
    Misconfigured,
    /// 500: anything else; retry, and report it if it persists.
    Internal,
}

impl ErrorCode {
    /// The stable string form (same as the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::RepositoryNotAllowed => "repository_not_allowed",
            ErrorCode::SaveNotAllowed => "save_not_allowed",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::AdminUnauthorized => "admin_unauthorized",
            ErrorCode::AdminDisabled => "admin_disabled",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::GenerationConflict => "generation_conflict",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::MissingObjects => "missing_objects",
            ErrorCode::ManifestInvalid => "manifest_invalid",
            ErrorCode::JwksUnavailable => "jwks_unavailable",
            ErrorCode::Misconfigured => "misconfigured",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the Worker answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::MissingToken | ErrorCode::InvalidToken | ErrorCode::AdminUnauthorized => 401,
            ErrorCode::InvalidGrant => 403,
            ErrorCode::RepositoryNotAllowed | ErrorCode::SaveNotAllowed => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::GenerationConflict | ErrorCode::IdempotencyKeyReused => 409,
            ErrorCode::LengthRequired => 411,
            ErrorCode::TooLarge => 413,
            ErrorCode::RangeNotSatisfiable => 416,
            ErrorCode::HashMismatch | ErrorCode::MissingObjects | ErrorCode::ManifestInvalid => 422,
            ErrorCode::Misconfigured | ErrorCode::Internal => 500,
            ErrorCode::JwksUnavailable => 502,
            ErrorCode::AdminDisabled => 503,
        }
    }

    /// Whether a client should retry the request (with backoff).
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Internal | ErrorCode::JwksUnavailable)
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
    /// For [`ErrorCode::InvalidToken`] and friends: which check failed, as a
    /// stable snake_case reason (e.g. `expired`, `bad_signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For [`ErrorCode::GenerationConflict`]: the scope's current head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// For [`ErrorCode::MissingObjects`]: the keys the store lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<ObjectKey>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            reason: None,
            head: None,
            missing: Vec::new(),
        }
    }
}

/// A run as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRun {
    pub repository: String,
    pub run_id: String,
    pub run_attempt: String,
    pub workflow_ref: String,
    pub git_ref: String,
    pub event: String,
    pub actor: String,
    pub class: String,
    /// Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRunsResponse {
    pub runs: Vec<AdminRun>,
}

/// A committed snapshot with its producer's verified claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSnapshot {
    pub repository: String,
    pub workspace: String,
    pub scope: String,
    pub manifest: String,
    pub generation: u64,
    /// Unix seconds.
    pub created_at: i64,
    pub total_bytes: u64,
    pub stored_bytes: u64,
    pub entries: u64,
    pub workflow_ref: String,
    pub job_workflow_ref: String,
    pub git_ref: String,
    pub event: String,
    pub sha: String,
    pub actor: String,
    pub run_id: String,
    pub runner_environment: String,
    pub class: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSnapshotsResponse {
    pub snapshots: Vec<AdminSnapshot>,
}

/// One recorded policy or authentication decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminDecision {
    /// Unix seconds.
    pub at: i64,
    pub route: String,
    pub repository: String,
    pub run_id: String,
    pub class: String,
    pub allowed: bool,
    /// Stable reason code (e.g. `restore_hit`, `save_not_allowed`, `expired`).
    pub reason: String,
    pub scope: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminDecisionsResponse {
    pub decisions: Vec<AdminDecision>,
}

/// Stored size per repository and workspace scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminScopeSize {
    pub repository: String,
    pub workspace: String,
    pub scope: String,
    pub snapshots: u64,
    pub head_generation: u64,
    /// Sum of the stored sizes of the objects the scope's snapshots use.
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSizesResponse {
    pub scopes: Vec<AdminScopeSize>,
    /// Bytes of all objects stored for all repositories.
    pub total_object_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ObjectKind;

    #[test]
    fn error_codes_serialise_as_their_stable_strings() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::InvalidToken,
            ErrorCode::GenerationConflict,
            ErrorCode::HashMismatch,
            ErrorCode::MissingObjects,
            ErrorCode::IdempotencyKeyReused,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(code.status() >= 400);
        }
    }

    #[test]
    fn error_body_round_trips_and_omits_empty_fields() {
        let b = ErrorBody::new(ErrorCode::NotFound, "no such object");
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"code":"not_found","message":"no such object"}"#);
        let back: ErrorBody = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn commit_request_uses_key_strings() {
        let m = ObjectKey::for_bytes(ObjectKind::Manifest, b"m");
        let p = ObjectKey::for_bytes(ObjectKind::Pack, b"p");
        let req = SaveCommitRequest {
            workspace: "default".into(),
            manifest: m,
            packs: vec![p],
            expected_generation: 3,
            idempotency_key: "run-1-1".into(),
            total_bytes: 0,
            entries: 0,
        };
        let v: serde_json::Value = serde_json::to_value(&req).unwrap();
        assert_eq!(v["manifest"], serde_json::Value::String(m.to_string()));
        let back: SaveCommitRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
        let bad = serde_json::json!({"workspace":"w","manifest":"packs/zz","packs":[],"expected_generation":0,"idempotency_key":"k"});
        assert!(serde_json::from_value::<SaveCommitRequest>(bad).is_err());
    }

    #[test]
    fn workspace_and_idempotency_names_are_checked() {
        assert!(valid_workspace("default") && valid_workspace("node_modules-1.2"));
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_workspace(bad), "{bad:?}");
        }
        assert!(valid_idempotency_key("run:1:abc"));
        assert!(!valid_idempotency_key("has space") && !valid_idempotency_key(""));
    }
}
