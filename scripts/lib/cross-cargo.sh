# shellcheck shell=bash
# Sourced by scripts/cross-build.sh and scripts/test-platforms.sh: cargo for
# another target than this machine's, with zig as the C compiler and linker
# (cargo-zigbuild; zig brings the musl or mingw C runtime).
#
#   cross_cargo TARGET SUBCOMMAND [ARGS...]
#
# runs `cargo-zigbuild SUBCOMMAND --target TARGET ARGS...` (SUBCOMMAND:
# build, test, check, ...) in the repository, with the target's Rust
# standard library from:
#   - rustup, when `rustup target list --installed` has it (GitHub runners:
#     release.yml runs `rustup target add` first); target dir target/;
#   - else Debian's rustc-web with its std source (scripts/setup-wasm.sh
#     installs it), the std rebuilt for the target with -Zbuild-std
#     (CROSS_BUILD_STD, default `std`; `std,panic_abort` for a release
#     build) and Debian's cargo of the same release; its own target dir,
#     target/cross (another compiler than the everyday builds).
# CROSS_TARGET_DIR is set to the target dir used. ziglang and cargo-zigbuild
# come from PyPI, pinned (wheels with the binaries), into the tools folder
# (ensure_zigbuild in scripts/lib/tools.sh).

CROSS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib/tools.sh
. "$CROSS_ROOT/scripts/lib/tools.sh"

# zig_cc ARGS...: zig's C compiler (after ensure_zigbuild).
zig_cc() {
  python3 -m ziglang cc "$@"
}

cross_cargo() {
  local target="$1" sub="$2"
  shift 2
  ensure_zigbuild
  if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "cross: $target with rustup's std" >&2
    CROSS_TARGET_DIR="${CARGO_TARGET_DIR:-$CROSS_ROOT/target}"
    (cd "$CROSS_ROOT" && cargo-zigbuild "$sub" --locked --target "$target" "$@")
  elif [ -x /usr/bin/rustc ] && [ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ]; then
    echo "cross: $target with Debian's rustc and its std rebuilt (-Zbuild-std)" >&2
    local extra=""
    case "$target" in
      *-windows-gnu)
        # Debian's rustc links every windows-gnu program with -lssp_nonshared
        # -lssp (its target spec's late-link-args: Debian's mingw-w64 is built
        # with _FORTIFY_SOURCE), which zig's mingw does not ship. Nothing here
        # calls the stack protector's functions (the link fails loudly if
        # something does), so empty archives satisfy the flags.
        if RUSTC_BOOTSTRAP=1 /usr/bin/rustc --print target-spec-json -Z unstable-options --target "$target" | grep -q '"-lssp"'; then
          local stubs="$CROSS_ROOT/target/cross/ssp-stubs" lib
          mkdir -p "$stubs"
          for lib in libssp.a libssp_nonshared.a; do
            [ -f "$stubs/$lib" ] || python3 -m ziglang ar rc "$stubs/$lib"
          done
          extra="-Lnative=$stubs"
        fi
        ;;
    esac
    CROSS_TARGET_DIR="$CROSS_ROOT/target/cross"
    # cargo-zigbuild runs the cargo named by CARGO.
    (cd "$CROSS_ROOT" && CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
      RUSTFLAGS="-Clink-self-contained=no $extra ${RUSTFLAGS:-}" CARGO_TARGET_DIR="$CROSS_TARGET_DIR" \
      cargo-zigbuild "$sub" --locked --target "$target" "-Zbuild-std=${CROSS_BUILD_STD:-std}" "$@")
  else
    echo "cross: no Rust std for $target: run \`rustup target add $target\` (with network) or scripts/setup-wasm.sh (installs Debian's rustc-web)" >&2
    return 1
  fi
}
