#!/usr/bin/env bash
# Builds the Worker bundle and runs its tests under workerd (miniflare) with
# local D1, R2, Durable Objects and a fake OIDC issuer. Everything stays on
# 127.0.0.1. Sets up the toolchain first (quick when already installed).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh
bash scripts/setup-wasm.sh
bash scripts/build-worker.sh
export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false
unset CLOUDFLARE_API_TOKEN CLOUDFLARE_ACCOUNT_ID
node_bin="$NODE22"
cd tests/worker
"$node_bin" --test --test-concurrency=1 test/*.test.mjs
cd ../..
# The same Worker driven from Rust with the protocol crate's wire types.
# (--workspace, as scripts/test.sh builds it: -p alone would resolve features
# differently and rebuild dependencies.)
STATEFUL_CI_REQUIRE_WORKERD=1 cargo test --workspace --locked --test workerd
