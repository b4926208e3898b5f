// The REST subset without Workers: tokens and permissions, rate limits, pagination, the D1 and
// R2 error codes, and contract enforcement (invalid requests become violations).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startEmulator, uploadForm } from "./helpers.js";

const A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const ALL = ["Workers Scripts Edit", "D1 Edit", "Workers R2 Storage Edit", "Account Settings Read"];
const config = {
  accounts: [
    { id: A, name: "Account A", workers_subdomain: "team-a" },
    { id: B, name: "Account B" },
  ],
  tokens: [
    { id: "11111111111111111111111111111111", value: "tok-full", owner: "user", accounts: [A, B], permissions: ALL },
    { id: "22222222222222222222222222222222", value: "tok-no-d1", owner: "user", accounts: [A], permissions: ALL.filter((p) => p !== "D1 Edit") },
    { id: "33333333333333333333333333333333", value: "tok-account-owned", owner: "account", account_id: A, accounts: [A], permissions: ALL },
    { id: "44444444444444444444444444444444", value: "tok-rate", owner: "user", accounts: [A], permissions: ALL, rate_limit: { requests: 3, window_seconds: 60 } },
    { id: "55555555555555555555555555555555", value: "tok-read-only", owner: "user", accounts: [A], permissions: ["D1 Read", "Workers R2 Storage Read"] },
  ],
};
let emu;
const call = (method, p, opts = {}) => emu.call(method, p, { token: "tok-full", ...opts });

before(async () => {
  emu = await startEmulator({ config });
});
after(async () => {
  if (!emu) return;
  try {
    await emu.assertNoViolations();
  } finally {
    await emu.stop();
  }
});

test("token verify: user token on /user, account-owned token on /accounts/{id}", async () => {
  let r = await call("GET", "/user/tokens/verify");
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.result, { id: "11111111111111111111111111111111", status: "active" });

  r = await call("GET", "/user/tokens/verify", { token: "tok-account-owned" });
  assert.equal(r.status, 401);
  assert.equal(r.body.errors[0].code, 1000);
  r = await call("GET", `/accounts/${A}/tokens/verify`, { token: "tok-account-owned" });
  assert.equal(r.status, 200);
  assert.equal(r.body.result.id, "33333333333333333333333333333333");

  r = await call("GET", "/user/tokens/verify", { token: "not-a-token" });
  assert.equal(r.status, 401);
  assert.equal(r.body.errors[0].code, 1000);
  r = await call("GET", `/accounts/${A}/d1/database`, { token: "not-a-token" });
  assert.equal(r.status, 403);
  assert.equal(r.body.errors[0].code, 9109);
});

test("a token missing a permission gets 403 / 10000 on exactly those operations", async () => {
  const denied = await call("POST", `/accounts/${A}/d1/database`, { token: "tok-no-d1", json: { name: "nope" } });
  assert.equal(denied.status, 403);
  assert.deepEqual(denied.body.errors, [{ code: 10000, message: "Authentication error" }]);
  assert.equal((await call("GET", `/accounts/${A}/d1/database`, { token: "tok-no-d1" })).status, 403);
  assert.equal((await call("GET", `/accounts/${A}/r2/buckets`, { token: "tok-no-d1" })).status, 200);

  // Read permissions allow reads only.
  assert.equal((await call("GET", `/accounts/${A}/d1/database`, { token: "tok-read-only" })).status, 200);
  const w = await call("POST", `/accounts/${A}/r2/buckets`, { token: "tok-read-only", json: { name: "x-bucket" } });
  assert.equal(w.status, 403);
  assert.equal(w.body.errors[0].code, 10000);
  // Token scoped to account A only.
  const other = await call("GET", `/accounts/${B}/d1/database`, { token: "tok-no-d1" });
  assert.equal(other.status, 403);
  assert.equal(other.body.errors[0].code, 10000);
  // Accounts list shows only accounts whose settings the token may read.
  const accts = await call("GET", "/accounts", { token: "tok-read-only" });
  assert.deepEqual(accts.body.result, []);
  const mine = await call("GET", "/accounts");
  assert.deepEqual(mine.body.result.map((a) => a.id), [A, B]);
});

test("rate limit: over the budget answers 429 with retry-after", async () => {
  for (let i = 0; i < 3; i++) assert.equal((await call("GET", "/user/tokens/verify", { token: "tok-rate" })).status, 200);
  const r = await call("GET", "/user/tokens/verify", { token: "tok-rate" });
  assert.equal(r.status, 429);
  assert.equal(r.body.errors[0].code, 971);
  const retry = Number(r.headers.get("retry-after"));
  assert.ok(retry >= 1 && retry <= 60, `retry-after ${retry}`);
  assert.equal((await call("GET", "/user/tokens/verify")).status, 200, "tokens with their own budget are unaffected");
});

test("D1: create, name taken 7502, list with page pagination, SQL errors 7500, not found 7404", async () => {
  const ids = [];
  for (let i = 0; i < 12; i++) {
    const r = await call("POST", `/accounts/${A}/d1/database`, { json: { name: `db-${String(i).padStart(2, "0")}` } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    ids.push(r.body.result.uuid);
  }
  const dup = await call("POST", `/accounts/${A}/d1/database`, { json: { name: "db-00" } });
  assert.equal(dup.status, 400);
  assert.equal(dup.body.errors[0].code, 7502);
  // Same name in another account is fine.
  assert.equal((await call("POST", `/accounts/${B}/d1/database`, { json: { name: "db-00" } })).status, 200);

  const p1 = await call("GET", `/accounts/${A}/d1/database?per_page=10&page=1`);
  const p2 = await call("GET", `/accounts/${A}/d1/database?per_page=10&page=2`);
  assert.equal(p1.body.result.length, 10);
  assert.equal(p2.body.result.length, 2);
  assert.deepEqual(p1.body.result_info, { page: 1, per_page: 10, count: 10, total_count: 12 });
  assert.deepEqual([...p1.body.result, ...p2.body.result].map((d) => d.uuid), ids);
  const byName = await call("GET", `/accounts/${A}/d1/database?name=db-11`);
  assert.deepEqual(byName.body.result.map((d) => d.name), ["db-11"]);

  const bad = await call("POST", `/accounts/${A}/d1/database/${ids[0]}/query`, { json: { sql: "SELECT * FROM missing_table" } });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.errors[0].code, 7500);
  assert.match(bad.body.errors[0].message, /no such table: missing_table/);

  // A failing statement in a multi-statement query leaves nothing behind (batch is atomic).
  const atomic = await call("POST", `/accounts/${A}/d1/database/${ids[0]}/query`, { json: { sql: "CREATE TABLE t(x); INSERT INTO nope VALUES (1);" } });
  assert.equal(atomic.status, 400);
  const t = await call("POST", `/accounts/${A}/d1/database/${ids[0]}/query`, { json: { sql: "SELECT name FROM sqlite_master WHERE name = 't'" } });
  assert.deepEqual(t.body.result[0].results, []);

  const batch = await call("POST", `/accounts/${A}/d1/database/${ids[0]}/query`, {
    json: { batch: [{ sql: "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)" }, { sql: "INSERT INTO kv VALUES (?, ?)", params: ["a", "1"] }, { sql: "SELECT * FROM kv" }] },
  });
  assert.equal(batch.status, 200, JSON.stringify(batch.body));
  assert.deepEqual(batch.body.result[2].results, [{ k: "a", v: "1" }]);
  const raw = await call("POST", `/accounts/${A}/d1/database/${ids[0]}/raw`, { json: { sql: "SELECT k, v, NULL AS n FROM kv" } });
  assert.deepEqual(raw.body.result[0].results, { columns: ["k", "v", "n"], rows: [["a", "1", null]] });

  const info = await call("GET", `/accounts/${A}/d1/database/${ids[0]}`);
  assert.equal(info.body.result.num_tables, 1);
  assert.ok(info.body.result.file_size > 0);

  assert.equal((await call("DELETE", `/accounts/${A}/d1/database/${ids[0]}`)).status, 200);
  for (const [m, p, json] of [
    ["GET", `/accounts/${A}/d1/database/${ids[0]}`],
    ["DELETE", `/accounts/${A}/d1/database/${ids[0]}`],
    ["POST", `/accounts/${A}/d1/database/${ids[0]}/query`, { sql: "SELECT 1" }],
  ]) {
    const r = await call(m, p, json ? { json } : {});
    assert.equal(r.status, 404, `${m} ${p}`);
    assert.equal(r.body.errors[0].code, 7404);
  }
});

test("R2: bucket cursor pagination, 10073 on duplicate, object cursor pagination, 10006/10008", async () => {
  const names = ["b-alpha", "b-beta", "b-delta", "b-gamma", "other-one"];
  for (const name of names) assert.equal((await call("POST", `/accounts/${A}/r2/buckets`, { json: { name } })).status, 200);
  const dup = await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "b-alpha" } });
  assert.equal(dup.status, 409);
  assert.equal(dup.body.errors[0].code, 10073);

  const seen = [];
  let cursor;
  let pages = 0;
  do {
    const r = await call("GET", `/accounts/${A}/r2/buckets?per_page=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    assert.equal(r.status, 200);
    seen.push(...r.body.result.buckets.map((b) => b.name));
    cursor = r.body.result_info.cursor;
    pages++;
  } while (cursor);
  assert.deepEqual(seen, names);
  assert.equal(pages, 3);
  const filtered = await call("GET", `/accounts/${A}/r2/buckets?name_contains=b-`);
  assert.equal(filtered.body.result.buckets.length, 4);

  for (let i = 0; i < 7; i++) {
    const r = await call("PUT", `/accounts/${A}/r2/buckets/b-alpha/objects/k/${i}`, { body: `v${i}`, headers: { "content-type": "application/octet-stream" } });
    assert.equal(r.status, 200);
  }
  const keys = [];
  cursor = undefined;
  do {
    const r = await call("GET", `/accounts/${A}/r2/buckets/b-alpha/objects?per_page=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    keys.push(...r.body.result.map((o) => o.key));
    // A string on the wire, as Cloudflare's SDK types it.
    assert.equal(r.body.result_info.is_truncated, String(Boolean(r.body.result_info.cursor)));
    cursor = r.body.result_info.cursor;
  } while (cursor);
  assert.deepEqual(keys, ["k/0", "k/1", "k/2", "k/3", "k/4", "k/5", "k/6"]);
  const prefixed = await call("GET", `/accounts/${A}/r2/buckets/b-alpha/objects?prefix=k/6`);
  assert.deepEqual(prefixed.body.result.map((o) => o.key), ["k/6"]);

  const notEmpty = await call("DELETE", `/accounts/${A}/r2/buckets/b-alpha`);
  assert.equal(notEmpty.status, 409);
  assert.equal(notEmpty.body.errors[0].code, 10008);
  for (const k of keys) assert.equal((await call("DELETE", `/accounts/${A}/r2/buckets/b-alpha/objects/${k}`)).status, 200);
  assert.equal((await call("DELETE", `/accounts/${A}/r2/buckets/b-alpha`)).status, 200);
  for (const [m, p] of [
    ["GET", `/accounts/${A}/r2/buckets/b-alpha`],
    ["DELETE", `/accounts/${A}/r2/buckets/b-alpha`],
    ["GET", `/accounts/${A}/r2/buckets/b-alpha/objects`],
  ]) {
    const r = await call(m, p);
    assert.equal(r.status, 404, `${m} ${p}`);
    assert.equal(r.body.errors[0].code, 10006);
  }
  // Recreating the name gives an empty bucket.
  assert.equal((await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "b-alpha" } })).status, 200);
  assert.deepEqual((await call("GET", `/accounts/${A}/r2/buckets/b-alpha/objects`)).body.result, []);
});

test("workers.dev subdomain: account without one, then PUT", async () => {
  const none = await call("GET", `/accounts/${B}/workers/subdomain`);
  assert.equal(none.status, 404);
  assert.equal(none.body.errors[0].code, 10007);
  const taken = await call("PUT", `/accounts/${B}/workers/subdomain`, { json: { subdomain: "team-a" } });
  assert.equal(taken.status, 409);
  const put = await call("PUT", `/accounts/${B}/workers/subdomain`, { json: { subdomain: "team-b" } });
  assert.deepEqual(put.body.result, { subdomain: "team-b" });
  assert.deepEqual((await call("GET", `/accounts/${B}/workers/subdomain`)).body.result, { subdomain: "team-b" });
});

test("requests outside the contract are answered 400/404 and recorded as violations", async () => {
  await emu.ctl("DELETE", "/violations");
  const cases = [
    ["unknown route", () => call("GET", `/accounts/${A}/kv/namespaces`), 404, "unknown-route"],
    ["wrong method", () => call("PATCH", `/accounts/${A}/d1/database`), 405, "method-not-allowed"],
    ["no token", () => call("GET", `/accounts/${A}/d1/database`, { token: null }), 400, "request"],
    ["unknown query parameter", () => call("GET", `/accounts/${A}/d1/database?limit=5`), 400, "request"],
    ["per_page below minimum", () => call("GET", `/accounts/${A}/d1/database?per_page=2`), 400, "request"],
    ["bad database name", () => call("POST", `/accounts/${A}/d1/database`, { json: { name: "Bad Name" } }), 400, "request"],
    ["body missing required field", () => call("POST", `/accounts/${A}/r2/buckets`, { json: { nom: "x" } }), 400, "request"],
    ["JSON sent as text/plain", () => call("POST", `/accounts/${A}/r2/buckets`, { body: '{"name":"abc"}', headers: { "content-type": "text/plain" } }), 400, "request"],
    ["secret without type", () => call("PUT", `/accounts/${A}/workers/scripts/x/secrets`, { json: { name: "S", text: "t" } }), 400, "request"],
    ["subdomain enabled not boolean", () => call("POST", `/accounts/${A}/workers/scripts/x/subdomain`, { json: { enabled: "yes" } }), 400, "request"],
  ];
  for (const [what, run, status, kind] of cases) {
    const before = (await emu.violations()).length;
    const r = await run();
    assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.success, false, what);
    const v = await emu.violations();
    assert.equal(v.length, before + 1, `${what} recorded as one violation`);
    assert.equal(v.at(-1).kind, kind, what);
  }
  const v = await emu.violations();
  assert.ok(v.every((x) => !JSON.stringify(x).includes("tok-full")), "violations never include the token");
  await emu.ctl("DELETE", "/violations");
});

test("Worker upload form is validated: typed metadata and module part content types", async () => {
  await emu.ctl("DELETE", "/violations");
  const send = async (fd) => {
    const res = await fetch(`${emu.api}/accounts/${A}/workers/scripts/s1`, { method: "PUT", headers: { authorization: "Bearer tok-full" }, body: fd });
    return { status: res.status, body: await res.json() };
  };
  const js = { name: "index.mjs", type: "application/javascript+module", contents: "export default { fetch() { return new Response('ok') } }" };

  let r = await send(uploadForm({ main_module: "index.mjs", compatibility_date: "2024/11/01" }, [js]));
  assert.equal(r.status, 400);
  assert.match(r.body.errors.map((e) => e.message).join("\n"), /metadata\/compatibility_date/);

  r = await send(uploadForm({ main_module: "index.mjs", bindings: [{ type: "d1", name: "DB" }] }, [js]));
  assert.equal(r.status, 400, "d1 binding without id/database_id");

  r = await send(uploadForm({ main_module: "index.mjs", compatibility_date: "2024-11-01" }, [js, { name: "app.wasm", type: "application/octet-stream", contents: new Uint8Array([0, 97, 115, 109]) }]));
  assert.equal(r.status, 400);
  assert.match(r.body.errors[0].message, /app\.wasm.*application\/wasm/);

  const noMeta = new FormData();
  noMeta.set("index.mjs", new Blob([js.contents], { type: js.type }), "index.mjs");
  r = await send(noMeta);
  assert.equal(r.status, 400);
  assert.match(r.body.errors[0].message, /metadata/);

  const v = await emu.violations();
  assert.equal(v.length, 4);
  assert.ok(v.every((x) => x.kind === "request" && x.operation === "worker-script-upload-worker-module"));
  await emu.ctl("DELETE", "/violations");

  // The valid form (with a wasm module) deploys.
  const wasm = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
  r = await send(
    uploadForm({ main_module: "index.mjs", compatibility_date: "2024-11-01" }, [
      { name: "index.mjs", type: "application/javascript+module", contents: "import m from './app.wasm'; export default { fetch() { return new Response(String(m instanceof WebAssembly.Module)) } }" },
      { name: "app.wasm", type: "application/wasm", contents: wasm },
    ]),
  );
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const on = await call("POST", `/accounts/${A}/workers/scripts/s1/subdomain`, { json: { enabled: true } });
  assert.equal(on.status, 200);
  const url = (await emu.ctl("GET", "/workers")).body.scripts.s1;
  assert.equal(await (await fetch(url)).text(), "true");
});

test("D1 import: init, upload to upload_url, ingest, poll", async () => {
  const db = (await call("POST", `/accounts/${A}/d1/database`, { json: { name: "imported" } })).body.result.uuid;
  const sql = "CREATE TABLE imp(x INTEGER);\nINSERT INTO imp VALUES (1);\nINSERT INTO imp VALUES (2);\n";
  const { createHash } = await import("node:crypto");
  const etag = createHash("md5").update(sql).digest("hex");
  const init = await call("POST", `/accounts/${A}/d1/database/${db}/import`, { json: { action: "init", etag } });
  assert.equal(init.status, 200, JSON.stringify(init.body));
  const { upload_url, filename } = init.body.result;
  assert.equal((await fetch(upload_url, { method: "PUT", body: sql })).status, 200);
  const wrongEtag = await call("POST", `/accounts/${A}/d1/database/${db}/import`, { json: { action: "ingest", etag: "0".repeat(32), filename } });
  assert.equal(wrongEtag.body.result.status, "error");
  const ingest = await call("POST", `/accounts/${A}/d1/database/${db}/import`, { json: { action: "ingest", etag, filename } });
  assert.equal(ingest.status, 200);
  const poll = await call("POST", `/accounts/${A}/d1/database/${db}/import`, { json: { action: "poll", current_bookmark: ingest.body.result.at_bookmark } });
  assert.equal(poll.body.result.status, "complete");
  assert.equal(poll.body.result.result.num_queries, 3);
  const rows = await call("POST", `/accounts/${A}/d1/database/${db}/query`, { json: { sql: "SELECT sum(x) AS s FROM imp" } });
  assert.deepEqual(rows.body.result[0].results, [{ s: 3 }]);
});

test("concurrent calls around workerd reloads all succeed", async () => {
  const db = (await call("POST", `/accounts/${A}/d1/database`, { json: { name: "concurrent" } })).body.result.uuid;
  await call("POST", `/accounts/${A}/d1/database/${db}/query`, { json: { sql: "CREATE TABLE c(i INTEGER)" } });
  await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "concurrent" } });
  const jobs = [];
  for (let i = 0; i < 4; i++) {
    jobs.push(call("POST", `/accounts/${A}/r2/buckets`, { json: { name: `par-bucket-${i}` } })); // each reloads workerd
    jobs.push(call("POST", `/accounts/${A}/d1/database`, { json: { name: `par-db-${i}` } })); // each reloads workerd
  }
  for (let i = 0; i < 10; i++) {
    jobs.push(call("POST", `/accounts/${A}/d1/database/${db}/query`, { json: { sql: "INSERT INTO c VALUES (?)", params: [String(i)] } }));
    jobs.push(call("PUT", `/accounts/${A}/r2/buckets/concurrent/objects/o${i}`, { body: `v${i}`, headers: { "content-type": "application/octet-stream" } }));
  }
  const results = await Promise.all(jobs);
  assert.deepEqual(results.map((r) => r.status), results.map(() => 200), JSON.stringify(results.filter((r) => r.status !== 200).map((r) => r.body)));
  const n = await call("POST", `/accounts/${A}/d1/database/${db}/query`, { json: { sql: "SELECT count(*) AS n FROM c" } });
  assert.deepEqual(n.body.result[0].results, [{ n: 10 }]);
  const objs = await call("GET", `/accounts/${A}/r2/buckets/concurrent/objects`);
  assert.equal(objs.body.result.length, 10);
});
