// The Runtime (one Miniflare instance behind the emulator) on its own, in this process.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Runtime } from "../src/runtime.js";

const WORKER = "w-test-squatted";

/** A process that listens on `port` as soon as it is free, and holds it. */
async function squat(port) {
  const src =
    "const net = require('node:net'); const port = Number(process.argv[1]);" +
    "(function again() { const s = net.createServer(); s.once('error', () => setImmediate(again));" +
    " s.listen({ port, host: '127.0.0.1', exclusive: true }, () => console.log('held')); })();";
  const proc = spawn(process.execPath, ["-e", src, String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  const held = new Promise((resolve) => proc.stdout.once("data", () => resolve(true)));
  return { proc, held };
}

test("a reload whose old port was taken meanwhile starts workerd on new ports", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "cf-emulator-runtime-"));
  const rt = new Runtime({ persistDir: dir });
  t.after(async () => {
    await rt.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  const script = (answer) => ({
    modules: [{ name: "w.mjs", type: "ESModule", contents: `export default { fetch() { return new Response("${answer}"); } }` }],
    compatibilityDate: "2024-11-01",
    compatibilityFlags: [],
    vars: {},
    d1: {},
    r2: {},
    durableObjects: {},
  });
  rt.scripts.set(WORKER, script("one"));
  await rt.apply();
  const before = new URL(rt.directUrl(WORKER));
  assert.equal(await (await fetch(before)).text(), "one");

  // Miniflare restarts workerd on the same ports; a squatter takes the
  // Worker's port the moment the old workerd lets go of it.
  const { proc, held } = await squat(Number(before.port));
  t.after(() => proc.kill());
  rt.scripts.set(WORKER, script("two"));
  await rt.apply();
  assert.equal(await Promise.race([held, new Promise((r) => setTimeout(() => r(false), 2000))]), true, "the squatter got the old port");
  const after = new URL(rt.directUrl(WORKER));
  assert.notEqual(after.port, before.port);
  assert.equal(await (await fetch(after)).text(), "two");
});
