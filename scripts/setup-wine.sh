#!/usr/bin/env bash
# Makes sure Wine is installed: scripts/test-windows.sh runs the Windows
# build of the engine (cross-built for x86_64-pc-windows-gnu) under it.
# Idempotent and instant when wine is already there; otherwise installs
# Debian's wine64 package with apt-get (as root, or through sudo).
set -euo pipefail
# shellcheck source=scripts/lib/tools.sh
. "$(dirname "$0")/lib/tools.sh"
ensure_apt_command wine wine64
echo "wine: $(command -v wine) ($(wine --version 2>/dev/null))"
