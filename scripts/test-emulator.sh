#!/usr/bin/env bash
# Runs the local Cloudflare emulator's own test suite (tests/cloudflare-emulator) under Node 22
# with real workerd via miniflare. Installs what it needs first (scripts/setup-emulator.sh).
# The contract is the in-repo tests/cloudflare-emulator/contract/ (or STATEFUL_CI_OPENAPI).
set -euo pipefail
cd "$(dirname "$0")/.."
NODE22="$(bash scripts/setup-emulator.sh)"
cd tests/cloudflare-emulator
WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
  "$NODE22" --test --test-concurrency=2 'test/*.test.js'
