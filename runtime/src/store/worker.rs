//! The store behind a deployed stateful-ci Worker (protocol v1, see
//! `docs/PROTOCOL.md`).
//!
//! The Worker decides, from the run's verified GitHub OIDC token, which
//! snapshot a restore may use and which scope a save writes to; this client
//! never names a scope itself. Objects are read with the short-lived grant
//! a restore answer carries. Every answer is untrusted: JSON bodies are size
//! capped and parsed into typed shapes, object bytes are verified by the
//! engine against their keys (SHA-256, which R2 also checks on upload) and
//! blob ids.
//!
//! Transfers run in parallel (the engine calls `put`/`get` from
//! [`Store::parallelism`] threads) with bounded memory: an upload's body is
//! one shared copy of the object, reused by every retry, and the copies in
//! flight together stay under [`UPLOAD_BUDGET`] bytes; a download is read
//! into one buffer sized from `content-length` and capped at the object
//! size limit.

use std::collections::HashSet;
use std::io::Read;
use std::ops::Range;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use serde::Serialize;
use serde::de::DeserializeOwned;
use stateful_ci_net::reqwest::blocking::{Client, RequestBuilder, Response};
use stateful_ci_net::reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use stateful_ci_net::{RetryPolicy, send};
use stateful_ci_protocol::wire::{
    DEFAULT_AUDIENCE, MAX_KEYS_PER_REQUEST, RestoreRequest, RestoreResponse, SaveCommitRequest,
    SaveCommitResponse, SavePrepareRequest, SavePrepareResponse,
};
use stateful_ci_protocol::{Head, ObjectKey};

use super::{CasOutcome, Commit, RestorePoint, Spare, Store};
use crate::error::{Error, Result};

/// JSON answers larger than this are refused.
const MAX_JSON: u64 = 16 * 1024 * 1024;

/// Transfers in flight at once.
const PARALLEL_TRANSFERS: usize = 8;

/// At most this many bytes of upload bodies are held at once, whatever the
/// engine's parallelism (one upload of a larger object still goes alone).
pub const UPLOAD_BUDGET: u64 = 128 * 1024 * 1024;

/// A byte budget: `acquire(n)` waits until `n` more bytes fit (or nothing
/// else is held), and the returned guard gives them back.
struct Budget {
    held: Mutex<u64>,
    freed: Condvar,
    limit: u64,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Budget {
            held: Mutex::new(0),
            freed: Condvar::new(),
            limit,
        }
    }

    fn acquire(&self, n: u64) -> BudgetGuard<'_> {
        let mut held = self.held.lock().unwrap();
        while *held > 0 && *held + n > self.limit {
            held = self.freed.wait(held).unwrap();
        }
        *held += n;
        BudgetGuard { budget: self, n }
    }
}

struct BudgetGuard<'a> {
    budget: &'a Budget,
    n: u64,
}

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        *self.budget.held.lock().unwrap() -= self.n;
        self.budget.freed.notify_all();
    }
}

/// Where the runner's OIDC token comes from (GitHub's runner contract).
#[derive(Clone)]
pub struct OidcSource {
    pub request_url: String,
    pub request_token: String,
    pub audience: String,
}

impl std::fmt::Debug for OidcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSource")
            .field("request_url", &"<redacted>")
            .field("audience", &self.audience)
            .finish()
    }
}

impl OidcSource {
    /// From `ACTIONS_ID_TOKEN_REQUEST_URL` / `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn from_env(audience: Option<&str>) -> Result<Self> {
        let url = std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL")
            .ok()
            .filter(|v| !v.is_empty());
        let token = std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
            .ok()
            .filter(|v| !v.is_empty());
        match (url, token) {
            (Some(request_url), Some(request_token)) => Ok(OidcSource {
                request_url,
                request_token,
                audience: audience.unwrap_or(DEFAULT_AUDIENCE).to_string(),
            }),
            _ => Err(Error::store(
                "no GitHub OIDC token available: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set",
            )
            .with_hint(
                "give the job `permissions: id-token: write` (fork pull requests never get one; they run cold)",
            )),
        }
    }
}

pub struct WorkerStore {
    base: String,
    workspace: String,
    client: Client,
    policy: RetryPolicy,
    oidc: OidcSource,
    token: Mutex<Option<String>>,
    /// The grant from the last restore answer and the keys it covers.
    grant: Mutex<Option<(String, HashSet<ObjectKey>)>>,
    /// Bytes of upload bodies in flight.
    uploads: Budget,
}

impl WorkerStore {
    pub fn new(base_url: &str, workspace: &str, oidc: OidcSource) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Error::user(
                format!("backend URL {base_url:?} is not an http(s) URL"),
                "pass the Worker URL that `stateful-ci deploy` printed, e.g. https://stateful-ci.example.workers.dev",
            ));
        }
        Ok(WorkerStore {
            base,
            workspace: workspace.to_string(),
            client: stateful_ci_net::client(Duration::from_secs(600)),
            policy: RetryPolicy::default(),
            oidc,
            token: Mutex::new(None),
            grant: Mutex::new(None),
            uploads: Budget::new(UPLOAD_BUDGET),
        })
    }

    /// The run's OIDC token, fetched once.
    fn token(&self) -> Result<String> {
        let mut cached = self.token.lock().unwrap();
        if let Some(t) = &*cached {
            return Ok(t.clone());
        }
        let sep = if self.oidc.request_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{sep}audience={}",
            self.oidc.request_url,
            urlencode(&self.oidc.audience)
        );
        let resp = self.send(
            || {
                self.client
                    .get(&url)
                    .header(AUTHORIZATION, format!("bearer {}", self.oidc.request_token))
            },
            "the GitHub OIDC token endpoint",
        )?;
        if !resp.status().is_success() {
            return Err(Error::store(format!(
                "the GitHub OIDC token endpoint answered {}",
                resp.status()
            ))
            .with_hint("check that the job has `permissions: id-token: write`"));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            value: String,
        }
        let t: TokenAnswer = read_json(resp, "the GitHub OIDC token endpoint")?;
        if t.value.is_empty() || t.value.len() > 16 * 1024 {
            return Err(Error::store(
                "the GitHub OIDC token endpoint returned no usable token",
            ));
        }
        *cached = Some(t.value.clone());
        Ok(t.value)
    }

    fn send(&self, build: impl Fn() -> RequestBuilder, what: &str) -> Result<Response> {
        send(build, &self.policy, |_| {}).map_err(|e| {
            Error::store(format!("{what}: {e}"))
                .with_hint("check the backend URL and the runner's network; the job goes on cold")
        })
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> std::result::Result<T, ApiError> {
        let token = self.token().map_err(ApiError::Other)?;
        let url = format!("{}{route}", self.base);
        let body = serde_json::to_vec(body).expect("request serialises");
        let resp = self
            .send(
                || {
                    self.client
                        .post(&url)
                        .header(AUTHORIZATION, format!("Bearer {token}"))
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone())
                },
                &format!("POST {route}"),
            )
            .map_err(ApiError::Other)?;
        if resp.status().is_success() {
            read_json(resp, route).map_err(ApiError::Other)
        } else {
            Err(ApiError::Api(Box::new(api_error(resp, route))))
        }
    }

    /// A grant covering `key`, asking for a fresh restore answer if needed.
    fn grant_for(&self, key: &ObjectKey, refresh: bool) -> Result<String> {
        if !refresh {
            if let Some((g, keys)) = &*self.grant.lock().unwrap() {
                if keys.contains(key) {
                    return Ok(g.clone());
                }
            }
        }
        self.restore_point()?;
        match &*self.grant.lock().unwrap() {
            Some((g, keys)) if keys.contains(key) => Ok(g.clone()),
            _ => Err(Error::store(format!(
                "the backend gives this run no access to {key} (it is not part of the snapshot this run may restore)"
            ))),
        }
    }

    /// Upload one object's bytes (already owned by `body`).
    fn put_body(&self, key: &ObjectKey, body: Bytes) -> Result<()> {
        let token = self.token()?;
        let url = format!("{}/v1/objects/{key}", self.base);
        let resp = self.send(
            || {
                self.client
                    .put(&url)
                    .header(AUTHORIZATION, format!("Bearer {token}"))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, body.len())
                    .body(body.clone())
            },
            &format!("PUT {key}"),
        )?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(api_error(resp, &format!("PUT {key}")).into_error())
        }
    }
}

/// A body's bytes that go to a [`Spare`] when the last copy of the body is
/// dropped (the HTTP client keeps one for a redirect until its request
/// future ends, after the answer is handed over).
struct GiveBack {
    buf: Vec<u8>,
    spare: Spare,
}

impl AsRef<[u8]> for GiveBack {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.buf));
    }
}

impl Store for WorkerStore {
    fn describe(&self) -> String {
        format!("backend {}", self.base)
    }

    fn restore_point(&self) -> Result<Option<RestorePoint>> {
        let ans: RestoreResponse = self
            .post(
                "/v1/restore",
                &RestoreRequest {
                    workspace: self.workspace.clone(),
                },
            )
            .map_err(ApiError::into_error)?;
        let Some(hit) = ans.hit else { return Ok(None) };
        let mut keys: HashSet<ObjectKey> = hit.packs.iter().copied().collect();
        keys.insert(hit.head.snapshot);
        *self.grant.lock().unwrap() = Some((hit.grant, keys));
        Ok(Some(RestorePoint {
            head: hit.head,
            scope: hit.scope,
            trust: Some(ans.decision.class),
        }))
    }

    fn save_head(&self) -> Result<Option<Head>> {
        let ans: SavePrepareResponse = self
            .post(
                "/v1/save/prepare",
                &SavePrepareRequest {
                    workspace: self.workspace.clone(),
                    objects: vec![],
                },
            )
            .map_err(ApiError::into_error)?;
        Ok(ans.head)
    }

    fn missing(&self, keys: &[ObjectKey]) -> Result<HashSet<ObjectKey>> {
        let mut out = HashSet::new();
        for chunk in keys.chunks(MAX_KEYS_PER_REQUEST) {
            let ans: SavePrepareResponse = self
                .post(
                    "/v1/save/prepare",
                    &SavePrepareRequest {
                        workspace: self.workspace.clone(),
                        objects: chunk.to_vec(),
                    },
                )
                .map_err(ApiError::into_error)?;
            let asked: HashSet<&ObjectKey> = chunk.iter().collect();
            out.extend(ans.missing.into_iter().filter(|k| asked.contains(k)));
        }
        Ok(out)
    }

    fn put(&self, key: &ObjectKey, bytes: &[u8]) -> Result<()> {
        // The HTTP body must own its bytes: one copy per upload, shared by
        // every retry; the budget bounds the copies held at once.
        let _held = self.uploads.acquire(bytes.len() as u64);
        self.put_body(key, Bytes::copy_from_slice(bytes))
    }

    fn put_owned(&self, key: &ObjectKey, bytes: Vec<u8>, spare: &Spare) -> Result<()> {
        // No copy: the pack becomes the body. The budget still bounds the
        // bodies held at once.
        let _held = self.uploads.acquire(bytes.len() as u64);
        self.put_body(
            key,
            Bytes::from_owner(GiveBack {
                buf: bytes,
                spare: spare.clone(),
            }),
        )
    }

    fn get_into(
        &self,
        key: &ObjectKey,
        range: Option<Range<u64>>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let url = format!("{}/v1/objects/{key}", self.base);
        for attempt in 0..2 {
            let grant = self.grant_for(key, attempt > 0)?;
            let resp = self.send(
                || {
                    let mut req = self
                        .client
                        .get(&url)
                        .header(AUTHORIZATION, format!("Bearer {grant}"));
                    if let Some(r) = &range {
                        req = req.header(
                            RANGE,
                            format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
                        );
                    }
                    req
                },
                &format!("GET {key}"),
            )?;
            let status = resp.status().as_u16();
            if status == 403 && attempt == 0 {
                continue; // The grant may have expired: ask for a new one once.
            }
            if !(status == 200 || status == 206) {
                return Err(api_error(resp, &format!("GET {key}")).into_error());
            }
            let want = range.as_ref().map(|r| r.end - r.start);
            if want.is_some() && status != 206 {
                return Err(Error::corrupt(format!(
                    "GET {key}: the backend ignored the byte range"
                )));
            }
            let limit = want.unwrap_or(stateful_ci_protocol::limits::MAX_OBJECT_SIZE);
            let declared = resp.content_length().unwrap_or(0).min(limit);
            buf.clear();
            // Exactly: a reused buffer grown by doubling held up to twice
            // the largest range for the rest of a restore.
            buf.reserve_exact(declared as usize);
            resp.take(limit + 1)
                .read_to_end(buf)
                .map_err(|e| Error::store(format!("GET {key}: the transfer broke off: {e}")))?;
            if buf.len() as u64 > limit || want.is_some_and(|w| buf.len() as u64 != w) {
                return Err(Error::corrupt(format!(
                    "GET {key}: the backend sent {} bytes, not the {limit} asked for",
                    buf.len()
                )));
            }
            return Ok(());
        }
        unreachable!("the loop returns")
    }

    fn commit(&self, c: &Commit) -> Result<CasOutcome> {
        let req = SaveCommitRequest {
            workspace: self.workspace.clone(),
            manifest: c.snapshot,
            packs: c.packs.clone(),
            expected_generation: c.expected,
            idempotency_key: c.idempotency_key.clone(),
            total_bytes: c.total_bytes,
            entries: c.entries,
        };
        match self.post::<_, SaveCommitResponse>("/v1/save/commit", &req) {
            Ok(ans) => Ok(CasOutcome::Updated(ans.head)),
            Err(ApiError::Api(e)) if e.code == "generation_conflict" => {
                Ok(CasOutcome::Conflict(e.head))
            }
            Err(e) => Err(e.into_error()),
        }
    }

    fn parallelism(&self) -> usize {
        PARALLEL_TRANSFERS
    }
}

/// An error answer from the Worker, or a failure before one.
enum ApiError {
    Api(Box<WorkerError>),
    Other(Error),
}

impl ApiError {
    fn into_error(self) -> Error {
        match self {
            ApiError::Api(e) => e.into_error(),
            ApiError::Other(e) => e,
        }
    }
}

struct WorkerError {
    route: String,
    status: u16,
    code: String,
    message: String,
    reason: Option<String>,
    head: Option<Head>,
}

impl WorkerError {
    fn into_error(self) -> Error {
        let reason = self.reason.map(|r| format!(" ({r})")).unwrap_or_default();
        let msg = format!(
            "{}: the backend refused ({} {}{reason}): {}",
            self.route, self.status, self.code, self.message
        );
        match self.code.as_str() {
            "hash_mismatch" | "manifest_invalid" => Error::corrupt(msg),
            _ => Error::store(msg),
        }
    }
}

/// Decode an error answer leniently: a newer Worker may add codes.
fn api_error(resp: Response, route: &str) -> WorkerError {
    let status = resp.status().as_u16();
    let body: Option<serde_json::Value> = read_json(resp, route).ok();
    let field = |k: &str| {
        body.as_ref()
            .and_then(|b| b.get(k))
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(500).collect::<String>())
    };
    WorkerError {
        route: route.to_string(),
        status,
        code: field("code").unwrap_or_else(|| "unknown".into()),
        message: field("message").unwrap_or_else(|| "no error body".into()),
        reason: field("reason"),
        head: body
            .as_ref()
            .and_then(|b| b.get("head"))
            .and_then(|h| serde_json::from_value(h.clone()).ok()),
    }
}

fn read_json<T: DeserializeOwned>(resp: Response, what: &str) -> Result<T> {
    let mut buf = Vec::new();
    resp.take(MAX_JSON + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::store(format!("{what}: the answer broke off: {e}")))?;
    if buf.len() as u64 > MAX_JSON {
        return Err(Error::store(format!(
            "{what}: the answer is larger than {MAX_JSON} bytes"
        )));
    }
    serde_json::from_slice(&buf)
        .map_err(|e| Error::store(format!("{what}: unexpected answer: {e}")))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_body_goes_back_to_the_spare_when_its_last_copy_is_dropped() {
        let spare = Spare::default();
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(b"pack bytes");
        let body = Bytes::from_owner(GiveBack {
            buf,
            spare: spare.clone(),
        });
        let copy = body.clone();
        drop(body);
        assert!(spare.take().is_none(), "a copy is still held");
        assert_eq!(&copy[..], b"pack bytes");
        drop(copy);
        let back = spare.take().expect("given back");
        assert!(back.is_empty() && back.capacity() >= 1 << 20);
    }

    #[test]
    fn the_upload_budget_bounds_the_bytes_held_at_once() {
        let budget = Arc::new(Budget::new(100));
        let now = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (budget, now, peak) = (budget.clone(), now.clone(), peak.clone());
                std::thread::spawn(move || {
                    // One object larger than the budget still goes (alone).
                    let n = if i == 0 { 150 } else { 40 };
                    let _g = budget.acquire(n);
                    let held = now.fetch_add(n, Ordering::SeqCst) + n;
                    peak.fetch_max(held, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(n, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 150, "peak {peak}");
        assert_eq!(
            *budget.held.lock().unwrap(),
            0,
            "every guard gave its bytes back"
        );
    }
}
