//! The one refusal type. Every way a request can fail is a [`Refusal`]: the
//! API error the client gets (`ErrorBody`, status from its code) and what
//! the refusal leaves in the ledger, decided where the refusal is made:
//!
//! - [`Refusal::counted`]: refused before a run is known (no token, invalid
//!   token, repository not allowed): counted in aggregate per isolate, hour,
//!   route and reason (`storage::denials`), never one row per request;
//! - [`Refusal::decided`]: a policy decision about an authenticated run (may
//!   not save, missing objects, generation conflict, reused idempotency
//!   key): one `decisions` row (`storage::runs`);
//! - neither (bad input, misconfiguration, internal failure): nothing.
//!
//! The router settles it ([`Refusal::settle`]): it records, then answers,
//! so no route repeats the record-then-return sequence.

use stateful_ci_protocol::wire::{ErrorBody, ErrorCode};
use stateful_ci_worker_core::auth::RunContext;
use worker::*;

use crate::storage::{denials, runs};

/// A refused request: the API error and what to record.
#[derive(Debug)]
pub struct Refusal {
    body: ErrorBody,
    ledger: Ledger,
}

#[derive(Debug)]
enum Ledger {
    Nothing,
    Count {
        reason: &'static str,
    },
    Decision {
        run: Box<RunContext>,
        reason: &'static str,
        scope: String,
        detail: String,
    },
}

pub type ApiResult<T> = std::result::Result<T, Refusal>;

impl Refusal {
    /// A refusal that records nothing (bad input, misconfiguration).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal::from_body(ErrorBody::new(code, message))
    }

    /// A failure of ours or of a binding: retryable, recorded nowhere.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        Refusal::new(
            ErrorCode::Internal,
            format!("{context}: {e}; retry, and report it if it persists"),
        )
    }

    /// A refusal with a full error body (extra fields such as `missing`).
    pub fn from_body(body: ErrorBody) -> Self {
        Refusal {
            body,
            ledger: Ledger::Nothing,
        }
    }

    /// Refused before a run is known: counted under `reason`.
    pub fn counted(mut self, reason: &'static str) -> Self {
        self.ledger = Ledger::Count { reason };
        self
    }

    /// A refused policy decision about `run`: one `decisions` row.
    pub fn decided(
        mut self,
        run: &RunContext,
        reason: &'static str,
        scope: &str,
        detail: impl Into<String>,
    ) -> Self {
        self.ledger = Ledger::Decision {
            run: Box::new(run.clone()),
            reason,
            scope: scope.to_string(),
            detail: detail.into(),
        };
        self
    }

    pub fn message(&self) -> &str {
        &self.body.message
    }

    /// Records what this refusal says to record for `route`, then answers.
    pub async fn settle(self, env: &Env, route: &str) -> Response {
        match &self.ledger {
            Ledger::Nothing => {}
            Ledger::Count { reason } => denials::count(env, route, reason).await,
            Ledger::Decision {
                run,
                reason,
                scope,
                detail,
            } => runs::record_decision(env, route, run, false, reason, scope, detail).await,
        }
        self.response()
    }

    /// The answer: status from the code, JSON body.
    pub fn response(&self) -> Response {
        let body = serde_json::to_string(&self.body).unwrap_or_else(|_| "{}".into());
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        ResponseBuilder::new()
            .with_status(self.body.code.status())
            .with_headers(headers)
            .fixed(body.into_bytes())
    }
}

impl From<worker::Error> for Refusal {
    fn from(e: worker::Error) -> Self {
        Refusal::internal("the Worker runtime failed", e)
    }
}

/// A JSON answer with `status`.
pub fn json<T: serde::Serialize>(status: u16, value: &T) -> ApiResult<Response> {
    let body = serde_json::to_vec(value)
        .map_err(|e| Refusal::internal("could not encode the answer", e))?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .fixed(body))
}
