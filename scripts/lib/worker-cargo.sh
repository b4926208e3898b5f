# shellcheck shell=bash
# Sourced by scripts/build-worker.sh and scripts/check-trust-wasm.sh: runs
# cargo on the Worker's workspace (worker-template) for wasm32, with the
# toolchain scripts/setup-wasm.sh chose and the same flags every time, so the
# Worker and the trust crate's wasm smoke module share one std build and one
# set of compiled dependencies (worker-template/target).
#
#   worker_cargo build --release --locked [cargo arguments...]
#
# Needs scripts/lib/tools.sh sourced first. Holds a lock for the life of the
# calling script: builds of different clones go through one fixed path.

worker_cargo() {
  local root route cargo_home manifest
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  route=$(cat "$TOOLS_DIR/wasm-route" 2>/dev/null || true)
  if [ -z "$route" ]; then
    echo "worker_cargo: the wasm toolchain is not set up; run scripts/setup-wasm.sh first" >&2
    return 1
  fi
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  # Build through one fixed path, whatever the clone's location: cargo
  # derives symbol hashes (and so code layout) from the absolute paths of
  # path dependencies, so this keeps the bytes independent of where the clone
  # is and of the user's home. A lock serialises builds of different clones.
  local fixed=/tmp/stateful-ci-worker-src
  if [ -z "${WORKER_CARGO_LOCKED:-}" ]; then
    exec 9>>"$fixed.lock" || exec 9>>"$TOOLS_DIR/worker-build.lock"
    flock 9
    WORKER_CARGO_LOCKED=1
  fi
  if ! ln -sfn "$root" "$fixed" 2>/dev/null; then
    echo "worker_cargo: cannot point $fixed at this clone (owned by another user?); building in place, so the bytes may differ from other machines' builds" >&2
    fixed=$root
  fi
  manifest="$fixed/worker-template/Cargo.toml"
  (
    # scripts/test.sh lints through clippy-driver as the workspace wrapper;
    # it is the host toolchain's and must not wrap the wasm build's compiler.
    unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
    export RUSTFLAGS="--remap-path-prefix=$fixed=/stateful-ci --remap-path-prefix=$root=/stateful-ci --remap-path-prefix=$cargo_home=/cargo ${RUSTFLAGS_EXTRA:-}"
    cd "$root/worker-template" || exit 1
    if [ "$route" = debian ]; then
      # Debian's rustc-web rebuilds std for wasm32 (build-std in .cargo/config.toml).
      RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo "$@" --manifest-path "$manifest" --target wasm32-unknown-unknown
    else
      cargo "$@" --manifest-path "$manifest" --target wasm32-unknown-unknown
    fi
  )
}
