// The launcher's choice of platform package, for every platform the release
// builds (and for glibc and musl Linux), without installing anything:
//   node --test tests/npm/launcher.test.cjs
// Also checks that the launcher's table, its package.json, the npm staging
// script and the release workflow name the same five targets.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");

const root = path.resolve(__dirname, "../..");
const launcherPath = path.join(root, "npm/stateful-ci/bin/stateful-ci.js");
const launcher = require(launcherPath);

const CASES = [
  // [process.platform, process.arch, package]
  ["linux", "x64", "@stateful-ci/cli-linux-x64"],
  ["linux", "arm64", "@stateful-ci/cli-linux-arm64"],
  ["darwin", "x64", "@stateful-ci/cli-darwin-x64"],
  ["darwin", "arm64", "@stateful-ci/cli-darwin-arm64"],
  ["win32", "x64", "@stateful-ci/cli-win32-x64"],
];

test("each of the five platforms selects its own package", () => {
  for (const [platform, arch, pkg] of CASES) {
    assert.equal(launcher.selectPackage({ platform, arch }), pkg, `${platform}-${arch}`);
  }
  assert.equal(Object.keys(launcher.PLATFORMS).length, 5);
});

test("platforms without a prebuilt binary select nothing", () => {
  for (const [platform, arch] of [
    ["freebsd", "x64"],
    ["win32", "arm64"],
    ["linux", "ia32"],
    ["linux", "riscv64"],
    ["darwin", "ia32"],
  ]) {
    assert.equal(launcher.selectPackage({ platform, arch }), null, `${platform}-${arch}`);
  }
});

test("the Linux packages are static musl builds with no libc restriction", () => {
  for (const key of ["linux-x64", "linux-arm64"]) {
    const entry = launcher.PLATFORMS[key];
    assert.match(entry.target, /-unknown-linux-musl$/);
    assert.equal(entry.libc, undefined);
  }
});

// Runs the real launcher with the machine's answers swapped by a preload
// (platform, arch, and what ldd / the process report say about libc), and
// returns the package it looked for.
function packageLookedFor(platform, arch, libc) {
  const preload = `
    const fs = require("node:fs");
    Object.defineProperty(process, "platform", { value: ${JSON.stringify(platform)} });
    Object.defineProperty(process, "arch", { value: ${JSON.stringify(arch)} });
    const read = fs.readFileSync;
    fs.readFileSync = function (file, ...rest) {
      if (file === "/usr/bin/ldd") {
        if (${JSON.stringify(libc)} === "musl") return "#!/bin/sh\\n# musl libc (x86_64)\\n";
        return "ldd (GNU libc) 2.36\\nGNU C Library";
      }
      return read.call(this, file, ...rest);
    };`;
  const dir = fs.mkdtempSync(path.join(require("node:os").tmpdir(), "launcher-"));
  fs.writeFileSync(path.join(dir, "pretend.cjs"), preload);
  // A copy of the launcher outside any node_modules: no platform package can
  // be found, so the error names the one it looked for.
  fs.copyFileSync(launcherPath, path.join(dir, "stateful-ci.js"));
  const env = { ...process.env };
  delete env.STATEFUL_CI_BINARY;
  const r = spawnSync(process.execPath, ["-r", path.join(dir, "pretend.cjs"), path.join(dir, "stateful-ci.js"), "--version"], {
    encoding: "utf8",
    env,
  });
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(r.status, 1, r.stderr);
  const m = r.stderr.match(/the platform package (\S+) \(for ([^)]+\)?)\)/);
  assert.ok(m, r.stderr);
  return { pkg: m[1], described: m[2] };
}

test("the running launcher looks for the right package, glibc and musl alike", () => {
  for (const [platform, arch, pkg] of CASES) {
    const libcs = platform === "linux" ? ["glibc", "musl"] : ["glibc"];
    for (const libc of libcs) {
      const got = packageLookedFor(platform, arch, libc);
      assert.equal(got.pkg, pkg, `${platform}-${arch} ${libc}`);
      if (platform === "linux") assert.match(got.described, new RegExp(`\\(${libc}`));
    }
  }
});

test("package.json, the launcher, stage.js's output and release.yml agree on the targets", () => {
  const manifest = JSON.parse(fs.readFileSync(path.join(root, "npm/stateful-ci/package.json"), "utf8"));
  const declared = Object.keys(manifest.optionalDependencies).sort();
  const table = Object.values(launcher.PLATFORMS)
    .map((p) => p.pkg)
    .sort();
  assert.deepEqual(declared, table);
  const release = fs.readFileSync(path.join(root, ".github/workflows/release.yml"), "utf8");
  for (const [key, entry] of Object.entries(launcher.PLATFORMS)) {
    assert.ok(release.includes(`target: ${entry.target}`), `release.yml builds ${entry.target}`);
    assert.ok(release.includes(`platform: ${key}`), `release.yml packs ${key}`);
  }
});
