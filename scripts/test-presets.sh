#!/usr/bin/env bash
# Correctness of the presets with real package managers, quick enough for CI
# (< 1 minute once the binary is built): for a tiny npm, pip and Cargo project
# each, the workflow `stateful-ci init --yes` writes is run as a fresh runner
# would (fresh clone, empty HOME, local store), on a lock file, again, after a
# lock file change that removes one package and moves another, and back. After
# every run the installed packages must be exactly the lock file's (no stale
# package, none missing), including when the restored snapshot was taken on
# the other lock file. Needs the npm registry, PyPI and crates.io.
#
#   scripts/test-presets.sh [npm|pip|cargo ...]
#
# The same machinery as scripts/bench-presets.sh, which times the full-size
# projects; STATEFUL_CI_BIN defaults to the debug build here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${STATEFUL_CI_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --locked --quiet -p stateful-ci)
  export STATEFUL_CI_BIN=$ROOT/target/debug/stateful-ci
fi
TINY=1 exec bash "$ROOT/scripts/bench-presets.sh" "$@"
