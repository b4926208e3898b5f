#!/usr/bin/env bash
# The Linux arm64 release package, cross-built on this machine. Kept out of
# scripts/test.sh (CI): a cold build rebuilds std and every dependency for
# aarch64 in release mode (33 min measured on two busy cores; 35 s for the
# whole test when warm). A release check, run by hand before tagging
# (docs/RELEASING.md):
#   - scripts/npm-pack.sh OUT aarch64-unknown-linux-musl builds it
#     (scripts/cross-build.sh: cargo-zigbuild + zig from PyPI) and packs it;
#   - npm installs it with --os=linux --cpu=arm64, and bun with --cpu/--os;
#   - the launcher, told it runs on arm64, selects that package;
#   - the binary is a static aarch64 executable; under qemu-user (Debian's
#     qemu-user-static, installed here when missing) it says its version and
#     `deploy --dry-run` reaches the Cloudflare emulator with the embedded
#     Worker.
# Closes with `N passed, N failed[, N skipped]`.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/tools.sh
. "$root/scripts/lib/tools.sh"
ensure_bun || exit 1
work="$(mktemp -d)"
node22="$NODE22"
# shellcheck source=tests/npm/lib.sh
. "$root/tests/npm/lib.sh"
trap 'stop_emulator; rm -rf "$work"' EXIT
passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
not_ok() { failed=$((failed + 1)); echo "FAIL $1"; shift; for l in "$@"; do printf '     %s\n' "$l"; done; }
skip() { skipped=$((skipped + 1)); echo "SKIP $1: $2"; }
export npm_config_cache="$work/npm-cache" npm_config_userconfig="$work/npmrc" npm_config_update_notifier=false
: >"$work/npmrc"
export BUN_INSTALL_CACHE_DIR="$work/bun-cache"
dead_registry="http://127.0.0.1:9/"
version="$(node "$root/scripts/check-version.cjs")"

start=$(date +%s)
if bash "$root/scripts/npm-pack.sh" "$work/dist" aarch64-unknown-linux-musl >"$work/pack.out" 2>"$work/pack.err"; then
  ok "npm-pack.sh packs linux-arm64 ($(($(date +%s) - start)) s)"
else
  not_ok "npm-pack.sh OUT aarch64-unknown-linux-musl" "$(tail -30 "$work/pack.err")"
  echo "$passed passed, $failed failed"
  exit 1
fi
launcher="$work/dist/stateful-ci-$version.tgz"
pkg="$work/dist/stateful-ci-cli-linux-arm64-$version.tgz"
if tar -xzOf "$pkg" package/package.json | node -e '
  const m = JSON.parse(require("fs").readFileSync(0, "utf8"));
  process.exit(m.os[0] === "linux" && m.cpu[0] === "arm64" && !m.libc ? 0 : 1)'; then
  ok "the linux-arm64 package says os linux, cpu arm64, no libc (static)"
else
  not_ok "the linux-arm64 package manifest" "$(tar -xzOf "$pkg" package/package.json)"
fi
mkdir -p "$work/x" && tar -xzf "$pkg" -C "$work/x"
binary="$work/x/package/bin/stateful-ci"
desc="$(file -b "$binary" 2>/dev/null || od -An -tx1 -N20 "$binary")"
if echo "$desc" | grep -q "ARM aarch64" && echo "$desc" | grep -q "statically linked"; then
  ok "the packed binary is a static aarch64 executable"
else
  not_ok "the packed binary is static aarch64" "$desc"
fi

mkdir -p "$work/npm" && echo '{"name":"p","private":true}' >"$work/npm/package.json"
# Named as tarballs, both are direct dependencies, and npm then checks the
# platform package's cpu against this machine even with --cpu (a registry
# install resolves the launcher's optional dependency for --cpu instead):
# --force lets the direct tarball in.
if (cd "$work/npm" && npm install --os=linux --cpu=arm64 --force --registry "$dead_registry" --fetch-retries 0 "$launcher" "$pkg" >"$work/npm.log" 2>&1) &&
  [ -f "$work/npm/node_modules/@stateful-ci/cli-linux-arm64/bin/stateful-ci" ]; then
  ok "npm install --os=linux --cpu=arm64 installs the launcher and the arm64 package"
else
  not_ok "npm install --os=linux --cpu=arm64" "$(tail -15 "$work/npm.log")"
fi
mkdir -p "$work/bun" && echo '{"name":"b","private":true}' >"$work/bun/package.json"
printf '[install]\nregistry = "%s"\n' "$dead_registry" >"$work/bun/bunfig.toml"
if (cd "$work/bun" && "$BUN" add --cpu=arm64 --os=linux "$launcher" "$pkg" >"$work/bun.log" 2>&1) &&
  [ -f "$work/bun/node_modules/@stateful-ci/cli-linux-arm64/bin/stateful-ci" ]; then
  ok "bun add --cpu=arm64 --os=linux installs the launcher and the arm64 package"
else
  not_ok "bun add --cpu=arm64 --os=linux" "$(tail -15 "$work/bun.log")"
fi

# The launcher, on a machine that says arm64, runs the arm64 package's binary
# (which this x86_64 machine cannot execute without binfmt: the error names it).
echo 'Object.defineProperty(process, "arch", { value: "arm64" });' >"$work/arm64.cjs"
out="$(node -r "$work/arm64.cjs" "$work/npm/node_modules/stateful-ci/bin/stateful-ci.js" --version 2>&1)"
if echo "$out" | grep -qE "stateful-ci $version|cli-linux-arm64/bin/stateful-ci"; then
  ok "the launcher on arm64 selects @stateful-ci/cli-linux-arm64"
else
  not_ok "the launcher on arm64 selects the arm64 package" "$out"
fi

qemu=""
for q in qemu-aarch64-static qemu-aarch64; do command -v "$q" >/dev/null && qemu="$q" && break; done
if [ -z "$qemu" ] && command -v apt-get >/dev/null; then
  (apt-get install -y -q qemu-user-static >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q qemu-user-static >/dev/null 2>&1; }) || true
  for q in qemu-aarch64-static qemu-aarch64; do command -v "$q" >/dev/null && qemu="$q" && break; done
fi
if [ -n "$qemu" ]; then
  said="$("$qemu" "$work/npm/node_modules/@stateful-ci/cli-linux-arm64/bin/stateful-ci" --version 2>&1)"
  if [ "$said" = "stateful-ci $version" ]; then ok "under $qemu: $said"; else not_ok "under $qemu --version" "$said"; fi
  if [ -x "$node22" ] && [ -d "$root/tests/cloudflare-emulator/node_modules" ] && start_emulator "$work/emu"; then
    if deploy_dry_run "$work/emu" "$work/deploy" "$qemu" "$work/npm/node_modules/@stateful-ci/cli-linux-arm64/bin/stateful-ci" >"$work/deploy.log" 2>&1; then
      ok "under $qemu: deploy --dry-run reaches the emulator with the embedded Worker"
    else
      not_ok "under $qemu: deploy --dry-run" "$(tail -15 "$work/deploy.log")"
    fi
    stop_emulator
  else
    skip "deploy --dry-run under qemu" "the Cloudflare emulator could not start (scripts/setup-emulator.sh)"
  fi
else
  skip "run the arm64 binary" "no qemu-user (Debian: apt-get install qemu-user-static)"
fi
echo "$passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
[ "$failed" -eq 0 ]
