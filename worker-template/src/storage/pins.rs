//! Allow-list by id, trust on first use: for an allowed repository whose
//! GitHub ids were not recorded at deploy time (`REPOSITORIES` entry without
//! `id`), the first verified token that names it pins its ids in D1
//! (`repository_pins`, migration 0004); every later token for that name must
//! carry the same repository id ([`auth::check_pin`], pure, in worker-core).
//!
//! Cost: one D1 read per isolate and name (the pin never changes, so it is
//! cached for the isolate's life), one write per name ever.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Deserialize;
use stateful_ci_protocol::wire::ErrorCode;
use stateful_ci_worker_core::auth::{self, AuthError, Verified};
use wasm_bindgen::JsValue;
use worker::*;

use crate::refusal::{ApiResult, Refusal};

thread_local! {
    /// name -> (repository id, owner id), as pinned in D1.
    static PINS: RefCell<HashMap<String, (String, String)>> = RefCell::new(HashMap::new());
}

#[derive(Deserialize)]
struct Row {
    repository_id: String,
    owner_id: String,
}

/// `Ok(None)`: the run may go on. `Ok(Some(e))`: refuse it with `e` (403).
pub async fn check(env: &Env, v: &Verified, now: i64) -> ApiResult<Option<AuthError>> {
    let Some(pin) = &v.pin else {
        return Ok(None);
    };
    let cached = PINS.with(|p| p.borrow().get(&pin.name).cloned());
    let pinned = match cached {
        Some(p) => p,
        None => {
            let db = env.d1("DB").map_err(|e| {
                Refusal::new(
                    ErrorCode::Misconfigured,
                    format!("the D1 binding DB is missing ({e}); redeploy with stateful-ci deploy"),
                )
            })?;
            let read = || async {
                db.prepare("SELECT repository_id, owner_id FROM repository_pins WHERE name = ?")
                    .bind(&[JsValue::from_str(&pin.name)])?
                    .first::<Row>(None)
                    .await
            };
            let mut row = read().await.map_err(|e| {
                Refusal::internal(
                    "reading the repository pin (apply migration 0004 with `stateful-ci upgrade`)",
                    e,
                )
            })?;
            if row.is_none() {
                // First verified token for this name: pin its ids. A race
                // with another first run is settled by the primary key; both
                // read back the winner.
                db.prepare(
                    "INSERT INTO repository_pins (name, repository_id, owner_id, pinned_at, run_id)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&[
                    JsValue::from_str(&pin.name),
                    JsValue::from_str(&pin.repository_id),
                    JsValue::from_str(&pin.owner_id),
                    JsValue::from_f64(now as f64),
                    JsValue::from_str(auth::claim(&v.claims.run_id)),
                ])?
                .run()
                .await
                .map_err(|e| Refusal::internal("pinning the repository ids", e))?;
                row = read()
                    .await
                    .map_err(|e| Refusal::internal("reading the repository pin", e))?;
            }
            let Some(row) = row else {
                return Err(Refusal::internal(
                    "pinning the repository ids",
                    "the pin was not stored",
                ));
            };
            let p = (row.repository_id, row.owner_id);
            PINS.with(|c| c.borrow_mut().insert(pin.name.clone(), p.clone()));
            p
        }
    };
    Ok(auth::check_pin(pin, (&pinned.0, &pinned.1)).err())
}
