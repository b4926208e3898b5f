#!/usr/bin/env node
// One version everywhere: checks that every place a stateful-ci version is
// written agrees with `[workspace.package] version` of the root Cargo.toml,
// and, with a tag argument (release.yml passes the pushed tag), that the tag
// is `v` + that version. Prints the version on success; names every
// disagreement and exits 1 otherwise.
//
//   node scripts/check-version.cjs [--root DIR] [vX.Y.Z]
//
// The places: the workspace crates' own dependency versions on each other
// ([workspace.dependencies] path entries), the Worker crate
// (worker-template/Cargo.toml), the npm launcher and its optional platform
// packages (the source keeps the placeholder 0.0.0-dev, stamped with the
// Cargo version by npm/stage.js at pack time, so the source must hold exactly
// the placeholder), and the Action (action/install.cjs reads the same
// Cargo.toml, checked here by calling it).
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const PLACEHOLDER = "0.0.0-dev";

function tomlSection(text, section) {
  const out = [];
  let inside = false;
  for (const line of text.split(/\r?\n/)) {
    if (/^\s*\[/.test(line)) inside = line.trim() === `[${section}]`;
    else if (inside) out.push(line);
  }
  return out;
}

function check(root, tag) {
  const problems = [];
  const cargo = fs.readFileSync(path.join(root, "Cargo.toml"), "utf8");
  const m = tomlSection(cargo, "workspace.package")
    .map((l) => l.match(/^\s*version\s*=\s*"([^"]+)"/))
    .find(Boolean);
  if (!m) return { version: null, problems: ["Cargo.toml: no version in [workspace.package]"] };
  const version = m[1];
  if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) {
    problems.push(`Cargo.toml: [workspace.package] version ${version} is not semver X.Y.Z`);
  }
  for (const line of tomlSection(cargo, "workspace.dependencies")) {
    const dep = line.match(/^\s*(stateful-ci[\w-]*)\s*=\s*\{.*\bpath\s*=.*\bversion\s*=\s*"([^"]+)"/);
    if (dep && dep[2] !== version) {
      problems.push(`Cargo.toml: [workspace.dependencies] ${dep[1]} has version ${dep[2]}, not ${version}`);
    }
  }
  const workerToml = path.join(root, "worker-template/Cargo.toml");
  if (fs.existsSync(workerToml)) {
    const w = tomlSection(fs.readFileSync(workerToml, "utf8"), "package")
      .map((l) => l.match(/^\s*version\s*=\s*"([^"]+)"/))
      .find(Boolean);
    if (!w || w[1] !== version) {
      problems.push(`worker-template/Cargo.toml: [package] version ${w ? w[1] : "(none)"}, not ${version}`);
    }
  }
  const pkgPath = path.join(root, "npm/stateful-ci/package.json");
  const pkg = JSON.parse(fs.readFileSync(pkgPath, "utf8"));
  if (pkg.version !== PLACEHOLDER) {
    problems.push(
      `npm/stateful-ci/package.json: version ${pkg.version}; keep the placeholder ${PLACEHOLDER} (npm/stage.js stamps ${version})`,
    );
  }
  for (const [name, v] of Object.entries(pkg.optionalDependencies || {})) {
    if (v !== PLACEHOLDER) problems.push(`npm/stateful-ci/package.json: ${name}@${v}; keep ${PLACEHOLDER}`);
  }
  try {
    const actionVersion = require(path.join(root, "action/install.cjs")).ownVersion(root);
    if (actionVersion !== version) problems.push(`action: reads version ${actionVersion}, not ${version}`);
  } catch (err) {
    problems.push(`action: cannot read its version: ${err.message}`);
  }
  if (tag !== undefined && tag !== `v${version}`) {
    problems.push(`tag ${tag} is not v${version}; tag the commit whose Cargo.toml says the version released`);
  }
  return { version, problems };
}

function main(argv) {
  let root = path.resolve(__dirname, "..");
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--root") root = path.resolve(argv[++i]);
    else rest.push(argv[i]);
  }
  const { version, problems } = check(root, rest[0]);
  if (problems.length) {
    for (const p of problems) process.stderr.write(`check-version: ${p}\n`);
    return 1;
  }
  process.stdout.write(`${version}\n`);
  return 0;
}

module.exports = { check };

if (require.main === module) process.exitCode = main(process.argv.slice(2));
