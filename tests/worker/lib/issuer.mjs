// A fake GitHub Actions OIDC issuer for tests: test-only RSA keys generated
// at start, the JWKS at ISSUER/.well-known/jwks, and tokens with any claims.
// It can also forge tokens the Worker must refuse (alg none, HS256 keyed with
// the public key, unknown kid, tampered payload, ...), and it answers the
// runner's token request (GET /actions-token?audience=AUD with
// `Authorization: bearer <request token>` -> {"value": JWT}) like GitHub does
// for ACTIONS_ID_TOKEN_REQUEST_URL. Listens on 127.0.0.1 only.
// Test controls: POST /token with a JSON object of claim overrides answers
// {"value": JWT}; POST /runner-claims sets the overrides /actions-token uses.
import { createServer } from "node:http";
import { generateKeyPairSync, createSign, createHmac, randomBytes } from "node:crypto";

const b64url = (buf) => Buffer.from(buf).toString("base64url");
const enc = (obj) => b64url(JSON.stringify(obj));

export class FakeIssuer {
  constructor({ kid = "test-key-1" } = {}) {
    const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    this.kid = kid;
    this.publicKey = publicKey;
    this.privateKey = privateKey;
    this.jwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" };
    // The claims the runner-token endpoint signs; tests may change them.
    this.runnerClaims = {};
    this.requestToken = b64url(randomBytes(18));
    this.jwksFetches = 0;
  }

  async start(port = 0) {
    this.server = createServer((req, res) => this.#handle(req, res));
    await new Promise((ok) => this.server.listen(port, "127.0.0.1", ok));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  async stop() {
    await new Promise((ok) => this.server.close(ok));
  }

  #handle(req, res) {
    const url = new URL(req.url, this.url);
    if (req.method === "GET" && url.pathname === "/.well-known/jwks") {
      this.jwksFetches++;
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ keys: [this.jwk, ...(this.extraJwks ?? [])] }));
    }
    if (req.method === "GET" && url.pathname === "/actions-token") {
      if (req.headers.authorization !== `bearer ${this.requestToken}` && req.headers.authorization !== `Bearer ${this.requestToken}`) {
        res.writeHead(401, { "content-type": "application/json" });
        return res.end(JSON.stringify({ message: "bad request token" }));
      }
      const aud = url.searchParams.get("audience") || "stateful-ci";
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ value: this.token({ aud, ...this.runnerClaims }) }));
    }
    if (req.method === "POST" && (url.pathname === "/token" || url.pathname === "/runner-claims")) {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        let claims;
        try {
          claims = body ? JSON.parse(body) : {};
        } catch {
          res.writeHead(400);
          return res.end("body must be a JSON object of claims");
        }
        res.writeHead(200, { "content-type": "application/json" });
        if (url.pathname === "/token") return res.end(JSON.stringify({ value: this.token(claims) }));
        this.runnerClaims = claims;
        res.end(JSON.stringify({ ok: true }));
      });
      return;
    }
    res.writeHead(404);
    res.end();
  }

  /** Default GitHub-like claims for a push to main of acme/app. */
  claims(overrides = {}) {
    const now = Math.floor(Date.now() / 1000);
    const repository = overrides.repository ?? "acme/app";
    const ref = overrides.ref ?? "refs/heads/main";
    return {
      iss: this.url,
      aud: "stateful-ci",
      iat: now - 5,
      nbf: now - 5,
      exp: now + 600,
      sub: `repo:${repository}:ref:${ref}`,
      repository,
      repository_id: "100001",
      repository_owner: repository.split("/")[0],
      repository_owner_id: "200001",
      ref,
      ref_type: ref.startsWith("refs/tags/") ? "tag" : "branch",
      sha: "0123456789abcdef0123456789abcdef01234567",
      event_name: "push",
      workflow_ref: `${repository}/.github/workflows/ci.yml@${ref}`,
      job_workflow_ref: `${repository}/.github/workflows/ci.yml@${ref}`,
      actor: "octocat",
      run_id: "9000001",
      run_attempt: "1",
      runner_environment: "github-hosted",
      ...overrides,
    };
  }

  sign(header, payload) {
    const input = `${enc(header)}.${enc(payload)}`;
    const sig = createSign("RSA-SHA256").update(input).sign(this.privateKey);
    return `${input}.${b64url(sig)}`;
  }

  /** A valid RS256 token with default claims merged with `overrides`. */
  token(overrides = {}) {
    return this.sign({ alg: "RS256", typ: "JWT", kid: this.kid }, this.claims(overrides));
  }

  /**
   * Publishes an additional key (a rotation) and returns a function that
   * signs tokens with it.
   */
  addKey(kid) {
    const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    this.extraJwks = [...(this.extraJwks ?? []), { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" }];
    return (overrides = {}) => {
      const input = `${enc({ alg: "RS256", typ: "JWT", kid })}.${enc(this.claims(overrides))}`;
      return `${input}.${b64url(createSign("RSA-SHA256").update(input).sign(privateKey))}`;
    };
  }

  forgeAlgNone(overrides = {}) {
    return `${enc({ alg: "none", typ: "JWT" })}.${enc(this.claims(overrides))}.`;
  }

  /** HS256 with the issuer's public key (PEM and JWK JSON) as the secret. */
  forgeHs256WithPublicKey(overrides = {}) {
    const input = `${enc({ alg: "HS256", typ: "JWT", kid: this.kid })}.${enc(this.claims(overrides))}`;
    const secret = this.publicKey.export({ format: "pem", type: "spki" });
    return `${input}.${b64url(createHmac("sha256", secret).update(input).digest())}`;
  }

  forgeUnknownKid(overrides = {}) {
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
    const input = `${enc({ alg: "RS256", typ: "JWT", kid: "someone-elses-key" })}.${enc(this.claims(overrides))}`;
    return `${input}.${b64url(createSign("RSA-SHA256").update(input).sign(other))}`;
  }

  /** A valid token whose payload is then swapped for `changes` applied. */
  forgeTampered(changes) {
    const [h, , s] = this.token().split(".");
    return `${h}.${enc(this.claims(changes))}.${s}`;
  }
}
