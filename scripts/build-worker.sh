#!/usr/bin/env bash
# Builds the Worker bundle the CLI deploys into worker-template/dist/:
#   index.js       the entry module (application/javascript+module): wasm-bindgen's
#                  glue plus the default export (see scripts/bundle-worker.mjs)
#   index_bg.wasm  the compiled Worker (application/wasm)
# Needs scripts/setup-wasm.sh first. Reproducible: same sources and tools
# give the same bytes (paths are remapped, no timestamps are embedded).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/lib/tools.sh
. scripts/lib/tools.sh
STATEFUL_CI_TOOLS=$TOOLS_DIR
route=$(cat "$STATEFUL_CI_TOOLS/wasm-route" 2>/dev/null || true)
if [ -z "$route" ]; then
  echo "build-worker: the wasm toolchain is not set up; run scripts/setup-wasm.sh first" >&2
  exit 1
fi
wbg_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' worker-template/Cargo.lock)
wbg="$STATEFUL_CI_TOOLS/wasm-bindgen-$wbg_version/bin/wasm-bindgen"
if [ ! -x "$wbg" ]; then
  echo "build-worker: wasm-bindgen $wbg_version is missing; run scripts/setup-wasm.sh" >&2
  exit 1
fi
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# Build through one fixed path, whatever the clone's location: cargo derives
# symbol hashes (and so code layout) from the absolute paths of path
# dependencies, so this keeps the bytes independent of where the clone is
# and of the user's home. A lock serialises builds of different clones.
fixed=/tmp/stateful-ci-worker-src
exec 9>>"$fixed.lock" || exec 9>>"$STATEFUL_CI_TOOLS/worker-build.lock"
flock 9
if ! ln -sfn "$root" "$fixed" 2>/dev/null; then
  echo "build-worker: cannot point $fixed at this clone (owned by another user?); building in place, so the bytes may differ from other machines' builds" >&2
  fixed=$root
fi
export RUSTFLAGS="--remap-path-prefix=$fixed=/stateful-ci --remap-path-prefix=$root=/stateful-ci --remap-path-prefix=$cargo_home=/cargo ${RUSTFLAGS_EXTRA:-}"
cd worker-template
manifest="$fixed/worker-template/Cargo.toml"
if [ "$route" = debian ]; then
  # Debian's rustc-web rebuilds std for wasm32 (build-std in .cargo/config.toml).
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --manifest-path "$manifest" --release --locked --target wasm32-unknown-unknown
else
  cargo build --manifest-path "$manifest" --release --locked --target wasm32-unknown-unknown
fi
out=dist
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
"$wbg" --target module --out-name index --out-dir "$out.tmp" --no-typescript \
  --remove-name-section --remove-producers-section \
  target/wasm32-unknown-unknown/release/stateful_ci_worker.wasm
"$NODE22" "$root/scripts/bundle-worker.mjs" "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
ls -l "$out" >&2
echo "build-worker: wasm $(wc -c < "$out/index_bg.wasm") bytes, gzip $(gzip -9 -c "$out/index_bg.wasm" | wc -c) bytes" >&2
