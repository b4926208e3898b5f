//! The rules a scope's Durable Object applies to a commit: compare-and-set on
//! the head generation, and idempotency keys that return the first result.
//! The Durable Object runs [`apply`] synchronously between reading and
//! writing its SQLite storage, so no other commit interleaves, and answers
//! the Worker with the [`Outcome`] itself (serialised as JSON,
//! `{"outcome": "applied", "head": {...}}`), not a string to re-interpret.

use serde::{Deserialize, Serialize};
use stateful_ci_protocol::{Head, ObjectKey};

/// What the Worker asks a scope's Durable Object to commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCall {
    pub manifest: ObjectKey,
    pub expected_generation: u64,
    pub idempotency_key: String,
    /// Unix seconds (idempotency keys are remembered for a while).
    pub now: i64,
}

/// What an idempotency key was first used for, and what it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorCommit {
    pub manifest: ObjectKey,
    pub head: Head,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "head", rename_all = "snake_case")]
pub enum Outcome {
    /// Store this head (and remember it under the idempotency key).
    Applied(Head),
    /// The key was used for this same manifest before: answer with that.
    Replayed(Head),
    /// The head moved; the caller re-prepares. Carries the current head.
    Conflict(Option<Head>),
    /// The key was used for a different manifest.
    KeyReused,
}

pub fn apply(
    current: Option<&Head>,
    prior: Option<&PriorCommit>,
    manifest: ObjectKey,
    expected_generation: u64,
) -> Outcome {
    if let Some(p) = prior {
        return if p.manifest == manifest {
            Outcome::Replayed(p.head.clone())
        } else {
            Outcome::KeyReused
        };
    }
    let current_generation = current.map_or(0, |h| h.generation);
    if expected_generation != current_generation {
        return Outcome::Conflict(current.cloned());
    }
    Outcome::Applied(Head {
        snapshot: manifest,
        generation: current_generation + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stateful_ci_protocol::ObjectKind;

    fn m(b: &[u8]) -> ObjectKey {
        ObjectKey::for_bytes(ObjectKind::Manifest, b)
    }

    #[test]
    fn first_commit_then_cas() {
        let h1 = match apply(None, None, m(b"a"), 0) {
            Outcome::Applied(h) => h,
            o => panic!("{o:?}"),
        };
        assert_eq!(h1.generation, 1);
        assert_eq!(
            apply(Some(&h1), None, m(b"b"), 0),
            Outcome::Conflict(Some(h1.clone()))
        );
        assert_eq!(
            apply(Some(&h1), None, m(b"b"), 2),
            Outcome::Conflict(Some(h1.clone()))
        );
        assert_eq!(
            apply(Some(&h1), None, m(b"b"), 1),
            Outcome::Applied(Head {
                snapshot: m(b"b"),
                generation: 2
            })
        );
    }

    #[test]
    fn the_outcome_crosses_to_the_worker_as_tagged_json() {
        let h = Head {
            snapshot: m(b"a"),
            generation: 3,
        };
        for o in [
            Outcome::Applied(h.clone()),
            Outcome::Replayed(h.clone()),
            Outcome::Conflict(Some(h.clone())),
            Outcome::Conflict(None),
            Outcome::KeyReused,
        ] {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o, "{json}");
        }
        let json = serde_json::to_value(Outcome::Applied(h)).unwrap();
        assert_eq!(json["outcome"], "applied");
        assert_eq!(json["head"]["generation"], 3);
        assert_eq!(
            serde_json::to_value(Outcome::KeyReused).unwrap(),
            serde_json::json!({"outcome": "key_reused"})
        );
    }

    #[test]
    fn idempotency_key_returns_first_result_or_refuses_reuse() {
        let first = Head {
            snapshot: m(b"a"),
            generation: 1,
        };
        let later = Head {
            snapshot: m(b"c"),
            generation: 5,
        };
        let prior = PriorCommit {
            manifest: m(b"a"),
            head: first.clone(),
        };
        assert_eq!(
            apply(Some(&later), Some(&prior), m(b"a"), 0),
            Outcome::Replayed(first)
        );
        assert_eq!(
            apply(Some(&later), Some(&prior), m(b"z"), 5),
            Outcome::KeyReused
        );
    }
}
