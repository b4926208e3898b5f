#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# --- Cloudflare emulator (tests/cloudflare-emulator) ------------------------------------
# Node 22 + the emulator's npm deps, then its own node:test suite (real workerd via miniflare).
# Needs ../shared/cloudflare/cloudflare-subset.openapi.json beside the clone (or STATEFUL_CI_OPENAPI).
NODE22="$(bash scripts/setup-emulator.sh)"
(cd tests/cloudflare-emulator && WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
  "$NODE22" --test --test-concurrency=2 'test/*.test.js')
# --- end Cloudflare emulator ------------------------------------------------------------
