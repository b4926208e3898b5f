-- stateful-ci backend schema, migration 3: what the scheduled retention
-- sweep and the denial counter need (docs/WORKER.md, "Retention" and
-- "Refused requests").

-- Objects no snapshot referenced when a sweep looked, with the time it
-- looked. A later sweep deletes one only if it is still unreferenced and
-- was marked at least the grace period ago, so a save in flight (whose
-- prepare found the object stored) is safe.
CREATE TABLE sweep_marks (
  tenant TEXT NOT NULL,
  object_key TEXT NOT NULL,
  marked_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, object_key)
);

-- Refused requests (no token, invalid token) counted per hour, route and
-- reason instead of one `decisions` row each: each isolate adds its counts
-- at most once an hour, so junk traffic cannot use up D1's daily writes.
CREATE TABLE denial_counts (
  hour INTEGER NOT NULL,
  route TEXT NOT NULL,
  reason TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (hour, route, reason)
);

-- For the sweep's "uploaded long ago" scan.
CREATE INDEX objects_created ON objects (created_at);
