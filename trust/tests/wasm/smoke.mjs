// Drives the wasm32 build of stateful-ci-trust (worker-template/examples/trust_smoke.rs) from
// Node: tokens are signed here with Node's own RSA (OpenSSL), verified in
// wasm. Usage: node smoke.mjs path/to/trust_smoke.wasm
import { readFileSync } from "node:fs";
import { generateKeyPairSync, createSign } from "node:crypto";

const { instance } = await WebAssembly.instantiate(readFileSync(process.argv[2]), {});
const w = instance.exports;
const NOW = 1_800_000_000;

const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const jwk = publicKey.export({ format: "jwk" });
const jwks = JSON.stringify({ keys: [{ kty: "RSA", use: "sig", alg: "RS256", kid: "k1", n: jwk.n, e: jwk.e }] });

const b64 = (s) => Buffer.from(s).toString("base64url");
function sign(header, payload) {
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(payload))}`;
  const sig = createSign("RSA-SHA256").update(input).sign(privateKey);
  return `${input}.${sig.toString("base64url")}`;
}
const header = { typ: "JWT", alg: "RS256", kid: "k1" };
const claims = (over = {}) => ({
  iss: "https://token.actions.githubusercontent.com",
  aud: "stateful-ci",
  sub: "repo:octo-org/octo-repo:ref:refs/heads/main",
  repository: "octo-org/octo-repo",
  repository_id: "424242",
  repository_owner: "octo-org",
  repository_owner_id: "2020",
  event_name: "push",
  ref: "refs/heads/main",
  ref_type: "branch",
  iat: NOW - 5,
  nbf: NOW - 5,
  exp: NOW + 300,
  ...over,
});

function call(token) {
  const bytes = (s) => {
    const b = Buffer.from(s);
    const ptr = w.smoke_alloc(b.length);
    new Uint8Array(w.memory.buffer, ptr, b.length).set(b);
    return [ptr, b.length];
  };
  const [tp, tl] = bytes(token);
  const [jp, jl] = bytes(jwks);
  const len = w.smoke_verify(tp, tl, jp, jl, BigInt(NOW));
  return Buffer.from(new Uint8Array(w.memory.buffer, w.smoke_result_ptr(), len)).toString();
}

const good = sign(header, claims());
const [h, , s] = good.split(".");
const cases = [
  ["push to main", good, "ok trusted branch:refs/heads/main"],
  [
    "pull request",
    sign(header, claims({ event_name: "pull_request", ref: "refs/pull/7/merge", sub: "repo:octo-org/octo-repo:pull_request" })),
    "ok external pr:7",
  ],
  ["release tag", sign(header, claims({ event_name: "release", ref: "refs/tags/v1", ref_type: "tag" })), "ok privileged privileged:refs/tags/v1"],
  ["pull_request_target", sign(header, claims({ event_name: "pull_request_target" })), "ok external none"],
  ["tampered payload", `${h}.${b64(JSON.stringify(claims({ repository_id: "1" })))}.${s}`, "bad_signature"],
  ["wrong audience", sign(header, claims({ aud: "other" })), "wrong_audience"],
  ["expired", sign(header, claims({ exp: NOW - 120 })), "token_expired"],
  ["alg none", `${b64(JSON.stringify({ alg: "none", kid: "k1" }))}.${b64(JSON.stringify(claims()))}.`, "alg_none"],
  ["unknown kid", sign({ ...header, kid: "k2" }, claims()), "unknown_kid"],
  ["sub mismatch", sign(header, claims({ sub: "repo:evil/octo-repo:ref:refs/heads/main" })), "subject_mismatch"],
];

let passed = 0;
let failed = 0;
for (const [name, token, want] of cases) {
  const got = call(token);
  if (got === want) {
    passed++;
    console.log(`ok   ${name}: ${got}`);
  } else {
    failed++;
    console.log(`FAIL ${name}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}
// CPU cost of one verification in wasm (informational: no timed assertion).
const rounds = 20;
const t0 = performance.now();
for (let i = 0; i < rounds; i++) call(good);
console.log(`verify+classify+decide in wasm: ${((performance.now() - t0) / rounds).toFixed(2)} ms per token (mean of ${rounds})`);
console.log(`trust_smoke: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
