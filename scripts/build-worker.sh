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
wbg_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' worker-template/Cargo.lock)
wbg="$STATEFUL_CI_TOOLS/wasm-bindgen-$wbg_version/bin/wasm-bindgen"
if [ ! -x "$wbg" ]; then
  echo "build-worker: wasm-bindgen $wbg_version is missing; run scripts/setup-wasm.sh" >&2
  exit 1
fi
# shellcheck source=scripts/lib/worker-cargo.sh
. scripts/lib/worker-cargo.sh
worker_cargo build --release --locked
cd worker-template
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
