#!/usr/bin/env node
// Serves the built Worker under workerd with local D1/R2/DO and a fake OIDC
// issuer, for tests written in other languages (e.g. Rust tests that run the
// `stateful-ci` binary against it). Prints, one per line, once ready:
//   issuer: http://127.0.0.1:N
//   actions-token-url: http://127.0.0.1:N/actions-token?for=stateful-ci
//   actions-token-request-token: <token for ACTIONS_ID_TOKEN_REQUEST_TOKEN>
//   admin-token: <admin token>
//   backend: http://127.0.0.1:M
// and serves until stdin closes or SIGINT/SIGTERM.
// Options: --port N (backend port, default any), --repository OWNER/NAME
// (repeatable; default acme/app), --claims JSON (claim overrides for the
// runner token endpoint), --persist DIR, --issuer-only (serve just the
// issuer, for a backend started elsewhere, e.g. `stateful-ci dev
// --oidc-issuer`; no `backend:` line then).
import { FakeIssuer } from "./issuer.mjs";

const args = process.argv.slice(2);
let port = 0;
const repos = [];
let claims = {};
let persistTo;
let issuerOnly = false;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const next = () => {
    if (i + 1 >= args.length) usage(`${a} needs a value`);
    return args[++i];
  };
  if (a === "--port") port = Number(next());
  else if (a === "--repository") repos.push(next());
  else if (a === "--claims") claims = JSON.parse(next());
  else if (a === "--persist") persistTo = next();
  else if (a === "--issuer-only") issuerOnly = true;
  else usage(`unknown argument ${a}`);
}

function usage(msg) {
  console.error(`serve.mjs: ${msg}\nusage: serve.mjs [--port N] [--repository OWNER/NAME]... [--claims JSON] [--persist DIR] [--issuer-only]`);
  process.exit(2);
}

process.env.WRANGLER_SEND_METRICS = "false";
process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
const issuer = await new FakeIssuer().start();
issuer.runnerClaims = claims;
// Loaded only when needed: --issuer-only works without miniflare installed.
const { startBackend, ADMIN_TOKEN } = issuerOnly ? {} : await import("./backend.mjs");
const backend = issuerOnly
  ? undefined
  : await startBackend({
      issuerUrl: issuer.url,
      port,
      persistTo,
      vars: { ALLOWED_REPOSITORIES: (repos.length ? repos : ["acme/app"]).join(",") },
    });
console.log(`issuer: ${issuer.url}`);
console.log(`actions-token-url: ${issuer.url}/actions-token?for=stateful-ci`);
console.log(`actions-token-request-token: ${issuer.requestToken}`);
if (backend) {
  console.log(`admin-token: ${ADMIN_TOKEN}`);
  console.log(`backend: ${backend.url}`);
}

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await backend?.stop();
  await issuer.stop();
  process.exit(0);
}
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
