#!/usr/bin/env node
// Lays out the npm packages for one release in a staging folder, ready for
// `npm pack`: the launcher (`stateful-ci`) with its version and the versions of
// its optional platform packages stamped in, and the platform package of the
// given binary (`@stateful-ci/cli-<platform>`) with its `os`/`cpu`/`libc`
// fields. It never touches the source tree and needs no network.
//
// usage: node npm/stage.js --version X.Y.Z --binary PATH --platform KEY --out DIR
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { PLATFORMS, binaryName } = require("./stateful-ci/bin/stateful-ci.js");

function usage(message) {
  process.stderr.write(
    `npm/stage.js: ${message}\n` +
      "usage: node npm/stage.js --version X.Y.Z --binary PATH --platform KEY --out DIR\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!["--version", "--binary", "--platform", "--out"].includes(flag)) usage(`unknown argument ${flag}`);
    if (value === undefined) usage(`${flag} needs a value`);
    args[flag.slice(2)] = value;
  }
  for (const name of ["version", "binary", "platform", "out"]) {
    if (!args[name]) usage(`--${name} is required`);
  }
  return args;
}

// True when the file is an ELF executable that asks for a dynamic loader
// (PT_INTERP), i.e. needs the C library it was linked against. The release's
// Linux binaries are static musl builds and need none.
function elfIsDynamic(file) {
  const b = fs.readFileSync(file);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = b[4] === 2;
  const le = b[5] === 1;
  const u16 = (o) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (o) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const phoff = is64 ? Number(le ? b.readBigUInt64LE(32) : b.readBigUInt64BE(32)) : u32(28);
  const phentsize = u16(is64 ? 54 : 42);
  const phnum = u16(is64 ? 56 : 44);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > b.length) break;
    if (u32(at) === 3) return true; // PT_INTERP
  }
  return false;
}

function writeJson(file, value) {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(args.version)) {
    usage(`--version ${JSON.stringify(args.version)} is not a semver version like 1.2.3`);
  }
  const entry = PLATFORMS[args.platform];
  if (!entry) {
    usage(`--platform ${args.platform} is not one of ${Object.keys(PLATFORMS).join(", ")}`);
  }
  if (!fs.statSync(args.binary, { throwIfNoEntry: false })?.isFile()) {
    usage(`--binary ${args.binary} is not a file; build it first (scripts/npm-pack.sh does)`);
  }
  const source = path.join(__dirname, "stateful-ci");
  const out = path.resolve(args.out);
  fs.rmSync(out, { recursive: true, force: true });

  // The launcher.
  const launcherDir = path.join(out, "stateful-ci");
  fs.mkdirSync(path.join(launcherDir, "bin"), { recursive: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(source, "package.json"), "utf8"));
  const declared = Object.keys(manifest.optionalDependencies || {}).sort();
  const known = Object.values(PLATFORMS)
    .map((p) => p.pkg)
    .sort();
  if (JSON.stringify(declared) !== JSON.stringify(known)) {
    usage(
      "npm/stateful-ci/package.json's optionalDependencies and the PLATFORMS table in bin/stateful-ci.js " +
        `disagree (${declared.join(", ")} vs ${known.join(", ")}); make them list the same packages`,
    );
  }
  if (manifest.scripts && Object.keys(manifest.scripts).length > 0) {
    usage("npm/stateful-ci/package.json has scripts; the launcher must have no lifecycle script");
  }
  manifest.version = args.version;
  for (const name of declared) manifest.optionalDependencies[name] = args.version;
  writeJson(path.join(launcherDir, "package.json"), manifest);
  for (const file of manifest.files) {
    fs.mkdirSync(path.dirname(path.join(launcherDir, file)), { recursive: true });
    fs.copyFileSync(path.join(source, file), path.join(launcherDir, file));
    fs.chmodSync(path.join(launcherDir, file), 0o755);
  }
  fs.copyFileSync(path.join(source, "README.md"), path.join(launcherDir, "README.md"));

  // The platform package: the binary and nothing else to run.
  const platformDir = path.join(out, `cli-${args.platform}`);
  fs.mkdirSync(path.join(platformDir, "bin"), { recursive: true });
  const bin = `bin/${binaryName(entry.os)}`;
  const platformManifest = {
    name: entry.pkg,
    version: args.version,
    description: `The stateful-ci binary for ${args.platform}; installed by the stateful-ci package, not meant to be used on its own`,
    license: manifest.license,
    repository: { ...manifest.repository, directory: "npm" },
    os: [entry.os],
    cpu: [entry.cpu],
    // A dynamically linked Linux binary (a local development pack built for
    // the host's glibc) must not be installed on musl systems; the release's
    // static binaries run on both, so they name no libc.
    ...(entry.os === "linux" && elfIsDynamic(args.binary) ? { libc: ["glibc"] } : {}),
    files: [bin],
    preferUnplugged: true,
  };
  writeJson(path.join(platformDir, "package.json"), platformManifest);
  fs.copyFileSync(args.binary, path.join(platformDir, bin));
  fs.chmodSync(path.join(platformDir, bin), 0o755);
  fs.writeFileSync(
    path.join(platformDir, "README.md"),
    `# ${entry.pkg}\n\nThe \`stateful-ci\` ${args.version} binary for ${args.platform}. ` +
      "Install the `stateful-ci` package instead: it picks this package on this platform.\n",
  );

  process.stdout.write(`${launcherDir}\n${platformDir}\n`);
}

main();
