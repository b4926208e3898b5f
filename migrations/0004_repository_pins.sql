-- Allow-list by id, trust on first use (docs/TRUST.md, section 1): for an
-- allowed repository whose GitHub ids were not recorded at deploy time, the
-- ids of the first verified token that named it. Every later token for that
-- name must carry the same repository id, so a repository that takes over a
-- deleted or renamed name is refused (`repository_id_mismatch`). One row per
-- allowed name, written once.
CREATE TABLE IF NOT EXISTS repository_pins (
    name          TEXT PRIMARY KEY,
    repository_id TEXT NOT NULL,
    owner_id      TEXT NOT NULL,
    pinned_at     INTEGER NOT NULL,
    run_id        TEXT NOT NULL DEFAULT ''
);
