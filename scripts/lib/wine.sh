# shellcheck shell=bash
# Sourced by scripts/test-platforms.sh and scripts/npm-pack.sh (after
# scripts/lib/cross-cargo.sh): running Windows programs built by Rust under
# Wine.
#
#   wine_ready PREFIX
#
# makes PREFIX a Wine prefix (a folder this script owns, never the user's
# ~/.wine) in which such programs start, exports WINEPREFIX=PREFIX and
# WINEDEBUG=-all. Rust's std (>= 1.78) imports ProcessPrng from
# bcryptprimitives.dll (rust-lang/rust#121337), which some Wine releases lack
# (Debian 12's 8.0 among them: every Rust program fails to start,
# rust-lang/rust#128066); then the prefix gets
# scripts/wine/process-prng.c, built with zig's mingw, as that DLL in its
# system32, where Wine loads a DLL it has no builtin of.
wine_ready() {
  export WINEPREFIX="$1" WINEDEBUG=-all
  mkdir -p "$WINEPREFIX"
  wineboot --init >/dev/null 2>&1 || true
  local system32="$WINEPREFIX/drive_c/windows/system32"
  if ! [ -d "$system32" ]; then
    echo "wine: wineboot made no prefix at $WINEPREFIX ($(wine --version 2>&1)); run \`WINEPREFIX=$WINEPREFIX wineboot --init\` to see why, or reinstall Wine (scripts/setup.sh platforms)" >&2
    return 1
  fi
  if ! [ -f "$system32/bcryptprimitives.dll" ]; then
    echo "wine: $(wine --version) has no bcryptprimitives.dll; giving its prefix the ProcessPrng shim" >&2
    ensure_zigbuild
    zig_cc -target x86_64-windows-gnu -shared -O2 -o "$system32/bcryptprimitives.dll" \
      "$CROSS_ROOT/scripts/wine/process-prng.c" -ladvapi32
  fi
}
