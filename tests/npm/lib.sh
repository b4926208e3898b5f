# shellcheck shell=bash
# Helpers shared by tests/npm/test.sh and tests/npm/test-cross.sh: the local
# Cloudflare API emulator (tests/cloudflare-emulator, Node 22) and a
# `deploy --dry-run` against it. Needs $node22 and $root set.
# shellcheck disable=SC2154 # node22 and root: set by the sourcing script

EMU_ACCOUNT=0123456789abcdef0123456789abcdef
EMU_TOKEN=tok-npm-test-5f1e2d3c4b5a69788796a5b4c3d2e1f0
emulator_pid=""

# start_emulator DIR: starts the emulator on a free port; sets EMU_API.
start_emulator() {
  local dir="$1"
  mkdir -p "$dir"
  cat >"$dir/accounts.json" <<JSON
{"accounts": [{"id": "$EMU_ACCOUNT", "name": "Team", "workers_subdomain": "team"}],
 "tokens": [{"id": "a0000000000000000000000000000009", "value": "$EMU_TOKEN", "owner": "user",
   "accounts": ["$EMU_ACCOUNT"],
   "permissions": ["Workers Scripts Edit", "D1 Edit", "Workers R2 Storage Edit", "Account Settings Read"]}]}
JSON
  mkfifo "$dir/in"
  WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
    "$node22" "$root/tests/cloudflare-emulator/src/cli.js" --port 0 --exit-on-stdin-close \
    --config "$dir/accounts.json" <"$dir/in" >"$dir/log" 2>&1 &
  emulator_pid=$!
  exec 8>"$dir/in"
  for _ in $(seq 480); do
    grep -q '^emulator: api=' "$dir/log" && break
    kill -0 "$emulator_pid" 2>/dev/null || return 1
    sleep 0.25
  done
  EMU_API="$(sed -n 's/^emulator: api=\([^ ]*\).*/\1/p' "$dir/log" | head -1)"
  [ -n "$EMU_API" ]
}

stop_emulator() {
  if [ -n "$emulator_pid" ]; then
    exec 8>&- 2>/dev/null || true
    kill -TERM "$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
    emulator_pid=""
  fi
}

# deploy_dry_run EMUDIR WORKDIR CMD...: `CMD deploy --dry-run` in a fresh
# folder against the emulator; fails when it asks for the Worker bundle.
deploy_dry_run() {
  local dir="$2"
  shift 2
  mkdir -p "$dir"
  local out status
  out="$(cd "$dir" && env -u STATEFUL_CI_BUNDLE_DIR CLOUDFLARE_API_BASE_URL="$EMU_API" \
    CLOUDFLARE_API_TOKEN="$EMU_TOKEN" CLOUDFLARE_ACCOUNT_ID="$EMU_ACCOUNT" STATEFUL_CI_NO_KEYRING=1 \
    "$@" deploy --dry-run --repository octo/app --default-branch main </dev/null 2>&1)"
  status=$?
  echo "$out"
  if echo "$out" | grep -q "built without the Worker bundle"; then return 1; fi
  return "$status"
}
