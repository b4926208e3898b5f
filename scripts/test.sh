#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs every test suite.
# Each setup step is idempotent and quick when already done; slow tools are
# cached outside the clone in the tools folder (scripts/lib/tools.env).
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
unset CLOUDFLARE_API_TOKEN CLOUDFLARE_ACCOUNT_ID

section() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

section "setup: Node 22, wasm toolchain, Worker bundle, emulator, lint tools, tmux, Wine, qemu-user"
# tmux: the dashboard test drives the real TUI in a terminal (tests/integration/status.rs)
# Wine, qemu-user: run the Windows and Linux arm64 builds' tests (scripts/test-platforms.sh)
bash scripts/setup.sh node wasm worker emulator lint tmux platforms

section "Shell scripts: ShellCheck"
# Every script of the repository (CI, setup, tests, benchmarks), with the
# files they source followed (-x); the workflows' run: blocks are checked
# by actionlint, which calls the same ShellCheck (tests/integration).
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh
ensure_shellcheck
git ls-files -z -- '*.sh' .ci/run | xargs -0 "$SHELLCHECK" -x

section "Rust: format, lint, tests (the backend tests need the Worker under workerd)"
cargo fmt --all -- --check
# Clippy lints the workspace inside the test build instead of in a build of
# its own: `cargo clippy` is `cargo check` with clippy-driver as the
# workspace's rustc wrapper and its arguments in CLIPPY_ARGS, and a check
# build compiles every dependency a second time (metadata only), minutes on
# CI's 2 cores. `cargo test --workspace` builds every target
# `--all-targets` would check (libraries, the binary, unit and integration
# tests; there are no examples or benches), so this is `cargo clippy
# --workspace --all-targets -- -D warnings`. Exported for the rest of this
# script: a later cargo call without the wrapper would rebuild the
# workspace's crates (scripts/lib/worker-cargo.sh clears it for the wasm
# build, which uses another compiler).
clippy_driver=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver) || {
  echo "test: clippy-driver not found; install clippy (rustup component add clippy)" >&2
  exit 1
}
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
bash scripts/lib/check-clippy-wrapper.sh
STATEFUL_CI_REQUIRE_WORKERD=1 cargo test --workspace --locked

# --- trust crate on the Worker's target (wasm32): build + Node smoke run ---
section "trust crate on wasm32"
bash scripts/check-trust-wasm.sh

# --- other platforms' builds (Debian's rustc with its std rebuilt, zig as
# the C compiler): Windows under Wine (the runtime's tests and a round trip
# through stateful-ci.exe), Linux arm64 under qemu-user (the runtime's
# tests), macOS type-checked. Another compiler than the workspace's, so
# without the clippy wrapper. ---
section "Windows (Wine), Linux arm64 (qemu-user), macOS (check)"
env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS bash scripts/test-platforms.sh

# --- Worker backend: node:test suite under workerd + Rust driver ---
section "Worker under workerd"
bash scripts/test-worker.sh

# --- Cloudflare emulator (tests/cloudflare-emulator): node:test suite over real
# workerd (miniflare); the contract is in tests/cloudflare-emulator/contract/.
section "Cloudflare emulator"
bash scripts/test-emulator.sh

# --- presets with real package managers: the generated workflow stays exactly
# as strict as the lock file across a lock-file change (tiny npm, pip, Cargo
# projects; needs the registries; about a minute) ---
section "Presets: lock-file changes with npm, pip, Cargo"
# (Its Cargo fixture is a user's project: built without this script's lints.)
STATEFUL_CI_BIN="$PWD/target/debug/stateful-ci" env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
  bash scripts/test-presets.sh

# --- npm launcher, action.yml, YAML lint, Action harness ---
section "npm launcher, action.yml, Action harness"
# npm-pack.sh packs a release-gated binary (the Worker embedded, the action
# pinned by commit) from the dev profile: nothing these tests check depends
# on optimisation, and a release build of every dependency would cost CI's
# 2 cores minutes. It rebuilds target/debug/stateful-ci with the release
# gate, so this section runs after everything else that uses that binary.
STATEFUL_CI_PACK_PROFILE=dev bash tests/npm/test.sh
