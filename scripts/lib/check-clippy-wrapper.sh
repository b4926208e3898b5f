#!/usr/bin/env bash
# scripts/test.sh lints through RUSTC_WORKSPACE_WRAPPER=clippy-driver and
# CLIPPY_ARGS (how `cargo clippy` drives clippy-driver; not a documented
# interface). This proves the pair still denies a clippy lint, so a
# toolchain that changed it fails here instead of silently linting nothing:
# a throwaway crate with one clippy::len_zero finding must fail to build.
set -euo pipefail
: "${RUSTC_WORKSPACE_WRAPPER:?set RUSTC_WORKSPACE_WRAPPER to clippy-driver first}"
: "${CLIPPY_ARGS:?set CLIPPY_ARGS first}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src"
printf '[package]\nname = "lint-probe"\nversion = "0.0.0"\nedition = "2021"\n\n[workspace]\n' > "$dir/Cargo.toml"
printf 'fn main() {\n    let v: Vec<u8> = std::env::args().map(|a| a.len() as u8).collect();\n    println!("{}", v.len() == 0);\n}\n' > "$dir/src/main.rs"
if out=$(cd "$dir" && CARGO_TARGET_DIR="$dir/target" cargo build --offline --quiet 2>&1); then
  echo "check-clippy-wrapper: a crate with a clippy finding built cleanly: RUSTC_WORKSPACE_WRAPPER=$RUSTC_WORKSPACE_WRAPPER with CLIPPY_ARGS no longer lints; run 'cargo clippy --workspace --all-targets -- -D warnings' in scripts/test.sh instead" >&2
  exit 1
fi
if ! grep -q "clippy::len.zero" <<<"$out"; then
  echo "check-clippy-wrapper: the probe failed, but not on its clippy finding:" >&2
  echo "$out" >&2
  exit 1
fi
echo "check-clippy-wrapper: clippy-driver denies warnings in the test build"
