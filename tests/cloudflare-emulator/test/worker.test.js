// Upload a module Worker through the REST API and check it runs in workerd with exactly the
// declared bindings: the D1 that /query migrates, the R2 bucket the API writes, a SQLite
// Durable Object, plain_text vars and secrets; plus workers.dev enablement and delete flows.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http from "node:http";
import { startEmulator, upload, ACCOUNT } from "./helpers.js";

const WORKER = readFileSync(new URL("./fixtures/worker.mjs", import.meta.url));
const JS = "application/javascript+module";
let emu;
let dbId;

const A = `/accounts/${ACCOUNT}`;
const metadata = (extra = {}) => ({
  main_module: "worker.mjs",
  compatibility_date: "2024-11-01",
  bindings: [
    { type: "d1", name: "DB", id: dbId },
    { type: "r2_bucket", name: "BUCKET", bucket_name: "snapshots" },
    { type: "durable_object_namespace", name: "COUNTER", class_name: "Counter" },
    { type: "plain_text", name: "GREETING", text: "hello from vars" },
  ],
  ...extra,
});

async function workerUrl(name) {
  const r = await emu.ctl("GET", "/workers");
  return r.body.scripts[name];
}
async function get(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, `${url} answered ${res.status}`);
  return res.json();
}

function viaHost(host, p) {
  const api = new URL(emu.api);
  return new Promise((resolve, reject) => {
    http
      .get({ host: api.hostname, port: api.port, path: p, headers: { host } }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode, body }));
      })
      .on("error", reject);
  });
}

before(async () => {
  emu = await startEmulator();
  const db = await emu.call("POST", `${A}/d1/database`, { json: { name: "stateful-ci" } });
  assert.equal(db.status, 200);
  dbId = db.body.result.uuid;
  const b = await emu.call("POST", `${A}/r2/buckets`, { json: { name: "snapshots" } });
  assert.equal(b.status, 200);
});

after(async () => {
  if (!emu) return;
  try {
    await emu.assertNoViolations();
  } finally {
    assert.equal(await emu.stop(), 143);
  }
});

test("D1 migrations through /query are what the uploaded Worker reads", async () => {
  const mig = await emu.call("POST", `${A}/d1/database/${dbId}/query`, {
    json: {
      sql:
        "CREATE TABLE IF NOT EXISTS d1_migrations(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL);\n" +
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL); -- first migration\n" +
        "INSERT INTO items(name) VALUES ('from-rest');\n" +
        "INSERT INTO d1_migrations (name) VALUES ('0001_init.sql');",
    },
  });
  assert.equal(mig.status, 200, JSON.stringify(mig.body));
  assert.equal(mig.body.result.length, 4, "one result per statement");

  const up = await upload(
    emu,
    "stateful-ci",
    metadata({ migrations: { new_tag: "v1", steps: [{ new_sqlite_classes: ["Counter"] }] } }),
    [{ name: "worker.mjs", type: JS, contents: WORKER }],
  );
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.equal(up.body.result.id, "stateful-ci");
  assert.equal(up.body.result.migration_tag, "v1");

  // Not routed before the workers.dev route is enabled.
  assert.equal(await workerUrl("stateful-ci"), undefined);
  const sub = await emu.call("POST", `${A}/workers/scripts/stateful-ci/subdomain`, { json: { enabled: true } });
  assert.equal(sub.status, 200);
  assert.deepEqual(sub.body.result, { enabled: true, previews_enabled: false });
  const url = await workerUrl("stateful-ci");
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(emu.lines.some((l) => l === `emulator: worker stateful-ci=${url}`), "worker URL line printed");

  assert.deepEqual(await get(`${url}/health`), { ok: true, greeting: "hello from vars" });
  assert.deepEqual(await get(`${url}/d1`), ["from-rest"]);
  // The API port also routes by workers.dev Host header.
  assert.deepEqual(await viaHost("stateful-ci.emulated.workers.dev", "/health"), { status: 200, body: '{"ok":true,"greeting":"hello from vars"}' });
  assert.equal((await viaHost("unknown.emulated.workers.dev", "/health")).status, 404);

  // The Worker's writes are visible through the REST API too.
  await get(`${url}/d1/insert?name=from-worker`);
  const q = await emu.call("POST", `${A}/d1/database/${dbId}/query`, { json: { sql: "SELECT name FROM items WHERE name = ?", params: ["from-worker"] } });
  assert.deepEqual(q.body.result[0].results, [{ name: "from-worker" }]);
  const applied = await emu.call("POST", `${A}/d1/database/${dbId}/raw`, { json: { sql: "SELECT name FROM d1_migrations" } });
  assert.deepEqual(applied.body.result[0].results, { columns: ["name"], rows: [["0001_init.sql"]] });
});

test("R2 objects put through the API are the ones the Worker's binding sees", async () => {
  const url = await workerUrl("stateful-ci");
  const put = await emu.call("PUT", `${A}/r2/buckets/snapshots/objects/packs/p1`, {
    body: "pack-bytes",
    headers: { "content-type": "application/octet-stream" },
  });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.equal(put.body.result.size, "10");
  assert.deepEqual(await get(`${url}/r2`), { "packs/p1": "pack-bytes" });

  await fetch(`${url}/r2/put?key=from-worker`, { method: "POST", body: "w" });
  const list = await emu.call("GET", `${A}/r2/buckets/snapshots/objects`);
  assert.deepEqual(list.body.result.map((o) => o.key).sort(), ["from-worker", "packs/p1"]);

  // '%2F' is not decoded: it names another key ("packs%2Fp1"), so the object stays.
  const other = await emu.call("DELETE", `${A}/r2/buckets/snapshots/objects/packs%2Fp1`);
  assert.equal(other.status, 200);
  assert.deepEqual(await get(`${url}/r2`), { "from-worker": "w", "packs/p1": "pack-bytes" });
  // The literal form (wrangler's) deletes it.
  const del = await emu.call("DELETE", `${A}/r2/buckets/snapshots/objects/packs/p1`);
  assert.equal(del.status, 200);
  assert.deepEqual(await get(`${url}/r2`), { "from-worker": "w" });
});

test("SQLite Durable Object keeps state across a re-upload", async () => {
  const url = await workerUrl("stateful-ci");
  assert.deepEqual(await get(`${url}/do?name=x`), { n: 1 });
  assert.deepEqual(await get(`${url}/do?name=x`), { n: 2 });
  assert.deepEqual(await get(`${url}/do?name=y`), { n: 1 });
  const up = await upload(emu, "stateful-ci", metadata({ keep_bindings: ["secret_text"] }), [{ name: "worker.mjs", type: JS, contents: WORKER }]);
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.equal(up.body.result.migration_tag, "v1", "tag kept when no migrations are sent");
  assert.deepEqual(await get(`${url}/do?name=x`), { n: 3 });
});

test("migration tag precondition and undeclared Durable Object class are rejected", async () => {
  const stale = await upload(emu, "stateful-ci", metadata({ migrations: { old_tag: "v0", new_tag: "v2", steps: [] } }), [
    { name: "worker.mjs", type: JS, contents: WORKER },
  ]);
  assert.equal(stale.status, 400);
  assert.equal(stale.body.errors[0].code, 10079);
  assert.match(stale.body.errors[0].message, /current tag is v1/);

  const fresh = await upload(emu, "other-script", metadata(), [{ name: "worker.mjs", type: JS, contents: WORKER }]);
  assert.equal(fresh.status, 400);
  assert.equal(fresh.body.errors[0].code, 10061);

  const broken = await upload(
    emu,
    "broken-script",
    { main_module: "index.mjs", compatibility_date: "2024-11-01", bindings: [] },
    [{ name: "index.mjs", type: JS, contents: "export default { fetch() { return new Response('x') } }; throw new Error('boom at startup');" }],
  );
  assert.equal(broken.status, 400);
  assert.equal(broken.body.errors[0].code, 10021);
  const list = await emu.call("GET", `${A}/workers/scripts`);
  assert.deepEqual(list.body.result.map((s) => s.id), ["stateful-ci"], "failed uploads create nothing");
  // The running script still answers after the failed reloads.
  assert.deepEqual(await get(`${await workerUrl("stateful-ci")}/health`), { ok: true, greeting: "hello from vars" });
});

test("a workerd reload waits for in-flight Worker responses to finish", async () => {
  const src =
    "export default { fetch() { const { readable, writable } = new TransformStream(); const w = writable.getWriter(); const e = new TextEncoder();" +
    " (async () => { await w.write(e.encode('first|')); await scheduler.wait(300); await w.write(e.encode('second')); await w.close(); })();" +
    " return new Response(readable); } }";
  const up = await upload(emu, "streamer", { main_module: "s.mjs", compatibility_date: "2024-11-01" }, [{ name: "s.mjs", type: JS, contents: src }]);
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.equal((await emu.call("POST", `${A}/workers/scripts/streamer/subdomain`, { json: { enabled: true } })).status, 200);
  const res = await fetch(await workerUrl("streamer"));
  const reader = res.body.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  assert.equal(first, "first|");
  // The response is in flight; creating a bucket reloads workerd.
  const reload = emu.call("POST", `${A}/r2/buckets`, { json: { name: "reload-trigger" } });
  let rest = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += new TextDecoder().decode(value);
  }
  assert.equal(rest, "second");
  assert.equal((await reload).status, 200);
  assert.equal((await emu.call("DELETE", `${A}/r2/buckets/reload-trigger`)).status, 200);
  assert.equal((await emu.call("DELETE", `${A}/workers/scripts/streamer`)).status, 200);
});

test("secrets: PUT/list/delete, kept across uploads only with keep_bindings", async () => {
  const url = await workerUrl("stateful-ci");
  const secret = "s3cr3t-value-for-the-test";
  const put = await emu.call("PUT", `${A}/workers/scripts/stateful-ci/secrets`, { json: { name: "ADMIN_TOKEN", text: secret, type: "secret_text" } });
  assert.equal(put.status, 200, JSON.stringify(put.body));
  assert.deepEqual(put.body.result, { name: "ADMIN_TOKEN", type: "secret_text" });
  assert.deepEqual(await get(`${url}/secret?guess=${secret}`), { length: secret.length, equals: true });

  const list = await emu.call("GET", `${A}/workers/scripts/stateful-ci/secrets`);
  assert.deepEqual(list.body.result, [{ name: "ADMIN_TOKEN", type: "secret_text" }]);
  assert.ok(!JSON.stringify(await emu.ctl("GET", "/state")).includes(secret), "state never shows secret text");

  let up = await upload(emu, "stateful-ci", metadata({ keep_bindings: ["secret_text"] }), [{ name: "worker.mjs", type: JS, contents: WORKER }]);
  assert.equal(up.status, 200);
  assert.deepEqual(await get(`${url}/secret?guess=${secret}`), { length: secret.length, equals: true });

  up = await upload(emu, "stateful-ci", metadata(), [{ name: "worker.mjs", type: JS, contents: WORKER }]);
  assert.equal(up.status, 200);
  assert.deepEqual(await get(`${url}/secret`), { length: null, equals: false }, "an upload without keep_bindings drops secrets");

  up = await upload(emu, "stateful-ci", metadata({ bindings: [...metadata().bindings, { type: "secret_text", name: "ADMIN_TOKEN", text: secret }] }), [
    { name: "worker.mjs", type: JS, contents: WORKER },
  ]);
  assert.equal(up.status, 200);
  assert.deepEqual(await get(`${url}/secret?guess=${secret}`), { length: secret.length, equals: true }, "secret_text binding in metadata");

  const del = await emu.call("DELETE", `${A}/workers/scripts/stateful-ci/secrets/ADMIN_TOKEN`);
  assert.equal(del.status, 200);
  const again = await emu.call("DELETE", `${A}/workers/scripts/stateful-ci/secrets/ADMIN_TOKEN`);
  assert.equal(again.status, 404);
  assert.equal(again.body.errors[0].code, 10056);
  const missing = await emu.call("PUT", `${A}/workers/scripts/nope/secrets`, { json: { name: "X", text: "y", type: "secret_text" } });
  assert.equal(missing.body.errors[0].code, 10007);
});

test("workers.dev: account subdomain, disabling the route, deleting script, database and bucket", async () => {
  const sub = await emu.call("GET", `${A}/workers/subdomain`);
  assert.deepEqual(sub.body.result, { subdomain: "emulated" });
  const off = await emu.call("DELETE", `${A}/workers/scripts/stateful-ci/subdomain`);
  assert.deepEqual(off.body.result, { enabled: false, previews_enabled: false });
  assert.equal(await workerUrl("stateful-ci"), undefined);
  assert.equal((await emu.call("POST", `${A}/workers/scripts/stateful-ci/subdomain`, { json: { enabled: true } })).status, 200);
  const url = await workerUrl("stateful-ci");
  assert.equal((await fetch(`${url}/health`)).status, 200);

  // Deleting the database a script binds leaves the script running and reloadable.
  assert.equal((await emu.call("DELETE", `${A}/d1/database/${dbId}`)).status, 200);
  const sec = await emu.call("PUT", `${A}/workers/scripts/stateful-ci/secrets`, { json: { name: "AFTER_DB_DELETE", text: "x", type: "secret_text" } });
  assert.equal(sec.status, 200, JSON.stringify(sec.body));
  assert.equal((await fetch(`${url}/health`)).status, 200);

  const del = await emu.call("DELETE", `${A}/workers/scripts/stateful-ci`);
  assert.equal(del.status, 200, JSON.stringify(del.body));
  assert.equal(await workerUrl("stateful-ci"), undefined);
  await assert.rejects(fetch(`${url}/health`), "the route is gone with the script");
  const gone = await emu.call("DELETE", `${A}/workers/scripts/stateful-ci`);
  assert.equal(gone.status, 404);
  assert.equal(gone.body.errors[0].code, 10007);
  assert.equal((await emu.call("GET", `${A}/workers/scripts/stateful-ci/subdomain`)).body.errors[0].code, 10007);

  // Bucket must be emptied through the object routes before it can be deleted.
  const notEmpty = await emu.call("DELETE", `${A}/r2/buckets/snapshots`);
  assert.equal(notEmpty.status, 409);
  assert.equal(notEmpty.body.errors[0].code, 10008);
  const objects = await emu.call("GET", `${A}/r2/buckets/snapshots/objects`);
  for (const o of objects.body.result) assert.equal((await emu.call("DELETE", `${A}/r2/buckets/snapshots/objects/${o.key}`)).status, 200);
  assert.equal((await emu.call("DELETE", `${A}/r2/buckets/snapshots`)).status, 200);
  const noBucket = await emu.call("DELETE", `${A}/r2/buckets/snapshots`);
  assert.equal(noBucket.status, 404);
  assert.equal(noBucket.body.errors[0].code, 10006);

  const noDb = await emu.call("GET", `${A}/d1/database/${dbId}`);
  assert.equal(noDb.status, 404);
  assert.equal(noDb.body.errors[0].code, 7404);

  const state = (await emu.ctl("GET", "/state")).body.accounts[ACCOUNT];
  assert.deepEqual([state.d1_databases, state.r2_buckets, state.scripts], [[], [], []]);
});
