#!/usr/bin/env bash
# Makes sure the runners for other platforms' builds are installed:
# scripts/test-platforms.sh runs the Windows build under Wine (Debian's
# wine: /usr/bin/wine, wineboot and wineserver, with wine64, the loader it
# depends on; wine64 alone has no command on PATH) and the Linux arm64
# build under qemu-user (Debian's qemu-user: qemu-aarch64). Idempotent
# and instant when both are there; otherwise installs them with apt-get (as
# root, or through sudo).
set -euo pipefail
# shellcheck source=scripts/lib/tools.sh
. "$(dirname "$0")/lib/tools.sh"
ensure_apt_command wine wine
ensure_apt_command qemu-aarch64 qemu-user
echo "wine: $(command -v wine) ($(wine --version 2>/dev/null))"
echo "qemu-aarch64: $(command -v qemu-aarch64) ($(qemu-aarch64 --version 2>/dev/null | head -1))"
