//! Refused requests (no token, invalid token) are counted, not logged: a
//! per-isolate [`DenialCounter`] (per hour, route and reason) written to
//! D1's `denial_counts` at most once an hour per isolate, instead of one
//! `decisions` row per request. Why: anyone on the internet can send junk
//! requests, and the Free plan allows 100,000 D1 row writes a day for
//! everything (saves included); a loop of junk requests must not use them
//! up. A flood costs each isolate a handful of row writes an hour. Counts
//! an evicted isolate still held are lost (the table is a lower bound).
//! Decisions about authenticated runs are still recorded one by one.

use std::cell::RefCell;

use serde::Serialize;
use stateful_ci_worker_core::retention::DenialCounter;
use wasm_bindgen::JsValue;
use worker::*;

thread_local! {
    static COUNTER: RefCell<DenialCounter> = RefCell::new(DenialCounter::new());
}

/// Count one refusal; write the isolate's counts if an hour has passed
/// since its last write (or this is its first refusal).
pub async fn count(env: &Env, route: &str, reason: &str) {
    let now = crate::settings::now_secs();
    COUNTER.with(|c| c.borrow_mut().count(route, reason, now));
    flush(env, now, false).await;
}

/// Write the pending counts if due (or always with `force`, as the
/// scheduled sweep does); failures keep them for the next write.
pub async fn flush(env: &Env, now: i64, force: bool) {
    let rows = COUNTER.with(|c| {
        let mut c = c.borrow_mut();
        // An empty forced write must not count as this hour's write.
        if !c.is_empty() && (force || c.due(now)) {
            Some(c.take(now))
        } else {
            None
        }
    });
    let Some(rows) = rows else {
        return;
    };
    let write = async {
        let d = env.d1("DB")?;
        let mut stmts = Vec::with_capacity(rows.len());
        for (hour, route, reason, n) in &rows {
            stmts.push(
                d.prepare(
                    "INSERT INTO denial_counts (hour, route, reason, count) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (hour, route, reason) DO UPDATE SET count = count + excluded.count",
                )
                .bind(&[
                    JsValue::from_f64(*hour as f64),
                    JsValue::from_str(route),
                    JsValue::from_str(reason),
                    JsValue::from_f64(*n as f64),
                ])?,
            );
        }
        d.batch(stmts).await?;
        Ok::<(), worker::Error>(())
    };
    if let Err(e) = write.await {
        console_error!(
            "writing denial counts failed (kept for the next write): {}",
            e
        );
        COUNTER.with(|c| c.borrow_mut().restore(rows));
    }
}

#[derive(Serialize)]
pub struct DenialRow {
    pub hour: i64,
    pub route: String,
    pub reason: String,
    pub count: u64,
}

#[derive(Serialize)]
pub struct DenialsReport {
    /// Written to D1 (all isolates).
    pub written: Vec<DenialRow>,
    /// Held by the isolate that answered, not written yet.
    pub pending: Vec<DenialRow>,
}

/// `GET /v1/admin/denials`: the counts, newest hour first.
pub async fn report(env: &Env, limit: u32) -> crate::refusal::ApiResult<DenialsReport> {
    #[derive(serde::Deserialize)]
    struct Row {
        hour: i64,
        route: String,
        reason: String,
        count: i64,
    }
    let rows: Vec<Row> = env
        .d1("DB")?
        .prepare("SELECT hour, route, reason, count FROM denial_counts ORDER BY hour DESC, route, reason LIMIT ?1")
        .bind(&[JsValue::from_f64(f64::from(limit))])?
        .all()
        .await?
        .results()?;
    let pending = COUNTER.with(|c| c.borrow().pending());
    Ok(DenialsReport {
        written: rows
            .into_iter()
            .map(|r| DenialRow {
                hour: r.hour,
                route: r.route,
                reason: r.reason,
                count: r.count.max(0) as u64,
            })
            .collect(),
        pending: pending
            .into_iter()
            .map(|(hour, route, reason, count)| DenialRow {
                hour,
                route,
                reason,
                count,
            })
            .collect(),
    })
}
