//! The Durable Object class `ScopeCoordinator`: one instance per workspace
//! scope (named `<tenant>|<workspace>|<scope>`), holding the scope's head in
//! its SQLite storage. It serialises commits: each one is a synchronous
//! read-decide-write on that storage (no await in between), so no two commits
//! interleave and no update is lost. It also remembers idempotency keys.
//!
//! Internal protocol (only the Worker calls it, through its binding):
//! - `GET https://coordinator/head` → `{"head": Head | null}`
//! - `POST https://coordinator/commit` with [`CommitCall`] → [`CommitAnswer`]
//!
//! It does not check R2 or policy: the Worker does that before calling.

use serde::{Deserialize, Serialize};
use stateful_ci_protocol::{Head, ObjectKey};
use stateful_ci_worker_core::commit::{self, Outcome, PriorCommit};
use worker::*;

/// Idempotency keys are remembered this long.
const IDEMPOTENCY_TTL_SECS: i64 = 7 * 86_400;

#[derive(Debug, Serialize, Deserialize)]
pub struct CommitCall {
    pub manifest: ObjectKey,
    pub expected_generation: u64,
    pub idempotency_key: String,
    pub now: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CommitAnswer {
    /// `applied`, `replayed`, `conflict` or `key_reused`.
    pub outcome: String,
    pub head: Option<Head>,
}

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
    fn commit(&self, call: &CommitCall) -> Result<CommitAnswer> {
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
        let answer = match commit::apply(
            current.as_ref(),
            prior.as_ref(),
            call.manifest,
            call.expected_generation,
        ) {
            Outcome::Applied(head) => {
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
                CommitAnswer {
                    outcome: "applied".into(),
                    head: Some(head),
                }
            }
            Outcome::Replayed(head) => CommitAnswer {
                outcome: "replayed".into(),
                head: Some(head),
            },
            Outcome::Conflict(head) => CommitAnswer {
                outcome: "conflict".into(),
                head,
            },
            Outcome::KeyReused => CommitAnswer {
                outcome: "key_reused".into(),
                head: current,
            },
        };
        Ok(answer)
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
