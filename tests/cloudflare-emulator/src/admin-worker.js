// Source of the internal admin Worker. It runs inside the same Miniflare instance as the
// uploaded scripts and binds every emulated D1 database and R2 bucket, so the REST API's
// /query, /raw and R2 object routes act on exactly the storage the uploaded Workers see.
// It is reachable only from the emulator process (its own 127.0.0.1 socket) and speaks a
// small JSON protocol; it is not part of the emulated Cloudflare API.

export const ADMIN_WORKER_SOURCE = String.raw`
const json = (v, status = 200) => new Response(JSON.stringify(v), { status, headers: { "content-type": "application/json" } });
const cleanError = (e) => String(e && e.message ? e.message : e).replace(/^D1_ERROR:\s*/, "").replace(/^Error:\s*/, "");

function pickMeta(m) {
  const meta = {};
  for (const k of ["changed_db", "changes", "duration", "last_row_id", "rows_read", "rows_written", "size_after"]) {
    if (m && typeof m[k] === "number") meta[k] = m[k];
    if (m && typeof m[k] === "boolean") meta[k] = m[k];
  }
  return meta;
}

async function d1(env, body) {
  const db = env[body.binding];
  if (!db) return json({ ok: false, error: "no such D1 binding " + body.binding }, 500);
  const stmts = body.statements;
  try {
    if (body.mode === "raw" && stmts.length === 1) {
      const started = Date.now();
      const rows = await db.prepare(stmts[0].sql).bind(...(stmts[0].params || [])).raw({ columnNames: true });
      const columns = rows.length ? rows.shift() : [];
      return json({ ok: true, results: [{ success: true, meta: { duration: Date.now() - started }, results: { columns, rows } }] });
    }
    let results;
    if (stmts.length === 1) {
      results = [await db.prepare(stmts[0].sql).bind(...(stmts[0].params || [])).all()];
    } else {
      results = await db.batch(stmts.map((s) => db.prepare(s.sql).bind(...(s.params || []))));
    }
    const out = results.map((r) => {
      const rows = r.results || [];
      if (body.mode === "raw") {
        const columns = rows.length ? Object.keys(rows[0]) : [];
        return { success: true, meta: pickMeta(r.meta), results: { columns, rows: rows.map((o) => columns.map((c) => o[c])) } };
      }
      return { success: true, meta: pickMeta(r.meta), results: rows };
    });
    return json({ ok: true, results: out });
  } catch (e) {
    return json({ ok: false, error: cleanError(e) });
  }
}

async function d1Info(env, body) {
  const db = env[body.binding];
  const r = await db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'").all();
  return json({ ok: true, num_tables: r.results[0].n, file_size: (r.meta && r.meta.size_after) || 0 });
}

function objectInfo(o) {
  return {
    key: o.key,
    size: o.size,
    etag: o.etag,
    last_modified: o.uploaded.toISOString(),
    http_metadata: o.httpMetadata || {},
    custom_metadata: o.customMetadata || {},
    storage_class: "Standard",
  };
}

async function r2(env, op, url, request) {
  if (op === "put") {
    const b = env[url.searchParams.get("binding")];
    const key = url.searchParams.get("key");
    const contentType = request.headers.get("content-type");
    const o = await b.put(key, request.body, contentType ? { httpMetadata: { contentType } } : {});
    return json({ ok: true, key: o.key, etag: o.etag, size: o.size, version: o.version, uploaded: o.uploaded.toISOString() });
  }
  const body = await request.json();
  const b = env[body.binding];
  if (op === "list") {
    const opts = { limit: body.limit, include: ["httpMetadata", "customMetadata"] };
    if (body.prefix) opts.prefix = body.prefix;
    if (body.cursor) opts.cursor = body.cursor;
    if (body.delimiter) opts.delimiter = body.delimiter;
    if (body.startAfter) opts.startAfter = body.startAfter;
    const r = await b.list(opts);
    return json({ ok: true, objects: r.objects.map(objectInfo), truncated: r.truncated, cursor: r.truncated ? r.cursor : undefined, delimitedPrefixes: r.delimitedPrefixes });
  }
  if (op === "delete") {
    await b.delete(body.key);
    return json({ ok: true });
  }
  if (op === "seed") {
    let written = 0;
    const body0 = new Uint8Array(body.size);
    for (let i = 0; i < body.count; i += 50) {
      const n = Math.min(50, body.count - i);
      await Promise.all(Array.from({ length: n }, (_, j) => b.put(body.prefix + String(i + j).padStart(8, "0"), body0)));
      written += n;
    }
    return json({ ok: true, written });
  }
  if (op === "total") {
    let cursor;
    let objects = 0;
    let bytes = 0;
    const keys = [];
    do {
      const r = await b.list({ limit: 1000, cursor, prefix: body.prefix || undefined });
      for (const o of r.objects) {
        objects++;
        bytes += o.size;
        if (keys.length < 100000) keys.push(o.key);
      }
      cursor = r.truncated ? r.cursor : undefined;
    } while (cursor);
    return json({ ok: true, objects, bytes, keys });
  }
  if (op === "count") {
    const r = await b.list({ limit: 1 });
    return json({ ok: true, empty: r.objects.length === 0 });
  }
  return json({ ok: false, error: "unknown r2 op " + op }, 404);
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const [, area, op] = url.pathname.split("/");
    try {
      if (area === "d1" && op === "query") return await d1(env, await request.json());
      if (area === "d1" && op === "info") return await d1Info(env, await request.json());
      if (area === "r2") return await r2(env, op, url, request);
      if (area === "ping") return json({ ok: true });
      return json({ ok: false, error: "unknown admin route " + url.pathname }, 404);
    } catch (e) {
      return json({ ok: false, error: cleanError(e) }, 500);
    }
  },
};
`;
