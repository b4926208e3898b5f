// The Worker under workerd (miniflare) with real local D1, R2 and Durable
// Objects, driven over HTTP with tokens from a fake OIDC issuer.
// Needs the bundle: scripts/build-worker.sh.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, createHash } from "node:crypto";
import { request as httpRequest } from "node:http";
import { FakeIssuer } from "../lib/issuer.mjs";
import { startBackend, ADMIN_TOKEN, repoRoot } from "../lib/backend.mjs";
import { readdirSync } from "node:fs";
import { join } from "node:path";

let issuer;
let backend;

before(async () => {
  issuer = await new FakeIssuer().start();
  backend = await startBackend({ issuerUrl: issuer.url, vars: { ALLOWED_REPOSITORIES: "acme/app,acme/other", TRUSTED_REFS: "release" } });
});

after(async () => {
  await backend?.stop();
  await issuer?.stop();
});

const hex = (b) => Buffer.from(b).toString("hex");
// Object keys name the SHA-256 of the stored bytes (format v2).
const keyOf = (kind, bytes) => `${kind}/${createHash("sha256").update(bytes).digest("hex")}`;

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

/** Bytes standing for a root manifest: the Worker never reads them. */
function manifestBytes(packKeys) {
  return Buffer.from(JSON.stringify({ packs: packKeys, salt: hex(randomBytes(8)) }));
}

/** A snapshot: `packCount` random packs plus `shared` pack buffers, and its manifest. */
function snapshot(packCount = 2, size = 64 * 1024, shared = []) {
  const packs = [...Array.from({ length: packCount }, () => randomBytes(size)), ...shared];
  const packKeys = packs.map((p) => keyOf("packs", p));
  const manifest = manifestBytes(packKeys);
  const objects = new Map([[keyOf("manifests", manifest), manifest], ...packs.map((p, i) => [packKeys[i], p])]);
  return { manifestKey: keyOf("manifests", manifest), packKeys, objects };
}

/** prepare -> PUT missing -> commit; retries generation conflicts when `retry`. */
async function save(token, snap, { workspace = "default", retry = false, idem } = {}) {
  for (let attempt = 0; attempt < 100; attempt++) {
    const prep = await api("/v1/save/prepare", { token, method: "POST", body: { workspace, objects: [...snap.objects.keys()] } });
    if (prep.status !== 200) return { prep };
    for (const k of prep.data.missing) {
      const put = await api(`/v1/objects/${k}`, { token, method: "PUT", body: snap.objects.get(k) });
      assert.equal(put.status, 200, JSON.stringify(put.data));
    }
    const commit = await api("/v1/save/commit", {
      token,
      method: "POST",
      body: {
        workspace,
        manifest: snap.manifestKey,
        packs: snap.packKeys,
        expected_generation: prep.data.expected_generation,
        idempotency_key: idem ?? `idem-${snap.manifestKey.slice(10, 30)}`,
      },
    });
    if (commit.status === 409 && commit.data.code === "generation_conflict" && retry) continue;
    return { prep, commit, attempts: attempt + 1 };
  }
  throw new Error("too many conflicts");
}

async function restore(token, workspace = "default") {
  return api("/v1/restore", { token, method: "POST", body: { workspace } });
}

const TENANT = "200001/100001";

test("health reports service, protocol, version, migrations and loud test mode", async () => {
  const r = await api("/v1/health");
  assert.equal(r.status, 200);
  assert.equal(r.data.service, "stateful-ci");
  assert.equal(r.data.protocol, 1);
  assert.match(r.data.worker_version, /^\d+\.\d+\.\d+/);
  const files = readdirSync(join(repoRoot, "migrations")).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
  assert.deepEqual(r.data.migrations, files);
  assert.ok(files.includes("0002_object_visibility.sql"), "object visibility is migrated");
  assert.equal(r.data.oidc_test_mode, true);
  assert.equal(r.data.oidc_issuer, issuer.url);
  assert.ok(r.data.warnings.some((w) => w.includes("OIDC TEST MODE")), JSON.stringify(r.data.warnings));
});

test("unknown routes and methods answer JSON errors with stable codes", async () => {
  let r = await api("/v2/whatever");
  assert.equal(r.status, 404);
  assert.equal(r.data.code, "not_found");
  r = await api("/v1/restore");
  assert.equal(r.status, 405);
  assert.equal(r.data.code, "method_not_allowed");
  r = await api("/v1/restore", { method: "POST", body: { workspace: "default" } });
  assert.equal(r.status, 401);
  assert.equal(r.data.code, "missing_token");
  r = await api("/v1/objects/packs/nothex", { token: issuer.token(), method: "PUT", body: new Uint8Array([1]) });
  assert.equal(r.status, 400);
  assert.equal(r.data.code, "bad_request");
  r = await api("/v1/restore", { token: issuer.token(), method: "POST", body: { workspace: "../etc" } });
  assert.equal(r.data.code, "bad_request");
  assert.match(r.data.message, /workspace/);
});

test("oversized JSON bodies are refused before they are read", async () => {
  const big = { workspace: "default", objects: Array(30000).fill(keyOf("packs", Buffer.from("x"))) };
  const r = await api("/v1/save/prepare", { token: issuer.token(), method: "POST", body: big });
  assert.equal(r.status, 413);
  assert.equal(r.data.code, "too_large");
});

test("a misconfigured Worker says what is wrong: unreachable issuer, missing secrets", async () => {
  // A port nothing listens on: take one, then close it.
  const { createServer } = await import("node:net");
  const probe = createServer();
  await new Promise((ok) => probe.listen(0, "127.0.0.1", ok));
  const deadIssuer = `http://127.0.0.1:${probe.address().port}`;
  await new Promise((ok) => probe.close(ok));
  const broken = await startBackend({ issuerUrl: deadIssuer, vars: { GRANT_KEY: "", ADMIN_TOKEN: "" } });
  try {
    const call = async (path, init = {}) => {
      const res = await fetch(broken.url + path, init);
      return { status: res.status, data: await res.json() };
    };
    const h = await call("/v1/health");
    assert.equal(h.status, 200);
    assert.ok(h.data.warnings.some((w) => w.includes("GRANT_KEY")), JSON.stringify(h.data.warnings));
    const r = await call("/v1/restore", { method: "POST", headers: { authorization: `Bearer ${issuer.token({ iss: deadIssuer })}` }, body: JSON.stringify({ workspace: "w" }) });
    assert.equal(r.status, 502);
    assert.equal(r.data.code, "jwks_unavailable");
    assert.match(r.data.message, /retry/);
    const a = await call("/v1/admin/runs", { headers: { authorization: "Bearer anything" } });
    assert.equal(a.status, 503);
    assert.equal(a.data.code, "admin_disabled");
  } finally {
    await broken.stop();
  }
});

test("save prepare -> PUT -> commit -> restore round trip, with ranges and dedup", async () => {
  const token = issuer.token({ run_id: "1001" });
  const snap = snapshot(3);
  const first = await save(token, snap, { workspace: "roundtrip" });
  assert.equal(first.prep.status, 200);
  assert.equal(first.prep.data.scope, "branch:refs/heads/main");
  assert.equal(first.prep.data.expected_generation, 0);
  assert.equal(first.prep.data.missing.length, 4, "everything is missing at first");
  assert.equal(first.prep.data.max_object_size, 64 * 1024 * 1024);
  assert.equal(first.commit.status, 200, JSON.stringify(first.commit.data));
  assert.deepEqual(first.commit.data.head, { snapshot: snap.manifestKey, generation: 1 });
  assert.equal(first.commit.data.replayed, false);

  const r = await restore(issuer.token({ run_id: "1002" }), "roundtrip");
  assert.equal(r.status, 200);
  assert.equal(r.data.decision.class, "trusted");
  const hit = r.data.hit;
  assert.ok(hit, "restore hits");
  assert.equal(hit.scope, "branch:refs/heads/main");
  assert.deepEqual(hit.head, { snapshot: snap.manifestKey, generation: 1 });
  assert.deepEqual([...hit.packs].sort(), [...snap.packKeys].sort());
  assert.ok(hit.grant_expires_at > Date.now() / 1000);
  for (const [k, bytes] of snap.objects) {
    const g = await api(`/v1/objects/${k}`, { token: hit.grant });
    assert.equal(g.status, 200);
    assert.ok(Buffer.compare(g.data, bytes) === 0, `bytes of ${k}`);
  }
  const pack = snap.packKeys[0];
  const ranged = await api(`/v1/objects/${pack}`, { token: hit.grant, headers: { range: "bytes=100-199" } });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers.get("content-range"), `bytes 100-199/${64 * 1024}`);
  assert.ok(Buffer.compare(ranged.data, snap.objects.get(pack).subarray(100, 200)) === 0);
  const suffix = await api(`/v1/objects/${pack}`, { token: hit.grant, headers: { range: "bytes=-10" } });
  assert.equal(suffix.status, 206);
  assert.ok(Buffer.compare(suffix.data, snap.objects.get(pack).subarray(-10)) === 0);
  const outside = await api(`/v1/objects/${pack}`, { token: hit.grant, headers: { range: "bytes=999999-" } });
  assert.equal(outside.status, 416);
  assert.equal(outside.data.code, "range_not_satisfiable");

  // A second save that shares two packs uploads only what is new.
  const next = snapshot(1, 64 * 1024, snap.packKeys.slice(0, 2).map((k) => snap.objects.get(k)));
  const second = await save(token, next, { workspace: "roundtrip" });
  assert.equal(second.prep.data.expected_generation, 1);
  assert.deepEqual([...second.prep.data.missing].sort(), [next.manifestKey, next.packKeys[0]].sort());
  assert.equal(second.commit.data.head.generation, 2);
  const again = await restore(token, "roundtrip");
  assert.deepEqual(again.data.hit.head, { snapshot: next.manifestKey, generation: 2 });
});

test("an object whose bytes do not match its key is refused and never visible", async () => {
  const token = issuer.token();
  const bytes = randomBytes(4096);
  const wrongKey = keyOf("packs", randomBytes(16));
  const put = await api(`/v1/objects/${wrongKey}`, { token, method: "PUT", body: bytes });
  assert.equal(put.status, 422);
  assert.equal(put.data.code, "hash_mismatch");
  assert.match(put.data.message, /nothing was stored/);
  assert.equal(await backend.bucket.head(`r/${TENANT}/${wrongKey}`), null, "not in R2 under the claimed key");
  const prep = await api("/v1/save/prepare", { token, method: "POST", body: { workspace: "default", objects: [wrongKey] } });
  assert.deepEqual(prep.data.missing, [wrongKey]);
  // The right bytes under the right key are accepted, idempotently.
  const rightKey = keyOf("packs", bytes);
  const ok = await api(`/v1/objects/${rightKey}`, { token, method: "PUT", body: bytes });
  assert.equal(ok.status, 200);
  assert.equal(ok.data.created, true);
  const again = await api(`/v1/objects/${rightKey}`, { token, method: "PUT", body: bytes });
  assert.equal(again.status, 200);
  assert.equal(again.data.created, false);
  assert.ok(await backend.bucket.head(`r/${TENANT}/${rightKey}`));
});

test("uploads over the object size limit are refused before reading the body", async () => {
  const token = issuer.token();
  const key = keyOf("packs", Buffer.from("big"));
  const { status, body } = await new Promise((resolve, reject) => {
    const u = new URL(`${backend.url}/v1/objects/${key}`);
    const req = httpRequest(
      { host: u.hostname, port: u.port, path: u.pathname, method: "PUT", headers: { authorization: `Bearer ${token}`, "content-length": String(65 * 1024 * 1024) } },
      (res) => {
        let b = "";
        res.on("data", (c) => (b += c));
        res.on("end", () => resolve({ status: res.statusCode, body: b }));
      },
    );
    req.on("error", reject);
    req.write(Buffer.alloc(1024));
  });
  assert.equal(status, 413);
  assert.equal(JSON.parse(body).code, "too_large");
});

test("16 concurrent commits to one scope advance generations with no lost update", async () => {
  const workspace = "concurrent";
  const snaps = Array.from({ length: 16 }, () => snapshot(1, 1024));
  const results = await Promise.all(snaps.map((s, i) => save(issuer.token({ run_id: `2${i}` }), s, { workspace, retry: true })));
  const gens = results.map((r) => {
    assert.equal(r.commit.status, 200, JSON.stringify(r.commit.data));
    return r.commit.data.head.generation;
  });
  assert.deepEqual([...gens].sort((a, b) => a - b), Array.from({ length: 16 }, (_, i) => i + 1), "each commit got its own generation");
  assert.ok(results.some((r) => r.attempts > 1), "some commits met a conflict and retried");
  const last = results.find((r) => r.commit.data.head.generation === 16);
  const r = await restore(issuer.token(), workspace);
  assert.deepEqual(r.data.hit.head, { snapshot: last.commit.data.head.snapshot, generation: 16 });
  const rows = await backend.db
    .prepare("SELECT generation, manifest_key FROM snapshots WHERE workspace = ? ORDER BY generation")
    .bind(workspace)
    .all();
  assert.equal(rows.results.length, 16);
  for (const row of rows.results) {
    const owner = results.find((x) => x.commit.data.head.generation === row.generation);
    assert.equal(row.manifest_key, owner.commit.data.head.snapshot, "no torn update: generation and manifest agree");
  }
  const head = await backend.db.prepare("SELECT generation FROM heads WHERE workspace = ?").bind(workspace).first();
  assert.equal(head.generation, 16);
});

test("a stale expected generation is refused with the current head", async () => {
  const token = issuer.token();
  await save(token, snapshot(1, 512), { workspace: "stale" });
  const s = snapshot(1, 512);
  for (const [k, b] of s.objects) await api(`/v1/objects/${k}`, { token, method: "PUT", body: b });
  const c = await api("/v1/save/commit", {
    token,
    method: "POST",
    body: { workspace: "stale", manifest: s.manifestKey, packs: s.packKeys, expected_generation: 0, idempotency_key: "stale-1" },
  });
  assert.equal(c.status, 409);
  assert.equal(c.data.code, "generation_conflict");
  assert.equal(c.data.head.generation, 1);
});

test("a replayed idempotency key returns the first result; reuse for another manifest is refused", async () => {
  const token = issuer.token();
  const s = snapshot(1, 512);
  const first = await save(token, s, { workspace: "idem", idem: "run-77-attempt-1" });
  assert.equal(first.commit.data.head.generation, 1);
  // Move the head on with another commit, then replay the first request.
  await save(token, snapshot(1, 512), { workspace: "idem", idem: "run-78-attempt-1" });
  const replay = await api("/v1/save/commit", {
    token,
    method: "POST",
    body: { workspace: "idem", manifest: s.manifestKey, packs: s.packKeys, expected_generation: 0, idempotency_key: "run-77-attempt-1" },
  });
  assert.equal(replay.status, 200);
  assert.equal(replay.data.replayed, true);
  assert.deepEqual(replay.data.head, first.commit.data.head);
  const other = snapshot(1, 512);
  for (const [k, b] of other.objects) await api(`/v1/objects/${k}`, { token, method: "PUT", body: b });
  const reuse = await api("/v1/save/commit", {
    token,
    method: "POST",
    body: { workspace: "idem", manifest: other.manifestKey, packs: other.packKeys, expected_generation: 2, idempotency_key: "run-77-attempt-1" },
  });
  assert.equal(reuse.status, 409);
  assert.equal(reuse.data.code, "idempotency_key_reused");
  const r = await restore(token, "idem");
  assert.equal(r.data.hit.head.generation, 2, "replays did not move the head");
});

test("a commit with a missing object is refused and lists it", async () => {
  const token = issuer.token();
  const s = snapshot(2, 512);
  const [missingPack] = s.packKeys;
  for (const [k, b] of s.objects) if (k !== missingPack) await api(`/v1/objects/${k}`, { token, method: "PUT", body: b });
  const c = await api("/v1/save/commit", {
    token,
    method: "POST",
    body: { workspace: "missing", manifest: s.manifestKey, packs: s.packKeys, expected_generation: 0, idempotency_key: "missing-1" },
  });
  assert.equal(c.status, 422);
  assert.equal(c.data.code, "missing_objects");
  assert.deepEqual(c.data.missing, [missingPack]);
  const r = await restore(token, "missing");
  assert.equal(r.data.hit, undefined, "nothing was committed");
});

test("a commit names the snapshot's objects; the Worker reads no manifest, only checks they are visible", async () => {
  const token = issuer.token();
  const s = snapshot(2, 512);
  for (const [k, b] of s.objects) await api(`/v1/objects/${k}`, { token, method: "PUT", body: b });
  const commit = (packs, manifest = s.manifestKey, t = token) =>
    api("/v1/save/commit", {
      token: t,
      method: "POST",
      body: { workspace: "manifests", manifest, packs, expected_generation: 0, idempotency_key: `m-${hex(randomBytes(6))}` },
    });
  // A pack only another scope uploaded is not visible to this run.
  const pr = issuer.token({ event_name: "pull_request", ref: "refs/pull/77/merge", base_ref: "main", sub: "repo:acme/app:pull_request" });
  const foreign = randomBytes(512);
  const foreignKey = keyOf("packs", foreign);
  assert.equal((await api(`/v1/objects/${foreignKey}`, { token: pr, method: "PUT", body: foreign })).status, 200);
  let c = await commit([...s.packKeys, foreignKey]);
  assert.equal(c.status, 422);
  assert.equal(c.data.code, "missing_objects");
  assert.deepEqual(c.data.missing, [foreignKey]);
  // Kinds are checked: a pack as the manifest, a manifest among the packs.
  c = await commit(s.packKeys, s.packKeys[0]);
  assert.equal(c.data.code, "bad_request");
  c = await commit([s.manifestKey]);
  assert.equal(c.data.code, "bad_request");
  // More than 1000 objects in all (manifest included) is refused before any lookup.
  c = await commit(Array.from({ length: 1000 }, () => keyOf("packs", randomBytes(8))));
  assert.equal(c.status, 413);
  assert.equal(c.data.code, "too_large");
  assert.equal((await restore(token, "manifests")).data.hit, undefined, "nothing was committed");
  // Any bytes may be the manifest, and the packs in any order are recorded as the grant's scope.
  c = await commit([...s.packKeys].reverse());
  assert.equal(c.status, 200, JSON.stringify(c.data));
  const hit = (await restore(token, "manifests")).data.hit;
  assert.deepEqual([...hit.packs].sort(), [...s.packKeys].sort());
});

test("a grant covers exactly its snapshot's objects", async () => {
  const main = issuer.token();
  const pr = issuer.token({ event_name: "pull_request", ref: "refs/pull/5/merge", base_ref: "main", sub: "repo:acme/app:pull_request" });
  const mainSnap = snapshot(1, 512);
  const prSnap = snapshot(1, 512);
  assert.equal((await save(main, mainSnap, { workspace: "grants" })).commit.status, 200);
  const prSave = await save(pr, prSnap, { workspace: "grants" });
  assert.equal(prSave.commit.status, 200, JSON.stringify(prSave.commit.data));
  assert.equal(prSave.prep.data.scope, "pr:5");

  const hit = (await restore(main, "grants")).data.hit;
  assert.equal(hit.scope, "branch:refs/heads/main");
  assert.equal((await api(`/v1/objects/${mainSnap.packKeys[0]}`, { token: hit.grant })).status, 200);
  const cross = await api(`/v1/objects/${prSnap.packKeys[0]}`, { token: hit.grant });
  assert.equal(cross.status, 403, "the main grant cannot read the PR scope's pack");
  assert.equal(cross.data.code, "invalid_grant");
  // Tampering with the grant breaks its signature.
  const [pre, body, sig] = hit.grant.split(".");
  const claims = JSON.parse(Buffer.from(body, "base64url"));
  claims.s += 1;
  const forged = `${pre}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${sig}`;
  assert.equal((await api(`/v1/objects/${mainSnap.packKeys[0]}`, { token: forged })).data.code, "invalid_grant");
  // The OIDC token itself is not a read credential.
  assert.equal((await api(`/v1/objects/${mainSnap.packKeys[0]}`, { token: main })).status, 403);
  // Another repository's grant cannot read this repository's objects.
  const other = issuer.token({ repository: "acme/other", repository_id: "100002", sub: "repo:acme/other:ref:refs/heads/main" });
  const otherSnap = snapshot(1, 512);
  otherSnap.objects.set(mainSnap.packKeys[0], mainSnap.objects.get(mainSnap.packKeys[0]));
  const otherSave = await save(other, { ...otherSnap, packKeys: otherSnap.packKeys }, { workspace: "grants" });
  assert.ok(otherSave.prep.data.missing.includes(mainSnap.packKeys[0]), "objects are stored per repository");
  const otherHit = (await restore(other, "grants")).data.hit;
  assert.equal((await api(`/v1/objects/${mainSnap.manifestKey}`, { token: otherHit.grant })).status, 403);
});

test("forged tokens are denied with distinct reasons; a valid token is accepted", async () => {
  const cases = [
    ["alg none", issuer.forgeAlgNone(), 401, "alg_none"],
    ["HS256 keyed with the public key", issuer.forgeHs256WithPublicKey(), 401, "unsupported_algorithm"],
    ["wrong issuer", issuer.token({ iss: "https://token.actions.githubusercontent.com" }), 401, "wrong_issuer"],
    ["wrong audience", issuer.token({ aud: "someone-else" }), 401, "wrong_audience"],
    ["expired", issuer.token({ exp: Math.floor(Date.now() / 1000) - 3600 }), 401, "token_expired"],
    ["not yet valid", issuer.token({ nbf: Math.floor(Date.now() / 1000) + 3600 }), 401, "token_not_yet_valid"],
    ["unknown kid", issuer.forgeUnknownKid(), 401, "unknown_kid"],
    ["tampered payload", issuer.forgeTampered({ ref: "refs/heads/main", event_name: "push", run_id: "666" }), 401, "bad_signature"],
    ["sub/repository mismatch", issuer.token({ sub: "repo:evil/x:ref:refs/heads/main" }), 401, "subject_mismatch"],
    ["repository not allowed", issuer.token({ repository: "evil/x", sub: "repo:evil/x:ref:refs/heads/main" }), 403, "repository_not_allowed"],
    ["garbage", "not.a.jwt", 401, "malformed_token"],
  ];
  const reasons = new Set();
  for (const [name, token, status, reason] of cases) {
    const r = await restore(token);
    assert.equal(r.status, status, `${name}: ${JSON.stringify(r.data)}`);
    assert.equal(r.data.reason, reason, name);
    assert.ok(r.data.message.length > 10, name);
    reasons.add(r.data.reason);
  }
  assert.equal(reasons.size, cases.length, "every forgery has its own reason");
  assert.equal((await restore(issuer.token())).status, 200);
  const d = await api("/v1/admin/decisions?limit=100", { token: ADMIN_TOKEN });
  for (const [, , , reason] of cases) {
    assert.ok(d.data.decisions.some((x) => !x.allowed && x.reason === reason), `denial ${reason} recorded`);
  }
});

test("a rotated key is fetched at most once per floor interval, however many tokens name it", async () => {
  assert.equal((await restore(issuer.token())).status, 200, "the JWKS is cached");
  const before = issuer.jwksFetches;
  const signNew = issuer.addKey(`rotated-${hex(randomBytes(4))}`);
  const statuses = [];
  for (let i = 0; i < 8; i++) statuses.push((await restore(signNew())).status);
  const fetched = issuer.jwksFetches - before;
  assert.ok(fetched <= 1, `fetched the JWKS ${fetched} times for 8 unknown-kid tokens`);
  if (fetched === 0) {
    // Cached less than a minute ago: the new kid stays unknown until the floor passes.
    assert.deepEqual(statuses, Array(8).fill(401));
  } else {
    // The cache was past the floor: one refetch, and the new key then verifies.
    assert.equal(statuses.at(-1), 200);
  }
});

test("a PR save never becomes what a push to main, a release or a deployment restores", async () => {
  const workspace = "poison";
  const prToken = issuer.token({ event_name: "pull_request", ref: "refs/pull/9/merge", base_ref: "main", sub: "repo:acme/app:pull_request" });
  const prSnap = snapshot(1, 256);
  const prSave = await save(prToken, prSnap, { workspace });
  assert.equal(prSave.commit.status, 200);
  assert.equal(prSave.prep.data.scope, "pr:9");

  // pull_request_target runs on the base ref but is external: it may not save at all.
  const prt = issuer.token({ event_name: "pull_request_target", ref: "refs/heads/main", base_ref: "main" });
  const prtPrep = await api("/v1/save/prepare", { token: prt, method: "POST", body: { workspace, objects: [...prSnap.objects.keys()] } });
  assert.equal(prtPrep.status, 403);
  assert.equal(prtPrep.data.code, "save_not_allowed");
  const prtPut = await api(`/v1/objects/${prSnap.manifestKey}`, { token: prt, method: "PUT", body: prSnap.objects.get(prSnap.manifestKey) });
  assert.equal(prtPut.data.code, "save_not_allowed");
  for (const event of ["issue_comment", "workflow_run"]) {
    const t = issuer.token({ event_name: event, ref: "refs/heads/main" });
    assert.equal((await api("/v1/save/prepare", { token: t, method: "POST", body: { workspace, objects: [] } })).data.code, "save_not_allowed", event);
  }

  // Trusted, privileged and internal readers never see the PR scope.
  const readers = {
    "push to main": issuer.token(),
    release: issuer.token({ event_name: "release", ref: "refs/tags/v1.0.0", sub: "repo:acme/app:ref:refs/tags/v1.0.0" }),
    deployment: issuer.token({ event_name: "deployment", ref: "refs/heads/main", sub: "repo:acme/app:environment:prod" }),
    "tag push": issuer.token({ ref: "refs/tags/v2", sub: "repo:acme/app:ref:refs/tags/v2" }),
    "push to feature": issuer.token({ ref: "refs/heads/feature", sub: "repo:acme/app:ref:refs/heads/feature" }),
  };
  for (const [name, token] of Object.entries(readers)) {
    const r = await restore(token, workspace);
    assert.equal(r.status, 200, name);
    assert.ok(!r.data.decision.restore_scopes.some((s) => s.startsWith("pr:")), `${name} never lists a PR scope`);
    assert.equal(r.data.hit, undefined, `${name} restores nothing from the PR save`);
  }
  // The PR itself reads its own scope.
  const own = await restore(prToken, workspace);
  assert.equal(own.data.hit.scope, "pr:9");

  // Once main has state, the PR falls back to it only after its own scope,
  // and a release reads main's (trusted) state.
  const mainSnap = snapshot(1, 256);
  await save(issuer.token(), mainSnap, { workspace });
  const rel = await restore(readers.release, workspace);
  assert.equal(rel.data.decision.class, "privileged");
  assert.equal(rel.data.hit.scope, "branch:refs/heads/main");
  assert.equal(rel.data.hit.head.snapshot, mainSnap.manifestKey);
  const otherPr = issuer.token({ event_name: "pull_request", ref: "refs/pull/10/merge", base_ref: "main", sub: "repo:acme/app:pull_request" });
  const fallback = await restore(otherPr, workspace);
  assert.deepEqual(fallback.data.decision.restore_scopes, ["pr:10", "branch:refs/heads/main"]);
  assert.equal(fallback.data.hit.scope, "branch:refs/heads/main", "another PR never reads pr:9");
});

test("retention drops old snapshots but keeps each head, and deletes objects no snapshot uses", async () => {
  const token = issuer.token();
  const workspace = "retention";
  const shared = randomBytes(300);
  const a = snapshot(1, 300, [shared]);
  await save(token, a, { workspace });
  const b = snapshot(1, 300, [shared]);
  await save(token, b, { workspace });
  // Age both snapshots by 30 days (the default retention is 14).
  await backend.db.prepare("UPDATE snapshots SET created_at = created_at - 30 * 86400 WHERE workspace = ?").bind(workspace).run();
  const c = snapshot(1, 300, [shared]);
  assert.equal((await save(token, c, { workspace })).commit.data.head.generation, 3);
  const gens = (await backend.db.prepare("SELECT generation FROM snapshots WHERE workspace = ? ORDER BY generation").bind(workspace).all()).results.map((r) => r.generation);
  assert.deepEqual(gens, [3], "generations 1 and 2 were swept");
  const gone = a.packKeys[0];
  assert.equal(await backend.bucket.head(`r/${TENANT}/${gone}`), null, "a pack only the swept snapshot used is deleted");
  assert.equal(await backend.bucket.head(`r/${TENANT}/${a.manifestKey}`), null);
  assert.ok(await backend.bucket.head(`r/${TENANT}/${keyOf("packs", shared)}`), "a pack the head still uses stays");

  // The scheduled sweep keeps an old head, and deletes old uploads that
  // never became part of a snapshot.
  await backend.db.prepare("UPDATE snapshots SET created_at = created_at - 30 * 86400 WHERE workspace = ?").bind(workspace).run();
  const orphan = randomBytes(200);
  const orphanKey = keyOf("packs", orphan);
  assert.equal((await api(`/v1/objects/${orphanKey}`, { token, method: "PUT", body: orphan })).status, 200);
  await backend.db.prepare("UPDATE objects SET created_at = created_at - 30 * 86400 WHERE object_key = ?").bind(orphanKey).run();
  const worker = await backend.mf.getWorker();
  await worker.scheduled({ cron: "17 3 * * *" });
  assert.equal(await backend.bucket.head(`r/${TENANT}/${orphanKey}`), null, "an old upload no snapshot uses is deleted");
  const r = await restore(token, workspace);
  assert.equal(r.data.hit.head.generation, 3, "an old head is kept");
  assert.ok(await backend.bucket.head(`r/${TENANT}/${c.manifestKey}`));
});

test("admin routes need the admin token and report runs, snapshots, decisions, sizes", async () => {
  assert.equal((await api("/v1/admin/runs")).data.code, "admin_unauthorized");
  assert.equal((await api("/v1/admin/runs", { token: "wrong" })).status, 401);
  assert.equal((await api("/v1/admin/runs", { token: issuer.token() })).status, 401, "an OIDC token is not an admin token");
  const runs = await api("/v1/admin/runs?limit=5", { token: ADMIN_TOKEN });
  assert.equal(runs.status, 200);
  assert.ok(runs.data.runs.length > 0 && runs.data.runs.length <= 5);
  assert.equal(runs.data.runs[0].repository.startsWith("acme/"), true);
  const snaps = await api("/v1/admin/snapshots", { token: ADMIN_TOKEN });
  const s = snaps.data.snapshots[0];
  for (const f of ["repository", "workspace", "scope", "manifest", "generation", "git_ref", "event", "sha", "actor", "run_id", "runner_environment", "class"]) {
    assert.ok(f in s, f);
  }
  const sizes = await api("/v1/admin/sizes", { token: ADMIN_TOKEN });
  assert.ok(sizes.data.total_object_bytes > 0);
  assert.ok(sizes.data.scopes.some((x) => x.stored_bytes > 0));
  const decisions = await api("/v1/admin/decisions", { token: ADMIN_TOKEN });
  assert.ok(decisions.data.decisions.some((d) => d.allowed && d.reason === "restore_hit"));
});
