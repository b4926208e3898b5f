#!/usr/bin/env bash
# Makes sure tmux is installed: the dashboard's real-terminal test
# (tests/integration/status.rs) drives `stateful-ci` inside tmux.
# Idempotent and instant when tmux is already there; otherwise installs the
# Debian/Ubuntu package with apt-get (as root, or through sudo).
set -euo pipefail
# shellcheck source=scripts/lib/tools.sh
. "$(dirname "$0")/lib/tools.sh"
ensure_apt_command tmux tmux
echo "tmux: $(command -v tmux) ($(tmux -V))"
