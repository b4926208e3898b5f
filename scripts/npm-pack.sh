#!/usr/bin/env bash
# Builds a release binary and packs the npm launcher (`stateful-ci`) and one
# platform package (`@stateful-ci/cli-<platform>`) into OUTDIR, with the
# version of `[workspace.package]` in the root Cargo.toml.
#
#   scripts/npm-pack.sh OUTDIR            this machine's platform (e.g. linux-x64)
#   scripts/npm-pack.sh OUTDIR TARGET     a target cross-built by
#                                         scripts/cross-build.sh:
#                                         aarch64-unknown-linux-musl (linux-arm64),
#                                         x86_64-unknown-linux-musl (linux-x64) or
#                                         x86_64-pc-windows-gnu (win32-x64: the
#                                         release builds that package natively
#                                         with MSVC; this one is for testing)
#
# A release build (STATEFUL_CI_RELEASE=1): it fails when the Worker bundle
# (worker-template/dist, scripts/build-worker.sh) is missing, and init in the
# packed binary pins the action by STATEFUL_CI_ACTION_SHA (default: this
# checkout's `git rev-parse HEAD`). Idempotent: a rerun rebuilds only what
# changed and rewrites the same two tarballs. Needs cargo and node/npm; no
# network but the registries cargo itself may use.
#
# STATEFUL_CI_PACK_PROFILE=dev packs this machine's binary from the dev
# profile instead (tests/npm/test.sh: what those tests check does not depend
# on optimisation, and after `cargo test` the dev build is seconds, a release
# build minutes). Releases never set it.
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || [ -z "$1" ]; then
  echo "usage: scripts/npm-pack.sh OUTDIR [aarch64-unknown-linux-musl|x86_64-unknown-linux-musl|x86_64-pc-windows-gnu]" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
target="${2:-}"

version="$(node "$root/scripts/check-version.cjs")" || {
  echo "npm-pack: the versions disagree (above); make them agree first" >&2
  exit 1
}

export STATEFUL_CI_RELEASE=1
if [ -z "${STATEFUL_CI_ACTION_SHA:-}" ]; then
  STATEFUL_CI_ACTION_SHA="$(git -C "$root" rev-parse HEAD)"
  export STATEFUL_CI_ACTION_SHA
fi

launcher_js="$root/npm/stateful-ci/bin/stateful-ci.js"
run_binary=()
stage="" wine_prefix=""
cleanup() {
  if [ -n "$wine_prefix" ]; then
    WINEPREFIX="$wine_prefix" wineserver -k >/dev/null 2>&1 || true
    rm -rf "$wine_prefix"
  fi
  if [ -n "$stage" ]; then rm -rf "$stage"; fi
}
trap cleanup EXIT
if [ -z "$target" ]; then
  case "${STATEFUL_CI_PACK_PROFILE:-release}" in
    release) profile_args=(--release) profile_dir=release ;;
    dev) profile_args=() profile_dir=debug ;;
    *)
      echo "npm-pack: STATEFUL_CI_PACK_PROFILE is '$STATEFUL_CI_PACK_PROFILE'; use release (the default) or dev" >&2
      exit 2
      ;;
  esac
  (cd "$root" && cargo build "${profile_args[@]}" --locked --bin stateful-ci)
  target_dir="$(cd "$root" && cargo metadata --no-deps --format-version 1 |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
  binary="$target_dir/$profile_dir/stateful-ci"
  [ -x "$binary.exe" ] && binary="$binary.exe"
  platform="$(node -e 'console.log(require(process.argv[1]).platformKey())' "$launcher_js")"
else
  # shellcheck disable=SC2016 # JavaScript in single quotes: its ${} is node's
  platform="$(node -e '
    const { PLATFORMS } = require(process.argv[1]);
    // The GNU-ABI Windows build fills the same package as the MSVC release build.
    const wanted = process.argv[2] === "x86_64-pc-windows-gnu" ? "x86_64-pc-windows-msvc" : process.argv[2];
    const key = Object.keys(PLATFORMS).find((k) => PLATFORMS[k].target === wanted);
    if (!key) { console.error(`npm-pack: no platform package is built for ${process.argv[2]}`); process.exit(2); }
    console.log(key);' "$launcher_js" "$target")"
  binary="$(bash "$root/scripts/cross-build.sh" "$target" | tail -1)"
  host_arch="$(uname -m)"
  case "$target" in
    *-windows-*)
      if command -v wine >/dev/null 2>&1; then
        # A prefix of its own (scripts/lib/wine.sh: one that Rust programs
        # start in), removed on exit.
        # shellcheck source=scripts/lib/cross-cargo.sh
        . "$root/scripts/lib/cross-cargo.sh"
        # shellcheck source=scripts/lib/wine.sh
        . "$root/scripts/lib/wine.sh"
        wine_prefix="$(mktemp -d -t stateful-ci-npm-pack-wine.XXXXXX)"
        wine_ready "$wine_prefix"
        run_binary=(wine)
      fi
      ;;
    "$host_arch"-*) run_binary=(env) ;;
    aarch64-*)
      for q in qemu-aarch64-static qemu-aarch64; do
        if command -v "$q" >/dev/null 2>&1; then run_binary=("$q"); break; fi
      done
      ;;
  esac
fi

# The binary must say the version we are about to publish it under (a
# foreign binary: through qemu-user when there is one, else not run here).
if [ -z "$target" ] || [ "${#run_binary[@]}" -gt 0 ]; then
  said="$("${run_binary[@]}" "$binary" --version | tr -d '\r')"
  if [ "$said" != "stateful-ci $version" ]; then
    echo "npm-pack: $binary --version says '$said', expected 'stateful-ci $version'; rebuild it" >&2
    exit 1
  fi
else
  echo "npm-pack: no qemu-user or wine for $target here; not running the binary before packing it" >&2
fi

stage="$(mktemp -d)"
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
