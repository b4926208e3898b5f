//! Storage: every binding the Worker keeps state in, one module per table
//! group, so a route reads as what it does and SQL lives here.
//!
//! | Module | Holds |
//! | --- | --- |
//! | [`objects`] | D1 `objects`, `object_uploads`: which objects a run may name (visibility) |
//! | [`snapshots`] | D1 `snapshots`, `snapshot_objects`, `heads`: committed snapshots, grant checks |
//! | [`runs`] | D1 `runs`, `decisions`: provenance and the audit of policy decisions |
//! | [`denials`] | D1 `denial_counts`: refusals before a run is known, counted per isolate and hour |
//! | [`pins`] | D1 `repository_pins`: trust-on-first-use repository ids |
//! | [`admin`] | the admin routes' read queries |
//! | [`r2`] | the R2 bucket: object keys per tenant, the binding |
//! | [`jwks`] | the issuer's JWKS, cached per isolate |
//!
//! Heads themselves live in the scope's Durable Object (`crate::coordinator`);
//! D1's `heads` is a mirror for the dashboard. Retention (`crate::retention`)
//! deletes through these tables.

pub mod admin;
pub mod denials;
pub mod jwks;
pub mod objects;
pub mod pins;
pub mod r2;
pub mod runs;
pub mod snapshots;

use serde::Deserialize;
use stateful_ci_protocol::wire::ErrorCode;
use wasm_bindgen::JsValue;
use worker::*;

use crate::refusal::{ApiResult, Refusal};

/// D1 bind helpers shared by every module that queries D1.
pub(crate) fn s(v: &str) -> JsValue {
    JsValue::from_str(v)
}

pub(crate) fn n(v: i64) -> JsValue {
    JsValue::from_f64(v as f64)
}

pub(crate) fn db(env: &Env) -> ApiResult<D1Database> {
    env.d1("DB").map_err(|e| {
        Refusal::new(
            ErrorCode::Misconfigured,
            format!("the D1 binding DB is missing ({e}); redeploy with stateful-ci deploy"),
        )
    })
}

pub(crate) fn d1_err(context: &str) -> impl Fn(worker::Error) -> Refusal + '_ {
    move |e| Refusal::internal(context, e)
}

/// The migrations recorded in `d1_migrations`, in order (for health).
pub async fn applied_migrations(env: &Env) -> ApiResult<Vec<String>> {
    #[derive(Deserialize)]
    struct Row {
        name: String,
    }
    let rows: Vec<Row> = db(env)?
        .prepare("SELECT name FROM d1_migrations ORDER BY id")
        .all()
        .await
        .map_err(d1_err("reading d1_migrations"))?
        .results()
        .map_err(d1_err("reading d1_migrations"))?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}
