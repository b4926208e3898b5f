//! Which snapshots a retention sweep drops: those older than the configured
//! age, except each scope's head (a scope never loses its current state).

/// One stored snapshot of a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: i64,
    pub generation: u64,
    /// Unix seconds.
    pub created_at: i64,
}

/// Ids of the snapshots to drop from a scope whose head has
/// `head_generation` (None: no head, keep nothing special).
pub fn expired(
    snapshots: &[Stored],
    head_generation: Option<u64>,
    now: i64,
    max_age_days: u32,
) -> Vec<i64> {
    let cutoff = now - i64::from(max_age_days) * 86_400;
    snapshots
        .iter()
        .filter(|s| s.created_at < cutoff && Some(s.generation) != head_generation)
        .map(|s| s.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_young_snapshots() {
        let day = 86_400;
        let now = 100 * day;
        let s = |id, generation, age_days: i64| Stored {
            id,
            generation,
            created_at: now - age_days * day,
        };
        let all = [s(1, 1, 30), s(2, 2, 20), s(3, 3, 3), s(4, 4, 1)];
        assert_eq!(expired(&all, Some(4), now, 14), vec![1, 2]);
        // An old head is kept even when everything is old.
        let old = [s(1, 1, 30), s(2, 2, 20)];
        assert_eq!(expired(&old, Some(2), now, 14), vec![1]);
    }
}
