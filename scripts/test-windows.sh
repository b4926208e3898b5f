#!/usr/bin/env bash
# The Windows build of the engine, run here under Wine: the runtime's tests
# and a save/restore round trip through stateful-ci.exe, both cross-built
# for x86_64-pc-windows-gnu (scripts/lib/cross-cargo.sh: zig's mingw).
#
# What it catches: the Windows code paths (runtime/src/fsat/windows.rs, the
# local store, the CLI) really running, through Wine's implementation of
# the Win32 and NT calls they make. It found a local store that could not
# update its head on Windows (std's File::open on a directory: "Access
# denied"). What it cannot: NTFS itself (Wine keeps files on this machine's
# file system, and shows a symlink there as the file it points to, so no
# symlink is tested here), Windows' own file locking and sharing rules.
# Those are for ci.yml's `windows` job on windows-latest.
#
# usage: scripts/test-windows.sh   (after scripts/setup.sh wasm wine)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/lib/cross-cargo.sh
. "$root/scripts/lib/cross-cargo.sh"
# shellcheck source=scripts/lib/wine.sh
. "$root/scripts/lib/wine.sh"
target=x86_64-pc-windows-gnu
command -v wine >/dev/null 2>&1 || {
  echo "test-windows: wine is not installed; run scripts/setup.sh wine" >&2
  exit 1
}

work="$(mktemp -d -t stateful-ci-wine.XXXXXX)"
cleanup() {
  WINEPREFIX="$work/prefix" wineserver -k >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "test-windows: building the runtime's tests and stateful-ci.exe for $target" >&2
cross_cargo "$target" test --no-run -p stateful-ci-runtime --message-format=json >"$work/build.json"
mapfile -t tests < <(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])
' "$work/build.json")
[ "${#tests[@]}" -gt 0 ] || { echo "test-windows: the build named no test executable" >&2; exit 1; }
cross_cargo "$target" build --bin stateful-ci
exe="$CROSS_TARGET_DIR/$target/debug/stateful-ci.exe"
[ -f "$exe" ] || { echo "test-windows: no $exe after the build" >&2; exit 1; }

wine_ready "$work/prefix"

for t in "${tests[@]}"; do
  echo "test-windows: $(basename "$t")" >&2
  wine "$t" -q
done

echo "test-windows: save and restore through stateful-ci.exe" >&2
ws="$work/ws"
mkdir -p "$ws/node_modules/a/b" "$ws/node_modules/empty-dir"
printf 'hello\n' >"$ws/node_modules/a/b/x.txt"
: >"$ws/node_modules/a/empty.txt"
head -c 3000000 /dev/urandom >"$ws/node_modules/big.bin"
for i in $(seq 200); do printf 'module.exports = %d;\n' "$i" >"$ws/node_modules/a/m$i.js"; done
save() { (cd "$ws" && wine "$exe" save --store ../store --path node_modules --json) >"$work/out.json"; }
restore() { (cd "$ws" && wine "$exe" restore --store ../store --path node_modules --json) >"$work/out.json"; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/out.json" "$1"; }
export STATEFUL_CI_CACHE_DIR="$work/cache"
save
[ "$(field outcome)" = saved ] || { cat "$work/out.json" >&2; echo "test-windows: the first save did not save" >&2; exit 1; }
cp -r "$ws/node_modules" "$work/expected"
rm -rf "$ws/node_modules"
restore
diff -r "$work/expected" "$ws/node_modules"
restore
[ "$(field files_written)" = 0 ] || { echo "test-windows: a restore onto a matching tree rewrote files" >&2; exit 1; }
# The stat index the restore wrote (Windows: no inode, the last-write time
# as both times) tells the next save that nothing changed.
save
[ "$(field outcome)" = unchanged ] || { cat "$work/out.json" >&2; echo "test-windows: a save right after a restore found changes" >&2; exit 1; }
[ "$(field files_read)" = 0 ] || { cat "$work/out.json" >&2; echo "test-windows: a save right after a restore read files" >&2; exit 1; }
printf 'changed\n' >>"$ws/node_modules/a/m7.js"
save
[ "$(field outcome)" = saved ] && [ "$(field files_read)" = 1 ] || { cat "$work/out.json" >&2; echo "test-windows: a save after one edit did not read just that file" >&2; exit 1; }
cp -r "$ws/node_modules" "$work/expected2"
printf 'local edit\n' >>"$ws/node_modules/a/m7.js"
rm "$ws/node_modules/a/m8.js"
restore
diff -r "$work/expected2" "$ws/node_modules"
echo "test-windows: passed (${#tests[@]} test executables, round trip)" >&2
