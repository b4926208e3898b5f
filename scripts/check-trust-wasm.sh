#!/usr/bin/env bash
# Checks the trust crate (stateful-ci-trust) on the Worker's target,
# wasm32-unknown-unknown, then runs it: trust/tests/wasm/smoke.mjs signs
# tokens with Node's own RSA and checks what the wasm module decides.
#
# Toolchain, idempotent: rustup's wasm32-unknown-unknown target when it is
# installed; otherwise Debian's rustc-web 1.96 with std rebuilt by
# -Zbuild-std, installing its packages with apt-get when missing (root only).
# Builds go to target/wasm-check so the native build's cache is untouched.
# Cold: a few minutes (std is rebuilt); warm: seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

target=wasm32-unknown-unknown
out=target/wasm-check
pkgs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)

install_debian_toolchain() {
    local missing=() p attempt
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "check-trust-wasm: no wasm32 toolchain: run 'rustup target add $target', or as root on Debian: apt-get install -y ${pkgs[*]}" >&2
        exit 1
    fi
    echo "check-trust-wasm: installing ${missing[*]}"
    # apt serves one client at a time: wait out a concurrent install.
    for attempt in $(seq 1 30); do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 && return 0
        ((attempt == 1)) && { apt-get update -q >/dev/null 2>&1 || true; }
        sleep 10
    done
    echo "check-trust-wasm: 'apt-get install -y ${missing[*]}' keeps failing; run it by hand to see why" >&2
    exit 1
}

build() { # extra cargo arguments
    if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        cargo build --locked --target "$target" --target-dir "$out" -p stateful-ci-trust "$@"
    else
        RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$out" \
            /usr/bin/cargo build --locked -Zbuild-std=std,panic_abort --target "$target" -p stateful-ci-trust "$@"
    fi
}

if ! { command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; }; then
    install_debian_toolchain
    echo "check-trust-wasm: using Debian rustc-web ($(/usr/bin/rustc --version)) with -Zbuild-std"
fi
build
build --example wasm_smoke

command -v node >/dev/null 2>&1 || {
    echo "check-trust-wasm: node is needed to run the wasm smoke test: install Node.js (apt-get install -y nodejs)" >&2
    exit 1
}
node trust/tests/wasm/smoke.mjs "$out/$target/debug/examples/wasm_smoke.wasm"
