// The command line: ready line, pinned worker port, errors that name the cause, clean stop.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, execFileSync } from "node:child_process";
import net from "node:net";
import { readFileSync } from "node:fs";
import { startEmulator, upload, CLI, ACCOUNT } from "./helpers.js";

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

function children(pid) {
  try {
    return execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).trim().split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
const alive = (pid) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
};

test("--worker-port pins the workers.dev URL of the first enabled script; SIGTERM stops workerd too", async () => {
  const port = await freePort();
  const emu = await startEmulator({ args: ["--worker-port", String(port)] });
  const A = `/accounts/${ACCOUNT}`;
  const up = await upload(emu, "pinned", { main_module: "w.mjs", compatibility_date: "2024-11-01", bindings: [{ type: "plain_text", name: "V", text: "pinned-ok" }] }, [
    { name: "w.mjs", type: "application/javascript+module", contents: "export default { fetch(r, env) { return new Response(env.V) } }" },
  ]);
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.equal((await emu.call("POST", `${A}/workers/scripts/pinned/subdomain`, { json: { enabled: true } })).status, 200);
  const line = await emu.waitLine(/^emulator: worker pinned=/);
  assert.equal(line, `emulator: worker pinned=http://127.0.0.1:${port}`);
  assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "pinned-ok");
  await emu.assertNoViolations();

  const kids = children(emu.proc.pid);
  assert.ok(kids.length >= 1, "workerd runs as a child process");
  assert.equal(await emu.stop(), 143);
  for (const k of kids) assert.ok(!alive(k), `child ${k} left behind`);
  await assert.rejects(fetch(`http://127.0.0.1:${port}/`));
});

test("usage errors exit 2 and say what is wrong", () => {
  const r = spawnSync(process.execPath, [CLI, "--port", "http"], { encoding: "utf8" });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--port must be an integer/);
  const w = spawnSync(process.execPath, [CLI, "--worker-port", "x=y"], { encoding: "utf8" });
  assert.equal(w.status, 2);
  assert.match(w.stderr, /--worker-port must be PORT or SCRIPT=PORT/);
});

test("a missing contract or config file stops startup with the path and the fix", () => {
  const r = spawnSync(process.execPath, [CLI, "--port", "0"], { encoding: "utf8", env: { ...process.env, STATEFUL_CI_OPENAPI: "/nonexistent/openapi.json" } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /\/nonexistent\/openapi\.json/);
  assert.match(r.stderr, /STATEFUL_CI_OPENAPI/);
  const c = spawnSync(process.execPath, [CLI, "--port", "0", "--config", "/nonexistent/config.json"], { encoding: "utf8" });
  assert.equal(c.status, 1);
  assert.match(c.stderr, /\/nonexistent\/config\.json/);
});

test("--exit-on-stdin-close: the emulator and workerd exit when the parent's pipe closes", async () => {
  const { spawn } = await import("node:child_process");
  const { once } = await import("node:events");
  const proc = spawn(process.execPath, [CLI, "--port", "0", "--exit-on-stdin-close"], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  await new Promise((resolve, reject) => {
    proc.stdout.on("data", (d) => {
      out += d;
      if (out.includes("emulator: api=")) resolve();
    });
    proc.once("exit", (c) => reject(new Error(`exited early with ${c}`)));
  });
  const kids = children(proc.pid);
  assert.ok(kids.length >= 1);
  const exited = once(proc, "exit");
  proc.stdin.end();
  const [code] = await exited;
  assert.equal(code, 0);
  for (const k of kids) assert.ok(!alive(k), `child ${k} left behind`);
});

test("--persist: a restarted emulator serves the same resources, data and Worker", async () => {
  const { mkdtempSync, rmSync, statSync } = await import("node:fs");
  const os = await import("node:os");
  const path = await import("node:path");
  const dir = mkdtempSync(path.join(os.tmpdir(), "cf-emulator-persist-"));
  const A = `/accounts/${ACCOUNT}`;
  try {
    let emu = await startEmulator({ args: ["--persist", dir] });
    const db = (await emu.call("POST", `${A}/d1/database`, { json: { name: "kept" } })).body.result.uuid;
    await emu.call("POST", `${A}/d1/database/${db}/query`, { json: { sql: "CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('survives')" } });
    await emu.call("POST", `${A}/r2/buckets`, { json: { name: "kept-bucket" } });
    await emu.call("PUT", `${A}/r2/buckets/kept-bucket/objects/o`, { body: "obj", headers: { "content-type": "application/octet-stream" } });
    const up = await upload(emu, "kept-script", { main_module: "w.mjs", compatibility_date: "2024-11-01", bindings: [{ type: "d1", name: "DB", id: db }] }, [
      { name: "w.mjs", type: "application/javascript+module", contents: "export default { async fetch(r, env) { return new Response((await env.DB.prepare('SELECT v FROM t').first()).v) } }" },
    ]);
    assert.equal(up.status, 200, JSON.stringify(up.body));
    await emu.call("PUT", `${A}/workers/scripts/kept-script/secrets`, { json: { name: "S", text: "secret-text", type: "secret_text" } });
    await emu.call("POST", `${A}/workers/scripts/kept-script/subdomain`, { json: { enabled: true } });
    await emu.assertNoViolations();
    await emu.stop();
    assert.equal(statSync(path.join(dir, "emulator-state.json")).mode & 0o777, 0o600);

    emu = await startEmulator({ args: ["--persist", dir] });
    try {
      const line = await emu.waitLine(/^emulator: worker kept-script=/);
      assert.equal(await (await fetch(line.split("=")[1])).text(), "survives");
      assert.deepEqual((await emu.call("GET", `${A}/d1/database`)).body.result.map((d) => d.uuid), [db]);
      assert.deepEqual((await emu.call("GET", `${A}/r2/buckets/kept-bucket/objects`)).body.result.map((o) => o.key), ["o"]);
      assert.deepEqual((await emu.call("GET", `${A}/workers/scripts/kept-script/secrets`)).body.result, [{ name: "S", type: "secret_text" }]);
      await emu.assertNoViolations();
    } finally {
      await emu.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
