#!/usr/bin/env bash
# Makes sure Wine is installed: scripts/test-windows.sh runs the Windows
# build of the engine (cross-built for x86_64-pc-windows-gnu) under it.
# Idempotent and instant when wine is already there; otherwise installs
# Debian's wine64 package with apt-get (as root, or through sudo).
set -euo pipefail
if command -v wine >/dev/null 2>&1; then
  echo "wine: $(command -v wine) ($(wine --version 2>/dev/null))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: wine is missing and apt-get is not available; install wine (64-bit) with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends wine64 >/dev/null
echo "wine: $(command -v wine) ($(wine --version 2>/dev/null))"
