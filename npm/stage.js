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
    usage(`--binary ${args.binary} is not a file; build it first (cargo build --release --locked)`);
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
    ...(entry.libc ? { libc: [entry.libc] } : {}),
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
