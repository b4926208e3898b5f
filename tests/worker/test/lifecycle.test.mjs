// The backend's lifecycle under workerd (miniflare) with real D1, R2 and
// Durable Objects: the scheduled retention sweep after churned saves (with a
// save in flight), refused requests counted without a D1 write each, and the
// admin purge route destroy uses. Needs the bundle: scripts/build-worker.sh.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { zstdCompressSync } from "node:zlib";
import { FakeIssuer } from "../lib/issuer.mjs";
import { startBackend, ADMIN_TOKEN } from "../lib/backend.mjs";

const GRACE_SECS = 1;
let issuer;
let backend;

before(async () => {
  issuer = await new FakeIssuer().start();
  backend = await startBackend({
    issuerUrl: issuer.url,
    // Compressed for the test: keep the head plus 1 snapshot per scope, and
    // a 1-second grace period (production: 10 and a day).
    vars: { RETENTION_KEEP: "1", SWEEP_GRACE_SECS: String(GRACE_SECS) },
  });
});

after(async () => {
  await backend?.stop();
  await issuer?.stop();
});

const hex = (b) => Buffer.from(b).toString("hex");
// Object keys name the SHA-256 of the stored bytes (format v2).
const sha256 = (b) => createHash("sha256").update(b).digest("hex");
const keyOf = (kind, bytes) => `${kind}/${sha256(bytes)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TENANT = "200001/100001";

async function api(path, { token, method = "GET", body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  let payload = body;
  if (body !== undefined && !(body instanceof Uint8Array)) {
    payload = JSON.stringify(body);
    h["content-type"] = "application/json";
  }
  const res = await fetch(backend.url + path, { method, headers: h, body: payload });
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : Buffer.from(await res.arrayBuffer());
  return { status: res.status, data, headers: res.headers };
}

/** A snapshot of `fresh` new random packs plus `shared` pack buffers, with its manifest. */
function snapshot(fresh, size, shared = []) {
  const packs = [...Array.from({ length: fresh }, () => randomBytes(size)), ...shared];
  const packKeys = packs.map((p) => keyOf("packs", p));
  const manifest = zstdCompressSync(
    Buffer.from(JSON.stringify({ version: 1, created_at: 0, roots: ["w"], packs: packKeys, blobs: [], entries: [], salt: hex(randomBytes(8)) })),
  );
  const manifestKey = keyOf("manifests", manifest);
  const objects = new Map([[manifestKey, manifest], ...packs.map((p, i) => [packKeys[i], p])]);
  return { manifestKey, packKeys, objects, packs };
}

async function prepareAndUpload(token, snap, workspace) {
  const prep = await api("/v1/save/prepare", { token, method: "POST", body: { workspace, objects: [...snap.objects.keys()] } });
  assert.equal(prep.status, 200, JSON.stringify(prep.data));
  for (const k of prep.data.missing) {
    const put = await api(`/v1/objects/${k}`, { token, method: "PUT", body: snap.objects.get(k) });
    assert.equal(put.status, 200, JSON.stringify(put.data));
  }
  return prep.data.expected_generation;
}

async function commit(token, snap, workspace, expected) {
  const c = await api("/v1/save/commit", {
    token,
    method: "POST",
    body: { workspace, manifest: snap.manifestKey, packs: snap.packKeys, expected_generation: expected, idempotency_key: `idem-${snap.manifestKey.slice(10, 40)}` },
  });
  assert.equal(c.status, 200, JSON.stringify(c.data));
  return c.data.head;
}

async function save(token, snap, workspace) {
  return commit(token, snap, workspace, await prepareAndUpload(token, snap, workspace));
}

async function r2Totals() {
  let cursor;
  let bytes = 0;
  let objects = 0;
  do {
    const r = await backend.bucket.list({ cursor, limit: 1000 });
    for (const o of r.objects) {
      bytes += o.size;
      objects++;
    }
    cursor = r.truncated ? r.cursor : undefined;
  } while (cursor);
  return { bytes, objects };
}

async function sweep() {
  const worker = await backend.mf.getWorker();
  const r = await worker.scheduled({ cron: "41 * * * *" });
  assert.equal(r.outcome, "ok", JSON.stringify(r));
}

test("the scheduled sweep keeps R2 within 1.2x of the retained snapshots, and every retained snapshot restores exactly, with a save in flight", async () => {
  const token = issuer.token();
  const size = 16 * 1024;
  const snaps = new Map(); // manifest key -> snapshot
  const orphans = [];
  // Churn: two workspaces, six saves each; every save shares one pack with
  // the one before and brings three new ones. Plus uploads never committed.
  for (const workspace of ["churn-a", "churn-b"]) {
    let prev;
    for (let i = 0; i < 6; i++) {
      const snap = snapshot(3, size, prev ? [prev.packs[0]] : []);
      await save(token, snap, workspace);
      snaps.set(snap.manifestKey, snap);
      prev = snap;
    }
  }
  for (let i = 0; i < 4; i++) {
    const bytes = randomBytes(size);
    const k = keyOf("packs", bytes);
    assert.equal((await api(`/v1/objects/${k}`, { token, method: "PUT", body: bytes })).status, 200);
    orphans.push(k);
  }
  const before = await r2Totals();

  await sleep(GRACE_SECS * 1000 + 200);
  await sweep(); // drops snapshots beyond retention; marks what is now unreferenced

  // A save in flight: prepared and uploaded, not committed, while sweeps run.
  const headA = (await api("/v1/restore", { token, method: "POST", body: { workspace: "churn-a" } })).data.hit;
  const inflight = snapshot(2, size, [snaps.get(headA.head.snapshot).packs[0]]);
  const expected = await prepareAndUpload(token, inflight, "churn-a");
  await sleep(GRACE_SECS * 1000 + 200);
  await sweep(); // deletes the marked objects; the in-flight uploads are only marked
  const head = await commit(token, inflight, "churn-a", expected);
  assert.equal(head.snapshot, inflight.manifestKey);
  snaps.set(inflight.manifestKey, inflight);
  await sleep(GRACE_SECS * 1000 + 200);
  await sweep(); // the in-flight objects are referenced now: unmarked; newly expired ones marked
  await sleep(GRACE_SECS * 1000 + 200);
  await sweep();

  const retained = (
    await backend.db
      .prepare("SELECT workspace, scope, generation, manifest_key FROM snapshots WHERE workspace LIKE 'churn-%' ORDER BY workspace, generation")
      .all()
  ).results;
  assert.deepEqual(
    retained.map((r) => `${r.workspace}:${r.generation}`),
    ["churn-a:6", "churn-a:7", "churn-b:5", "churn-b:6"],
    "each scope keeps its head and RETENTION_KEEP=1 more",
  );
  const unique = (
    await backend.db
      .prepare(
        "SELECT COALESCE(SUM(size), 0) AS bytes, COUNT(*) AS n FROM (SELECT DISTINCT sn.tenant, so.object_key, so.size FROM snapshot_objects so JOIN snapshots sn ON sn.id = so.snapshot_id)",
      )
      .first()
  );
  const after = await r2Totals();
  const ratio = after.bytes / unique.bytes;
  console.log(
    `sweep: R2 ${before.objects} objects / ${before.bytes} bytes before, ${after.objects} / ${after.bytes} after; ` +
      `retained snapshots' unique bytes ${unique.bytes} (${unique.n} objects); ratio ${ratio.toFixed(3)} (limit 1.2); before/unique ${(before.bytes / unique.bytes).toFixed(2)}`,
  );
  assert.ok(before.bytes > 1.2 * unique.bytes, "the churn left garbage for the sweep to remove");
  assert.ok(ratio <= 1.2, `R2 holds ${ratio.toFixed(3)}x the retained snapshots' unique bytes`);
  for (const k of orphans) assert.equal(await backend.bucket.head(`r/${TENANT}/${k}`), null, `orphan ${k} deleted`);

  // Every retained snapshot's objects are intact, byte for byte.
  for (const r of retained) {
    const snap = snaps.get(r.manifest_key);
    assert.ok(snap, `retained snapshot ${r.manifest_key} is one the test saved`);
    for (const [k, bytes] of snap.objects) {
      const o = await backend.bucket.get(`r/${TENANT}/${k}`);
      assert.ok(o, `object ${k} of ${r.workspace}:${r.generation} is stored`);
      assert.ok(Buffer.compare(Buffer.from(await o.arrayBuffer()), bytes) === 0, `bytes of ${k}`);
    }
  }
  // And each head restores through the API, every byte verified.
  for (const workspace of ["churn-a", "churn-b"]) {
    const r = await api("/v1/restore", { token, method: "POST", body: { workspace } });
    const snap = snaps.get(r.data.hit.head.snapshot);
    for (const [k, bytes] of snap.objects) {
      const g = await api(`/v1/objects/${k}`, { token: r.data.hit.grant });
      assert.equal(g.status, 200, `${workspace} ${k}`);
      assert.ok(Buffer.compare(g.data, bytes) === 0, `${workspace} bytes of ${k}`);
      assert.equal(sha256(g.data), k.split("/")[1]);
    }
  }
});

test("old run and decision rows are pruned; the sweep answers what it did", async () => {
  const old = Math.floor(Date.now() / 1000) - 200 * 86400;
  await backend.db
    .prepare("INSERT INTO decisions (at, route, allowed, reason) VALUES (?, 'restore', 0, 'ancient')")
    .bind(old)
    .run();
  const r = await api("/v1/admin/sweep", { token: ADMIN_TOKEN, method: "POST" });
  assert.equal(r.status, 200, JSON.stringify(r.data));
  assert.ok(r.data.log_rows_deleted >= 1, JSON.stringify(r.data));
  const left = await backend.db.prepare("SELECT COUNT(*) AS n FROM decisions WHERE reason = 'ancient'").first();
  assert.equal(left.n, 0);
  assert.equal((await api("/v1/admin/sweep", { method: "POST" })).status, 401, "the sweep route needs the admin token");
});

test("10,000 junk requests write at most a handful of D1 rows, and are all counted", async () => {
  const count = async (sql) => (await backend.db.prepare(sql).first()).n;
  const decisionsBefore = await count("SELECT COUNT(*) AS n FROM decisions");
  const runsBefore = await count("SELECT COUNT(*) AS n FROM runs");
  const kinds = [
    {}, // no token
    { authorization: "Bearer junk" },
    { authorization: `Bearer ${issuer.forgeAlgNone()}` },
    { authorization: `Bearer ${issuer.token({ repository: "mallory/app", repository_id: "999", repository_owner_id: "998" })}` },
  ];
  const N = 10_000;
  let i = 0;
  const worker = async () => {
    while (i < N) {
      const h = kinds[i++ % kinds.length];
      const res = await fetch(`${backend.url}/v1/restore`, {
        method: "POST",
        headers: { "content-type": "application/json", ...h },
        body: '{"workspace":"x"}',
      });
      assert.ok(res.status === 401 || res.status === 403, `status ${res.status}`);
      await res.arrayBuffer();
    }
  };
  const t = Date.now();
  await Promise.all(Array.from({ length: 16 }, worker));
  const secs = (Date.now() - t) / 1000;
  assert.equal(await count("SELECT COUNT(*) AS n FROM decisions"), decisionsBefore, "no decision row per refusal");
  assert.equal(await count("SELECT COUNT(*) AS n FROM runs"), runsBefore);
  const rows = await count("SELECT COUNT(*) AS n FROM denial_counts");
  assert.ok(rows >= 1 && rows <= 5, `${rows} denial_counts rows`);
  const report = await api("/v1/admin/denials", { token: ADMIN_TOKEN });
  assert.equal(report.status, 200);
  const total = [...report.data.written, ...report.data.pending].filter((r) => r.route === "restore").reduce((s, r) => s + r.count, 0);
  console.log(`denials: ${N} junk requests in ${secs.toFixed(1)}s -> ${rows} D1 rows; counted ${total}`);
  assert.equal(total, N, "every refusal is counted (written or pending)");
  const reasons = new Set([...report.data.written, ...report.data.pending].map((r) => r.reason));
  assert.ok(reasons.has("missing_token") && reasons.size >= 2, [...reasons].join(","));
});

test("the purge route empties the bucket 1,000 objects per call, only for the admin token and with the confirmation", async () => {
  const n = 2_500;
  for (let i = 0; i < n; i += 250) {
    await Promise.all(Array.from({ length: Math.min(250, n - i) }, (_, j) => backend.bucket.put(`r/9/9/packs/${String(i + j).padStart(6, "0")}`, "x")));
  }
  const { objects } = await r2Totals();
  assert.ok(objects >= n);
  const confirm = { confirm: "delete-every-object" };
  assert.equal((await api("/v1/admin/purge", { method: "POST", body: confirm })).status, 401);
  assert.equal((await api("/v1/admin/purge", { token: issuer.token(), method: "POST", body: confirm })).status, 401);
  const noConfirm = await api("/v1/admin/purge", { token: ADMIN_TOKEN, method: "POST", body: { confirm: "yes" } });
  assert.equal(noConfirm.status, 400);
  assert.equal((await api("/v1/admin/purge", { token: ADMIN_TOKEN })).status, 405, "GET does not purge");
  let calls = 0;
  let deleted = 0;
  for (;;) {
    const r = await api("/v1/admin/purge", { token: ADMIN_TOKEN, method: "POST", body: confirm });
    assert.equal(r.status, 200, JSON.stringify(r.data));
    calls++;
    deleted += r.data.deleted;
    assert.ok(r.data.deleted <= 1000);
    if (!r.data.more) break;
    assert.ok(calls < 10);
  }
  assert.equal(deleted, objects);
  assert.equal(calls, Math.ceil(objects / 1000) + (objects % 1000 === 0 ? 1 : 0));
  assert.equal((await r2Totals()).objects, 0);
});
