// Loads the shared OpenAPI subset and validates requests and responses against it.
//
// Owns: routing a (method, path) to an operation of the subset, and checking
// path/query/header parameters, the bearer token's presence, the request body
// (JSON or the Worker upload's multipart form, including its `metadata` part)
// and every response body against the document's schemas (ajv).
// Must not: patch the contract silently. The only transformation is the
// OpenAPI 3.0 -> JSON Schema translation (`nullable`, `format: binary`).

import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import addFormats from "ajv-formats";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The contract kept in the repository (corrections listed in contract/CORRECTIONS.md). */
export const DEFAULT_SPEC = path.resolve(HERE, "..", "contract", "cloudflare-subset.openapi.json");

/** Where the contract lives: explicit path, then STATEFUL_CI_OPENAPI, then the repository's copy (contract/). */
export function resolveSpecPath(explicit) {
  const candidates = [];
  if (explicit) candidates.push(explicit);
  else if (process.env.STATEFUL_CI_OPENAPI) candidates.push(process.env.STATEFUL_CI_OPENAPI);
  else {
    candidates.push(DEFAULT_SPEC);
  }
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(
    `OpenAPI subset not found at ${candidates.join(", ")}: the emulator validates every request against it. ` +
      "Fix: restore tests/cloudflare-emulator/contract/ from git, or set STATEFUL_CI_OPENAPI (or --openapi) to the JSON file.",
  );
}

// OpenAPI 3.0 schema object -> JSON Schema (draft-07 as ajv understands it).
function toJsonSchema(node) {
  if (Array.isArray(node)) return node.map(toJsonSchema);
  if (node === null || typeof node !== "object") return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "example" || k === "examples") continue;
    out[k] = toJsonSchema(v);
  }
  if (out.nullable === true) {
    if (out.type !== undefined) out.type = Array.isArray(out.type) ? [...out.type, "null"] : [out.type, "null"];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
  }
  delete out.nullable;
  if (out.format === "binary") delete out.format;
  return out;
}

const escapePointer = (s) => s.replace(/~/g, "~0").replace(/\//g, "~1");

/**
 * Known defects of the contract that are applied at load time instead of in the document.
 * Empty: the corrections once listed here (r2-list-objects-result-array, error-codes-below-1000,
 * d1-raw-null-values) are now made in contract/cloudflare-subset.openapi.json itself and listed in
 * contract/CORRECTIONS.md.
 */
export const ERRATA = [];

const JS_MODULE_TYPES = new Set(["application/javascript+module"]);
const WASM_TYPES = new Set(["application/wasm"]);

export class OpenApi {
  constructor(specPath) {
    this.specPath = resolveSpecPath(specPath);
    this.raw = JSON.parse(readFileSync(this.specPath, "utf8"));
    this.doc = toJsonSchema(this.raw);
    for (const e of ERRATA) e.apply(this.doc);
    this.ajv = new Ajv({ strict: false, allErrors: true, logger: false, coerceTypes: false });
    addFormats(this.ajv);
    this.ajv.addSchema(this.doc, "spec");
    this.cache = new Map();
    this.routes = [];
    for (const [template, item] of Object.entries(this.raw.paths)) {
      const names = [];
      const re = template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{([^}]+)\}/g, (_, name) => {
        names.push(name);
        // object keys may contain '/' (wrangler sends them raw); other parameters are one segment.
        return name === "object_key" ? "(.+)" : "([^/]+)";
      });
      const ops = {};
      for (const [method, op] of Object.entries(item)) {
        if (method === "parameters") continue;
        ops[method.toUpperCase()] = { ...op, method: method.toUpperCase(), template, pathParameters: item.parameters ?? [] };
      }
      this.routes.push({ template, regex: new RegExp(`^${re}$`), names, ops, item });
    }
  }

  schemaAt(pointer) {
    let v = this.cache.get(pointer);
    if (!v) {
      v = this.ajv.compile({ $ref: `spec#${pointer}` });
      this.cache.set(pointer, v);
    }
    return v;
  }

  /** Finds the operation for a request: { op, params } or { error: "unknown-route" | "method-not-allowed" }. */
  match(method, pathname) {
    for (const route of this.routes) {
      const m = route.regex.exec(pathname);
      if (!m) continue;
      const op = route.ops[method];
      if (!op) return { error: "method-not-allowed", template: route.template, allowed: Object.keys(route.ops) };
      const params = {};
      route.names.forEach((n, i) => {
        params[n] = n === "object_key" ? decodeObjectKey(m[i + 1]) : decodeSegment(m[i + 1]);
      });
      return { op, params };
    }
    return { error: "unknown-route" };
  }

  parameters(op) {
    const byKey = new Map();
    for (const p of [...op.pathParameters, ...(op.parameters ?? [])]) byKey.set(`${p.in}:${p.name}`, p);
    return [...byKey.values()];
  }

  paramPointer(op, p) {
    const own = (op.parameters ?? []).indexOf(p);
    const base = `/paths/${escapePointer(op.template)}`;
    if (own >= 0) return `${base}/${op.method.toLowerCase()}/parameters/${own}/schema`;
    return `${base}/parameters/${op.pathParameters.indexOf(p)}/schema`;
  }

  /**
   * Validates a request. `req` = { params, query: URLSearchParams, headers (lower-case), body: Buffer }.
   * Returns { errors: string[], json?: any, form?: FormData-derived { metadata, modules } }.
   */
  async validateRequest(op, req) {
    const errors = [];
    const params = this.parameters(op);
    const known = new Set();
    for (const p of params) {
      let value;
      if (p.in === "path") value = req.params[p.name];
      else if (p.in === "query") {
        known.add(p.name);
        const all = req.query.getAll(p.name);
        if (all.length > 1) {
          errors.push(`query parameter '${p.name}' given ${all.length} times`);
          continue;
        }
        value = all[0];
      } else if (p.in === "header") value = req.headers[p.name.toLowerCase()];
      if (value === undefined) {
        if (p.required) errors.push(`${p.in} parameter '${p.name}' is required`);
        continue;
      }
      const schema = p.schema ?? {};
      const resolved = schema.$ref ? this.resolveRef(schema.$ref) : schema;
      const typed = coerce(value, resolved.type);
      const validate = this.schemaAt(this.paramPointer(op, p));
      if (!validate(typed)) errors.push(...fmt(validate.errors, `${p.in} parameter '${p.name}'`));
    }
    for (const name of new Set(req.query.keys())) {
      if (!known.has(name)) errors.push(`query parameter '${name}' is not in the contract for ${op.method} ${op.template}`);
    }

    // Security: every operation of the subset wants a bearer token (or the legacy email+key pair).
    const security = op.security ?? this.raw.security ?? [];
    if (security.length > 0) {
      const auth = req.headers.authorization;
      const bearerOk = typeof auth === "string" && /^Bearer \S+$/.test(auth);
      const keyOk = security.some((s) => "api_key" in s) && req.headers["x-auth-key"] && req.headers["x-auth-email"];
      if (!bearerOk && !keyOk) {
        errors.push(
          auth === undefined
            ? "header 'Authorization: Bearer <token>' is required"
            : "header 'Authorization' must be 'Bearer <token>' (one space, no quotes)",
        );
      }
    }

    const result = { errors };
    const body = req.body ?? Buffer.alloc(0);
    const ctHeader = req.headers["content-type"];
    const mediaType = ctHeader ? ctHeader.split(";")[0].trim().toLowerCase() : undefined;
    if (!op.requestBody) {
      if (body.length > 0) errors.push(`${op.method} ${op.template} takes no request body, got ${body.length} bytes`);
      return result;
    }
    if (body.length === 0) {
      if (op.requestBody.required) errors.push("request body is required");
      return result;
    }
    const content = op.requestBody.content ?? {};
    if (!mediaType || !(mediaType in content)) {
      errors.push(`Content-Type '${ctHeader ?? "(none)"}' is not one of: ${Object.keys(content).join(", ")}`);
      return result;
    }
    const pointerBase = `/paths/${escapePointer(op.template)}/${op.method.toLowerCase()}/requestBody/content/${escapePointer(mediaType)}/schema`;
    if (mediaType === "application/json") {
      let json;
      try {
        json = JSON.parse(body.toString("utf8"));
      } catch (e) {
        errors.push(`request body is not valid JSON: ${e.message}`);
        return result;
      }
      result.json = json;
      const validate = this.schemaAt(pointerBase);
      if (!validate(json)) errors.push(...fmt(validate.errors, "request body"));
    } else if (mediaType === "multipart/form-data") {
      result.form = await this.validateMultipart(ctHeader, body, `${pointerBase}/properties/metadata`, errors);
    }
    return result;
  }

  async validateMultipart(contentType, body, metadataPointer, errors) {
    let fd;
    try {
      fd = await new Request("http://emulator.invalid/", { method: "PUT", headers: { "content-type": contentType }, body }).formData();
    } catch (e) {
      errors.push(`multipart body could not be parsed (${e.message}); send multipart/form-data with a boundary`);
      return undefined;
    }
    const form = { metadata: undefined, modules: [] };
    const seen = new Set();
    for (const [name, value] of fd.entries()) {
      if (seen.has(name)) {
        errors.push(`multipart part '${name}' appears more than once`);
        continue;
      }
      seen.add(name);
      if (name === "metadata") {
        let text;
        if (typeof value === "string") text = value;
        else {
          const t = (value.type || "").split(";")[0].trim().toLowerCase();
          if (t && t !== "application/json") errors.push(`multipart part 'metadata' must be application/json, got '${value.type}'`);
          text = Buffer.from(await value.arrayBuffer()).toString("utf8");
        }
        try {
          form.metadata = JSON.parse(text);
        } catch (e) {
          errors.push(`multipart part 'metadata' is not valid JSON: ${e.message}`);
          continue;
        }
        const validate = this.schemaAt(metadataPointer);
        if (!validate(form.metadata)) errors.push(...fmt(validate.errors, "metadata"));
        continue;
      }
      if (typeof value === "string") {
        errors.push(`multipart part '${name}' must be a file part (filename and Content-Type), got a plain field`);
        continue;
      }
      if (value.name !== name) errors.push(`multipart part '${name}' must have filename '${name}', got '${value.name}'`);
      const t = (value.type || "").split(";")[0].trim().toLowerCase();
      let kind;
      if (JS_MODULE_TYPES.has(t)) kind = "ESModule";
      else if (WASM_TYPES.has(t)) kind = "CompiledWasm";
      else {
        errors.push(
          `multipart part '${name}' has Content-Type '${value.type || "(none)"}'; the contract allows application/javascript+module (ES modules) and application/wasm`,
        );
        continue;
      }
      form.modules.push({ name, type: kind, contents: new Uint8Array(await value.arrayBuffer()) });
    }
    if (!seen.has("metadata")) errors.push("multipart part 'metadata' is required");
    return form;
  }

  resolveRef(ref) {
    const parts = ref.replace(/^#\//, "").split("/");
    let v = this.raw;
    for (const p of parts) v = v?.[p.replace(/~1/g, "/").replace(/~0/g, "~")];
    return v ?? {};
  }

  /** Validates a JSON response of `op` with `status`. Returns a list of errors (empty when valid). */
  validateResponse(op, status, contentType, body) {
    const responses = op.responses ?? {};
    const key = [String(status), `${String(status)[0]}XX`, "default"].find((k) => k in responses);
    if (!key) return [`status ${status} is not a documented response of ${op.method} ${op.template} (documented: ${Object.keys(responses).join(", ")})`];
    const content = responses[key].content;
    if (!content) return [];
    const mediaType = (contentType ?? "").split(";")[0].trim().toLowerCase();
    if (!(mediaType in content)) return [`response Content-Type '${contentType}' is not one of ${Object.keys(content).join(", ")}`];
    const validate = this.schemaAt(
      `/paths/${escapePointer(op.template)}/${op.method.toLowerCase()}/responses/${escapePointer(key)}/content/${escapePointer(mediaType)}/schema`,
    );
    return validate(body) ? [] : fmt(validate.errors, `response ${status}`);
  }

  listOperations() {
    const out = [];
    for (const r of this.routes) for (const m of Object.keys(r.ops)) out.push({ method: m, template: r.template, operationId: r.ops[m].operationId });
    return out;
  }
}

function decodeSegment(v) {
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/**
 * An R2 object key as the API reads it from the path: '/' is sent literally (wrangler's R2
 * helpers), and a '%2F' is NOT turned into '/': it stays the three characters "%2F", so it
 * names another key (see BEHAVIOURS.md, "object keys"). Other escapes are decoded.
 */
export function decodeObjectKey(raw) {
  return raw
    .split(/(%2[fF])/)
    .map((part) => (/^%2[fF]$/.test(part) ? part : decodeSegment(part)))
    .join("");
}

function coerce(value, type) {
  if (type === "number" || type === "integer") {
    if (/^-?\d+(\.\d+)?$/.test(value)) return Number(value);
    return value;
  }
  if (type === "boolean") {
    if (value === "true") return true;
    if (value === "false") return false;
    return value;
  }
  return value;
}

function fmt(errors, where) {
  return (errors ?? []).map((e) => {
    const at = e.instancePath ? `${where}${e.instancePath}` : where;
    const extra = e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : "";
    return `${at}: ${e.message}${extra}`;
  });
}
