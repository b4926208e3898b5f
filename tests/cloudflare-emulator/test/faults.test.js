// Fault injection (429 + retry-after, 500, connection reset, delay; before or after the call
// takes effect) and the request log (no tokens, no bodies; mutating flag).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startEmulator, ACCOUNT, TOKEN } from "./helpers.js";

const A = `/accounts/${ACCOUNT}`;
let emu;

before(async () => {
  emu = await startEmulator();
});
after(async () => {
  if (!emu) return;
  try {
    await emu.assertNoViolations();
  } finally {
    await emu.stop();
  }
});

const buckets = async () => (await emu.call("GET", `${A}/r2/buckets`)).body.result.buckets.map((b) => b.name);

test("429 fault: the next N matching calls are throttled with retry-after and have no effect", async () => {
  const f = await emu.ctl("POST", "/faults", { operation: "r2-create-bucket", kind: "429", count: 2, retry_after: 7 });
  assert.equal(f.status, 200);
  for (let i = 0; i < 2; i++) {
    const r = await emu.call("POST", `${A}/r2/buckets`, { json: { name: "throttled" } });
    assert.equal(r.status, 429);
    assert.equal(r.headers.get("retry-after"), "7");
    assert.equal(r.body.errors[0].code, 971);
  }
  assert.deepEqual(await buckets(), []);
  const r = await emu.call("POST", `${A}/r2/buckets`, { json: { name: "throttled" } });
  assert.equal(r.status, 200);
  assert.deepEqual(await buckets(), ["throttled"]);
  const faults = (await emu.ctl("GET", "/faults")).body.faults;
  assert.equal(faults.find((x) => x.id === f.body.fault.id).remaining, 0);
  assert.equal(faults.find((x) => x.id === f.body.fault.id).hits, 2);
});

test("500 fault before vs after: 'after' applies the call, then fails it", async () => {
  await emu.ctl("POST", "/faults", { path: "^/accounts/[^/]+/d1/database$", method: "POST", kind: "500", when: "before" });
  let r = await emu.call("POST", `${A}/d1/database`, { json: { name: "first" } });
  assert.equal(r.status, 500);
  assert.equal((await emu.call("GET", `${A}/d1/database`)).body.result.length, 0, "before: nothing created");

  await emu.ctl("POST", "/faults", { operation: "cloudflare-d1-create-database", kind: "500", when: "after" });
  r = await emu.call("POST", `${A}/d1/database`, { json: { name: "first" } });
  assert.equal(r.status, 500);
  const list = (await emu.call("GET", `${A}/d1/database`)).body.result;
  assert.deepEqual(list.map((d) => d.name), ["first"], "after: created although the client saw 500");
  r = await emu.call("POST", `${A}/d1/database`, { json: { name: "first" } });
  assert.equal(r.body.errors[0].code, 7502, "a blind retry finds the name taken");
});

test("connection reset fault destroys the socket; 'after' still applies the call", async () => {
  await emu.ctl("POST", "/faults", { operation: "r2-create-bucket", kind: "reset", when: "after" });
  await assert.rejects(emu.call("POST", `${A}/r2/buckets`, { json: { name: "reset-bucket" } }), /fetch failed/);
  assert.ok((await buckets()).includes("reset-bucket"));

  await emu.ctl("POST", "/faults", { operation: "r2-get-bucket", kind: "reset", count: 1 });
  await assert.rejects(emu.call("GET", `${A}/r2/buckets/reset-bucket`));
  assert.equal((await emu.call("GET", `${A}/r2/buckets/reset-bucket`)).status, 200, "only the next call was reset");
});

test("delay fault answers normally, no sooner than the delay", async () => {
  await emu.ctl("POST", "/faults", { operation: "worker-subdomain-get-subdomain", kind: "delay", delay_ms: 300 });
  const r = await emu.call("GET", `${A}/workers/subdomain`);
  assert.equal(r.status, 200);
  const log = (await emu.ctl("GET", "/requests")).body.requests;
  const entry = log.filter((e) => e.operation === "worker-subdomain-get-subdomain").at(-1);
  assert.equal(entry.fault, "delay");
  assert.ok(entry.duration_ms >= 300, `took ${entry.duration_ms} ms`);
});

test("bad fault specs are refused with a reason", async () => {
  for (const spec of [{ kind: "teapot" }, { kind: "500", operation: "no-such-op" }, { kind: "500", path: "(" }, { kind: "500", when: "during" }]) {
    const r = await emu.ctl("POST", "/faults", spec);
    assert.equal(r.status, 400, JSON.stringify(spec));
    assert.ok(r.body.error.length > 10);
  }
  assert.equal((await emu.ctl("DELETE", "/faults")).status, 200);
  assert.deepEqual((await emu.ctl("GET", "/faults")).body.faults, []);
});

test("request log: method, path, status, mutating; never the token or bodies", async () => {
  const { last_seq } = (await emu.ctl("GET", "/requests")).body;
  const dbId = (await emu.call("GET", `${A}/d1/database`)).body.result[0].uuid;
  await emu.call("POST", `${A}/d1/database/${dbId}/query`, { json: { sql: "SELECT 1; EXPLAIN SELECT 2" } });
  await emu.call("GET", `${A}/workers/scripts`);
  const reads = (await emu.ctl("GET", `/requests?since=${last_seq}`)).body.requests;
  assert.equal(reads.length, 3);
  assert.ok(reads.every((e) => e.mutating === false), "reads and SELECT-only queries are not mutating");

  await emu.call("POST", `${A}/d1/database/${dbId}/query`, { json: { sql: "CREATE TABLE secretive(x)" } });
  await emu.call("PUT", `${A}/r2/buckets/throttled/objects/body-marker`, { body: "BODY-MARKER-123", headers: { "content-type": "application/octet-stream" } });
  const all = (await emu.ctl("GET", `/requests?since=${last_seq}`)).body.requests;
  assert.deepEqual(
    all.slice(3).map((e) => [e.method, e.operation, e.status, e.mutating]),
    [
      ["POST", "cloudflare-d1-query-database", 200, true],
      ["PUT", "r2-put-object", 200, true],
    ],
  );
  const text = JSON.stringify((await emu.ctl("GET", "/requests")).body);
  assert.ok(!text.includes(TOKEN), "no token in the log");
  assert.ok(!text.includes("BODY-MARKER-123") && !text.includes("secretive"), "no bodies in the log");
  for (const e of all) {
    assert.match(e.time, /^\d{4}-\d\d-\d\dT/);
    assert.ok(e.path.startsWith("/client/v4/accounts/"));
  }
});
