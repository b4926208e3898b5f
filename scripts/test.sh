#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine and runs every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
