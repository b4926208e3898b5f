#!/usr/bin/env bash
# Installs what the local Cloudflare emulator (tests/cloudflare-emulator) needs: Node 22 via
# scripts/setup-node.sh, then the emulator's exactly pinned npm dependencies (miniflare with its
# workerd binary package, ajv, ajv-formats). Idempotent: quick when package.json is unchanged.
# Prints the Node 22 binary's path on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup-node.sh" >&2
# shellcheck source=scripts/lib/tools.sh
. "$ROOT/scripts/lib/tools.sh"
NODE_BIN="$(dirname "$NODE22")"
EMU="$ROOT/tests/cloudflare-emulator"
STAMP="$EMU/node_modules/.stateful-ci-installed"
WANT="$(sha256sum "$EMU/package.json" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] || [ ! -d "$EMU/node_modules/miniflare" ]; then
  # npm runs under Node 22 so engine checks match the runtime; no lockfile is written (.npmrc).
  (cd "$EMU" && PATH="$NODE_BIN:$PATH" npm install --no-audit --no-fund >&2)
  echo "$WANT" > "$STAMP"
fi
echo "$NODE22"
