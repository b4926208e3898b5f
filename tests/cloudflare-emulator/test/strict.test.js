// The behaviours that make the emulator as strict as Cloudflare's API for stateful-ci's lifecycle
// (each row of BEHAVIOURS.md that a client can get wrong): literal-slash object keys, string
// is_truncated, 10073, R2 not enabled (10042), no workers.dev subdomain (10007), Cron Triggers,
// the account-wide rate limit with its whole-window block, and the seed/count test hooks.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startEmulator, upload } from "./helpers.js";

const A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const N = "cccccccccccccccccccccccccccccccc";
const PERMS = ["Workers Scripts Edit", "D1 Edit", "Workers R2 Storage Edit"];
const config = {
  accounts: [
    { id: A, name: "A", workers_subdomain: "team-a" },
    { id: N, name: "No subdomain, no R2", r2_enabled: false },
  ],
  tokens: [
    { id: "11111111111111111111111111111111", value: "tok-a", owner: "user", accounts: [A], permissions: PERMS },
    { id: "22222222222222222222222222222222", value: "tok-a-2", owner: "user", accounts: [A], permissions: PERMS },
    { id: "33333333333333333333333333333333", value: "tok-n", owner: "user", accounts: [N], permissions: PERMS },
  ],
  rate_limit: { requests: 100000, window_seconds: 300 },
};
const WORKER = `export default {
  async fetch() { return new Response("ok"); },
  async scheduled(event, env) { await env.BUCKET.put("swept-at", String(event.scheduledTime) + " " + event.cron); },
};`;
let emu;
const call = (m, p, o = {}) => emu.call(m, p, { token: "tok-a", ...o });

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

test("object keys: '/' is literal, '%2F' names another key; missing keys delete with success", async () => {
  assert.equal((await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "keys" } })).status, 200);
  const put = (k, v) => call("PUT", `/accounts/${A}/r2/buckets/keys/objects/${k}`, { body: v, headers: { "content-type": "application/octet-stream" } });
  assert.equal((await put("a/b", "slash")).status, 200);
  assert.equal((await put("a%2Fb", "encoded")).status, 200);
  const list = await call("GET", `/accounts/${A}/r2/buckets/keys/objects`);
  assert.deepEqual(list.body.result.map((o) => o.key).sort(), ["a%2Fb", "a/b"]);
  assert.equal(list.body.result_info.is_truncated, "false");
  // Deleting through the encoded form leaves the literal key in place.
  const del = await call("DELETE", `/accounts/${A}/r2/buckets/keys/objects/a%2Fb`);
  assert.equal(del.status, 200);
  assert.deepEqual(del.body.result, { key: "a%2Fb" });
  const after1 = await call("GET", `/accounts/${A}/r2/buckets/keys/objects`);
  assert.deepEqual(after1.body.result.map((o) => o.key), ["a/b"]);
  // A key that does not exist: success, like R2's DeleteObject (idempotent).
  const missing = await call("DELETE", `/accounts/${A}/r2/buckets/keys/objects/never/there`);
  assert.equal(missing.status, 200);
  assert.equal((await call("DELETE", `/accounts/${A}/r2/buckets/keys/objects/a/b`)).status, 200);
  assert.equal((await call("DELETE", `/accounts/${A}/r2/buckets/keys`)).status, 200);
});

test("is_truncated is the string 'true' while pages remain", async () => {
  assert.equal((await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "pages" } })).status, 200);
  const seed = await emu.ctl("POST", "/r2/seed", { account_id: A, bucket: "pages", count: 5, prefix: "p/" });
  assert.equal(seed.body.written, 5);
  const first = await call("GET", `/accounts/${A}/r2/buckets/pages/objects?per_page=2`);
  assert.equal(first.body.result_info.is_truncated, "true");
  assert.equal(typeof first.body.result_info.cursor, "string");
  const count = await emu.ctl("POST", "/r2/count", { account_id: A, bucket: "pages" });
  assert.deepEqual([count.body.objects, count.body.bytes], [5, 80]);
});

test("bucket exists: 409 with code 10073", async () => {
  assert.equal((await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "twice" } })).status, 200);
  const dup = await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "twice" } });
  assert.deepEqual([dup.status, dup.body.errors[0].code], [409, 10073]);
});

test("R2 not enabled: every R2 call answers 403/10042 until it is enabled", async () => {
  for (const [m, p, json] of [
    ["GET", `/accounts/${N}/r2/buckets`],
    ["POST", `/accounts/${N}/r2/buckets`, { name: "xyz" }],
    ["GET", `/accounts/${N}/r2/buckets/xyz`],
  ]) {
    const r = await emu.call(m, p, { token: "tok-n", json });
    assert.equal(r.status, 403, `${m} ${p}`);
    assert.equal(r.body.errors[0].code, 10042);
    assert.match(r.body.errors[0].message, /enable R2/);
  }
  assert.equal((await emu.ctl("PATCH", `/accounts/${N}`, { r2_enabled: true })).status, 200);
  assert.equal((await emu.call("POST", `/accounts/${N}/r2/buckets`, { token: "tok-n", json: { name: "xyz" } })).status, 200);
});

test("no workers.dev subdomain: GET answers 404/10007; enabling a route is refused", async () => {
  const r = await emu.call("GET", `/accounts/${N}/workers/subdomain`, { token: "tok-n" });
  assert.deepEqual([r.status, r.body.errors[0].code], [404, 10007]);
});

test("Cron Triggers: PUT replaces the list, uploads keep it, [] removes it, the handler fires", async () => {
  assert.equal((await call("POST", `/accounts/${A}/r2/buckets`, { json: { name: "cron" } })).status, 200);
  const meta = { main_module: "index.js", compatibility_date: "2025-09-01", bindings: [{ type: "r2_bucket", name: "BUCKET", bucket_name: "cron" }] };
  const mod = [{ name: "index.js", type: "application/javascript+module", contents: WORKER }];
  assert.equal((await upload(emu, "cronny", meta, mod, { token: "tok-a", account: A })).status, 200);
  const path = `/accounts/${A}/workers/scripts/cronny/schedules`;
  assert.deepEqual((await call("GET", path)).body.result, { schedules: [] });
  const bad = await call("PUT", path, { json: [{ cron: "every hour" }] });
  assert.equal(bad.status, 400);
  const set = await call("PUT", path, { json: [{ cron: "17 3 * * *" }] });
  assert.equal(set.status, 200, JSON.stringify(set.body));
  assert.deepEqual(set.body.result.schedules.map((s) => s.cron), ["17 3 * * *"]);
  assert.equal((await upload(emu, "cronny", meta, mod, { token: "tok-a", account: A })).status, 200);
  assert.deepEqual((await call("GET", path)).body.result.schedules.map((s) => s.cron), ["17 3 * * *"], "an upload keeps the triggers");
  const fired = await emu.ctl("POST", "/scheduled", { account_id: A, script: "cronny" });
  assert.equal(fired.status, 200, JSON.stringify(fired.body));
  assert.equal(fired.body.outcome, "ok");
  const listed = await call("GET", `/accounts/${A}/r2/buckets/cron/objects`);
  assert.deepEqual(listed.body.result.map((o) => o.key), ["swept-at"]);
  assert.equal((await call("PUT", path, { json: [] })).status, 200);
  assert.deepEqual((await call("GET", path)).body.result.schedules, []);
  assert.equal((await emu.ctl("POST", "/scheduled", { account_id: A, script: "cronny" })).status, 409, "no trigger, no firing");
  const none = await call("GET", `/accounts/${A}/workers/scripts/nope/schedules`);
  assert.deepEqual([none.status, none.body.errors[0].code], [404, 10007]);
});

test("rate limit: shared by the account's tokens; over it, every call is blocked for the whole window", async () => {
  assert.equal((await emu.ctl("PUT", "/rate-limit", { requests: 5, window_seconds: 2 })).status, 200);
  for (let i = 0; i < 3; i++) assert.equal((await call("GET", "/user/tokens/verify")).status, 200);
  for (let i = 0; i < 2; i++) assert.equal((await call("GET", "/user/tokens/verify", { token: "tok-a-2" })).status, 200);
  const over = await call("GET", "/user/tokens/verify", { token: "tok-a-2" });
  assert.deepEqual([over.status, over.body.errors[0].code], [429, 971]);
  assert.equal(over.headers.get("retry-after"), "2");
  // Blocked (not merely throttled): the next call is refused too, even with the other token.
  const still = await call("GET", "/user/tokens/verify");
  assert.equal(still.status, 429);
  assert.ok(Number(still.headers.get("retry-after")) >= 1);
  const other = await emu.call("GET", "/user/tokens/verify", { token: "tok-n" });
  assert.equal(other.status, 200, "another account has its own budget");
  await new Promise((r) => setTimeout(r, 2100));
  assert.equal((await call("GET", "/user/tokens/verify")).status, 200, "the block ends after the window");
  const state = await emu.ctl("GET", "/rate-limit");
  assert.equal(state.body.limiters[A].blocks, 1);
  await emu.ctl("PUT", "/rate-limit", { requests: 100000, window_seconds: 300 });
});

test("the in-repo contract is the one loaded; it has the schedules operations", async () => {
  const ops = (await emu.ctl("GET", "/operations")).body;
  assert.match(ops.spec, /tests\/cloudflare-emulator\/contract\/cloudflare-subset\.openapi\.json$/);
  const ids = ops.operations.map((o) => o.operationId);
  assert.ok(ids.includes("worker-cron-trigger-update-cron-triggers"));
  assert.ok(ids.includes("worker-cron-trigger-get-cron-triggers"));
  assert.deepEqual(ops.errata, []);
});
