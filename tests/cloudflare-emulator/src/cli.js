#!/usr/bin/env node
// Command line entry of the emulator. Prints one machine-readable ready line on stdout:
//   emulator: api=http://127.0.0.1:N/client/v4 control=http://127.0.0.1:N/__emulator
// and, whenever a script's workers.dev route comes up:
//   emulator: worker NAME=http://127.0.0.1:M
// Stops workerd on SIGINT/SIGTERM (exit 130/143, Miniflare's convention) or, with
// --exit-on-stdin-close, when stdin closes (exit 0).

import { parseArgs } from "node:util";

const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(
    `cloudflare-emulator: Node ${process.versions.node} is too old: miniflare needs Node >= 22.12. ` +
      "Fix: run `bash scripts/setup-emulator.sh` and start the emulator with the node binary it prints.\n",
  );
  process.exit(1);
}
const { startEmulator, loadConfig } = await import("./server.js");

const USAGE = `usage: cloudflare-emulator [--port N] [--config FILE] [--openapi FILE] [--persist DIR]
                           [--worker-port PORT | --worker-port SCRIPT=PORT]... [--exit-on-stdin-close]
  --port N           API port on 127.0.0.1 (0 = pick a free one; env CF_EMULATOR_PORT)
  --config FILE      JSON {accounts, tokens, rate_limit} (env CF_EMULATOR_CONFIG; default: one account, one full token)
  --openapi FILE     the OpenAPI subset (env STATEFUL_CI_OPENAPI; default contract/ in this folder)
  --persist DIR      keep state there across restarts (default: a temp dir removed on exit)
  --worker-port P    port for the first script whose workers.dev route is enabled; SCRIPT=P pins one script`;

function fail(msg) {
  process.stderr.write(`cloudflare-emulator: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

let args;
try {
  args = parseArgs({
    options: {
      port: { type: "string" },
      config: { type: "string" },
      openapi: { type: "string" },
      persist: { type: "string" },
      "worker-port": { type: "string", multiple: true },
      "exit-on-stdin-close": { type: "boolean" },
      help: { type: "boolean" },
    },
  }).values;
} catch (e) {
  fail(e.message);
}
if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

const portText = args.port ?? process.env.CF_EMULATOR_PORT ?? "0";
const port = Number(portText);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be an integer 0..65535, got '${portText}'`);
const workerPorts = {};
for (const w of args["worker-port"] ?? []) {
  const m = /^(?:([a-z0-9_][a-z0-9-_]*)=)?(\d+)$/.exec(w);
  if (!m || Number(m[2]) > 65535) fail(`--worker-port must be PORT or SCRIPT=PORT, got '${w}'`);
  workerPorts[m[1] ?? "*"] = Number(m[2]);
}

// Worker lines for scripts restored from --persist come after the ready line.
let ready = false;
const pendingWorkerLines = [];
let emulator;
try {
  emulator = await startEmulator({
    port,
    config: loadConfig(args.config ?? process.env.CF_EMULATOR_CONFIG),
    openapi: args.openapi,
    persistDir: args.persist,
    workerPorts,
    onWorker: (name, url) => {
      const line = `emulator: worker ${name}=${url}\n`;
      if (ready) process.stdout.write(line);
      else pendingWorkerLines.push(line);
    },
  });
} catch (e) {
  process.stderr.write(`cloudflare-emulator: could not start: ${e.message}\n`);
  process.exit(1);
}
process.stdout.write(`emulator: api=${emulator.apiUrl} control=${emulator.controlUrl}\n`);
ready = true;
for (const line of pendingWorkerLines) process.stdout.write(line);

// Miniflare's own exit hook stops workerd and exits with 128+signal on SIGINT/SIGTERM
// (130/143); this removes our temporary storage on any exit.
process.on("exit", () => emulator.cleanupSync());

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  try {
    await emulator.close();
  } finally {
    process.exit(0);
  }
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
if (args["exit-on-stdin-close"]) {
  process.stdin.resume();
  process.stdin.on("end", stop);
  process.stdin.on("close", stop);
}
