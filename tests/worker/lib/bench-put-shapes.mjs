#!/usr/bin/env node
// What storing an upload costs in local workerd, by the shape of the Worker:
// drain the body only, R2 put of the body, with its sha256, and through a
// FixedLengthStream (as the stateful-ci Worker does). Each shape gets one
// 64 MiB random body, twice, and prints workerd's CPU per MiB (lib/procstat.mjs)
// and the wall time. The floor under scripts/bench-backend.sh's PUT figure.
//   node lib/bench-put-shapes.mjs      (from tests/worker, after npm install)
import { Miniflare } from "miniflare";
import { createHash, randomBytes } from "node:crypto";
import { workerdPids, cpuNs } from "./procstat.mjs";
import { Agent, setGlobalDispatcher } from "undici";
setGlobalDispatcher(new Agent({ pipelining: 0 }));
const script = `export default { async fetch(req, env) {
  const u = new URL(req.url); const mode = u.pathname.slice(1); const len = Number(req.headers.get("content-length"));
  const sha = req.headers.get("x-sha");
  if (mode === "plain") await env.B.put("k" + Math.random(), req.body);
  else if (mode === "sha") await env.B.put("k" + Math.random(), req.body, { sha256: sha });
  else if (mode === "fixed") { const f = new FixedLengthStream(len); const p = req.body.pipeTo(f.writable); await env.B.put("k" + Math.random(), f.readable, { sha256: sha }); await p; }
  else if (mode === "drain") { const r = req.body.getReader(); for (;;) { const { done } = await r.read(); if (done) break; } }
  return new Response("ok"); } }`;
const mf = new Miniflare({ modules: true, script, r2Buckets: ["B"], compatibilityDate: "2026-07-01" });
const url = (await mf.ready).toString();
const pids = workerdPids();
const body = randomBytes(64 * 1024 * 1024);
const sha = createHash("sha256").update(body).digest("hex");
for (const mode of ["drain", "plain", "sha", "fixed", "drain", "plain", "sha", "fixed"]) {
  const c0 = cpuNs(pids); const t = Date.now();
  const r = await fetch(url + mode, { method: "PUT", body, headers: { "x-sha": sha } });
  await r.text();
  console.log(`${mode}: ${r.status} ${((cpuNs(pids) - c0) / 1e6 / 64).toFixed(1)} ms/MiB workerd CPU, ${Date.now() - t} ms wall`);
}
await mf.dispose();
