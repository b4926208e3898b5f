#!/usr/bin/env bash
# Checks the trust crate (stateful-ci-trust) on the Worker's target,
# wasm32-unknown-unknown, then runs it: trust/tests/wasm/smoke.mjs signs
# tokens with Node's own RSA and checks what the wasm module decides, and
# prints what one verification costs there.
#
# The module (worker-template/examples/trust_smoke.rs) is built in the
# Worker's workspace with the Worker's toolchain, profile and flags
# (scripts/lib/worker-cargo.sh), so it runs the code the Worker runs and
# shares the Worker's std build and dependencies: after
# scripts/build-worker.sh it costs seconds. Sets up the toolchain first
# (scripts/setup-wasm.sh; quick when already installed).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh
bash scripts/setup-wasm.sh
# shellcheck source=scripts/lib/worker-cargo.sh
. scripts/lib/worker-cargo.sh
worker_cargo build --release --locked --example trust_smoke
"$NODE22" trust/tests/wasm/smoke.mjs worker-template/target/wasm32-unknown-unknown/release/examples/trust_smoke.wasm
