//! Retention policy, pure: which snapshots a sweep drops, when an
//! unreferenced object may be deleted, how old run and decision rows may
//! get, and how unauthenticated requests are counted without a D1 write
//! each. The Worker's `retention` and `denials` modules do the I/O.
//!
//! Rules (docs/WORKER.md, "Retention"):
//! - A scope's head is never dropped. Other snapshots go when they are older
//!   than `RETENTION_DAYS` or beyond the newest `RETENTION_KEEP` of the scope.
//! - An object no snapshot references is deleted in two sweeps: the first
//!   marks it (if it is older than the grace period), a later one deletes it
//!   only if it is still unreferenced and was marked at least the grace
//!   period ago. A save that deduplicated against the object between the
//!   two (its prepare said "stored") references it by then, so the second
//!   sweep leaves it: in-flight saves shorter than the grace period are safe.
//! - Run and decision rows older than `LOG_RETENTION_DAYS` are deleted.

use std::collections::BTreeMap;

/// Setting names (plain-text vars of the Worker; all optional).
pub mod vars {
    /// Keep at most this many snapshots per scope besides its head.
    pub const RETENTION_KEEP: &str = "RETENTION_KEEP";
    /// Seconds an unreferenced object must wait (twice: before it is marked,
    /// and between mark and delete).
    pub const SWEEP_GRACE_SECS: &str = "SWEEP_GRACE_SECS";
    /// Days `runs`, `decisions` and `denial_counts` rows are kept.
    pub const LOG_RETENTION_DAYS: &str = "LOG_RETENTION_DAYS";
}

pub const DEFAULT_KEEP: u32 = 10;
/// A day: far longer than any save's prepare -> upload -> commit.
pub const DEFAULT_GRACE_SECS: i64 = 86_400;
pub const DEFAULT_LOG_RETENTION_DAYS: u32 = 90;
/// Work bounds of one sweep, so it fits a scheduled run's limits (the Free
/// plan allows 50 subrequests per invocation; D1 calls count).
pub const MAX_SCOPES_PER_SWEEP: u32 = 20;
pub const MAX_OBJECTS_PER_SWEEP: u32 = 1000;

/// One stored snapshot of a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub generation: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// The sweep's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_age_days: u32,
    pub keep: u32,
    pub grace_secs: i64,
    pub log_days: u32,
}

impl Policy {
    /// From the Worker's vars; `retention_days` comes from its config.
    /// Unreadable values are errors naming the variable.
    pub fn from_vars(
        retention_days: u32,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Policy, String> {
        fn num<T: std::str::FromStr + PartialOrd + Copy>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
            default: T,
            min: T,
        ) -> Result<T, String> {
            match get(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<T>() {
                    Ok(n) if n >= min => Ok(n),
                    _ => Err(format!(
                        "{name} = {v:?} is not a valid number; set a whole number (or remove it for the default)"
                    )),
                },
            }
        }
        Ok(Policy {
            max_age_days: retention_days,
            keep: num(&get, vars::RETENTION_KEEP, DEFAULT_KEEP, 0)?,
            grace_secs: num(&get, vars::SWEEP_GRACE_SECS, DEFAULT_GRACE_SECS, 1)?,
            log_days: num(
                &get,
                vars::LOG_RETENTION_DAYS,
                DEFAULT_LOG_RETENTION_DAYS,
                1,
            )?,
        })
    }

    /// Rows of runs/decisions older than this (unix seconds) are deleted.
    pub fn log_cutoff(&self, now: i64) -> i64 {
        now - i64::from(self.log_days) * 86_400
    }

    /// Unreferenced objects created before this may be marked.
    pub fn mark_cutoff(&self, now: i64) -> i64 {
        now - self.grace_secs
    }
}

/// Ids of the snapshots to drop from a scope whose head has
/// `head_generation` (None: no head known, keep the newest as if it were).
pub fn expired(
    snapshots: &[Stored],
    head_generation: Option<u64>,
    now: i64,
    p: &Policy,
) -> Vec<i64> {
    let cutoff = now - i64::from(p.max_age_days) * 86_400;
    let head = head_generation.or_else(|| snapshots.iter().map(|s| s.generation).max());
    let mut others: Vec<&Stored> = snapshots
        .iter()
        .filter(|s| Some(s.generation) != head)
        .collect();
    // Newest first: the first `keep` survive the count rule.
    others.sort_by_key(|s| std::cmp::Reverse(s.generation));
    let mut out: Vec<i64> = others
        .iter()
        .enumerate()
        .filter(|(i, s)| s.created_at < cutoff || *i >= p.keep as usize)
        .map(|(_, s)| s.id)
        .collect();
    out.sort_unstable();
    out
}

/// Whether a marked object may be deleted now: marked at least the grace
/// period ago (it must also still be unreferenced; the caller checks that
/// in the same statement that deletes).
pub fn may_delete(marked_at: i64, now: i64, p: &Policy) -> bool {
    marked_at <= now - p.grace_secs
}

/// Counts of refused requests (no token, bad token), per hour, route and
/// reason, kept in memory and written to D1 at most once an hour per
/// isolate: a flood of junk requests costs a handful of row writes, not one
/// each (the Free plan allows 100,000 D1 row writes a day, shared with
/// every save). Counts an isolate holds when it is evicted are lost, so the
/// table is a lower bound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DenialCounter {
    pending: BTreeMap<(i64, String, String), u64>,
    last_flush: Option<i64>,
}

/// Seconds between two flushes of one isolate.
pub const DENIAL_FLUSH_SECS: i64 = 3600;

impl DenialCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one refusal at `now` (unix seconds).
    pub fn count(&mut self, route: &str, reason: &str, now: i64) {
        let hour = now - now.rem_euclid(3600);
        *self
            .pending
            .entry((hour, route.to_string(), reason.to_string()))
            .or_insert(0) += 1;
    }

    /// Whether it is time to write: the first refusal an isolate sees, then
    /// at most once per [`DENIAL_FLUSH_SECS`].
    pub fn due(&self, now: i64) -> bool {
        !self.pending.is_empty() && self.last_flush.is_none_or(|t| now - t >= DENIAL_FLUSH_SECS)
    }

    /// Take the pending counts for writing (hour, route, reason, count).
    pub fn take(&mut self, now: i64) -> Vec<(i64, String, String, u64)> {
        self.last_flush = Some(now);
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|((h, route, reason), n)| (h, route, reason, n))
            .collect()
    }

    /// Put counts back after a failed write (they are written next time).
    pub fn restore(&mut self, rows: Vec<(i64, String, String, u64)>) {
        for (h, route, reason, n) in rows {
            *self.pending.entry((h, route, reason)).or_insert(0) += n;
        }
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// What is held and not yet written.
    pub fn pending(&self) -> Vec<(i64, String, String, u64)> {
        self.pending
            .iter()
            .map(|((h, route, reason), n)| (*h, route.clone(), reason.clone(), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn policy(keep: u32) -> Policy {
        Policy {
            max_age_days: 14,
            keep,
            grace_secs: DAY,
            log_days: 90,
        }
    }

    fn s(id: i64, generation: u64, age_days: i64, now: i64) -> Stored {
        Stored {
            id,
            generation,
            created_at: now - age_days * DAY,
        }
    }

    #[test]
    fn keeps_head_and_young_snapshots() {
        let now = 100 * DAY;
        let all = [
            s(1, 1, 30, now),
            s(2, 2, 20, now),
            s(3, 3, 3, now),
            s(4, 4, 1, now),
        ];
        assert_eq!(expired(&all, Some(4), now, &policy(10)), vec![1, 2]);
        // An old head is kept even when everything is old.
        let old = [s(1, 1, 30, now), s(2, 2, 20, now)];
        assert_eq!(expired(&old, Some(2), now, &policy(10)), vec![1]);
    }

    #[test]
    fn keeps_at_most_keep_besides_the_head() {
        let now = 100 * DAY;
        let all: Vec<Stored> = (1..=6).map(|g| s(g as i64, g, 0, now)).collect();
        assert_eq!(expired(&all, Some(6), now, &policy(2)), vec![1, 2, 3]);
        assert_eq!(expired(&all, Some(6), now, &policy(0)), vec![1, 2, 3, 4, 5]);
        // No head known: the newest stands in for it.
        assert_eq!(expired(&all, None, now, &policy(1)), vec![1, 2, 3, 4]);
    }

    #[test]
    fn objects_wait_the_grace_period_after_marking() {
        let p = policy(10);
        assert!(!may_delete(1000, 1000 + DAY - 1, &p));
        assert!(may_delete(1000, 1000 + DAY, &p));
        assert_eq!(p.mark_cutoff(5 * DAY), 4 * DAY);
        assert_eq!(p.log_cutoff(100 * DAY), 10 * DAY);
    }

    #[test]
    fn settings_come_from_vars_with_defaults_and_named_errors() {
        let p = Policy::from_vars(14, |_| None).unwrap();
        assert_eq!((p.keep, p.grace_secs, p.log_days), (DEFAULT_KEEP, DAY, 90));
        let p = Policy::from_vars(7, |n| match n {
            vars::RETENTION_KEEP => Some("2".into()),
            vars::SWEEP_GRACE_SECS => Some("5".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((p.max_age_days, p.keep, p.grace_secs), (7, 2, 5));
        let e = Policy::from_vars(7, |n| (n == vars::SWEEP_GRACE_SECS).then(|| "0".into()))
            .unwrap_err();
        assert!(e.contains("SWEEP_GRACE_SECS"), "{e}");
    }

    #[test]
    fn denials_are_written_at_most_once_an_hour() {
        let mut c = DenialCounter::new();
        let t0 = 10 * 3600 + 5;
        assert!(!c.due(t0), "nothing to write");
        c.count("restore", "missing_token", t0);
        assert!(c.due(t0), "the first refusal is written at once");
        let rows = c.take(t0);
        assert_eq!(
            rows,
            vec![(10 * 3600, "restore".into(), "missing_token".into(), 1)]
        );
        for i in 0..10_000 {
            c.count(
                "restore",
                if i % 2 == 0 {
                    "missing_token"
                } else {
                    "malformed"
                },
                t0 + 10,
            );
            assert!(!c.due(t0 + 10 + i / 10));
        }
        assert_eq!(c.pending().len(), 2);
        assert!(c.due(t0 + 3600));
        let rows = c.take(t0 + 3600);
        assert_eq!(rows.iter().map(|r| r.3).sum::<u64>(), 10_000);
        c.restore(rows);
        assert_eq!(c.pending().iter().map(|r| r.3).sum::<u64>(), 10_000);
    }
}
