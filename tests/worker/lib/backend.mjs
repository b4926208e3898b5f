// Runs the built Worker bundle (worker-template/dist) under workerd through
// miniflare, with a local D1 database (migrations from /migrations applied
// and recorded in d1_migrations like wrangler does), an R2 bucket and the
// SQLite-backed Durable Object, listening on 127.0.0.1.
import { Miniflare } from "miniflare";
import { Agent, setGlobalDispatcher } from "undici";
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

// workerd's HTTP server closes a connection that has been idle for 5 s (kj's
// keep-alive timeout; measured on this backend: a raw keep-alive connection is
// closed 5.0 s after its response). fetch() keeps idle sockets for 4 s, and when
// its timers run late on a busy machine it can send a request on a socket that
// workerd is closing: the request fails with "fetch failed" and never reaches
// the Worker (the race in cloudflare/workers-sdk#14641; CI hit it once, in
// data-path.test.mjs). These tests therefore open a connection per request
// (undici: pipelining 0 disables keep-alive), so the race cannot happen.
setGlobalDispatcher(new Agent({ pipelining: 0 }));

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const distDir = join(repoRoot, "worker-template", "dist");
export const GRANT_KEY = "test-grant-key-0123456789abcdef0123456789";
export const ADMIN_TOKEN = "test-admin-token-0123456789";

export function migrationStatements(sql) {
  return sql
    .split("\n")
    .filter((l) => !l.trim().startsWith("--"))
    .join("\n")
    .split(/;\s*$/m)
    .map((s) => s.trim())
    .filter(Boolean);
}

export async function applyMigrations(db) {
  await db
    .prepare(
      "CREATE TABLE IF NOT EXISTS d1_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL)",
    )
    .run();
  const dir = join(repoRoot, "migrations");
  const files = readdirSync(dir).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
  for (const f of files) {
    const done = await db.prepare("SELECT 1 FROM d1_migrations WHERE name = ?").bind(f).first();
    if (done) continue;
    const stmts = migrationStatements(readFileSync(join(dir, f), "utf8")).map((s) => db.prepare(s));
    stmts.push(db.prepare("INSERT INTO d1_migrations (name) VALUES (?)").bind(f));
    await db.batch(stmts);
  }
  return files;
}

/**
 * Starts the Worker. `vars` override the plain-text bindings.
 * Returns { mf, url, db, bucket, stop }.
 */
export async function startBackend({ issuerUrl, port = 0, vars = {}, persistTo, inspectorPort } = {}) {
  if (!existsSync(join(distDir, "index.js")) || !existsSync(join(distDir, "index_bg.wasm"))) {
    throw new Error(`no Worker bundle in ${distDir}; run scripts/build-worker.sh`);
  }
  const bindings = {
    ALLOWED_REPOSITORIES: "acme/app",
    DEFAULT_BRANCH: "main", // never assumed by the Worker (issue 10, item 1)
    GRANT_KEY,
    ADMIN_TOKEN,
    ...(issuerUrl ? { OIDC_TEST_ISSUER: issuerUrl } : {}),
    ...vars,
  };
  const mf = new Miniflare({
    host: "127.0.0.1",
    port,
    modulesRoot: distDir,
    modules: [
      { type: "ESModule", path: join(distDir, "index.js"), contents: readFileSync(join(distDir, "index.js")) },
      { type: "CompiledWasm", path: join(distDir, "index_bg.wasm"), contents: readFileSync(join(distDir, "index_bg.wasm")) },
    ],
    compatibilityDate: "2026-07-01",
    bindings,
    d1Databases: { DB: "stateful-ci-test-db" },
    r2Buckets: { BUCKET: "stateful-ci-test-bucket" },
    durableObjects: { COORDINATOR: { className: "ScopeCoordinator", useSQLite: true } },
    ...(persistTo ? { defaultPersistRoot: persistTo } : {}),
    ...(inspectorPort !== undefined ? { inspectorPort } : {}),
  });
  const url = (await mf.ready).toString().replace(/\/$/, "");
  const db = await mf.getD1Database("DB");
  await applyMigrations(db);
  const bucket = await mf.getR2Bucket("BUCKET");
  return { mf, url, db, bucket, stop: () => mf.dispose() };
}
