// The emulator's HTTP front: serves the Cloudflare API v4 subset under /client/v4 with state,
// Cloudflare's envelope and error codes, token permissions and rate limits; validates every
// request and response against the shared OpenAPI subset (mismatches are recorded as
// violations); injects faults; and exposes control endpoints under /__emulator/.
// Never logs or returns a token value or a secret's text. Listens on 127.0.0.1 only.

import http from "node:http";
import { createHash, randomUUID, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, readFileSync, writeFileSync, renameSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { OpenApi, ERRATA } from "./openapi.js";
import { Runtime, startWorkerProxy, forwardToWorker, KEEP_ALIVE_MS } from "./runtime.js";
import { splitSql } from "./sql.js";

// What stateful-ci's token needs; "Account Settings Read" (for GET /accounts) is still honoured
// when a config grants it, but no call of deploy/upgrade/destroy needs it.
export const PERMISSIONS = ["Workers Scripts Edit", "D1 Edit", "Workers R2 Storage Edit"];
const READ_ALTERNATIVE = {
  "Workers Scripts Edit": "Workers Scripts Read",
  "D1 Edit": "D1 Read",
  "Workers R2 Storage Edit": "Workers R2 Storage Read",
};

export const DEFAULT_CONFIG = {
  accounts: [{ id: "0123456789abcdef0123456789abcdef", name: "Emulated account", workers_subdomain: "emulated" }],
  tokens: [
    {
      id: "e0000000000000000000000000000001",
      value: "emulator-token-all-permissions",
      owner: "user",
      accounts: ["0123456789abcdef0123456789abcdef"],
      // Plus Account Settings Read, so `init` can list accounts against the default config.
      permissions: [...PERMISSIONS, "Account Settings Read"],
    },
  ],
  rate_limit: { requests: 1200, window_seconds: 300 },
};

/** Rate limit from the environment (tests compress the 5-minute window). */
function envRateLimit() {
  const n = Number(process.env.CF_EMULATOR_RATE_LIMIT_REQUESTS);
  const w = Number(process.env.CF_EMULATOR_RATE_LIMIT_WINDOW_SECONDS);
  return { requests: Number.isFinite(n) && n > 0 ? n : undefined, window_seconds: Number.isFinite(w) && w > 0 ? w : undefined };
}

const API_PREFIX = "/client/v4";
const CONTROL_PREFIX = "/__emulator";
const nowIso = () => new Date().toISOString();

class ApiError extends Error {
  constructor(status, code, message, headers) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

const ok = (result, extra = {}) => ({ status: 200, body: { success: true, errors: [], messages: [], result, ...extra } });
const fail = (status, errors) => ({
  status,
  body: { success: false, errors: errors.map(([code, message]) => ({ code, message })), messages: [], result: null },
});

function permissionFor(op) {
  const id = op.operationId;
  const read = op.method === "GET";
  if (id.endsWith("tokens-verify-token")) return undefined;
  if (id === "accounts-list-accounts") return "Account Settings Read";
  if (id.startsWith("cloudflare-d1")) return read ? ["D1 Edit", "D1 Read"] : "D1 Edit";
  if (id.startsWith("r2-")) return read ? ["Workers R2 Storage Edit", "Workers R2 Storage Read"] : "Workers R2 Storage Edit";
  if (id.startsWith("worker-")) return read ? ["Workers Scripts Edit", "Workers Scripts Read"] : "Workers Scripts Edit";
  return undefined;
}

function isMutating(op, json) {
  if (op.method === "GET") return false;
  if (op.operationId === "cloudflare-d1-query-database" || op.operationId === "cloudflare-d1-raw-database-query") {
    const items = json?.batch ?? (json ? [json] : []);
    return items.some((q) => splitSql(q.sql ?? "").some((s) => !/^\s*(SELECT|EXPLAIN)\b/i.test(s)));
  }
  return true;
}

export class Emulator {
  constructor(options = {}) {
    this.options = options;
    this.openapi = new OpenApi(options.openapi);
    const config = options.config ?? DEFAULT_CONFIG;
    this.persistDir = options.persistDir ?? mkdtempSync(path.join(os.tmpdir(), "cf-emulator-"));
    this.ownsPersistDir = !options.persistDir;
    this.runtime = new Runtime({ persistDir: this.persistDir });
    this.accounts = new Map();
    for (const a of config.accounts ?? []) {
      this.accounts.set(a.id, {
        id: a.id,
        name: a.name ?? a.id,
        created_on: nowIso(),
        subdomain: a.workers_subdomain ?? null,
        r2Enabled: a.r2_enabled ?? true,
        d1: new Map(),
        r2: new Map(),
        scripts: new Map(),
      });
    }
    this.tokens = new Map();
    for (const t of config.tokens ?? []) {
      if (!t.value) throw new Error("emulator config: every token needs a 'value' (the bearer string the client sends)");
      this.tokens.set(t.value, {
        id: t.id ?? randomBytes(16).toString("hex"),
        owner: t.owner ?? "user",
        account_id: t.account_id ?? (t.owner === "account" ? t.accounts?.[0] : undefined),
        accounts: new Set(t.accounts ?? []),
        permissions: new Set(t.permissions ?? []),
        status: t.status ?? "active",
        rateLimit: t.rate_limit ? { requests: t.rate_limit.requests, windowMs: (t.rate_limit.window_seconds ?? 300) * 1000 } : undefined,
        // Cloudflare counts requests per user/account, not per token: tokens of one account share
        // a budget unless the config names another key.
        rateKey: t.rate_key ?? (t.rate_limit ? `token:${t.id}` : (t.accounts?.[0] ?? t.id)),
      });
    }
    const env = envRateLimit();
    this.rateLimit = {
      requests: env.requests ?? config.rate_limit?.requests ?? 1200,
      windowMs: (env.window_seconds ?? config.rate_limit?.window_seconds ?? 300) * 1000,
    };
    this.limiters = new Map(); // rateKey -> { hits: number[], blockedUntil }
    this.workerPorts = options.workerPorts ?? {}; // script name or "*" -> port
    this.violations = [];
    this.requests = [];
    this.seq = 0;
    this.faults = [];
    this.faultSeq = 0;
    this.proxies = new Map(); // workerName -> { server, url, script, account }
    this.imports = new Map();
    this.sockets = new Set();
  }

  // With --persist, the REST-level state (resources, scripts with their modules and bindings,
  // secrets included) is kept in DIR/emulator-state.json (mode 0600) beside workerd's storage,
  // so a restarted emulator serves the same account. Tokens always come from the config.
  get statePath() {
    return this.ownsPersistDir ? undefined : path.join(this.persistDir, "emulator-state.json");
  }

  saveState() {
    if (!this.statePath) return;
    const accounts = [...this.accounts.values()].map((a) => ({
      id: a.id,
      subdomain: a.subdomain,
      d1: [...a.d1.values()],
      r2: [...a.r2.values()],
      scripts: [...a.scripts.values()].map((sc) => ({
        ...sc,
        modules: sc.modules.map((m) => ({ ...m, contents: Buffer.from(m.contents).toString("base64") })),
      })),
    }));
    const data = { version: 1, accounts, d1: [...this.runtime.d1], r2: [...this.runtime.r2], counter: this.runtime.counter };
    const tmp = `${this.statePath}.tmp`;
    writeFileSync(tmp, JSON.stringify(data), { mode: 0o600 });
    renameSync(tmp, this.statePath);
  }

  loadState() {
    if (!this.statePath || !existsSync(this.statePath)) return;
    let data;
    try {
      data = JSON.parse(readFileSync(this.statePath, "utf8"));
    } catch (e) {
      throw new Error(`emulator state ${this.statePath} is not readable JSON (${e.message}); delete it or use another --persist dir`);
    }
    this.runtime.d1 = new Map(data.d1);
    this.runtime.r2 = new Map(data.r2);
    this.runtime.counter = data.counter;
    for (const saved of data.accounts) {
      const a = this.accounts.get(saved.id);
      if (!a) continue; // an account no longer in the config
      a.subdomain = saved.subdomain;
      for (const d of saved.d1) a.d1.set(d.uuid, d);
      for (const b of saved.r2) a.r2.set(b.name, b);
      for (const sc of saved.scripts) {
        const script = { ...sc, modules: sc.modules.map((m) => ({ ...m, contents: new Uint8Array(Buffer.from(m.contents, "base64")) })) };
        a.scripts.set(script.name, script);
        this.runtime.scripts.set(script.workerName, this.runtimeConfig(a, script));
      }
    }
  }

  async start() {
    this.loadState();
    await this.runtime.start();
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        this.recordViolation({ kind: "emulator-error", method: req.method, path: req.url, errors: [String(e?.stack ?? e)] });
        if (!res.headersSent) {
          res.writeHead(500, { "content-type": "application/json" });
          res.end(JSON.stringify(fail(500, [[10002, `emulator internal error: ${e?.message ?? e}`]]).body));
        } else res.destroy();
      });
    });
    this.server.keepAliveTimeout = KEEP_ALIVE_MS;
    this.server.headersTimeout = KEEP_ALIVE_MS + 1000;
    this.server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.options.port ?? 0, "127.0.0.1", resolve);
    });
    const { port } = this.server.address();
    this.origin = `http://127.0.0.1:${port}`;
    this.apiUrl = `${this.origin}${API_PREFIX}`;
    this.controlUrl = `${this.origin}${CONTROL_PREFIX}`;
    await this.syncProxies();
    return this;
  }

  async close() {
    for (const p of this.proxies.values()) {
      p.server.close();
      p.server.closeAllConnections();
    }
    this.proxies.clear();
    if (this.server) {
      this.server.close();
      this.server.closeAllConnections();
      for (const s of this.sockets) s.destroy();
    }
    await this.runtime.dispose();
    if (this.ownsPersistDir) rmSync(this.persistDir, { recursive: true, force: true });
  }

  cleanupSync() {
    if (this.ownsPersistDir) rmSync(this.persistDir, { recursive: true, force: true });
  }

  recordViolation(v) {
    this.violations.push({ time: nowIso(), ...v });
  }

  log(entry) {
    this.requests.push({ seq: ++this.seq, time: nowIso(), ...entry });
  }

  // ---------------------------------------------------------------- HTTP entry

  async handle(req, res) {
    const url = new URL(req.url, "http://127.0.0.1");
    const dev = /^([a-z0-9_][a-z0-9-_]*)\.([a-z0-9-]+)\.workers\.dev(:\d+)?$/i.exec(req.headers.host ?? "");
    if (dev) return this.workersDev(dev[1].toLowerCase(), dev[2].toLowerCase(), req, res);
    const body = await readBody(req);
    if (url.pathname === CONTROL_PREFIX || url.pathname.startsWith(`${CONTROL_PREFIX}/`)) {
      return this.control(req, res, url, body);
    }
    const started = Date.now();
    const headers = lowerHeaders(req.headers);
    const apiPath = url.pathname.startsWith(`${API_PREFIX}/`) ? url.pathname.slice(API_PREFIX.length) : undefined;
    const match = apiPath === undefined ? { error: "unknown-route" } : this.openapi.match(req.method, apiPath);
    const entry = { method: req.method, path: url.pathname, operation: match.op?.operationId ?? null, status: null, mutating: req.method !== "GET" };
    const send = (out, { validate = true } = {}) => {
      if (validate && match.op) {
        const errs = this.openapi.validateResponse(match.op, out.status, "application/json", out.body);
        if (errs.length) this.recordViolation({ kind: "response", method: req.method, path: url.pathname, operation: match.op.operationId, errors: errs });
      }
      entry.status = out.status;
      entry.duration_ms = Date.now() - started;
      this.log(entry);
      res.writeHead(out.status, { "content-type": "application/json", ...(out.headers ?? {}) });
      res.end(JSON.stringify(out.body));
    };

    if (match.error) {
      const msg =
        match.error === "unknown-route"
          ? `No route for ${req.method} ${url.pathname}: not an operation of the OpenAPI subset (API base is ${API_PREFIX})`
          : `Method ${req.method} not allowed for ${match.template} (allowed: ${match.allowed.join(", ")})`;
      this.recordViolation({ kind: match.error, method: req.method, path: url.pathname, errors: [msg] });
      return send(fail(match.error === "unknown-route" ? 404 : 405, [[match.error === "unknown-route" ? 7003 : 7001, msg]]), { validate: false });
    }
    const op = match.op;
    const validated = await this.openapi.validateRequest(op, { params: match.params, query: url.searchParams, headers, body });
    if (validated.errors.length) {
      this.recordViolation({ kind: "request", method: req.method, path: url.pathname, operation: op.operationId, errors: validated.errors });
      const unique = [...new Set(validated.errors)];
      return send(fail(400, unique.map((e) => [1001, `request does not match the OpenAPI subset: ${e}`])));
    }
    entry.mutating = isMutating(op, validated.json);

    if (await this.applyFault("before", op, req, res, url, entry, send)) return;

    let out;
    try {
      const token = this.authenticate(op, headers, match.params);
      entry.token_id = token?.id;
      out = await this.dispatch(op, { params: match.params, query: url.searchParams, headers, body, json: validated.json, form: validated.form, token, url });
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      out = fail(e.status, [[e.code, e.message]]);
      if (e.headers) out.headers = e.headers;
    }
    if (op.method !== "GET" && out.status === 200) this.saveState();
    if (await this.applyFault("after", op, req, res, url, entry, send)) return;
    send(out);
  }

  async applyFault(when, op, req, res, url, entry, send) {
    const apiPath = url.pathname.slice(API_PREFIX.length);
    const f = this.faults.find(
      (x) =>
        x.remaining > 0 &&
        (x.when ?? "before") === when &&
        (!x.method || x.method.toUpperCase() === req.method) &&
        (!x.operation || x.operation === op.operationId) &&
        (!x.path || new RegExp(x.path).test(apiPath)),
    );
    if (!f) return false;
    f.remaining--;
    f.hits++;
    entry.fault = f.kind;
    if (f.kind === "delay") {
      await new Promise((r) => setTimeout(r, f.delay_ms ?? 1000));
      return false;
    }
    if (f.kind === "reset") {
      entry.status = 0;
      this.log(entry);
      req.socket.destroy();
      return true;
    }
    if (f.kind === "429") {
      const retryAfter = String(f.retry_after ?? 1);
      send({ ...fail(429, [[971, "Please wait and consider throttling your request speed"]]), headers: { "retry-after": retryAfter } });
      return true;
    }
    // "500" (or any other status given as the kind)
    const status = Number(f.kind) || 500;
    send(fail(status, [[10002, "Internal server error (injected by the emulator)"]]), { validate: false });
    return true;
  }

  authenticate(op, headers, params) {
    const isVerify = op.operationId.endsWith("tokens-verify-token");
    const value = (headers.authorization ?? "").replace(/^Bearer /, "");
    const token = this.tokens.get(value);
    if (!token || token.status !== "active") {
      if (isVerify) throw new ApiError(401, 1000, "Invalid API Token");
      throw new ApiError(403, 9109, "Invalid access token");
    }
    this.rateLimitCheck(token);
    if (isVerify) return token;
    if (params.account_id !== undefined) {
      if (!this.accounts.has(params.account_id) || !token.accounts.has(params.account_id)) {
        throw new ApiError(403, 10000, "Authentication error");
      }
    }
    const need = permissionFor(op);
    if (need && op.operationId !== "accounts-list-accounts") {
      const options = Array.isArray(need) ? need : [need];
      if (!options.some((p) => token.permissions.has(p))) throw new ApiError(403, 10000, "Authentication error");
    }
    return token;
  }

  /**
   * Cloudflare's global API limit: N requests (1,200) per window (5 minutes); going over blocks
   * every call of that user/account for a whole window, each answered 429/971 with retry-after.
   */
  rateLimitCheck(token) {
    const now = Date.now();
    const limit = token.rateLimit ?? this.rateLimit;
    let l = this.limiters.get(token.rateKey);
    if (!l) this.limiters.set(token.rateKey, (l = { hits: [], blockedUntil: 0, blocks: 0 }));
    if (l.blockedUntil > now) {
      const retry = Math.max(1, Math.ceil((l.blockedUntil - now) / 1000));
      throw new ApiError(429, 971, "Please wait and consider throttling your request speed", { "retry-after": String(retry) });
    }
    l.hits = l.hits.filter((t) => now - t < limit.windowMs);
    if (l.hits.length >= limit.requests) {
      l.blockedUntil = now + limit.windowMs;
      l.blocks++;
      l.hits = [];
      const retry = Math.max(1, Math.ceil(limit.windowMs / 1000));
      throw new ApiError(429, 971, "Please wait and consider throttling your request speed", { "retry-after": String(retry) });
    }
    l.hits.push(now);
  }

  account(params) {
    return this.accounts.get(params.account_id);
  }

  // ---------------------------------------------------------------- operations

  async dispatch(op, ctx) {
    if (op.operationId.startsWith("r2-") && ctx.params.account_id !== undefined && this.account(ctx.params)?.r2Enabled === false) {
      throw new ApiError(403, 10042, "Please enable R2 through the Cloudflare Dashboard.");
    }
    const h = this.handlers[op.operationId];
    if (!h) throw new ApiError(501, 10002, `emulator has no handler for ${op.operationId}`);
    return h.call(this, ctx);
  }

  get handlers() {
    return HANDLERS;
  }

  // Host-based workers.dev routing on the API port: `Host: SCRIPT.SUBDOMAIN.workers.dev`.
  async workersDev(script, subdomain, req, res) {
    const a = [...this.accounts.values()].find((x) => x.subdomain === subdomain);
    const s = a?.scripts.get(script);
    if (!s || !s.subdomainEnabled) {
      req.resume();
      res.writeHead(404, { "content-type": "text/plain" });
      res.end(`There is nothing here yet: no script '${script}' with its workers.dev route enabled under '${subdomain}'\n`);
      return;
    }
    await forwardToWorker(this.runtime, s.workerName, req, res);
  }

  // workers.dev routes: one 127.0.0.1 listener per enabled script.
  async syncProxies() {
    for (const a of this.accounts.values()) {
      for (const s of a.scripts.values()) {
        const want = s.subdomainEnabled && a.subdomain;
        const have = this.proxies.get(s.workerName);
        if (want && !have) {
          let port = this.workerPorts[s.name];
          if (port === undefined && this.workerPorts["*"] !== undefined && ![...this.proxies.values()].some((p) => p.pinnedAny)) port = this.workerPorts["*"];
          let server;
          try {
            server = await startWorkerProxy(this.runtime, s.workerName, port ?? 0);
          } catch (e) {
            const msg = `cannot listen on 127.0.0.1:${port ?? 0} for script '${s.name}' (${e.code ?? e.message}); free the port or pick another --worker-port`;
            process.stderr.write(`cloudflare-emulator: ${msg}\n`);
            throw new ApiError(500, 10002, `emulator: ${msg}`);
          }
          const url = `http://127.0.0.1:${server.address().port}`;
          this.proxies.set(s.workerName, { server, url, script: s.name, account: a.id, pinnedAny: port !== undefined && this.workerPorts[s.name] === undefined });
          if (this.options.onWorker) this.options.onWorker(s.name, url);
        } else if (!want && have) {
          have.server.close();
          have.server.closeAllConnections();
          this.proxies.delete(s.workerName);
        }
      }
    }
    for (const [name, p] of this.proxies) {
      const a = this.accounts.get(p.account);
      if (!a?.scripts.has(p.script)) {
        p.server.close();
        p.server.closeAllConnections();
        this.proxies.delete(name);
      }
    }
  }

  // ---------------------------------------------------------------- control endpoints

  async control(req, res, url, body) {
    const reply = (status, value) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(value));
    };
    const p = url.pathname.slice(CONTROL_PREFIX.length) || "/";
    const parse = () => {
      try {
        return body.length ? JSON.parse(body.toString("utf8")) : {};
      } catch (e) {
        throw new Error(`control request body is not JSON: ${e.message}`);
      }
    };
    try {
      if (p === "/health" && req.method === "GET") return reply(200, { ok: true, api: this.apiUrl });
      if (p === "/violations") {
        if (req.method === "GET") return reply(200, { violations: this.violations });
        if (req.method === "DELETE") {
          this.violations = [];
          return reply(200, { ok: true });
        }
      }
      if (p === "/requests") {
        if (req.method === "GET") {
          const since = Number(url.searchParams.get("since") ?? 0);
          return reply(200, { requests: this.requests.filter((r) => r.seq > since), last_seq: this.seq });
        }
        if (req.method === "DELETE") {
          this.requests = [];
          return reply(200, { ok: true, last_seq: this.seq });
        }
      }
      if (p === "/faults") {
        if (req.method === "GET") return reply(200, { faults: this.faults });
        if (req.method === "DELETE") {
          this.faults = [];
          return reply(200, { ok: true });
        }
        if (req.method === "POST") {
          const f = parse();
          const kinds = ["429", "500", "502", "503", "reset", "delay"];
          const kind = String(f.kind ?? "");
          if (!kinds.includes(kind)) return reply(400, { error: `fault 'kind' must be one of ${kinds.join(", ")}, got '${f.kind}'` });
          if (f.when !== undefined && !["before", "after"].includes(f.when)) return reply(400, { error: "fault 'when' must be 'before' (the call has no effect) or 'after' (the call takes effect, then the fault)" });
          if (f.path !== undefined) {
            try {
              new RegExp(f.path);
            } catch (e) {
              return reply(400, { error: `fault 'path' is not a valid regular expression: ${e.message}` });
            }
          }
          if (f.operation !== undefined && !this.openapi.listOperations().some((o) => o.operationId === f.operation)) {
            return reply(400, { error: `fault 'operation' '${f.operation}' is not an operationId of the OpenAPI subset` });
          }
          const fault = {
            id: ++this.faultSeq,
            kind,
            method: f.method,
            path: f.path,
            operation: f.operation,
            when: f.when ?? "before",
            remaining: Number(f.count ?? 1),
            hits: 0,
            retry_after: f.retry_after,
            delay_ms: f.delay_ms,
          };
          this.faults.push(fault);
          return reply(200, { fault });
        }
      }
      if (p === "/workers" && req.method === "GET") {
        const scripts = {};
        const workers = [];
        for (const pr of this.proxies.values()) {
          scripts[pr.script] = pr.url;
          const a = this.accounts.get(pr.account);
          workers.push({ account_id: pr.account, script: pr.script, url: pr.url, workers_dev: `https://${pr.script}.${a.subdomain}.workers.dev` });
        }
        return reply(200, { scripts, workers });
      }
      if (p === "/state" && req.method === "GET") return reply(200, this.snapshot());
      if (p === "/rate-limit") {
        if (req.method === "GET") {
          const limiters = Object.fromEntries([...this.limiters].map(([k, l]) => [k, { recent: l.hits.length, blocked_until: l.blockedUntil ? new Date(l.blockedUntil).toISOString() : null, blocks: l.blocks }]));
          return reply(200, { requests: this.rateLimit.requests, window_seconds: this.rateLimit.windowMs / 1000, limiters });
        }
        if (req.method === "PUT") {
          const f = parse();
          if (!(f.requests > 0) || !(f.window_seconds > 0)) return reply(400, { error: "rate-limit needs {requests: N > 0, window_seconds: S > 0}" });
          this.rateLimit = { requests: f.requests, windowMs: f.window_seconds * 1000 };
          this.limiters.clear();
          return reply(200, { ok: true });
        }
      }
      const acct = /^\/accounts\/([0-9a-f]{32})$/.exec(p);
      if (acct && req.method === "PATCH") {
        const a = this.accounts.get(acct[1]);
        if (!a) return reply(404, { error: `no account ${acct[1]} in the emulator's config` });
        const f = parse();
        if (f.r2_enabled !== undefined) a.r2Enabled = Boolean(f.r2_enabled);
        if (f.workers_subdomain !== undefined) {
          a.subdomain = f.workers_subdomain;
          await this.syncProxies();
        }
        return reply(200, { ok: true, r2_enabled: a.r2Enabled, workers_subdomain: a.subdomain });
      }
      if (p === "/scheduled" && req.method === "POST") {
        // Fires a script's scheduled handler, as a Cron Trigger would (only if one is installed).
        const f = parse();
        const a = this.accounts.get(f.account_id ?? [...this.accounts.keys()][0]);
        const sc = a?.scripts.get(f.script);
        if (!sc) return reply(404, { error: `no script '${f.script}'` });
        const cron = f.cron ?? sc.schedules?.[0]?.cron;
        if (!cron || !(sc.schedules ?? []).some((x) => x.cron === cron)) {
          return reply(409, { error: `script '${f.script}' has no Cron Trigger${f.cron ? ` '${f.cron}'` : ""}; PUT its /schedules first` });
        }
        const r = await this.runtime.scheduled(sc.workerName, cron, f.scheduled_time);
        return reply(200, { ok: true, cron, outcome: r.outcome, no_retry: r.noRetry });
      }
      if (p === "/r2/seed" && req.method === "POST") {
        // Test hook: writes `count` objects straight into a bucket's storage (no API calls, no rate limit).
        const f = parse();
        const a = this.accounts.get(f.account_id ?? [...this.accounts.keys()][0]);
        const b = a?.r2.get(f.bucket);
        if (!b) return reply(404, { error: `no bucket '${f.bucket}'` });
        const count = Number(f.count ?? 1);
        const prefix = f.prefix ?? "seed/";
        let written = 0;
        // Short admin calls (1,000 objects each) keep every fetch into workerd brief.
        for (let i = 0; i < count; i += 1000) {
          const n = Math.min(1000, count - i);
          const body = { binding: this.runtime.r2.get(b.storageId), count: n, prefix: `${prefix}${String(i).padStart(8, "0")}-`, size: Number(f.size ?? 16) };
          let r;
          // A reused keep-alive socket that workerd closed fails the fetch; writing the same
          // keys again is harmless, so retry.
          for (let attempt = 1; ; attempt++) {
            try {
              r = await this.runtime.admin("/r2/seed", { body });
              break;
            } catch (e) {
              if (attempt >= 5) throw e;
              await new Promise((res) => setTimeout(res, 200 * attempt));
            }
          }
          if (!r.ok) return reply(500, { error: r.error, written });
          written += r.written;
        }
        return reply(200, { ok: true, written });
      }
      if (p === "/r2/count" && req.method === "POST") {
        const f = parse();
        const a = this.accounts.get(f.account_id ?? [...this.accounts.keys()][0]);
        const b = a?.r2.get(f.bucket);
        if (!b) return reply(404, { error: `no bucket '${f.bucket}'` });
        const r = await this.runtime.admin("/r2/total", { body: { binding: this.runtime.r2.get(b.storageId), prefix: f.prefix } });
        return reply(200, { objects: r.objects, bytes: r.bytes, keys: f.keys ? r.keys : undefined });
      }
      if (p === "/operations" && req.method === "GET") return reply(200, { operations: this.openapi.listOperations(), spec: this.openapi.specPath, errata: ERRATA.map(({ id, why }) => ({ id, why })) });
      const imp = /^\/d1-import\/([^/]+)\/([^/]+)$/.exec(p);
      if (imp && req.method === "PUT") {
        this.imports.set(`${imp[1]}/${imp[2]}`, { sql: body.toString("utf8"), md5: createHash("md5").update(body).digest("hex") });
        return reply(200, { ok: true });
      }
      return reply(404, { error: `unknown control endpoint ${req.method} ${url.pathname}` });
    } catch (e) {
      return reply(400, { error: e.message });
    }
  }

  snapshot() {
    const accounts = {};
    for (const a of this.accounts.values()) {
      accounts[a.id] = {
        name: a.name,
        workers_subdomain: a.subdomain,
        r2_enabled: a.r2Enabled,
        d1_databases: [...a.d1.values()].map((d) => ({ uuid: d.uuid, name: d.name })),
        r2_buckets: [...a.r2.values()].map((b) => b.name),
        scripts: [...a.scripts.values()].map((s) => ({
          name: s.name,
          migration_tag: s.migrationTag ?? null,
          durable_object_classes: Object.keys(s.classes),
          bindings: s.bindings.map((b) => ({ type: b.type, name: b.name })),
          secrets: s.bindings.filter((b) => b.type === "secret_text").map((b) => b.name),
          workers_dev_enabled: s.subdomainEnabled,
          schedules: (s.schedules ?? []).map((x) => x.cron),
          modules: s.modules.map((m) => ({ name: m.name, type: m.type, size: m.contents.length })),
        })),
      };
    }
    return { accounts };
  }

  // ---------------------------------------------------------------- helpers used by handlers

  async d1Run(db, statements, mode) {
    const r = await this.runtime.admin("/d1/query", { body: { binding: this.runtime.d1.get(db.storageId), statements, mode } });
    if (!r.ok) throw new ApiError(400, 7500, r.error);
    return r.results;
  }

  async r2Empty(bucket) {
    const r = await this.runtime.admin("/r2/count", { body: { binding: this.runtime.r2.get(bucket.storageId) } });
    return r.empty;
  }

  bucket(ctx) {
    const b = this.account(ctx.params).r2.get(ctx.params.bucket_name);
    const j = ctx.headers["cf-r2-jurisdiction"];
    if (!b || (j && j !== (b.jurisdiction ?? "default"))) throw new ApiError(404, 10006, "The specified bucket does not exist.");
    return b;
  }

  database(ctx) {
    const db = this.account(ctx.params).d1.get(ctx.params.database_id);
    if (!db) throw new ApiError(404, 7404, `The database ${ctx.params.database_id} could not be found`);
    return db;
  }

  script(ctx) {
    const s = this.account(ctx.params).scripts.get(ctx.params.script_name);
    if (!s) throw new ApiError(404, 10007, "This Worker does not exist on your account.");
    return s;
  }

  /** Rebuilds a script's Miniflare config from its bindings and tries it; throws ApiError 10021 if workerd rejects it. */
  async deployScripts(mutate) {
    await this.runtime.exclusive(async () => {
      const candidate = new Map(this.runtime.scripts);
      mutate(candidate);
      try {
        await this.runtime.tryScripts(candidate);
      } catch (e) {
        throw new ApiError(400, 10021, `Uncaught error while loading the script in workerd: ${firstLine(e?.message ?? e)}`);
      }
    });
    await this.syncProxies();
  }

  runtimeConfig(account, s) {
    const vars = {};
    const d1 = {};
    const r2 = {};
    const durableObjects = {};
    for (const b of s.bindings) {
      if (b.type === "plain_text" || b.type === "secret_text") vars[b.name] = b.text;
      // Storage resolved at upload time: deleting the database or bucket later leaves the
      // script bound to the (orphaned) storage instead of breaking every later reload.
      else if (b.type === "d1") d1[b.name] = s.storageIds[b.name];
      else if (b.type === "r2_bucket") r2[b.name] = s.storageIds[b.name];
      else if (b.type === "durable_object_namespace") {
        if (b.script_name && b.script_name !== s.name) {
          const other = account.scripts.get(b.script_name);
          durableObjects[b.name] = { className: b.class_name, scriptName: other.workerName };
        } else {
          const c = s.classes[b.class_name];
          durableObjects[b.name] = { className: b.class_name, useSQLite: c.sqlite, unsafeUniqueKey: c.uniqueKey };
        }
      }
    }
    const main = s.modules.find((m) => m.name === s.mainModule);
    return {
      modules: [main, ...s.modules.filter((m) => m !== main)],
      compatibilityDate: s.compatibilityDate,
      compatibilityFlags: s.compatibilityFlags,
      vars,
      d1,
      r2,
      durableObjects,
    };
  }
}

function firstLine(s) {
  return String(s).split("\n").slice(0, 3).join(" ").slice(0, 500);
}

function lowerHeaders(h) {
  const out = {};
  for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
  return out;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function pageOf(items, query, { defaultPer, maxPer }) {
  const page = Number(query.get("page") ?? 1);
  const per = Math.min(Number(query.get("per_page") ?? defaultPer), maxPer);
  const slice = items.slice((page - 1) * per, page * per);
  return { slice, info: { page, per_page: per, count: slice.length, total_count: items.length } };
}

function sqlStatements(json) {
  const items = json.batch ?? [json];
  const out = [];
  for (const q of items) {
    const parts = splitSql(q.sql);
    const params = q.params ?? [];
    if (parts.length === 0) throw new ApiError(400, 7500, "No SQL statements in the query: SQLITE_ERROR");
    if (parts.length > 1 && params.length > 0) {
      throw new ApiError(400, 7500, `params were given for ${parts.length} statements; bind params to a single statement (use batch for several): SQLITE_ERROR`);
    }
    for (const sql of parts) out.push({ sql, params });
  }
  return out;
}

const dbView = (d) => ({ uuid: d.uuid, name: d.name, created_at: d.created_at, version: d.version });
const bucketView = (b) => {
  const v = { name: b.name, creation_date: b.creation_date, location: b.location, storage_class: b.storage_class };
  if (b.jurisdiction) v.jurisdiction = b.jurisdiction;
  return v;
};
const scriptView = (s) => {
  const v = { id: s.name, created_on: s.created_on, modified_on: s.modified_on, etag: s.etag, logpush: false, has_modules: true };
  if (s.migrationTag) v.migration_tag = s.migrationTag;
  return v;
};
const accountView = (a) => ({ id: a.id, name: a.name, type: "standard", created_on: a.created_on, settings: { enforce_twofactor: false } });

const HANDLERS = {
  // ------------------------------------------------------------ tokens and accounts
  "user-api-tokens-verify-token"(ctx) {
    if (ctx.token.owner !== "user") throw new ApiError(401, 1000, "Invalid API Token");
    return ok({ id: ctx.token.id, status: ctx.token.status }, { messages: [{ code: 10000, message: "This API Token is valid and active" }] });
  },
  "account-api-tokens-verify-token"(ctx) {
    if (ctx.token.owner !== "account" || ctx.token.account_id !== ctx.params.account_id) throw new ApiError(401, 1000, "Invalid API Token");
    return ok({ id: ctx.token.id, status: ctx.token.status }, { messages: [{ code: 10000, message: "This API Token is valid and active" }] });
  },
  "accounts-list-accounts"(ctx) {
    // Accounts the token may read settings of (a token without Account Settings Read sees none).
    let list = [...this.accounts.values()].filter((a) => ctx.token.accounts.has(a.id) && ctx.token.permissions.has("Account Settings Read"));
    const name = ctx.query.get("name");
    if (name) list = list.filter((a) => a.name === name);
    if (ctx.query.get("direction") === "desc") list = list.reverse();
    const { slice, info } = pageOf(list, ctx.query, { defaultPer: 20, maxPer: 50 });
    return ok(slice.map(accountView), { result_info: info });
  },

  // ------------------------------------------------------------ D1
  "cloudflare-d1-list-databases"(ctx) {
    let list = [...this.account(ctx.params).d1.values()];
    const name = ctx.query.get("name");
    if (name) list = list.filter((d) => d.name.includes(name));
    const { slice, info } = pageOf(list, ctx.query, { defaultPer: 1000, maxPer: 10000 });
    return ok(slice.map(dbView), { result_info: info });
  },
  async "cloudflare-d1-create-database"(ctx) {
    const a = this.account(ctx.params);
    if ([...a.d1.values()].some((d) => d.name === ctx.json.name)) throw new ApiError(400, 7502, "A database with that name already exists");
    const uuid = randomUUID();
    const db = { uuid, name: ctx.json.name, created_at: nowIso(), version: "production", storageId: `d1-${uuid}` };
    await this.runtime.exclusive(async () => {
      this.runtime.addD1(db.storageId);
      await this.runtime.apply();
    });
    a.d1.set(uuid, db);
    return ok(dbView(db));
  },
  async "cloudflare-d1-get-database"(ctx) {
    const db = this.database(ctx);
    const info = await this.runtime.admin("/d1/info", { body: { binding: this.runtime.d1.get(db.storageId) } });
    let v = { ...dbView(db), num_tables: info.num_tables, file_size: info.file_size };
    const fields = ctx.query.get("fields");
    if (fields) v = Object.fromEntries(Object.entries(v).filter(([k]) => fields.split(",").includes(k)));
    return ok(v);
  },
  async "cloudflare-d1-delete-database"(ctx) {
    const db = this.database(ctx);
    this.account(ctx.params).d1.delete(db.uuid);
    await this.runtime.exclusive(async () => {
      this.runtime.removeD1(db.storageId);
      await this.runtime.apply();
    });
    return ok(null);
  },
  async "cloudflare-d1-query-database"(ctx) {
    const db = this.database(ctx);
    return ok(await this.d1Run(db, sqlStatements(ctx.json), "query"));
  },
  async "cloudflare-d1-raw-database-query"(ctx) {
    const db = this.database(ctx);
    return ok(await this.d1Run(db, sqlStatements(ctx.json), "raw"));
  },
  async "cloudflare-d1-import-database"(ctx) {
    const db = this.database(ctx);
    const j = ctx.json;
    if (j.action === "init") {
      const filename = `${db.uuid}-${j.etag}.sql`;
      return ok({ success: true, type: "import", filename, upload_url: `${this.controlUrl}/d1-import/${db.uuid}/${filename}` });
    }
    if (j.action === "ingest") {
      const up = this.imports.get(`${db.uuid}/${j.filename}`);
      const bookmark = `bookmark-${randomBytes(6).toString("hex")}`;
      let status;
      if (!up) status = { success: false, type: "import", status: "error", error: `file ${j.filename} was not uploaded to the upload_url`, at_bookmark: bookmark };
      else if (up.md5 !== j.etag) status = { success: false, type: "import", status: "error", error: `etag ${j.etag} does not match the uploaded file's md5 ${up.md5}`, at_bookmark: bookmark };
      else {
        try {
          const stmts = splitSql(up.sql).map((sql) => ({ sql, params: [] }));
          await this.d1Run(db, stmts, "query");
          status = { success: true, type: "import", status: "complete", at_bookmark: bookmark, result: { num_queries: stmts.length, final_bookmark: bookmark, meta: {} } };
        } catch (e) {
          status = { success: false, type: "import", status: "error", error: e.message, at_bookmark: bookmark };
        }
      }
      this.imports.set(`status/${bookmark}`, status);
      return ok(status);
    }
    const st = this.imports.get(`status/${j.current_bookmark}`);
    if (!st) throw new ApiError(400, 7500, `no import with bookmark ${j.current_bookmark}`);
    return ok(st);
  },

  // ------------------------------------------------------------ R2
  "r2-list-buckets"(ctx) {
    let list = [...this.account(ctx.params).r2.values()].sort((x, y) => (x.name < y.name ? -1 : 1));
    const dir = ctx.query.get("direction") === "desc" ? -1 : 1;
    if (dir < 0) list.reverse();
    const contains = ctx.query.get("name_contains");
    if (contains) list = list.filter((b) => b.name.includes(contains));
    let after = ctx.query.get("start_after");
    const cursor = ctx.query.get("cursor");
    if (cursor) {
      try {
        after = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")).after;
      } catch {
        throw new ApiError(400, 10040, "The provided cursor is not valid.");
      }
    }
    if (after) list = list.filter((b) => (dir > 0 ? b.name > after : b.name < after));
    const per = Math.min(Number(ctx.query.get("per_page") ?? 20), 1000);
    const slice = list.slice(0, per);
    const info = { per_page: per };
    if (list.length > per) info.cursor = Buffer.from(JSON.stringify({ after: slice[slice.length - 1].name })).toString("base64url");
    return ok({ buckets: slice.map(bucketView) }, { result_info: info });
  },
  async "r2-create-bucket"(ctx) {
    const a = this.account(ctx.params);
    const name = ctx.json.name;
    if (a.r2.has(name)) throw new ApiError(409, 10073, "The bucket you tried to create already exists, and you own it.");
    const b = {
      name,
      creation_date: nowIso(),
      location: (ctx.json.locationHint ?? "enam").toUpperCase(),
      storage_class: ctx.json.storageClass ?? "Standard",
      storageId: `r2-${a.id}-${name}-${randomBytes(4).toString("hex")}`,
    };
    const j = ctx.headers["cf-r2-jurisdiction"];
    if (j && j !== "default") b.jurisdiction = j;
    await this.runtime.exclusive(async () => {
      this.runtime.addR2(b.storageId);
      await this.runtime.apply();
    });
    a.r2.set(name, b);
    return ok(bucketView(b));
  },
  "r2-get-bucket"(ctx) {
    return ok(bucketView(this.bucket(ctx)));
  },
  async "r2-delete-bucket"(ctx) {
    const b = this.bucket(ctx);
    if (!(await this.r2Empty(b))) throw new ApiError(409, 10008, "The bucket you tried to delete is not empty.");
    this.account(ctx.params).r2.delete(b.name);
    await this.runtime.exclusive(async () => {
      this.runtime.removeR2(b.storageId);
      await this.runtime.apply();
    });
    return ok({});
  },
  async "r2-list-objects"(ctx) {
    const b = this.bucket(ctx);
    const per = Math.max(1, Math.min(Number(ctx.query.get("per_page") ?? 1000), 1000));
    const r = await this.runtime.admin("/r2/list", {
      body: {
        binding: this.runtime.r2.get(b.storageId),
        limit: per,
        prefix: ctx.query.get("prefix") ?? undefined,
        cursor: ctx.query.get("cursor") ?? undefined,
        delimiter: ctx.query.get("delimiter") ?? undefined,
        startAfter: ctx.query.get("start_after") ?? undefined,
      },
    });
    if (!r.ok) throw new ApiError(400, 10040, `R2 list failed: ${r.error}`);
    // is_truncated is a string on the wire (Cloudflare's SDK types it so), not a JSON boolean.
    const info = { per_page: per, count: r.objects.length, is_truncated: String(Boolean(r.truncated)) };
    if (r.cursor) info.cursor = r.cursor;
    return ok(r.objects, { result_info: info });
  },
  async "r2-put-object"(ctx) {
    const b = this.bucket(ctx);
    const r = await this.runtime.admin("/r2/put", {
      search: `?binding=${encodeURIComponent(this.runtime.r2.get(b.storageId))}&key=${encodeURIComponent(ctx.params.object_key)}`,
      body: new Uint8Array(ctx.body),
      headers: { "content-type": ctx.headers["content-type"] ?? "application/octet-stream" },
    });
    if (!r.ok) throw new ApiError(400, 10040, `R2 put failed: ${r.error}`);
    return ok({ key: r.key, etag: r.etag, size: String(r.size), version: r.version, uploaded: r.uploaded });
  },
  async "r2-delete-object"(ctx) {
    const b = this.bucket(ctx);
    // S3 semantics: deleting a missing key succeeds.
    await this.runtime.admin("/r2/delete", { body: { binding: this.runtime.r2.get(b.storageId), key: ctx.params.object_key } });
    return ok({ key: ctx.params.object_key });
  },

  // ------------------------------------------------------------ Workers
  "worker-script-list-workers"(ctx) {
    return ok([...this.account(ctx.params).scripts.values()].map(scriptView));
  },
  async "worker-script-upload-worker-module"(ctx) {
    const a = this.account(ctx.params);
    const name = ctx.params.script_name;
    const prev = a.scripts.get(name);
    const meta = ctx.form.metadata;
    const modules = ctx.form.modules;
    if (!meta.main_module) throw new ApiError(400, 10021, "metadata.main_module is required: the emulator runs ES module Workers only (no body_part service-worker scripts)");
    if (!modules.some((m) => m.name === meta.main_module)) {
      throw new ApiError(400, 10021, `main_module '${meta.main_module}' names no uploaded part (parts: ${modules.map((m) => m.name).join(", ") || "none"})`);
    }
    const mainType = modules.find((m) => m.name === meta.main_module).type;
    if (mainType !== "ESModule") throw new ApiError(400, 10021, `main_module '${meta.main_module}' must be an application/javascript+module part`);

    // Durable Object migrations.
    const classes = structuredClone(prev?.classes ?? {});
    let migrationTag = prev?.migrationTag;
    const mig = meta.migrations;
    if (mig) {
      if ((mig.old_tag ?? undefined) !== (prev?.migrationTag ?? undefined)) {
        throw new ApiError(400, 10079, `Migration tag precondition failed; current tag is ${prev?.migrationTag ?? "not set"}`);
      }
      const steps = mig.steps ?? [mig];
      for (const step of steps) {
        for (const [list, sqlite] of [[step.new_classes, false], [step.new_sqlite_classes, true]]) {
          for (const c of list ?? []) {
            if (classes[c]) throw new ApiError(400, 10074, `Cannot apply new-class migration to class '${c}' that is already depended on by this script`);
            classes[c] = { sqlite, uniqueKey: `${a.id}-${name}-${c}-${randomBytes(4).toString("hex")}` };
          }
        }
        for (const r of step.renamed_classes ?? []) {
          if (!classes[r.from]) throw new ApiError(400, 10074, `Cannot rename class '${r.from}': no such Durable Object class in this script`);
          classes[r.to] = classes[r.from];
          delete classes[r.from];
        }
        for (const c of step.deleted_classes ?? []) {
          if (!classes[c]) throw new ApiError(400, 10074, `Cannot delete class '${c}': no such Durable Object class in this script`);
          delete classes[c];
        }
        if ((step.transferred_classes ?? []).length) throw new ApiError(400, 10021, "transferred_classes migrations are not supported by the emulator");
      }
      if (mig.new_tag !== undefined) migrationTag = mig.new_tag;
    }

    // Bindings: exactly what the metadata declares, plus kept types from the previous version.
    const declared = meta.bindings ?? [];
    const names = new Set();
    const bindings = [];
    for (const b of declared) {
      if (names.has(b.name)) throw new ApiError(400, 10021, `binding name '${b.name}' is declared twice`);
      names.add(b.name);
      if (b.type === "d1") {
        const id = b.id ?? b.database_id;
        if (!a.d1.has(id)) throw new ApiError(400, 10021, `binding ${b.name} of type d1 must have a valid id specified: no D1 database ${id} in this account`);
      } else if (b.type === "r2_bucket") {
        if (!a.r2.has(b.bucket_name)) throw new ApiError(400, 10085, `R2 bucket '${b.bucket_name}' not found (binding ${b.name})`);
      } else if (b.type === "durable_object_namespace") {
        if (!b.class_name) throw new ApiError(400, 10021, `durable_object_namespace binding ${b.name} needs class_name`);
        if (b.script_name && b.script_name !== name) {
          const other = a.scripts.get(b.script_name);
          if (!other?.classes[b.class_name]) throw new ApiError(400, 10061, `Durable Object class '${b.class_name}' of script '${b.script_name}' does not exist (binding ${b.name})`);
        } else if (!classes[b.class_name]) {
          throw new ApiError(
            400,
            10061,
            `Cannot create binding for class '${b.class_name}' because it is not currently configured to implement Durable Objects. Did you forget to apply a migration?`,
          );
        }
      } else if (b.type !== "plain_text" && b.type !== "secret_text") {
        throw new ApiError(400, 10021, `binding type '${b.type}' (binding ${b.name}) is not supported by the emulator`);
      }
      bindings.push(structuredClone(b));
    }
    for (const kept of meta.keep_bindings ?? []) {
      for (const b of prev?.bindings ?? []) if (b.type === kept && !names.has(b.name)) bindings.push(b);
    }
    const storageIds = {};
    for (const b of bindings) {
      if (b.type === "d1") storageIds[b.name] = a.d1.get(b.id ?? b.database_id)?.storageId ?? prev?.storageIds[b.name];
      if (b.type === "r2_bucket") storageIds[b.name] = a.r2.get(b.bucket_name)?.storageId ?? prev?.storageIds[b.name];
    }
    const t = nowIso();
    const s = {
      storageIds,
      name,
      workerName: prev?.workerName ?? `w-${a.id}-${name}`,
      created_on: prev?.created_on ?? t,
      modified_on: t,
      etag: createHash("sha256").update(ctx.body).digest("hex"),
      mainModule: meta.main_module,
      modules,
      compatibilityDate: meta.compatibility_date ?? "2021-11-03",
      compatibilityFlags: meta.compatibility_flags ?? [],
      bindings,
      classes,
      migrationTag,
      subdomainEnabled: prev?.subdomainEnabled ?? false,
      // An upload leaves the script's Cron Triggers alone (wrangler PUTs /schedules separately).
      schedules: prev?.schedules ?? [],
      previewsEnabled: prev?.previewsEnabled ?? false,
    };
    await this.deployScripts((candidate) => candidate.set(s.workerName, this.runtimeConfig(a, s)));
    a.scripts.set(name, s);
    await this.syncProxies();
    return ok({ ...scriptView(s), startup_time_ms: 0 });
  },
  async "worker-script-delete-worker"(ctx) {
    const a = this.account(ctx.params);
    const s = this.script(ctx);
    const force = ctx.query.get("force") === "true";
    const dependents = [...a.scripts.values()].filter(
      (o) => o !== s && o.bindings.some((b) => b.type === "durable_object_namespace" && b.script_name === s.name),
    );
    if (dependents.length && !force) {
      throw new ApiError(400, 10064, `Cannot delete '${s.name}': its Durable Object namespaces are bound by ${dependents.map((d) => d.name).join(", ")}; retry with force=true`);
    }
    a.scripts.delete(s.name);
    await this.deployScripts((candidate) => candidate.delete(s.workerName));
    return ok(null);
  },
  "worker-script-list-secrets"(ctx) {
    const s = this.script(ctx);
    return ok(s.bindings.filter((b) => b.type === "secret_text").map((b) => ({ name: b.name, type: "secret_text" })));
  },
  async "worker-script-put-secret"(ctx) {
    const a = this.account(ctx.params);
    const s = this.script(ctx);
    const { name, text } = ctx.json;
    const clash = s.bindings.find((b) => b.name === name && b.type !== "secret_text");
    if (clash) throw new ApiError(400, 10053, `Binding name '${name}' is already in use by a ${clash.type} binding`);
    const next = { ...s, bindings: [...s.bindings.filter((b) => b.name !== name), { type: "secret_text", name, text }], modified_on: nowIso() };
    await this.deployScripts((candidate) => candidate.set(s.workerName, this.runtimeConfig(a, next)));
    a.scripts.set(s.name, next);
    return ok({ name, type: "secret_text" });
  },
  async "worker-script-delete-secret"(ctx) {
    const a = this.account(ctx.params);
    const s = this.script(ctx);
    const name = ctx.params.secret_name;
    if (!s.bindings.some((b) => b.type === "secret_text" && b.name === name)) throw new ApiError(404, 10056, `Secret '${name}' not found on script '${s.name}'`);
    const next = { ...s, bindings: s.bindings.filter((b) => !(b.type === "secret_text" && b.name === name)), modified_on: nowIso() };
    await this.deployScripts((candidate) => candidate.set(s.workerName, this.runtimeConfig(a, next)));
    a.scripts.set(s.name, next);
    return ok(null);
  },
  "worker-script-get-subdomain"(ctx) {
    const s = this.script(ctx);
    return ok({ enabled: s.subdomainEnabled, previews_enabled: s.previewsEnabled });
  },
  async "worker-script-post-subdomain"(ctx) {
    const a = this.account(ctx.params);
    const s = this.script(ctx);
    if (ctx.json.enabled && !a.subdomain) {
      throw new ApiError(400, 10007, "This account does not have a workers.dev subdomain yet; create one with PUT /accounts/{account_id}/workers/subdomain");
    }
    s.subdomainEnabled = ctx.json.enabled;
    if (ctx.json.previews_enabled !== undefined) s.previewsEnabled = ctx.json.previews_enabled;
    await this.syncProxies();
    return ok({ enabled: s.subdomainEnabled, previews_enabled: s.previewsEnabled });
  },
  async "worker-script-delete-subdomain"(ctx) {
    const s = this.script(ctx);
    s.subdomainEnabled = false;
    s.previewsEnabled = false;
    await this.syncProxies();
    return ok({ enabled: false, previews_enabled: false });
  },
  "worker-cron-trigger-get-cron-triggers"(ctx) {
    const s = this.script(ctx);
    return ok({ schedules: s.schedules ?? [] });
  },
  "worker-cron-trigger-update-cron-triggers"(ctx) {
    const s = this.script(ctx);
    const list = ctx.json;
    const seen = new Set();
    for (const item of list) {
      const why = cronProblem(item.cron);
      if (why) throw new ApiError(400, 10100, `Invalid cron expression '${item.cron}': ${why}`);
      if (seen.has(item.cron)) throw new ApiError(400, 10100, `Duplicate cron expression '${item.cron}'`);
      seen.add(item.cron);
    }
    const t = nowIso();
    const before = new Map((s.schedules ?? []).map((x) => [x.cron, x]));
    // PUT replaces the whole list; [] removes every trigger.
    s.schedules = list.map((x) => ({ cron: x.cron, created_on: before.get(x.cron)?.created_on ?? t, modified_on: t }));
    return ok({ schedules: s.schedules });
  },
  "worker-subdomain-get-subdomain"(ctx) {
    const a = this.account(ctx.params);
    if (!a.subdomain) throw new ApiError(404, 10007, "This account does not have a workers.dev subdomain");
    return ok({ subdomain: a.subdomain });
  },
  async "worker-subdomain-create-subdomain"(ctx) {
    const a = this.account(ctx.params);
    const sub = ctx.json?.subdomain;
    if (typeof sub !== "string" || !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(sub)) {
      throw new ApiError(400, 10000, "body must be {\"subdomain\": \"<lower-case letters, digits and dashes>\"}");
    }
    if ([...this.accounts.values()].some((o) => o !== a && o.subdomain === sub)) throw new ApiError(409, 10036, `The subdomain '${sub}' is already taken`);
    a.subdomain = sub;
    await this.syncProxies();
    return ok({ subdomain: sub });
  },
};

/** Why a cron expression is not one Cloudflare accepts (5 fields, each a number, range, list, step or *), or undefined. */
export function cronProblem(cron) {
  if (typeof cron !== "string") return "not a string";
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== 5) return `has ${fields.length} fields; Cron Triggers take 5 (minute hour day-of-month month day-of-week)`;
  const ok = /^(\*|\d+(-\d+)?)(\/\d+)?(,(\*|\d+(-\d+)?)(\/\d+)?)*$|^[A-Z]{3}(-[A-Z]{3})?$|^(\d+|[A-Z]{3})L$|^L$|^\d+#\d$/i;
  for (const f of fields) if (!ok.test(f)) return `field '${f}' is not valid`;
  return undefined;
}

export function loadConfig(file) {
  if (!file) return DEFAULT_CONFIG;
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`emulator config ${file} could not be read (${e.code ?? e.message}); pass a JSON file with {accounts, tokens}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`emulator config ${file} is not valid JSON: ${e.message}`);
  }
}

export async function startEmulator(options = {}) {
  const e = new Emulator(options);
  await e.start();
  return e;
}
