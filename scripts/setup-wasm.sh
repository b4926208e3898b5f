#!/usr/bin/env bash
# Makes the Worker's wasm build possible on this machine, idempotently:
#   1. a Rust compiler that can target wasm32-unknown-unknown: rustup's target
#      when it is installed (`rustup target add wasm32-unknown-unknown` on a
#      laptop with network), else Debian's rustc-web with the std source
#      (built with -Zbuild-std; see docs/WORKER.md);
#   2. wasm-bindgen-cli at exactly the version in worker-template/Cargo.lock,
#      built once into $STATEFUL_CI_TOOLS (outside the clone);
#   3. Node 22 (scripts/setup-node.sh) and the worker tests' npm packages.
# Writes the chosen route to $STATEFUL_CI_TOOLS/wasm-route so
# scripts/build-worker.sh uses the same one. Quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh
STATEFUL_CI_TOOLS=$TOOLS_DIR
mkdir -p "$STATEFUL_CI_TOOLS"

log() { echo "setup-wasm: $*" >&2; }

# --- 1. compiler -------------------------------------------------------------
route=""
if command -v rustup >/dev/null 2>&1; then
  # Use rustup's target only when it is already installed: nothing here
  # downloads a toolchain from outside the package registries.
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    route=rustup
  fi
fi
if [ -z "$route" ]; then
  need_apt=0
  for f in /usr/bin/rustc /usr/bin/cargo /usr/lib/rustlib/src/rust/library/Cargo.lock /usr/bin/rust-lld; do
    [ -e "$f" ] || need_apt=1
  done
  if [ "$need_apt" = 1 ]; then
    log "rustup has no wasm32-unknown-unknown target; installing Debian's rustc-web (offline route)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    pkgs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
    # apt allows one installer at a time; wait for the lock instead of failing.
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
      if $sudo apt-get install -y -q "${pkgs[@]}" >/dev/null 2>&1; then break; fi
      if [ "$attempt" = 1 ]; then $sudo apt-get update -q >/dev/null 2>&1 || true; fi
      if [ "$attempt" = 10 ]; then
        log "could not install ${pkgs[*]} with apt-get; install them by hand and re-run"
        exit 1
      fi
      sleep 6
    done
  fi
  route=debian
fi
echo "$route" > "$STATEFUL_CI_TOOLS/wasm-route"

# --- 2. wasm-bindgen-cli -----------------------------------------------------
wbg_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' worker-template/Cargo.lock)
if [ -z "$wbg_version" ]; then
  log "worker-template/Cargo.lock names no wasm-bindgen version; run cargo generate-lockfile there"
  exit 1
fi
wbg_root="$STATEFUL_CI_TOOLS/wasm-bindgen-$wbg_version"
if ! "$wbg_root/bin/wasm-bindgen" --version 2>/dev/null | grep -q "$wbg_version"; then
  log "building wasm-bindgen-cli $wbg_version into $wbg_root (a few minutes, once)"
  # Not --locked: its lockfile pins crates some mirrors lack. Only the
  # `wasm-bindgen` binary, without default features: they give its test
  # runner TLS for downloads (rustls and ring, C and assembly to compile),
  # which the bundle build never uses.
  cargo install -q wasm-bindgen-cli --version "=$wbg_version" --root "$wbg_root" \
    --no-default-features --bin wasm-bindgen
fi

# --- 3. Node 22 and the worker tests' packages -------------------------------
bash scripts/setup-node.sh
node_bin="$NODE22"
stamp=tests/worker/node_modules/.stateful-ci-installed
if [ ! -f "$stamp" ] || ! cmp -s tests/worker/package.json "$stamp"; then
  log "installing tests/worker npm packages (pinned in its package.json)"
  # No lockfile: it would record the registry host; versions are pinned exactly.
  (cd tests/worker && PATH="$(dirname "$node_bin"):$PATH" npm install -q --no-package-lock --no-audit --no-fund >/dev/null)
  cp tests/worker/package.json "$stamp"
fi
