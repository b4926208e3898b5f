#!/usr/bin/env node
// The `stateful-ci` command of the npm package: finds the prebuilt binary for
// this os/cpu/libc in one of the optional platform packages and runs it with
// the same arguments, passing on the signals it gets and handing back the
// binary's exit code (or the signal that ended it).
// It downloads nothing and has no install script: the package manager picks
// the platform package through its `os`/`cpu`/`libc` fields.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { spawn } = require("node:child_process");

// Platform key -> package: the five release targets. The key is
// `${process.platform}-${process.arch}`. The Linux binaries are static musl
// builds, so one package per CPU serves glibc and musl systems (Debian,
// Alpine, any container) alike; its package.json names no `libc`. `target`
// is the Rust target the release builds for it.
const PLATFORMS = {
  "linux-x64": { pkg: "@stateful-ci/cli-linux-x64", os: "linux", cpu: "x64", target: "x86_64-unknown-linux-musl" },
  "linux-arm64": { pkg: "@stateful-ci/cli-linux-arm64", os: "linux", cpu: "arm64", target: "aarch64-unknown-linux-musl" },
  "darwin-x64": { pkg: "@stateful-ci/cli-darwin-x64", os: "darwin", cpu: "x64", target: "x86_64-apple-darwin" },
  "darwin-arm64": { pkg: "@stateful-ci/cli-darwin-arm64", os: "darwin", cpu: "arm64", target: "aarch64-apple-darwin" },
  "win32-x64": { pkg: "@stateful-ci/cli-win32-x64", os: "win32", cpu: "x64", target: "x86_64-pc-windows-msvc" },
};

const BUILD_FROM_SOURCE =
  "build it from a clone of the stateful-ci repository (`cargo build --release --locked`, see its README) " +
  "and set STATEFUL_CI_BINARY to the binary's path";

function binaryName(platform) {
  return platform === "win32" ? "stateful-ci.exe" : "stateful-ci";
}

// musl or glibc, the way detect-libc does it: ldd's text first (cheap), then
// the process report's glibc version (present only on glibc).
function isMusl() {
  if (process.platform !== "linux") return false;
  try {
    const ldd = fs.readFileSync("/usr/bin/ldd", "latin1");
    if (ldd.includes("musl")) return true;
    if (ldd.includes("GNU C Library") || ldd.includes("GLIBC")) return false;
  } catch {
    // no ldd: ask the process report
  }
  try {
    if (process.report && typeof process.report.getReport === "function") {
      const report = process.report.getReport();
      const header = (typeof report === "string" ? JSON.parse(report) : report).header || {};
      return !header.glibcVersionRuntime;
    }
  } catch {
    // no report either: assume glibc, the common case
  }
  return false;
}

// The platform key for a machine; pure, so that a test can ask it about
// every platform. `musl` only names the C library in messages: the Linux
// packages are static and serve both.
function platformKey(platform = process.platform, arch = process.arch) {
  return `${platform}-${arch}`;
}

// The package for a machine, or null when no prebuilt binary exists for it.
function selectPackage({ platform = process.platform, arch = process.arch } = {}) {
  const entry = PLATFORMS[platformKey(platform, arch)];
  return entry ? entry.pkg : null;
}

// `linux-x64 (musl)` and the like, for messages.
function describePlatform() {
  const key = platformKey();
  if (process.platform !== "linux") return key;
  return `${key} (${isMusl() ? "musl" : "glibc"})`;
}

function fail(message) {
  process.stderr.write(`stateful-ci: ${message}\n`);
  process.exit(1);
}

// Returns the path of the binary to run, or exits with an error that says
// which platform was looked for and how to fix it.
function resolveBinary() {
  const override = process.env.STATEFUL_CI_BINARY;
  if (override) {
    if (!fs.existsSync(override)) {
      fail(
        `STATEFUL_CI_BINARY is set to ${JSON.stringify(override)}, but no file is there. ` +
          "Fix: point it at a stateful-ci binary, or unset it to use the one from the platform package.",
      );
    }
    return override;
  }
  const key = platformKey();
  const entry = PLATFORMS[key];
  if (!entry) {
    fail(
      `there is no prebuilt stateful-ci for this platform (${describePlatform()}); ` +
        `prebuilt ones exist for ${Object.keys(PLATFORMS).join(", ")}. Fix: ${BUILD_FROM_SOURCE}.`,
    );
  }
  let pkgJson;
  try {
    pkgJson = require.resolve(`${entry.pkg}/package.json`);
  } catch {
    fail(
      `the platform package ${entry.pkg} (for ${describePlatform()}) is not installed next to the stateful-ci package. ` +
        "It is an optional dependency, so it is left out when installing with --omit=optional / --no-optional, " +
        "when the lock file was made on another platform, or when the package manager could not fetch it. " +
        `Fix: reinstall stateful-ci with optional dependencies on this machine, or ${BUILD_FROM_SOURCE}.`,
    );
  }
  const binary = path.join(path.dirname(pkgJson), "bin", binaryName(process.platform));
  if (!fs.existsSync(binary)) {
    fail(
      `the platform package ${entry.pkg} is installed but has no binary at ${binary}. ` +
        `Fix: reinstall stateful-ci, or ${BUILD_FROM_SOURCE}.`,
    );
  }
  return binary;
}

// Signals the launcher passes on to the binary: a signal sent to the
// launcher alone (a process manager, `kill <pid>`, a CI runner stopping a
// step) would otherwise end the launcher and leave the binary running with
// no parent; `stateful-ci dev` and its emulator were found still serving an
// hour later. A terminal's Ctrl-C reaches both (one process group); the
// binary then gets SIGINT twice, which ends it the same way.
// On Windows there is nothing to pass on: Ctrl-C and Ctrl-Break go to every
// process of the console, the binary included, and Node's `kill` there would
// end the binary abruptly, so the launcher only keeps waiting for it.
const WINDOWS = process.platform === "win32";
const SIGNALS = WINDOWS ? ["SIGINT", "SIGBREAK"] : ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

// End this process the way the binary ended: by its signal, so that callers
// see it, or with its exit code.
function exitLike(status, signal) {
  if (signal) {
    for (const s of SIGNALS) process.removeAllListeners(s);
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    // Signals that cannot end this process (or none on Windows): use the
    // shell convention.
    const number = require("node:os").constants.signals[signal] || 0;
    process.exit(128 + number);
  }
  process.exit(status === null ? 1 : status);
}

function main() {
  const binary = resolveBinary();
  const child = spawn(binary, process.argv.slice(2), { stdio: "inherit", windowsHide: true });
  for (const signal of SIGNALS) {
    process.on(signal, () => {
      if (!WINDOWS && child.exitCode === null && child.signalCode === null) {
        try {
          child.kill(signal);
        } catch {
          // already gone: its exit is on its way
        }
      }
    });
  }
  child.on("error", (error) => {
    fail(
      `could not run ${binary}: ${error.message}. ` +
        "Fix: check that the file is an executable stateful-ci binary for this platform.",
    );
  });
  child.on("exit", (status, signal) => exitLike(status, signal));
}

module.exports = { PLATFORMS, platformKey, selectPackage, binaryName, isMusl };

if (require.main === module) {
  main();
}
