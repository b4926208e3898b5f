-- stateful-ci backend schema, migration 1. Applied in file-name order and
-- recorded in wrangler's `d1_migrations` table (by `stateful-ci deploy`
-- through the D1 query API, or by `wrangler d1 migrations apply`).
-- `tenant` is `<repository_owner_id>/<repository_id>` from the verified
-- OIDC token (ids, because names can change).

-- Every run that authenticated, with its verified claims.
CREATE TABLE runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant TEXT NOT NULL,
  repository TEXT NOT NULL,
  run_id TEXT NOT NULL,
  run_attempt TEXT NOT NULL,
  workflow_ref TEXT NOT NULL,
  job_workflow_ref TEXT NOT NULL,
  git_ref TEXT NOT NULL,
  event TEXT NOT NULL,
  sha TEXT NOT NULL,
  actor TEXT NOT NULL,
  runner_environment TEXT NOT NULL,
  class TEXT NOT NULL,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  UNIQUE (tenant, run_id, run_attempt)
);
CREATE INDEX runs_last_seen ON runs (last_seen DESC);

-- Committed snapshots (immutable), with the producing run's claims.
CREATE TABLE snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  tenant TEXT NOT NULL,
  workspace TEXT NOT NULL,
  scope TEXT NOT NULL,
  generation INTEGER NOT NULL,
  manifest_key TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  total_bytes INTEGER NOT NULL DEFAULT 0,
  stored_bytes INTEGER NOT NULL DEFAULT 0,
  entries INTEGER NOT NULL DEFAULT 0,
  repository TEXT NOT NULL,
  workflow_ref TEXT NOT NULL,
  job_workflow_ref TEXT NOT NULL,
  git_ref TEXT NOT NULL,
  event TEXT NOT NULL,
  sha TEXT NOT NULL,
  actor TEXT NOT NULL,
  run_id TEXT NOT NULL,
  run_attempt TEXT NOT NULL,
  runner_environment TEXT NOT NULL,
  class TEXT NOT NULL,
  UNIQUE (tenant, workspace, scope, generation)
);
CREATE INDEX snapshots_created ON snapshots (created_at DESC);
CREATE INDEX snapshots_scope_age ON snapshots (tenant, workspace, scope, created_at);

-- The objects (manifest and packs) each snapshot uses.
CREATE TABLE snapshot_objects (
  snapshot_id INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
  object_key TEXT NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (snapshot_id, object_key)
);
CREATE INDEX snapshot_objects_key ON snapshot_objects (object_key);

-- Objects stored in R2 (per tenant), for sizes and sweeps.
CREATE TABLE objects (
  tenant TEXT NOT NULL,
  object_key TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, object_key)
);

-- Mirror of each scope's head; the Durable Object of the scope is the truth.
CREATE TABLE heads (
  tenant TEXT NOT NULL,
  workspace TEXT NOT NULL,
  scope TEXT NOT NULL,
  manifest_key TEXT NOT NULL,
  generation INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, workspace, scope)
);

-- Every authentication and policy decision, allowed or denied, with reason.
CREATE TABLE decisions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  route TEXT NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  repository TEXT NOT NULL DEFAULT '',
  run_id TEXT NOT NULL DEFAULT '',
  class TEXT NOT NULL DEFAULT '',
  allowed INTEGER NOT NULL,
  reason TEXT NOT NULL,
  scope TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX decisions_at ON decisions (at DESC);
CREATE INDEX decisions_tenant_at ON decisions (tenant, at DESC);
