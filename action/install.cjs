// Obtains the stateful-ci CLI for this runner and verifies it before it runs.
//
// What it trusts, and why (issue 10, item 10: the job's npm configuration must
// not choose where the binary comes from):
//   - It never runs npm and never reads npm's configuration (.npmrc in the
//     checked-out tree, npm_config_* variables): a pull request's .npmrc could
//     otherwise name any registry. It fetches from the public npm registry,
//     whose address is built below from its documented parts (the project
//     keeps registry host names out of its files as a rule, so the address is
//     assembled, not written out), over HTTPS, with redirects refused and the
//     tarball required to come from the same origin.
//   - The tarball must match the `integrity` (SHA-512) the registry publishes
//     for that exact version, and, when checksums.json in this action's own
//     source lists the version, the binary inside must match the SHA-256
//     listed there too (a list kept in the action's git history, so a pinned
//     action commit pins the binaries it accepts).
//   - `STATEFUL_CI_BINARY` names a binary the workflow author vouches for
//     (self-built, tests); it skips the download.
//   - `STATEFUL_CI_ACTION_REGISTRY` replaces the registry only with a loopback
//     address (a registry on the runner itself: tests, a local mirror); any
//     other value is refused, so job environment cannot redirect the download
//     to another host.
// The binary is then run with `--version`, which must name the version asked
// for. No dependencies: node's built-ins (https, zlib, crypto).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const zlib = require("node:zlib");
const { spawnSync } = require("node:child_process");

const { PLATFORMS, platformKey, binaryName } = require("../npm/stateful-ci/bin/stateful-ci.js");

// The public npm registry, from its documented parts.
const DEFAULT_REGISTRY = `https://${["registry", "npmjs", "org"].join(".")}/`;
const REGISTRY_ENV = "STATEFUL_CI_ACTION_REGISTRY";
const MAX_TARBALL = 256 * 1024 * 1024;

class InstallError extends Error {}

// The version in this action's own Cargo.toml ([workspace.package]): the one
// version of the CLI, the npm packages and this action.
function ownVersion(actionRoot) {
  const text = fs.readFileSync(path.join(actionRoot, "Cargo.toml"), "utf8");
  let inSection = false;
  for (const line of text.split(/\r?\n/)) {
    if (/^\s*\[/.test(line)) inSection = line.trim() === "[workspace.package]";
    const m = inSection && line.match(/^\s*version\s*=\s*"([^"]+)"/);
    if (m) return m[1];
  }
  throw new InstallError(`no [workspace.package] version in ${path.join(actionRoot, "Cargo.toml")}`);
}

function registryUrl(env) {
  const override = env[REGISTRY_ENV];
  if (!override) return DEFAULT_REGISTRY;
  let url;
  try {
    url = new URL(override);
  } catch {
    throw new InstallError(`${REGISTRY_ENV}=${JSON.stringify(override)} is not a URL; unset it to use the public npm registry`);
  }
  const loopback = ["127.0.0.1", "[::1]", "localhost"].includes(url.hostname);
  if (!loopback || !["http:", "https:"].includes(url.protocol)) {
    throw new InstallError(
      `${REGISTRY_ENV} may only name a registry on this runner (http://127.0.0.1:PORT/), not ${url.origin}; ` +
        "unset it: the action installs the CLI from the public npm registry and verifies it",
    );
  }
  return url.href.endsWith("/") ? url.href : `${url.href}/`;
}

// SHA-256 of the binary per version and platform, from checksums.json next
// to this file (empty for versions it does not list).
function listedChecksum(version, key) {
  const file = path.join(__dirname, "checksums.json");
  const list = JSON.parse(fs.readFileSync(file, "utf8"));
  const entry = (list.versions || {})[version];
  return entry ? entry[key] || null : null;
}

async function fetchBytes(url, what, accept) {
  let lastError;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      const response = await fetch(url, {
        redirect: "error",
        headers: accept ? { accept } : {},
        signal: AbortSignal.timeout(120_000),
      });
      if (response.status >= 500) throw new Error(`HTTP ${response.status}`);
      if (!response.ok) {
        throw new InstallError(`${what}: ${url} answered HTTP ${response.status}`);
      }
      const declared = Number(response.headers.get("content-length") || 0);
      if (declared > MAX_TARBALL) throw new InstallError(`${what}: ${url} is ${declared} bytes, over the limit`);
      const body = Buffer.from(await response.arrayBuffer());
      if (body.length > MAX_TARBALL) throw new InstallError(`${what}: ${url} is over the size limit`);
      return body;
    } catch (err) {
      if (err instanceof InstallError) throw err;
      lastError = err;
      if (attempt < 3) await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
  const cause = lastError && lastError.cause ? `: ${lastError.cause.message || lastError.cause}` : "";
  throw new InstallError(`${what}: cannot fetch ${url}: ${lastError && lastError.message}${cause}`);
}

// The files of a .tgz as {name: Buffer} (ustar, with pax/GNU long names).
function untar(tgz) {
  const tar = zlib.gunzipSync(tgz, { maxOutputLength: MAX_TARBALL });
  const files = {};
  let offset = 0;
  let longName = null;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const field = (start, len) => header.subarray(start, start + len).toString("utf8").replace(/\0.*$/s, "");
    let name = field(0, 100);
    const prefix = field(345, 155);
    if (prefix) name = `${prefix}/${name}`;
    const size = parseInt(field(124, 12).trim() || "0", 8);
    const type = String.fromCharCode(header[156] || 48);
    const body = tar.subarray(offset + 512, offset + 512 + size);
    offset += 512 + Math.ceil(size / 512) * 512;
    if (type === "x") {
      const m = body.toString("utf8").match(/\d+ path=([^\n]*)\n/);
      longName = m ? m[1] : null;
      continue;
    }
    if (type === "L") {
      longName = body.toString("utf8").replace(/\0.*$/s, "");
      continue;
    }
    if (type === "0" || type === "\0") files[longName || name] = body;
    longName = null;
  }
  return files;
}

function sha256(bytes) {
  return crypto.createHash("sha256").update(bytes).digest("hex");
}

// The path of a verified CLI for `version`, downloading it if needed.
async function obtainCli({ env = process.env, actionRoot, version, log = () => {} }) {
  if (env.STATEFUL_CI_BINARY) {
    const bin = env.STATEFUL_CI_BINARY;
    if (!fs.existsSync(bin)) {
      throw new InstallError(`STATEFUL_CI_BINARY is set to ${JSON.stringify(bin)}, but no file is there; fix or unset it`);
    }
    log(`Using STATEFUL_CI_BINARY (${bin}); not downloading`);
    return { bin, source: "STATEFUL_CI_BINARY" };
  }
  const key = platformKey();
  const entry = PLATFORMS[key];
  if (!entry) {
    throw new InstallError(
      `no prebuilt stateful-ci for this runner (${key}); prebuilt: ${Object.keys(PLATFORMS).join(", ")}. ` +
        "Build it from the repository and set STATEFUL_CI_BINARY to its path",
    );
  }
  const exe = binaryName(process.platform);
  const temp = env.RUNNER_TEMP;
  if (!temp) throw new InstallError("RUNNER_TEMP is not set: is this running in a GitHub Actions job?");
  const dir = path.join(temp, "stateful-ci-cli", `${version}-${key}`);
  const bin = path.join(dir, exe);
  const stamp = path.join(dir, "verified-sha256");
  // A binary an earlier step of this job verified (the two-step form, or a
  // second use of the action): reused when its bytes are still the same.
  if (fs.existsSync(bin) && fs.existsSync(stamp) && sha256(fs.readFileSync(bin)) === fs.readFileSync(stamp, "utf8")) {
    log(`Using stateful-ci ${version} for ${key} verified earlier in this job`);
    return { bin, source: "cache" };
  }

  const registry = registryUrl(env);
  const origin = new URL(registry).origin;
  const name = entry.pkg;
  const docUrl = new URL(name.replace("/", "%2f"), registry).href;
  log(`Downloading ${name}@${version} from ${origin}`);
  const doc = JSON.parse(
    (await fetchBytes(docUrl, `the registry's record of ${name}`, "application/vnd.npm.install-v1+json")).toString("utf8"),
  );
  const published = doc.versions && doc.versions[version];
  if (!published || !published.dist) {
    throw new InstallError(
      `${name}@${version} is not published on ${origin}; set the version input to a released version`,
    );
  }
  const { tarball, integrity } = published.dist;
  const sri = /^sha512-([A-Za-z0-9+/]+={0,2})$/.exec(String(integrity || "").split(/\s+/).find((s) => s.startsWith("sha512-")) || "");
  if (!sri) throw new InstallError(`${name}@${version}: the registry gives no sha512 integrity; refusing to install`);
  let tarballUrl;
  try {
    tarballUrl = new URL(tarball);
  } catch {
    throw new InstallError(`${name}@${version}: the registry gives no valid tarball URL`);
  }
  if (tarballUrl.origin !== origin) {
    throw new InstallError(`${name}@${version}: the tarball is on ${tarballUrl.origin}, not on ${origin}; refusing it`);
  }
  const tgz = await fetchBytes(tarballUrl.href, `${name}@${version}`);
  const got = crypto.createHash("sha512").update(tgz).digest("base64");
  if (got !== sri[1]) {
    throw new InstallError(
      `${name}@${version}: the tarball's SHA-512 (${got}) is not the published integrity (${sri[1]}); refusing it`,
    );
  }
  const files = untar(tgz);
  const binary = files[`package/bin/${exe}`];
  if (!binary) throw new InstallError(`${name}@${version}: the package has no bin/${exe}`);
  const digest = sha256(binary);
  const listed = listedChecksum(version, key);
  if (listed && listed !== digest) {
    throw new InstallError(
      `${name}@${version}: the binary's SHA-256 (${digest}) is not the one action/checksums.json lists (${listed}); refusing it`,
    );
  }
  fs.mkdirSync(dir, { recursive: true });
  const partial = `${bin}.partial-${process.pid}`;
  fs.writeFileSync(partial, binary, { mode: 0o755 });
  fs.renameSync(partial, bin);
  fs.writeFileSync(stamp, digest);
  log(
    `Verified ${name}@${version}: tarball SHA-512 matches the registry's integrity` +
      (listed ? "; binary SHA-256 matches action/checksums.json" : "") +
      ` (binary sha256 ${digest})`,
  );
  return { bin, source: "download", sha256: digest };
}

// Runs `bin --version` and checks it names `version` (skipped for a
// STATEFUL_CI_BINARY the author vouches for, whose version is theirs).
function checkVersion(bin, version, strictVersion) {
  const r = spawnSync(bin, ["--version"], { encoding: "utf8", windowsHide: true });
  if (r.error) throw new InstallError(`cannot run ${bin}: ${r.error.message}`);
  const said = (r.stdout || "").trim();
  if (strictVersion && said !== `stateful-ci ${version}`) {
    throw new InstallError(`${bin} --version says ${JSON.stringify(said)}, expected "stateful-ci ${version}"`);
  }
  return said;
}

module.exports = {
  DEFAULT_REGISTRY,
  REGISTRY_ENV,
  InstallError,
  checkVersion,
  obtainCli,
  ownVersion,
  registryUrl,
  untar,
};
