// One version everywhere (scripts/check-version.cjs): the repository agrees,
// and a copy with one place changed is caught, naming the place.
//   node --test tests/npm/version.test.cjs
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const root = path.resolve(__dirname, "../..");
const { check } = require(path.join(root, "scripts/check-version.cjs"));

function copyRepoParts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "version-"));
  for (const rel of ["Cargo.toml", "worker-template/Cargo.toml", "npm/stateful-ci/package.json", "npm/stateful-ci/bin/stateful-ci.js", "action/install.cjs", "action/checksums.json"]) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.copyFileSync(path.join(root, rel), path.join(dir, rel));
  }
  return dir;
}

test("the repository has one version", () => {
  const { version, problems } = check(root);
  assert.deepEqual(problems, []);
  assert.match(version, /^\d+\.\d+\.\d+/);
  assert.deepEqual(check(root, `v${version}`).problems, []);
  assert.match(check(root, "v999.0.0").problems.join("\n"), /tag v999\.0\.0 is not v/);
});

test("a place that disagrees is named", () => {
  const cases = [
    ["worker-template/Cargo.toml", (s) => s.replace(/^version = "[^"]+"/m, 'version = "9.9.9"'), /worker-template\/Cargo.toml/],
    ["npm/stateful-ci/package.json", (s) => s.replace('"version": "0.0.0-dev"', '"version": "9.9.9"'), /package.json: version 9.9.9/],
    ["npm/stateful-ci/package.json", (s) => s.replace('"@stateful-ci/cli-win32-x64": "0.0.0-dev"', '"@stateful-ci/cli-win32-x64": "1.0.0"'), /cli-win32-x64@1.0.0/],
    ["Cargo.toml", (s) => s.replace(/(stateful-ci-trust = \{ path = "trust", version = )"[^"]+"/, '$1"9.9.9"'), /stateful-ci-trust has version 9.9.9/],
  ];
  for (const [rel, edit, want] of cases) {
    const dir = copyRepoParts();
    const file = path.join(dir, rel);
    const before = fs.readFileSync(file, "utf8");
    const after = edit(before);
    assert.notEqual(after, before, `the edit of ${rel} changed nothing`);
    fs.writeFileSync(file, after);
    assert.match(check(dir).problems.join("\n"), want);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
