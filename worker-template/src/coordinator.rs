//! The Durable Object class `ScopeCoordinator`: one instance per workspace
//! scope (named `<tenant>|<workspace>|<scope>`), holding the scope's head in
//! its SQLite storage. It serialises commits: each one is a synchronous
//! read-decide-write on that storage (no await in between), so no two commits
//! interleave and no update is lost. It also remembers idempotency keys.
//!
//! Internal protocol (only the Worker calls it, through its binding; the
//! client side is [`head`] and [`commit`] below):
//! - `GET https://coordinator/head` → `{"head": Head | null}`
//! - `POST https://coordinator/commit` with [`CommitCall`] → the typed
//!   [`Outcome`] of `worker_core::commit`, serialised
//!
//! It does not check R2 or policy: the Worker does that before calling.

use serde::{Deserialize, Serialize};
use stateful_ci_protocol::{Head, ObjectKey};
pub use stateful_ci_worker_core::commit::CommitCall;
use stateful_ci_worker_core::commit::{self, Outcome, PriorCommit};
use worker::*;

use crate::refusal::{ApiResult, Refusal};

/// Idempotency keys are remembered this long.
const IDEMPOTENCY_TTL_SECS: i64 = 7 * 86_400;

#[derive(Debug, Serialize, Deserialize)]
pub struct HeadAnswer {
    pub head: Option<Head>,
}

#[durable_object]
pub struct ScopeCoordinator {
    state: State,
}

#[derive(Deserialize)]
struct HeadRow {
    manifest: String,
    generation: f64,
}

#[derive(Deserialize)]
struct IdemRow {
    manifest: String,
    generation: f64,
}

impl ScopeCoordinator {
    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    fn ensure_schema(&self) -> Result<()> {
        let sql = self.sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 1), manifest TEXT NOT NULL, generation INTEGER NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, manifest TEXT NOT NULL, generation INTEGER NOT NULL, at INTEGER NOT NULL)",
            None,
        )?;
        Ok(())
    }

    fn head(&self) -> Result<Option<Head>> {
        let rows: Vec<HeadRow> = self
            .sql()
            .exec("SELECT manifest, generation FROM head WHERE id = 1", None)?
            .to_array()?;
        match rows.into_iter().next() {
            None => Ok(None),
            Some(r) => Ok(Some(Head {
                snapshot: parse_key(&r.manifest)?,
                generation: r.generation as u64,
            })),
        }
    }

    /// The whole commit, synchronously: no other event runs in between.
    fn commit(&self, call: &CommitCall) -> Result<Outcome> {
        let sql = self.sql();
        let current = self.head()?;
        let prior: Vec<IdemRow> = sql
            .exec(
                "SELECT manifest, generation FROM idempotency WHERE key = ?",
                Some(vec![SqlStorageValue::String(call.idempotency_key.clone())]),
            )?
            .to_array()?;
        let prior = match prior.into_iter().next() {
            None => None,
            Some(r) => {
                let manifest = parse_key(&r.manifest)?;
                Some(PriorCommit {
                    manifest,
                    head: Head {
                        snapshot: manifest,
                        generation: r.generation as u64,
                    },
                })
            }
        };
        let outcome = commit::apply(
            current.as_ref(),
            prior.as_ref(),
            call.manifest,
            call.expected_generation,
        );
        if let Outcome::Applied(head) = &outcome {
            let g = head.generation as i64;
            sql.exec(
                "INSERT INTO head (id, manifest, generation) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET manifest = excluded.manifest, generation = excluded.generation",
                Some(vec![SqlStorageValue::String(head.snapshot.to_string()), SqlStorageValue::Integer(g)]),
            )?;
            sql.exec(
                "INSERT INTO idempotency (key, manifest, generation, at) VALUES (?, ?, ?, ?)",
                Some(vec![
                    SqlStorageValue::String(call.idempotency_key.clone()),
                    SqlStorageValue::String(head.snapshot.to_string()),
                    SqlStorageValue::Integer(g),
                    SqlStorageValue::Integer(call.now),
                ]),
            )?;
            sql.exec(
                "DELETE FROM idempotency WHERE at < ?",
                Some(vec![SqlStorageValue::Integer(
                    call.now - IDEMPOTENCY_TTL_SECS,
                )]),
            )?;
        }
        Ok(outcome)
    }
}

fn parse_key(s: &str) -> Result<ObjectKey> {
    s.parse()
        .map_err(|e| Error::RustError(format!("coordinator storage holds a bad key: {e}")))
}

impl DurableObject for ScopeCoordinator {
    fn new(state: State, _env: Env) -> Self {
        ScopeCoordinator { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        self.ensure_schema()?;
        let path = req.path();
        match (req.method(), path.as_str()) {
            (Method::Get, "/head") => Response::from_json(&HeadAnswer { head: self.head()? }),
            (Method::Post, "/commit") => {
                let call: CommitCall = req.json().await?;
                Response::from_json(&self.commit(&call)?)
            }
            _ => Response::error("no such coordinator route", 404),
        }
    }
}

// ---------------------------------------------------------------- the Worker's side

fn stub(env: &Env, name: &str) -> ApiResult<Stub> {
    Ok(env
        .durable_object("COORDINATOR")?
        .id_from_name(name)?
        .get_stub()?)
}

async fn answer<T: serde::de::DeserializeOwned>(mut resp: Response) -> ApiResult<T> {
    if resp.status_code() != 200 {
        return Err(Refusal::internal(
            "the scope coordinator failed",
            resp.text().await.unwrap_or_default(),
        ));
    }
    Ok(resp.json().await?)
}

/// The head of the scope whose Durable Object is `name`.
pub async fn head(env: &Env, name: &str) -> ApiResult<Option<Head>> {
    let resp = stub(env, name)?
        .fetch_with_str("https://coordinator/head")
        .await?;
    Ok(answer::<HeadAnswer>(resp).await?.head)
}

/// Asks the scope's Durable Object to apply `call`; its typed answer.
pub async fn commit(env: &Env, name: &str, call: &CommitCall) -> ApiResult<Outcome> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(
        serde_json::to_string(call)
            .map_err(|e| Refusal::internal("encode", e))?
            .into(),
    ));
    let resp = stub(env, name)?
        .fetch_with_request(Request::new_with_init("https://coordinator/commit", &init)?)
        .await?;
    answer(resp).await
}
