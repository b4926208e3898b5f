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
# The Rust standard library for the target:
#   - rustup's, when `rustup target list --installed` has it (GitHub runners:
#     release.yml runs `rustup target add` first);
#   - else Debian's rustc-web with its std source (scripts/setup-wasm.sh
#     installs it), rebuilt for the target with -Zbuild-std; zig then brings
#     the musl or mingw C runtime (-Clink-self-contained=no).
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
TOOLS_DIR="${STATEFUL_CI_TOOLS:-$HOME/.cache/stateful-ci-tools}"
ZIGLANG_VERSION=0.15.2       # PyPI `ziglang`: the zig compiler in a wheel
CARGO_ZIGBUILD_VERSION=0.24.0 # PyPI `cargo-zigbuild`: the cargo subcommand in a wheel
zig_dir="$TOOLS_DIR/zigbuild-$ZIGLANG_VERSION-$CARGO_ZIGBUILD_VERSION"
if ! [ -x "$zig_dir/bin/cargo-zigbuild" ] || ! PYTHONPATH="$zig_dir" python3 -m ziglang version >/dev/null 2>&1; then
  echo "cross-build: installing ziglang==$ZIGLANG_VERSION and cargo-zigbuild==$CARGO_ZIGBUILD_VERSION (PyPI) into $TOOLS_DIR" >&2
  rm -rf "$zig_dir"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --only-binary=:all: --target "$zig_dir" "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" >&2
fi
# cargo-zigbuild finds zig through `python3 -m ziglang` when no zig is on PATH.
export PATH="$zig_dir/bin:$PATH" PYTHONPATH="$zig_dir${PYTHONPATH:+:$PYTHONPATH}"

export STATEFUL_CI_RELEASE=1
if [ -z "${STATEFUL_CI_ACTION_SHA:-}" ]; then
  STATEFUL_CI_ACTION_SHA="$(git -C "$root" rev-parse HEAD)"
  export STATEFUL_CI_ACTION_SHA
fi

cd "$root"
if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "cross-build: $target with rustup's std" >&2
  cargo zigbuild --release --locked --target "$target" --bin stateful-ci >&2
elif [ -x /usr/bin/rustc ] && [ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ]; then
  echo "cross-build: $target with Debian's rustc and its std rebuilt (-Zbuild-std)" >&2
  extra=""
  case "$target" in
    *-windows-gnu)
      # Debian's rustc links every windows-gnu program with -lssp_nonshared
      # -lssp (its target spec's late-link-args: Debian's mingw-w64 is built
      # with _FORTIFY_SOURCE), which zig's mingw does not ship. Nothing here
      # calls the stack protector's functions (the link fails loudly if
      # something does), so empty archives satisfy the flags.
      if RUSTC_BOOTSTRAP=1 /usr/bin/rustc --print target-spec-json -Z unstable-options --target "$target" | grep -q '"-lssp"'; then
        stubs="$root/target/cross/ssp-stubs"
        mkdir -p "$stubs"
        for lib in libssp.a libssp_nonshared.a; do
          [ -f "$stubs/$lib" ] || python3 -m ziglang ar rc "$stubs/$lib"
        done
        extra="-Lnative=$stubs"
      fi
      ;;
  esac
  # Its own target directory: another compiler than the everyday builds.
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Clink-self-contained=no $extra ${RUSTFLAGS:-}" \
    CARGO_TARGET_DIR="$root/target/cross" \
    /usr/bin/cargo zigbuild --release --locked --target "$target" --bin stateful-ci \
    -Zbuild-std=std,panic_abort >&2
else
  echo "cross-build: no Rust std for $target: run \`rustup target add $target\` (with network) or scripts/setup-wasm.sh (installs Debian's rustc-web)" >&2
  exit 1
fi
exe=stateful-ci
case "$target" in *-windows-*) exe=stateful-ci.exe ;; esac
for dir in "$root/target/$target/release" "$root/target/cross/$target/release"; do
  if [ -f "$dir/$exe" ]; then
    found="$dir/$exe"
  fi
done
if [ -z "${found:-}" ]; then
  echo "cross-build: the build wrote no binary for $target" >&2
  exit 1
fi
# Newest of the two, in case both routes were used on this machine.
if [ -f "$root/target/$target/release/$exe" ] && [ -f "$root/target/cross/$target/release/$exe" ]; then
  if [ "$root/target/$target/release/$exe" -nt "$root/target/cross/$target/release/$exe" ]; then
    found="$root/target/$target/release/$exe"
  else
    found="$root/target/cross/$target/release/$exe"
  fi
fi
echo "$found"
