#!/usr/bin/env bash
# Builds the release binary and packs the npm launcher (`stateful-ci`) and the
# platform package of this machine (`@stateful-ci/cli-<platform>`, e.g.
# linux-x64) into OUTDIR, with the version of `[workspace.package]` in the root
# Cargo.toml. Idempotent: a rerun rebuilds only what changed and rewrites the
# same two tarballs. Needs cargo and node/npm; no network but the registries
# cargo itself may use.
#
# usage: scripts/npm-pack.sh OUTDIR
set -euo pipefail

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: scripts/npm-pack.sh OUTDIR" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"

version="$(awk '
  /^\[/ { in_section = ($0 == "[workspace.package]") }
  in_section && /^version[[:space:]]*=/ { sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit }
' "$root/Cargo.toml")"
if [ -z "$version" ]; then
  echo "npm-pack: no version in [workspace.package] of $root/Cargo.toml; add version = \"X.Y.Z\" there" >&2
  exit 1
fi

(cd "$root" && cargo build --release --locked --bin stateful-ci)
target_dir="$(cd "$root" && cargo metadata --no-deps --format-version 1 |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
binary="$target_dir/release/stateful-ci"
[ -x "$binary.exe" ] && binary="$binary.exe"

# The binary must say the version we are about to publish it under.
said="$("$binary" --version)"
if [ "$said" != "stateful-ci $version" ]; then
  echo "npm-pack: $binary --version says '$said', expected 'stateful-ci $version'; rebuild it" >&2
  exit 1
fi

platform="$(node -e 'console.log(require(process.argv[1]).platformKey())' "$root/npm/stateful-ci/bin/stateful-ci.js")"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
node "$root/npm/stage.js" --version "$version" --binary "$binary" --platform "$platform" --out "$stage" >/dev/null

rm -f "$out/stateful-ci-$version.tgz" "$out/stateful-ci-cli-$platform-$version.tgz"
for dir in "$stage/stateful-ci" "$stage/cli-$platform"; do
  (cd "$dir" && npm pack --silent --pack-destination "$out" >/dev/null)
done
for file in "stateful-ci-$version.tgz" "stateful-ci-cli-$platform-$version.tgz"; do
  if [ ! -s "$out/$file" ]; then
    echo "npm-pack: npm pack did not write $out/$file" >&2
    exit 1
  fi
  echo "$out/$file"
done
