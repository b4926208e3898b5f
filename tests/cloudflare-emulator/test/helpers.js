// Test helpers: start the emulator as its own process (exactly as the CLI's tests will),
// wait for its ready line, and talk to it over HTTP like the Cloudflare client does.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CLI = path.resolve(HERE, "..", "src", "cli.js");
export const ACCOUNT = "0123456789abcdef0123456789abcdef";
export const TOKEN = "emulator-token-all-permissions";

/** Starts `node src/cli.js`; resolves once it printed `emulator: api=... control=...`. */
export async function startEmulator({ config, args = [] } = {}) {
  const extra = [...args];
  let dir;
  if (config) {
    dir = mkdtempSync(path.join(os.tmpdir(), "cf-emulator-test-"));
    const file = path.join(dir, "config.json");
    writeFileSync(file, JSON.stringify(config));
    extra.push("--config", file);
  }
  const proc = spawn(process.execPath, [CLI, "--port", "0", ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false" },
  });
  const lines = [];
  let stderr = "";
  proc.stderr.on("data", (d) => (stderr += d));
  const waiters = [];
  let buf = "";
  proc.stdout.on("data", (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of [...waiters]) if (w.re.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  const waitLine = (re) =>
    new Promise((resolve, reject) => {
      const hit = lines.find((l) => re.test(l));
      if (hit) return resolve(hit);
      waiters.push({ re, resolve });
      proc.once("exit", (code) => reject(new Error(`emulator exited (${code}) before printing ${re}: ${stderr}`)));
    });
  const ready = await waitLine(/^emulator: api=/);
  const m = /^emulator: api=(\S+) control=(\S+)$/.exec(ready);
  assert.ok(m, `ready line is machine-readable: ${ready}`);
  const emu = {
    proc,
    lines,
    api: m[1],
    control: m[2],
    waitLine,
    stderr: () => stderr,
    /** SIGTERM; resolves to the exit code (143 = stopped by SIGTERM after Miniflare stopped workerd). */
    async stop() {
      if (dir) rmSync(dir, { recursive: true, force: true });
      if (proc.exitCode !== null) return proc.exitCode;
      const exited = once(proc, "exit");
      proc.kill("SIGTERM");
      const [code] = await exited;
      return code;
    },
    async call(method, p, { token = TOKEN, json, body, headers = {} } = {}) {
      const h = { ...headers };
      if (token !== null) h.authorization = `Bearer ${token}`;
      let payload = body;
      if (json !== undefined) {
        h["content-type"] = "application/json";
        payload = JSON.stringify(json);
      }
      const res = await fetch(emu.api + p, { method, headers: h, body: payload });
      const text = await res.text();
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
      return { status: res.status, headers: res.headers, body: parsed };
    },
    async ctl(method, p, json) {
      const res = await fetch(emu.control + p, {
        method,
        headers: json ? { "content-type": "application/json" } : {},
        body: json ? JSON.stringify(json) : undefined,
      });
      return { status: res.status, body: await res.json() };
    },
    async violations() {
      return (await emu.ctl("GET", "/violations")).body.violations;
    },
    async assertNoViolations() {
      const v = await emu.violations();
      assert.deepEqual(v, [], `emulator recorded contract violations: ${JSON.stringify(v, null, 2)}`);
    },
  };
  return emu;
}

/** Builds the Worker upload form the way the CLI sends it. */
export function uploadForm(metadata, modules) {
  const fd = new FormData();
  fd.set("metadata", new Blob([JSON.stringify(metadata)], { type: "application/json" }), "metadata.json");
  for (const m of modules) fd.set(m.name, new Blob([m.contents], { type: m.type }), m.name);
  return fd;
}

export async function upload(emu, name, metadata, modules, { token = TOKEN, account = ACCOUNT } = {}) {
  const res = await fetch(`${emu.api}/accounts/${account}/workers/scripts/${name}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}` },
    body: uploadForm(metadata, modules),
  });
  return { status: res.status, body: await res.json() };
}
