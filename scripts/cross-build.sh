#!/usr/bin/env bash
# Builds the stateful-ci release binary for a Linux musl target (static, runs
# on any Linux: glibc, musl, containers) or for Windows x64 (the GNU ABI,
# mingw's C runtime from zig: a check, from Linux, that the Windows build
# compiles and links; the release builds win32-x64 natively with MSVC on
# windows-latest) with cargo-zigbuild, zig as the C compiler and linker for
# every C dependency (zstd, ring, the vendored libdbus on Linux). Both come
# from PyPI, pinned (`ziglang`, `cargo-zigbuild`: wheels with the binaries),
# into the tools cache outside the clone.
#
# The Rust standard library for the target: rustup's, or Debian's rebuilt
# with -Zbuild-std (scripts/lib/cross-cargo.sh says when which).
#
# A release build: STATEFUL_CI_RELEASE=1, so a missing Worker bundle fails the
# build; STATEFUL_CI_ACTION_SHA defaults to `git rev-parse HEAD`.
#
# usage: scripts/cross-build.sh TARGET
#   TARGET: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl or
#   x86_64-pc-windows-gnu
# prints the path of the binary on its last line.
set -euo pipefail
if [ "$#" -ne 1 ]; then
  echo "usage: scripts/cross-build.sh TARGET   (x86_64-unknown-linux-musl, aarch64-unknown-linux-musl or x86_64-pc-windows-gnu)" >&2
  exit 2
fi
target="$1"
case "$target" in
  x86_64-unknown-linux-musl | aarch64-unknown-linux-musl | x86_64-pc-windows-gnu) ;;
  *)
    echo "cross-build: $target is not a target this script builds; use x86_64-unknown-linux-musl, aarch64-unknown-linux-musl or x86_64-pc-windows-gnu" >&2
    exit 2
    ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib/cross-cargo.sh
. "$root/scripts/lib/cross-cargo.sh"

export STATEFUL_CI_RELEASE=1
if [ -z "${STATEFUL_CI_ACTION_SHA:-}" ]; then
  STATEFUL_CI_ACTION_SHA="$(git -C "$root" rev-parse HEAD)"
  export STATEFUL_CI_ACTION_SHA
fi

CROSS_BUILD_STD=std,panic_abort cross_cargo "$target" build --release --bin stateful-ci >&2
exe=stateful-ci
case "$target" in *-windows-*) exe=stateful-ci.exe ;; esac
found="$CROSS_TARGET_DIR/$target/release/$exe"
if ! [ -f "$found" ]; then
  echo "cross-build: the build wrote no binary for $target (looked for $found)" >&2
  exit 1
fi
echo "$found"
