#!/usr/bin/env bash
# Checks that the trust crate (stateful-ci-trust) builds for
# wasm32-unknown-unknown, the Worker's target. Idempotent:
#   - with rustup's wasm32-unknown-unknown target installed, uses it;
#   - otherwise uses Debian's rustc-web 1.96 (std rebuilt with -Zbuild-std),
#     installing the packages with apt-get when they are missing (root only).
# Output goes to target/wasm-check so the native build's cache is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

target=wasm32-unknown-unknown
out=target/wasm-check

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "check-trust-wasm: using rustup's $target target"
    exec cargo build --locked --target "$target" -p stateful-ci-trust --target-dir "$out"
fi

pkgs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "check-trust-wasm: no wasm32 toolchain: run 'rustup target add $target', or as root on Debian: apt-get install -y ${pkgs[*]}" >&2
        exit 1
    fi
    echo "check-trust-wasm: installing ${missing[*]}"
    # apt allows one user at a time; wait for a concurrent install to finish.
    for attempt in $(seq 1 30); do
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; then
            break
        fi
        if ((attempt == 1)); then apt-get update -q >/dev/null 2>&1 || true; fi
        if ((attempt == 30)); then
            echo "check-trust-wasm: apt-get install ${missing[*]} failed; run it by hand to see why" >&2
            exit 1
        fi
        sleep 10
    done
fi

echo "check-trust-wasm: using Debian rustc-web ($(/usr/bin/rustc --version)) with -Zbuild-std"
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$out" \
    /usr/bin/cargo build --locked -Zbuild-std=std,panic_abort --target "$target" -p stateful-ci-trust
echo "check-trust-wasm: ok"
