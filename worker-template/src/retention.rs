//! The scheduled retention sweep (the Cron Trigger `deploy` installs):
//! drops snapshots beyond each scope's retention, deletes objects no
//! snapshot references (two sweeps apart, after a grace period, so saves in
//! flight are safe), prunes old run/decision rows, and writes this isolate's
//! pending denial counts. The policy is `worker_core::retention` (pure);
//! this module is its D1/R2 I/O. References come from D1 (`snapshots` ->
//! `snapshot_objects`), never from parsing objects.
//!
//! Bounded work per run (Free plan: 50 D1 queries and subrequests per
//! invocation): at most [`retention::MAX_SCOPES_PER_SWEEP`] scopes and
//! [`retention::MAX_OBJECTS_PER_SWEEP`] objects; set-based statements (one
//! statement for many rows, ids passed as one JSON array). An hourly trigger
//! catches up with any backlog.

use serde::{Deserialize, Serialize};
use stateful_ci_protocol::wire::ErrorCode;
use stateful_ci_worker_core::retention::{self, Policy, Stored};
use worker::*;

use crate::refusal::{ApiResult, Refusal};
use crate::settings::{load_config, var};
use crate::storage::{d1_err as err, db, denials, n, r2, s};

/// The sweep's settings from the Worker's vars.
pub fn policy(env: &Env) -> ApiResult<Policy> {
    let cfg = load_config(env)?;
    Policy::from_vars(cfg.retention_days, |name| var(env, name))
        .map_err(|m| Refusal::new(ErrorCode::Misconfigured, m))
}

/// What one sweep did (logged; the admin route returns it).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scopes_checked: u32,
    pub snapshots_dropped: u32,
    pub objects_marked: u32,
    pub objects_deleted: u32,
    pub bytes_deleted: u64,
    pub log_rows_deleted: u32,
}

/// SQL: the object (aliased `o`, with `tenant` and `object_key`) is listed
/// by some snapshot of its tenant.
const REFERENCED: &str = "EXISTS (SELECT 1 FROM snapshot_objects so JOIN snapshots sn ON sn.id = so.snapshot_id WHERE sn.tenant = o.tenant AND so.object_key = o.object_key)";

/// One full sweep at `now` (unix seconds).
pub async fn sweep(env: &Env, now: i64) -> ApiResult<Report> {
    let p = policy(env)?;
    let d = db(env)?;
    let mut report = Report::default();
    expire_snapshots(&d, &p, now, &mut report).await?;
    mark_unreferenced(&d, &p, now, &mut report).await?;
    delete_marked(env, &d, &p, now, &mut report).await?;
    prune_logs(&d, &p, now, &mut report).await?;
    denials::flush(env, now, true).await;
    Ok(report)
}

async fn expire_snapshots(
    d: &D1Database,
    p: &Policy,
    now: i64,
    report: &mut Report,
) -> ApiResult<()> {
    #[derive(Deserialize)]
    struct Scope {
        tenant: String,
        workspace: String,
        scope: String,
    }
    #[derive(Deserialize)]
    struct Row {
        id: i64,
        generation: i64,
        created_at: i64,
        head: Option<i64>,
    }
    let cutoff = now - i64::from(p.max_age_days) * 86_400;
    // Scopes with something to drop: more snapshots than head + keep, or an
    // old one.
    let scopes: Vec<Scope> = d
        .prepare(
            "SELECT tenant, workspace, scope FROM snapshots GROUP BY tenant, workspace, scope
             HAVING COUNT(*) > ?1 OR MIN(created_at) < ?2 LIMIT ?3",
        )
        .bind(&[
            n(i64::from(p.keep) + 1),
            n(cutoff),
            n(i64::from(retention::MAX_SCOPES_PER_SWEEP)),
        ])
        .map_err(err("sweep: scopes"))?
        .all()
        .await
        .map_err(err("sweep: scopes"))?
        .results()
        .map_err(err("sweep: scopes"))?;
    let mut drop: Vec<i64> = Vec::new();
    for sc in &scopes {
        report.scopes_checked += 1;
        let rows: Vec<Row> = d
            .prepare(
                "SELECT sn.id, sn.generation, sn.created_at, h.generation AS head FROM snapshots sn
                 LEFT JOIN heads h ON h.tenant = sn.tenant AND h.workspace = sn.workspace AND h.scope = sn.scope
                 WHERE sn.tenant = ?1 AND sn.workspace = ?2 AND sn.scope = ?3",
            )
            .bind(&[s(&sc.tenant), s(&sc.workspace), s(&sc.scope)])
            .map_err(err("sweep: snapshots"))?
            .all()
            .await
            .map_err(err("sweep: snapshots"))?
            .results()
            .map_err(err("sweep: snapshots"))?;
        let head = rows.iter().find_map(|r| r.head).map(|h| h as u64);
        let stored: Vec<Stored> = rows
            .iter()
            .map(|r| Stored {
                id: r.id,
                generation: r.generation as u64,
                created_at: r.created_at,
            })
            .collect();
        drop.extend(retention::expired(&stored, head, now, p));
    }
    if drop.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(&drop).unwrap_or_else(|_| "[]".into());
    d.batch(vec![
        d.prepare(
            "DELETE FROM snapshot_objects WHERE snapshot_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(&[s(&ids)])
        .map_err(err("sweep: drop snapshots"))?,
        d.prepare("DELETE FROM snapshots WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(&[s(&ids)])
            .map_err(err("sweep: drop snapshots"))?,
    ])
    .await
    .map_err(err("sweep: drop snapshots"))?;
    report.snapshots_dropped = drop.len() as u32;
    Ok(())
}

/// Marks unreferenced objects older than the grace period; unmarks marked
/// objects that a snapshot references again.
async fn mark_unreferenced(
    d: &D1Database,
    p: &Policy,
    now: i64,
    report: &mut Report,
) -> ApiResult<()> {
    let results = d
        .batch(vec![
            d.prepare(format!(
                "DELETE FROM sweep_marks WHERE rowid IN (SELECT m.rowid FROM sweep_marks m JOIN objects o
                   ON o.tenant = m.tenant AND o.object_key = m.object_key WHERE {REFERENCED})"
            )),
            d.prepare(format!(
                "INSERT OR IGNORE INTO sweep_marks (tenant, object_key, marked_at)
                 SELECT o.tenant, o.object_key, ?1 FROM objects o
                 WHERE o.created_at < ?2 AND NOT {REFERENCED}
                   AND NOT EXISTS (SELECT 1 FROM sweep_marks m WHERE m.tenant = o.tenant AND m.object_key = o.object_key)
                 LIMIT ?3"
            ))
            .bind(&[
                n(now),
                n(p.mark_cutoff(now)),
                n(i64::from(retention::MAX_OBJECTS_PER_SWEEP)),
            ])
            .map_err(err("sweep: mark"))?,
        ])
        .await
        .map_err(err("sweep: mark"))?;
    if let Some(Ok(Some(meta))) = results.get(1).map(|r| r.meta()) {
        report.objects_marked = meta.changes.unwrap_or(0) as u32;
    }
    Ok(())
}

/// Deletes objects marked at least the grace period ago and still
/// unreferenced: one R2 call for up to 1,000 keys, then their rows.
async fn delete_marked(
    env: &Env,
    d: &D1Database,
    p: &Policy,
    now: i64,
    report: &mut Report,
) -> ApiResult<()> {
    #[derive(Deserialize)]
    struct Gone {
        tenant: String,
        object_key: String,
        size: i64,
    }
    let gone: Vec<Gone> = d
        .prepare(format!(
            "SELECT o.tenant, o.object_key, o.size FROM sweep_marks m JOIN objects o
               ON o.tenant = m.tenant AND o.object_key = m.object_key
             WHERE m.marked_at <= ?1 AND o.created_at <= ?1 AND NOT {REFERENCED} LIMIT ?2"
        ))
        .bind(&[
            n(now - p.grace_secs),
            n(i64::from(retention::MAX_OBJECTS_PER_SWEEP)),
        ])
        .map_err(err("sweep: select"))?
        .all()
        .await
        .map_err(err("sweep: select"))?
        .results()
        .map_err(err("sweep: select"))?;
    if gone.is_empty() {
        return Ok(());
    }
    debug_assert!(retention::may_delete(now - p.grace_secs, now, p));
    let keys: Vec<String> = gone
        .iter()
        .map(|g| r2::r2_key(&g.tenant, &g.object_key))
        .collect();
    r2::bucket(env)?
        .delete_multiple(keys)
        .await
        .map_err(|e| Refusal::internal("sweep: R2 delete", e))?;
    let pairs: Vec<[&str; 2]> = gone
        .iter()
        .map(|g| [g.tenant.as_str(), g.object_key.as_str()])
        .collect();
    let pairs = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into());
    let matching = "(tenant, object_key) IN (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1))";
    d.batch(vec![
        d.prepare(format!("DELETE FROM objects WHERE {matching}"))
            .bind(&[s(&pairs)])
            .map_err(err("sweep: rows"))?,
        d.prepare(format!("DELETE FROM sweep_marks WHERE {matching}"))
            .bind(&[s(&pairs)])
            .map_err(err("sweep: rows"))?,
    ])
    .await
    .map_err(err("sweep: rows"))?;
    // Which scopes uploaded the object (a table of a later migration):
    // stale rows would be harmless, but they are removed when the table exists.
    if let Err(e) = d
        .prepare(format!("DELETE FROM object_uploads WHERE {matching}"))
        .bind(&[s(&pairs)])
        .map_err(err("sweep: uploads"))?
        .run()
        .await
        && !e.to_string().contains("no such table")
    {
        console_error!("sweep: deleting object_uploads rows failed: {}", e);
    }
    report.objects_deleted = gone.len() as u32;
    report.bytes_deleted = gone.iter().map(|g| g.size.max(0) as u64).sum();
    Ok(())
}

async fn prune_logs(d: &D1Database, p: &Policy, now: i64, report: &mut Report) -> ApiResult<()> {
    let cutoff = p.log_cutoff(now);
    let results = d
        .batch(vec![
            d.prepare("DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE last_seen < ?1 LIMIT 5000)")
                .bind(&[n(cutoff)])
                .map_err(err("sweep: logs"))?,
            d.prepare("DELETE FROM decisions WHERE id IN (SELECT id FROM decisions WHERE at < ?1 LIMIT 5000)")
                .bind(&[n(cutoff)])
                .map_err(err("sweep: logs"))?,
            d.prepare("DELETE FROM denial_counts WHERE hour < ?1")
                .bind(&[n(cutoff)])
                .map_err(err("sweep: logs"))?,
        ])
        .await
        .map_err(err("sweep: logs"))?;
    report.log_rows_deleted = results
        .iter()
        .filter_map(|r| r.meta().ok().flatten().and_then(|m| m.changes))
        .sum::<usize>() as u32;
    Ok(())
}
