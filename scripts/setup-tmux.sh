#!/usr/bin/env bash
# Makes sure tmux is installed: the dashboard's real-terminal test
# (tests/integration/status.rs) drives `stateful-ci` inside tmux.
# Idempotent and instant when tmux is already there; otherwise installs the
# Debian/Ubuntu package with apt-get (as root, or through sudo).
set -euo pipefail
if command -v tmux >/dev/null 2>&1; then
  echo "tmux: $(command -v tmux) ($(tmux -V))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: tmux is missing and apt-get is not available; install tmux with your package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends tmux >/dev/null
echo "tmux: $(command -v tmux) ($(tmux -V))"
