// The workerd side of the emulator: one Miniflare instance holding an internal admin Worker
// (binds every D1 database and R2 bucket) plus one Worker per uploaded script, with exactly
// the bindings that script's upload declared. Storage is persisted under one temp directory,
// so D1 written through /query is the D1 the uploaded Worker reads, and a reload (setOptions)
// keeps all data. Only this module touches Miniflare; it never listens beyond 127.0.0.1.

import { Miniflare } from "miniflare";
import http from "node:http";
import { ADMIN_WORKER_SOURCE } from "./admin-worker.js";

const ADMIN = "emulator-admin";
// Longer than common HTTP clients' idle-connection timeouts (hyper: 90 s), so the server never
// closes a pooled connection the client is about to reuse (a spurious reset in tests).
export const KEEP_ALIVE_MS = 120_000;

export class Runtime {
  constructor({ persistDir }) {
    this.persistDir = persistDir;
    this.d1 = new Map(); // storageId -> binding name in the admin worker
    this.r2 = new Map(); // storageId -> binding name
    this.scripts = new Map(); // workerName -> { config }
    this.mf = undefined;
    this.directUrls = new Map();
    this.queue = Promise.resolve();
    this.counter = 0;
    // Reader/writer discipline: requests into workerd (admin calls, proxied Worker requests)
    // are readers; a reload (setOptions restarts workerd) is the writer. A reload waits for
    // in-flight readers to finish, and new readers wait while a reload is pending.
    this.pendingReloads = 0;
    this.inflight = 0;
    this.drainWaiters = [];
  }

  /** Enters a reader section; returns the function that leaves it. */
  async enter() {
    while (this.pendingReloads > 0) await this.queue;
    this.inflight++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.inflight--;
      if (this.inflight === 0) for (const w of this.drainWaiters.splice(0)) w();
    };
  }

  drained() {
    return this.inflight === 0 ? Promise.resolve() : new Promise((r) => this.drainWaiters.push(r));
  }

  static workerName(accountId, scriptName) {
    return `w-${accountId}-${scriptName}`;
  }

  addD1(storageId) {
    if (!this.d1.has(storageId)) this.d1.set(storageId, `D1_${++this.counter}`);
  }
  removeD1(storageId) {
    this.d1.delete(storageId);
  }
  addR2(storageId) {
    if (!this.r2.has(storageId)) this.r2.set(storageId, `R2_${++this.counter}`);
  }
  removeR2(storageId) {
    this.r2.delete(storageId);
  }

  /** Builds the full Miniflare options from the current state. `scripts` may be overridden to try a candidate. */
  options(scripts = this.scripts) {
    const admin = {
      name: ADMIN,
      modules: true,
      script: ADMIN_WORKER_SOURCE,
      compatibilityDate: "2024-09-23",
      d1Databases: Object.fromEntries([...this.d1].map(([id, b]) => [b, id])),
      r2Buckets: Object.fromEntries([...this.r2].map(([id, b]) => [b, id])),
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    };
    const workers = [admin];
    for (const [name, s] of scripts) {
      workers.push({
        name,
        modules: s.modules.map((m) => ({ type: m.type, path: `/modules/${m.name}`, contents: m.contents })),
        modulesRoot: "/modules",
        compatibilityDate: s.compatibilityDate,
        compatibilityFlags: s.compatibilityFlags,
        bindings: s.vars,
        d1Databases: s.d1,
        r2Buckets: s.r2,
        durableObjects: s.durableObjects,
        unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
      });
    }
    return {
      workers,
      host: "127.0.0.1",
      port: 0,
      defaultPersistRoot: this.persistDir,
      log: undefined,
    };
  }

  /** Serialises reloads; `fn` runs with exclusive access and may call apply(). */
  exclusive(fn) {
    this.pendingReloads++;
    const body = async () => {
      try {
        await this.drained();
        return await fn();
      } finally {
        this.pendingReloads--;
      }
    };
    const run = this.queue.then(body, body);
    this.queue = run.catch(() => {});
    return run;
  }

  async apply(scripts = this.scripts) {
    const opts = this.options(scripts);
    if (this.mf) {
      try {
        await this.mf.setOptions(opts);
      } catch (e) {
        // On a reload, Miniflare hands the restarted workerd the ports it had
        // (port 0 asked twice means "the same again": #getSocketAddress in
        // miniflare's index.js), and in the moment between the two another
        // socket on this machine (any outgoing connection's ephemeral port)
        // can take one: ERR_ADDRESS_IN_USE. A fresh instance asks the kernel
        // for new ports; the state lives on in persistDir, and the proxies
        // look the new direct URLs up per request.
        if (e?.code !== "ERR_ADDRESS_IN_USE") throw e;
        await this.mf.dispose().catch(() => {});
        this.mf = undefined;
      }
    }
    if (!this.mf) {
      this.mf = new Miniflare(opts);
      await this.mf.ready;
    }
    this.directUrls.clear();
    for (const w of opts.workers) this.directUrls.set(w.name, (await this.mf.unsafeGetDirectURL(w.name)).toString());
  }

  /** Tries a new set of scripts; on failure (e.g. the module does not load) restores the previous one and rethrows. */
  async tryScripts(candidate) {
    try {
      await this.apply(candidate);
      this.scripts = candidate;
    } catch (e) {
      try {
        await this.apply(this.scripts);
      } catch {
        /* the previous configuration loaded before; ignore a second failure here */
      }
      throw e;
    }
  }

  async start() {
    await this.exclusive(() => this.apply());
  }

  async admin(pathname, { body, headers, search } = {}) {
    const leave = await this.enter();
    try {
      const base = this.directUrls.get(ADMIN);
      const res = await fetch(new URL(pathname + (search ?? ""), base), {
        method: "POST",
        body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
        headers: headers ?? { "content-type": "application/json" },
      });
      return await res.json();
    } finally {
      leave();
    }
  }

  /** Runs a Worker's scheduled handler once (what a Cron Trigger does). */
  async scheduled(workerName, cron, scheduledTime) {
    const leave = await this.enter();
    try {
      const w = await this.mf.getWorker(workerName);
      return await w.scheduled({ cron, scheduledTime: scheduledTime ? new Date(scheduledTime) : new Date() });
    } finally {
      leave();
    }
  }

  directUrl(workerName) {
    return this.directUrls.get(workerName);
  }

  async dispose() {
    if (this.mf) await this.mf.dispose();
    this.mf = undefined;
  }
}

/** Forwards one request to a Worker's direct socket (looked up per request, after any reload). */
export async function forwardToWorker(runtime, workerName, req, res) {
  const leave = await runtime.enter();
  res.once("close", leave);
  res.once("finish", leave);
  const target = runtime.directUrl(workerName);
  if (!target) {
    res.writeHead(503, { "content-type": "text/plain" });
    res.end(`emulator: script ${workerName} is not running\n`);
    return;
  }
  const u = new URL(target);
  // The Host header is kept, so the Worker sees the URL the client used.
  const up = http.request({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
    res.writeHead(upRes.statusCode ?? 502, upRes.headers);
    upRes.pipe(res);
  });
  up.on("error", (e) => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
    res.end(`emulator: worker ${workerName} failed: ${e.message}\n`);
  });
  req.pipe(up);
}

/** A 127.0.0.1 listener that forwards every request to one Worker. */
export function startWorkerProxy(runtime, workerName, port) {
  const server = http.createServer((req, res) => {
    forwardToWorker(runtime, workerName, req, res).catch((e) => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end(`emulator: worker ${workerName} failed: ${e.message}\n`);
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1000;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port ?? 0, "127.0.0.1", () => resolve(server));
  });
}
