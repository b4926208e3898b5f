-- stateful-ci backend schema, migration 2: which scope each object was
-- uploaded for, so objects are visible only where they may be (issue 10
-- item 5). An object is visible to a run when the `objects` row says it is
-- stored AND either this table has a row for it under the run's save scope
-- (the run, or an earlier run of the same scope, uploaded those very bytes:
-- R2 verified their SHA-256) or a snapshot in a scope the run may restore
-- or save to lists it in `snapshot_objects`. See docs/PROTOCOL.md.

CREATE TABLE object_uploads (
  tenant TEXT NOT NULL,
  object_key TEXT NOT NULL,
  scope TEXT NOT NULL,
  uploaded_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, object_key, scope)
);

-- Snapshots by scope, for "is this object in a snapshot of a scope the run
-- may read" (looked up from snapshot_objects' object_key index).
CREATE INDEX snapshots_tenant_scope ON snapshots (tenant, scope);
