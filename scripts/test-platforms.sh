#!/usr/bin/env bash
# Other platforms' builds of the engine, checked on this Linux x86_64
# machine (cross-built through scripts/lib/cross-cargo.sh: cargo-zigbuild,
# Debian's std rebuilt for the target when rustup has none):
#
#   windows      x86_64-pc-windows-gnu, run under Wine: the runtime's
#                tests and a save/restore round trip through
#                stateful-ci.exe
#   linux-arm64  aarch64-unknown-linux-musl (the static build the npm
#                package and the Action ship), run under qemu-user: the
#                runtime's tests
#   macos        aarch64-apple-darwin, type-checked only (`cargo check`
#                of every crate and its tests against zig's macOS
#                headers; nothing here can link or run a macOS program)
#
# What it catches: the code each platform compiles and nobody runs on
# Linux x86_64 (runtime/src/fsat/windows.rs; the walk's readdir route on
# macOS; the libc constants, struct layouts and system calls of another
# architecture). Under Wine it found a local store that could not update
# its head on Windows (std's File::open on a directory: "Access denied").
# What it cannot: NTFS and APFS themselves (Wine and qemu-user keep files
# on this machine's file system, and Wine shows a symlink as the file it
# points to, so no symlink is tested under it), Windows' own locking and
# sharing rules, a real arm64 CPU's memory ordering. Those are for ci.yml's
# `windows` and `macos` jobs on GitHub's runners.
#
# usage: scripts/test-platforms.sh [windows|linux-arm64|macos]...
#        (default: all three; after scripts/setup.sh wasm platforms)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib/cross-cargo.sh
. "$root/scripts/lib/cross-cargo.sh"
# shellcheck source=scripts/lib/wine.sh
. "$root/scripts/lib/wine.sh"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(windows linux-arm64 macos)

work="$(mktemp -d -t stateful-ci-platforms.XXXXXX)"
cleanup() {
  WINEPREFIX="$work/prefix" wineserver -k >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "test-platforms: $1 is not installed; run scripts/setup.sh platforms" >&2
    exit 1
  }
}

# runtime_tests TARGET: builds the runtime's tests for TARGET and sets
# TESTS to their executables.
runtime_tests() {
  local target="$1"
  cross_cargo "$target" test --no-run -p stateful-ci-runtime --message-format=json >"$work/build-$target.json"
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])
' "$work/build-$target.json" >"$work/tests-$target"
  mapfile -t TESTS <"$work/tests-$target"
  [ "${#TESTS[@]}" -gt 0 ] || { echo "test-platforms: the $target build named no test executable" >&2; exit 1; }
}

# round_trip RUNNER EXE: save and restore through the binary, run by
# RUNNER (wine, qemu-aarch64), with a local store.
round_trip() {
  local runner="$1" exe="$2" ws="$work/ws"
  rm -rf "$ws" "$work/store" "$work/cache" "$work/expected" "$work/expected2"
  mkdir -p "$ws/node_modules/a/b" "$ws/node_modules/empty-dir"
  printf 'hello\n' >"$ws/node_modules/a/b/x.txt"
  : >"$ws/node_modules/a/empty.txt"
  head -c 3000000 /dev/urandom >"$ws/node_modules/big.bin"
  local i
  for i in $(seq 200); do printf 'module.exports = %d;\n' "$i" >"$ws/node_modules/a/m$i.js"; done
  save() { (cd "$ws" && "$runner" "$exe" save --store ../store --path node_modules --json) >"$work/out.json"; }
  restore() { (cd "$ws" && "$runner" "$exe" restore --store ../store --path node_modules --json) >"$work/out.json"; }
  field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/out.json" "$1"; }
  fail() { cat "$work/out.json" >&2; echo "test-platforms: $runner: $1" >&2; exit 1; }
  export STATEFUL_CI_CACHE_DIR="$work/cache"
  save
  [ "$(field outcome)" = saved ] || fail "the first save did not save"
  cp -r "$ws/node_modules" "$work/expected"
  rm -rf "$ws/node_modules"
  restore
  diff -r "$work/expected" "$ws/node_modules"
  restore
  [ "$(field files_written)" = 0 ] || fail "a restore onto a matching tree rewrote files"
  # The stat index the restore wrote (on Windows: no inode, the last-write
  # time as both times) tells the next save that nothing changed.
  save
  [ "$(field outcome)" = unchanged ] || fail "a save right after a restore found changes"
  [ "$(field files_read)" = 0 ] || fail "a save right after a restore read files"
  printf 'changed\n' >>"$ws/node_modules/a/m7.js"
  save
  [ "$(field outcome)" = saved ] && [ "$(field files_read)" = 1 ] || fail "a save after one edit did not read just that file"
  cp -r "$ws/node_modules" "$work/expected2"
  printf 'local edit\n' >>"$ws/node_modules/a/m7.js"
  rm "$ws/node_modules/a/m8.js"
  restore
  diff -r "$work/expected2" "$ws/node_modules"
}

windows() {
  local target=x86_64-pc-windows-gnu t exe
  need wine
  echo "test-platforms: windows: building the runtime's tests and stateful-ci.exe for $target" >&2
  runtime_tests "$target"
  cross_cargo "$target" build --bin stateful-ci
  exe="$CROSS_TARGET_DIR/$target/debug/stateful-ci.exe"
  [ -f "$exe" ] || { echo "test-platforms: no $exe after the build" >&2; exit 1; }
  wine_ready "$work/prefix"
  for t in "${TESTS[@]}"; do
    echo "test-platforms: windows: $(basename "$t")" >&2
    wine "$t" -q
  done
  echo "test-platforms: windows: save and restore through stateful-ci.exe" >&2
  round_trip wine "$exe"
  echo "test-platforms: windows: passed (${#TESTS[@]} test executables, round trip)" >&2
}

linux_arm64() {
  local target=aarch64-unknown-linux-musl t
  need qemu-aarch64
  echo "test-platforms: linux-arm64: building the runtime's tests for $target" >&2
  runtime_tests "$target"
  for t in "${TESTS[@]}"; do
    echo "test-platforms: linux-arm64: $(basename "$t")" >&2
    qemu-aarch64 "$t" -q
  done
  echo "test-platforms: linux-arm64: passed (${#TESTS[@]} test executables)" >&2
}

macos() {
  local target=aarch64-apple-darwin
  echo "test-platforms: macos: checking every crate and its tests for $target" >&2
  # Warnings are errors here as in the everyday lint: an unused import or
  # dead code on macOS alone is caught too.
  RUSTFLAGS="-Dwarnings ${RUSTFLAGS:-}" cross_cargo "$target" check --workspace --all-targets
  echo "test-platforms: macos: passed (cargo check)" >&2
}

for part in "${parts[@]}"; do
  case "$part" in
    windows) windows ;;
    linux-arm64) linux_arm64 ;;
    macos) macos ;;
    *)
      echo "test-platforms: unknown part '$part'; the parts are: windows linux-arm64 macos" >&2
      exit 2
      ;;
  esac
done
