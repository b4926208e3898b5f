//! `destroy`: delete what the deployment record says this tool created, in
//! an order that lets a rerun finish any interrupted destroy.
//!
//! Emptying the bucket is the expensive part. Deleting objects one REST call
//! at a time costs one request each against Cloudflare's account limit
//! (1,200 requests per 5 minutes): a 50,000-object cache would take over
//! three hours of blocked API. So while the Worker still exists, destroy
//! asks *the Worker* to empty its own bucket (`POST /v1/admin/purge`: one
//! R2 binding call lists and one deletes up to 1,000 keys; binding calls are
//! not API requests). The Worker is deleted only once the bucket is empty,
//! so an interrupted destroy finds it again. The REST API is the fallback
//! (a Worker that is gone or predates the purge route): one paced DELETE per
//! object, 429s waited out.
//!
//! Order: Cron Triggers off (no sweep runs mid-destroy) → bucket emptied
//! through the Worker → Worker → D1 → bucket (emptied through the API if
//! anything is left) → record cleared.
//!
//! Must not: delete anything the record does not name, loop without
//! progress, or print the admin token.

use std::time::{Duration, Instant};

use crate::Error;
use serde_json::{Value as Json, json};

use super::record::{ConfigFile, Record};
use super::{ADMIN_TOKEN, ADMIN_TOKEN_ENV, cf, random_hex, worker_endpoint};
use crate::cloudflare::Client;

/// Set by tests (and `dev`) to reach the Worker somewhere else than its
/// workers.dev URL.
pub const DESTROY_WORKER_BASE_ENV: &str = "STATEFUL_CI_WORKER_BASE_URL";
/// Use this admin token for the purge instead of setting a fresh one.
pub const DESTROY_ADMIN_TOKEN_ENV: &str = ADMIN_TOKEN_ENV;

/// Keys deleted per purge call (R2's `delete()` takes up to 1,000).
const PURGE_BATCH: u64 = 1000;
/// Rounds without a single deleted key before destroy gives up.
const MAX_STALLED_ROUNDS: u32 = 3;
/// An upper bound on purge calls (10 million objects), so no loop is endless.
const MAX_PURGE_ROUNDS: u64 = 10_000;

/// What `destroy` will delete: only what the record says this tool created.
pub fn destroy_items(r: &Record) -> Vec<String> {
    let mut v = Vec::new();
    if r.created("script") {
        v.push(format!(
            "Worker script {} (with its Durable Objects, secrets and Cron Triggers)",
            r.script
        ));
    }
    if r.created("database") {
        v.push(format!(
            "D1 database {} ({})",
            r.database,
            r.database_id.as_deref().unwrap_or("id unknown")
        ));
    }
    if r.created("bucket") {
        v.push(format!("R2 bucket {} and every object in it", r.bucket));
    }
    v
}

/// Delete what the record names; a rerun after a partial destroy goes on
/// where it stopped (missing resources count as deleted).
pub fn destroy(
    client: &Client,
    config: &ConfigFile,
    r: &Record,
    progress: &dyn Fn(&str),
) -> Result<(), Error> {
    let a = &r.account_id;
    let script_exists = r.created("script") && client.script(a, &r.script).map_err(cf)?.is_some();
    if script_exists {
        progress(&format!("removing the Cron Triggers of {}", r.script));
        client.put_schedules(a, &r.script, &[]).map_err(cf)?;
    }
    let bucket_exists = r.created("bucket") && client.bucket_exists(a, &r.bucket).map_err(cf)?;
    if bucket_exists && script_exists {
        match &r.worker_url {
            Some(url) => purge_through_worker(client, r, url, progress)?,
            None => progress("the record has no Worker URL: the bucket is emptied through the API"),
        }
    }
    if r.created("script") {
        progress(&format!("deleting Worker {}", r.script));
        client.delete_script(a, &r.script).map_err(cf)?;
    }
    if r.created("database") {
        let id = match &r.database_id {
            Some(id) => Some(id.clone()),
            None => client
                .database_by_name(a, &r.database)
                .map_err(cf)?
                .map(|d| d.uuid),
        };
        if let Some(id) = id {
            progress(&format!("deleting D1 database {}", r.database));
            client.delete_database(a, &id).map_err(cf)?;
        }
    }
    if bucket_exists {
        empty_through_api(client, a, &r.bucket, progress)?;
        progress(&format!("deleting R2 bucket {}", r.bucket));
        client.delete_bucket(a, &r.bucket).map_err(cf)?;
    }
    if let Some(url) = &r.worker_url {
        let entry = crate::secrets::Entry::admin_token(url);
        match crate::secrets::delete(&entry) {
            Ok(()) => progress(&format!(
                "deleted the admin token's entry {} (OS keyring or its file)",
                entry.name()
            )),
            Err(e) => progress(&format!(
                "the admin token's entry {} was not deleted: {e}",
                entry.name()
            )),
        }
    }
    Ok(config.clear(r)?)
}

/// The purge route's answer (docs/WORKER.md).
#[derive(Debug, serde::Deserialize)]
struct Purged {
    deleted: u64,
    more: bool,
}

/// Empties the bucket with `POST /v1/admin/purge` until the Worker says
/// nothing is left. The admin token is `STATEFUL_CI_ADMIN_TOKEN` if set,
/// else a fresh random one put as the `ADMIN_TOKEN` secret (one API call;
/// the Worker is about to be deleted, so nothing else depends on it).
/// A Worker without the route (older version) leaves the job to the API.
fn purge_through_worker(
    client: &Client,
    r: &Record,
    worker_url: &str,
    progress: &dyn Fn(&str),
) -> Result<(), Error> {
    let explicit = std::env::var(DESTROY_WORKER_BASE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (base, host) = worker_endpoint(client, worker_url, explicit.as_deref())?;
    let token = match std::env::var(DESTROY_ADMIN_TOKEN_ENV)
        .ok()
        .filter(|v| v.len() >= 16)
    {
        Some(t) => t,
        None => {
            let t = random_hex(32)?;
            progress("setting a fresh admin token on the Worker for the purge");
            client
                .put_secret(&r.account_id, &r.script, ADMIN_TOKEN, &t)
                .map_err(cf)?;
            t
        }
    };
    let http = stateful_ci_net::client(Duration::from_secs(60));
    let url = format!("{base}/v1/admin/purge");
    let started = Instant::now();
    let mut total = 0u64;
    let mut stalled = 0u32;
    let mut unauthorized_since: Option<Instant> = None;
    let mut last_note = Instant::now();
    progress(&format!(
        "emptying R2 bucket {} through the Worker",
        r.bucket
    ));
    for round in 0..MAX_PURGE_ROUNDS {
        let policy = stateful_ci_net::RetryPolicy::default();
        let send = || {
            let mut req = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({ "confirm": "delete-every-object", "limit": PURGE_BATCH }));
            if let Some(h) = &host {
                req = req.header("host", h);
            }
            req
        };
        let resp = stateful_ci_net::send(send, &policy, |_| {}).map_err(|e| {
            Error::user(
                format!("emptying the bucket through the Worker at {worker_url} failed: {e}"),
                "run destroy again: it goes on where it stopped",
            )
        })?;
        let status = resp.status().as_u16();
        let body: Json = resp.json().unwrap_or(Json::Null);
        match status {
            200 => {}
            401 | 403 => {
                // A new secret takes a moment to reach every location.
                let since = *unauthorized_since.get_or_insert_with(Instant::now);
                if since.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                return Err(Error::user(
                    format!(
                        "the Worker refused the admin token for the purge (HTTP {status}, {})",
                        error_code(&body)
                    ),
                    format!(
                        "set {DESTROY_ADMIN_TOKEN_ENV} to the Worker's ADMIN_TOKEN (or unset it so destroy sets a fresh one) and run destroy again"
                    ),
                ));
            }
            404 | 405 => {
                progress(
                    "the deployed Worker has no purge route: the bucket is emptied through the API",
                );
                return Ok(());
            }
            _ => {
                return Err(Error::user(
                    format!(
                        "the Worker's purge route answered HTTP {status} ({})",
                        error_code(&body)
                    ),
                    "run destroy again: it goes on where it stopped",
                ));
            }
        }
        let p: Purged = serde_json::from_value(body).map_err(|e| {
            Error::user(
                format!("the Worker's purge answer is not {{deleted, more}}: {e}"),
                "upgrade the Worker (stateful-ci upgrade) or run destroy again",
            )
        })?;
        total += p.deleted;
        if !p.more {
            progress(&format!(
                "deleted {total} objects through the Worker in {} calls ({:.1}s)",
                round + 1,
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if p.deleted == 0 {
            stalled += 1;
            if stalled >= MAX_STALLED_ROUNDS {
                return Err(Error::user(
                    format!(
                        "the bucket {} is not getting emptier: {MAX_STALLED_ROUNDS} purge calls in a row deleted nothing",
                        r.bucket
                    ),
                    "check the bucket in the Cloudflare dashboard (R2 Object Storage); run destroy again later",
                ));
            }
        } else {
            stalled = 0;
        }
        if last_note.elapsed() > Duration::from_secs(5) {
            progress(&format!("{total} objects deleted so far"));
            last_note = Instant::now();
        }
    }
    Err(Error::user(
        format!(
            "the bucket {} still has objects after {MAX_PURGE_ROUNDS} purge calls",
            r.bucket
        ),
        "run destroy again: it goes on where it stopped",
    ))
}

fn error_code(body: &Json) -> String {
    body.get("code")
        .and_then(Json::as_str)
        .or_else(|| body.get("error").and_then(Json::as_str))
        .unwrap_or("no error code")
        .to_string()
}

/// The fallback: list a page, delete its objects one by one (sequentially:
/// parallel deletes only reach the account limit sooner; the client waits
/// out each 429 and Cloudflare's 5-minute block). Stops when a page comes
/// back empty; fails when a page brings back only keys it already deleted.
fn empty_through_api(
    client: &Client,
    a: &str,
    bucket: &str,
    progress: &dyn Fn(&str),
) -> Result<(), Error> {
    let mut deleted = 0u64;
    let mut previous: Option<Vec<String>> = None;
    loop {
        let page: Vec<String> = client
            .objects_page(a, bucket, 1000)
            .map_err(cf)?
            .into_iter()
            .map(|o| o.key)
            .collect();
        if page.is_empty() {
            if deleted > 0 {
                progress(&format!("deleted {deleted} objects through the API"));
            }
            return Ok(());
        }
        if previous.as_ref() == Some(&page) {
            return Err(Error::user(
                format!(
                    "deleting objects of R2 bucket {bucket} makes no progress: the same {} keys are listed again",
                    page.len()
                ),
                "check the bucket in the Cloudflare dashboard (R2 Object Storage) and delete it there, then run destroy again",
            ));
        }
        if deleted == 0 {
            progress(&format!(
                "emptying R2 bucket {bucket} through the API (one request per object; about 1,200 per 5 minutes)"
            ));
        }
        for k in &page {
            client.delete_object(a, bucket, k).map_err(cf)?;
            deleted += 1;
        }
        progress(&format!("{deleted} objects deleted so far"));
        previous = Some(page);
    }
}
