#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs every test suite.
# Each setup step is idempotent and quick when already done; slow tools are
# cached outside the clone in the tools folder (scripts/lib/tools.env).
set -euo pipefail
cd "$(dirname "$0")/.."
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
unset CLOUDFLARE_API_TOKEN CLOUDFLARE_ACCOUNT_ID

section() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

section "setup: Node 22, wasm toolchain, Worker bundle, emulator, lint tools, tmux"
# tmux: the dashboard test drives the real TUI in a terminal (tests/integration/status.rs)
bash scripts/setup.sh node wasm worker emulator lint tmux

section "Rust: format, lint, tests (the backend tests need the Worker under workerd)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
STATEFUL_CI_REQUIRE_WORKERD=1 cargo test --workspace --locked

# --- trust crate on the Worker's target (wasm32): build + Node smoke run ---
section "trust crate on wasm32"
bash scripts/check-trust-wasm.sh

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
STATEFUL_CI_BIN="$PWD/target/debug/stateful-ci" bash scripts/test-presets.sh

# --- npm launcher, action.yml, YAML lint, Action harness ---
section "npm launcher, action.yml, Action harness"
# npm-pack.sh packs a release-gated binary (the Worker embedded, the action
# pinned by commit) from the dev profile: nothing these tests check depends
# on optimisation, and a release build of every dependency would cost CI's
# 2 cores minutes. It rebuilds target/debug/stateful-ci with the release
# gate, so this section runs after everything else that uses that binary.
STATEFUL_CI_PACK_PROFILE=dev bash tests/npm/test.sh
