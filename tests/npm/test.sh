#!/usr/bin/env bash
# Tests of the npm distribution and the GitHub Action with the real tools:
#   - scripts/npm-pack.sh packs the launcher and the platform package, twice
#     byte-identically, with the Cargo.toml version and no lifecycle script;
#   - npm and bun install the tarballs (no registry reachable) and
#     `stateful-ci --version` runs through each; arguments, exit codes and
#     signals pass through the launcher (a signal sent to the launcher alone
#     reaches the binary); its errors name the platform and fix;
#   - both packages are published to a local verdaccio (no uplinks) and
#     `npx stateful-ci --version` and `bunx stateful-ci --version` run from it;
#   - the launcher's choice for each of the five platforms (glibc and musl)
#     and one version everywhere (tests/npm/*.test.cjs, node:test);
#   - the packed binary carries the Worker: `deploy --dry-run` from the npm
#     install reaches the Cloudflare emulator;
#   - `stateful-ci dev` runs from the npm install (outside the checkout): its
#     backend line, a save and a restore through it, and the error naming
#     Node 22 when only an older one is there;
#   - actionlint + zizmor pass action.yml and .github/workflows with no
#     finding and catch a planted injection;
#   - `bunx stateful-ci init --yes` writes the one-step action pinned by commit;
#   - the Action harness (tests/action-harness): main, post, the two-step
#     form, save-on, the verified install from the local registry, a
#     simulated Windows runner.
# The Linux arm64 cross build is slower and runs in tests/npm/test-cross.sh.
# Tools are installed pinned by scripts/lib/tools.sh into the tools cache.
# Closes with `N passed, N failed[, N skipped]`; exit 1 if any failed.
# shellcheck disable=SC2016 # single quotes keep $ for the inner shell or node
set -uo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
# shellcheck source=scripts/lib/tools.sh
. "$root/scripts/lib/tools.sh"
set -e
ensure_bun
ensure_verdaccio
ensure_actionlint
ensure_zizmor
ensure_shellcheck
ensure_pyyaml
set +e

work="$(mktemp -d)"
registry_pid=""
cleanup() {
  if [ -n "$registry_pid" ]; then kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null; fi
  declare -F stop_emulator >/dev/null && stop_emulator
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
skipped=0
ok() {
  passed=$((passed + 1))
  echo "ok   $1"
}
not_ok() {
  failed=$((failed + 1))
  echo "FAIL $1"
  shift
  for line in "$@"; do printf '     %s\n' "$line"; done
}
skip() {
  skipped=$((skipped + 1))
  echo "SKIP $1: $2"
}
# expect NAME WANT_STATUS WANT_STDOUT CMD... : runs CMD, compares exit status
# and stdout (WANT_STDOUT '*' means any).
expect() {
  local name="$1" want_status="$2" want_out="$3"
  shift 3
  local out status
  out="$("$@" 2>"$work/stderr")"
  status=$?
  if [ "$status" = "$want_status" ] && { [ "$want_out" = "*" ] || [ "$out" = "$want_out" ]; }; then
    ok "$name"
  else
    not_ok "$name" "command: $*" "exit $status (want $want_status), stdout: $out" \
      "${want_out:+want stdout: $want_out}" "stderr: $(head -c 600 "$work/stderr")"
  fi
}
# expect_stderr NAME WANT_STATUS TEXT CMD... : exit status, and stderr contains TEXT.
expect_stderr() {
  local name="$1" want_status="$2" text="$3"
  shift 3
  "$@" >/dev/null 2>"$work/stderr"
  local status=$?
  if [ "$status" = "$want_status" ] && grep -qF -- "$text" "$work/stderr"; then
    ok "$name"
  else
    not_ok "$name" "command: $*" "exit $status (want $want_status)" "stderr: $(head -c 600 "$work/stderr")" \
      "wanted in stderr: $text"
  fi
}

# A registry address where nothing listens: installs from tarballs must not
# need one (and must never reach the public registry for our names).
dead_registry="http://127.0.0.1:9/"
export npm_config_cache="$work/npm-cache"
export npm_config_userconfig="$work/npmrc"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
: >"$work/npmrc"
export BUN_INSTALL_CACHE_DIR="$work/bun-cache"

version="$(awk '/^\[/ { s = ($0 == "[workspace.package]") }
  s && /^version[[:space:]]*=/ { sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit }' "$root/Cargo.toml")"
echo "# stateful-ci $version; bun $("$BUN" --version); verdaccio $VERDACCIO_VERSION; node $(node --version)"

# --- pack --------------------------------------------------------------------
if ! bash "$root/scripts/npm-pack.sh" "$work/dist" >"$work/pack.out" 2>"$work/pack.err"; then
  not_ok "npm-pack.sh packs" "$(tail -20 "$work/pack.err")"
  echo "$passed passed, $failed failed"
  exit 1
fi
launcher="$work/dist/stateful-ci-$version.tgz"
platform_tgz="$(grep -v "/stateful-ci-$version.tgz\$" "$work/pack.out")"
if [ -s "$launcher" ] && [ -s "$platform_tgz" ] && [ "$(wc -l <"$work/pack.out")" = 2 ]; then
  ok "npm-pack.sh writes the launcher and the platform tarball ($(basename "$platform_tgz"))"
else
  not_ok "npm-pack.sh writes two tarballs" "$(cat "$work/pack.out")"
fi
sums1="$(cd "$work/dist" && sha256sum ./*.tgz)"
bash "$root/scripts/npm-pack.sh" "$work/dist" >/dev/null 2>&1
sums2="$(cd "$work/dist" && sha256sum ./*.tgz)"
if [ "$sums1" = "$sums2" ]; then ok "npm-pack.sh is idempotent (same bytes on a rerun)"; else not_ok "npm-pack.sh rerun" "$sums1" "$sums2"; fi

manifest_check='
const m = JSON.parse(require("fs").readFileSync(0, "utf8"));
const want = process.argv[1];
const problems = [];
if (m.version !== want) problems.push(`version ${m.version} != ${want}`);
const scripts = Object.keys(m.scripts || {});
if (scripts.length) problems.push(`has scripts: ${scripts.join(", ")}`);
for (const [name, v] of Object.entries(m.optionalDependencies || {})) if (v !== want) problems.push(`${name}@${v}`);
if (m.name.startsWith("@stateful-ci/cli-") && !(m.os && m.cpu)) problems.push("platform package without os/cpu");
if (problems.length) { console.log(problems.join("; ")); process.exit(1); }'
for tgz in "$launcher" "$platform_tgz"; do
  if why="$(tar -xzOf "$tgz" package/package.json | node -e "$manifest_check" "$version")"; then
    ok "$(basename "$tgz"): version $version everywhere, no lifecycle scripts"
  else
    not_ok "$(basename "$tgz") manifest" "$why"
  fi
done

# --- npm installs the tarballs -----------------------------------------------
mkdir -p "$work/npm-project" && echo '{"name":"npm-project","private":true}' >"$work/npm-project/package.json"
if (cd "$work/npm-project" && npm install --registry "$dead_registry" --fetch-retries 0 \
  "$launcher" "$platform_tgz" >"$work/npm-install.log" 2>&1); then
  ok "npm installs both tarballs with no registry reachable"
else
  not_ok "npm install of the tarballs" "$(tail -20 "$work/npm-install.log")"
fi
npm_bin="$work/npm-project/node_modules/.bin/stateful-ci"
expect "npm: stateful-ci --version runs the packed binary" 0 "stateful-ci $version" "$npm_bin" --version
expect "npm: npm exec stateful-ci --version" 0 "stateful-ci $version" \
  bash -c 'cd "$1" && npm exec --offline -- stateful-ci --version' _ "$work/npm-project"
if grep -qE '"(pre|post)?install"' "$work"/npm-project/node_modules/stateful-ci/package.json \
  "$work"/npm-project/node_modules/@stateful-ci/*/package.json; then
  not_ok "npm: installed packages have no install scripts"
else
  ok "npm: installed packages have no install scripts"
fi

# --- the launcher's passthrough, with stand-in binaries ----------------------
cat >"$work/echo-args" <<'EOF'
#!/usr/bin/env node
process.stdout.write(JSON.stringify(process.argv.slice(2)));
process.exit(Number(process.env.STAND_IN_EXIT || 0));
EOF
cat >"$work/kill-self" <<'EOF'
#!/usr/bin/env bash
kill -TERM $$
EOF
chmod +x "$work/echo-args" "$work/kill-self"
expect "launcher: arguments reach the binary intact" 0 '["restore","--path","a b","ü\"q","","--x=$HOME"]' \
  env STATEFUL_CI_BINARY="$work/echo-args" "$npm_bin" restore --path "a b" 'ü"q' "" '--x=$HOME'
expect "launcher: the binary's exit code comes back (7)" 7 '[]' \
  env STATEFUL_CI_BINARY="$work/echo-args" STAND_IN_EXIT=7 "$npm_bin"
expect "launcher: a binary killed by SIGTERM ends the launcher by SIGTERM (143)" 143 "" \
  env STATEFUL_CI_BINARY="$work/kill-self" "$npm_bin"
# A stand-in that says when it is ready and exits 42 on SIGTERM.
cat >"$work/wait-term" <<'EOF'
#!/usr/bin/env bash
trap 'echo "$$" >"$WAIT_TERM_DIR/got-term"; exit 42' TERM
echo "$$" >"$WAIT_TERM_DIR/ready"
while :; do sleep 0.05; done
EOF
chmod +x "$work/wait-term"
# expect_forwarded NAME LAUNCHER...: SIGTERM sent to the launcher's pid alone
# reaches the binary, and the launcher exits with the binary's status (42).
expect_forwarded() {
  local name="$1" d status=0
  shift
  d="$(mktemp -d "$work/fwd.XXXXXX")"
  WAIT_TERM_DIR="$d" STATEFUL_CI_BINARY="$work/wait-term" "$@" </dev/null >/dev/null 2>"$d/stderr" &
  local launcher=$!
  for _ in $(seq 200); do [ -s "$d/ready" ] && break; sleep 0.05; done
  kill -TERM "$launcher" 2>/dev/null
  wait "$launcher" || status=$?
  if [ "$status" = 42 ] && [ -s "$d/got-term" ]; then
    ok "$name"
  else
    not_ok "$name" "launcher exit $status (want 42), binary got SIGTERM: $([ -s "$d/got-term" ] && echo yes || echo no)" \
      "stderr: $(head -c 600 "$d/stderr")"
    [ -s "$d/ready" ] && kill -KILL "$(cat "$d/ready")" 2>/dev/null
  fi
}
expect_forwarded "launcher: SIGTERM to the launcher alone reaches the binary, whose exit comes back (42)" "$npm_bin"
expect_stderr "launcher: a wrong STATEFUL_CI_BINARY is named, exit 1" 1 "STATEFUL_CI_BINARY is set to \"$work/nope\"" \
  env STATEFUL_CI_BINARY="$work/nope" "$npm_bin" --version
mkdir -p "$work/npm-launcher-only" && echo '{"name":"only","private":true}' >"$work/npm-launcher-only/package.json"
(cd "$work/npm-launcher-only" && npm install --registry "$dead_registry" --fetch-retries 0 "$launcher" >/dev/null 2>&1)
host_platform="$(node -e 'console.log(require(process.argv[1]).platformKey())' "$root/npm/stateful-ci/bin/stateful-ci.js")"
expect_stderr "launcher: without the platform package it names the package, the platform and the fix" 1 \
  "the platform package @stateful-ci/cli-$host_platform (for $host_platform" \
  "$work/npm-launcher-only/node_modules/.bin/stateful-ci" --version

# Platform selection for all five platforms (and glibc/musl), the version
# check, without installing anything (node:test files).
for t in launcher version; do
  if node --test "$root/tests/npm/$t.test.cjs" >"$work/$t-test.log" 2>&1; then
    ok "node --test tests/npm/$t.test.cjs ($(grep -c '^ok ' "$work/$t-test.log") tests)"
  else
    not_ok "node --test tests/npm/$t.test.cjs" "$(grep -B2 -A12 '^not ok' "$work/$t-test.log" | head -40)"
  fi
done

# The packed binary is built as releases are (STATEFUL_CI_RELEASE=1; in
# scripts/test.sh from the dev profile): it carries the Worker (deploy
# --dry-run reaches the API, the local Cloudflare emulator, instead of asking
# for the bundle) and pins the action by commit.
node22="$NODE22"
# shellcheck source=tests/npm/lib.sh
. "$root/tests/npm/lib.sh"
if [ -x "$node22" ] && [ -d "$root/tests/cloudflare-emulator/node_modules" ]; then
  if start_emulator "$work/emulator"; then
    if deploy_dry_run "$work/emulator" "$work/deploy-dir" "$npm_bin" >"$work/deploy.log" 2>&1; then
      ok "npm: deploy --dry-run from the npm install reaches the API (the emulator) with the embedded Worker"
    else
      not_ok "npm: deploy --dry-run from the npm install" "$(tail -15 "$work/deploy.log")"
    fi
    stop_emulator
  else
    not_ok "start the Cloudflare emulator" "$(tail -15 "$work/emulator/log")"
  fi
else
  skip "npm: deploy --dry-run against the emulator" "Node 22 or the emulator's packages are missing (scripts/setup-emulator.sh)"
fi

# The real binary's own exit codes through the launcher: usage errors are 2.
if "$npm_bin" --help 2>/dev/null | grep -q restore; then
  expect "npm: stateful-ci restore --bogus exits 2 through the launcher" 2 "*" "$npm_bin" restore --bogus
else
  skip "npm: stateful-ci restore --bogus exits 2" "this binary has no restore command yet"
fi

# --- bun installs the tarballs -----------------------------------------------
mkdir -p "$work/bun-project" && echo '{"name":"bun-project","private":true}' >"$work/bun-project/package.json"
printf '[install]\nregistry = "%s"\n' "$dead_registry" >"$work/bun-project/bunfig.toml"
if (cd "$work/bun-project" && "$BUN" add "$launcher" "$platform_tgz" >"$work/bun-install.log" 2>&1); then
  ok "bun installs both tarballs with no registry reachable"
else
  not_ok "bun add of the tarballs" "$(tail -20 "$work/bun-install.log")"
fi
bun_bin="$work/bun-project/node_modules/.bin/stateful-ci"
expect "bun: node_modules/.bin/stateful-ci --version" 0 "stateful-ci $version" "$bun_bin" --version
expect "bun: bun run stateful-ci --version" 0 "stateful-ci $version" \
  bash -c 'cd "$1" && "$2" run stateful-ci --version' _ "$work/bun-project" "$BUN"
expect "bun: the launcher itself runs under bun's runtime" 0 "stateful-ci $version" \
  "$BUN" "$work/bun-project/node_modules/stateful-ci/bin/stateful-ci.js" --version
expect "bun runtime: the exit code comes back (5)" 5 '["x"]' \
  env STATEFUL_CI_BINARY="$work/echo-args" STAND_IN_EXIT=5 "$BUN" "$work/bun-project/node_modules/stateful-ci/bin/stateful-ci.js" x
expect "bun runtime: a binary killed by SIGTERM ends the launcher by SIGTERM (143)" 143 "" \
  env STATEFUL_CI_BINARY="$work/kill-self" "$BUN" "$work/bun-project/node_modules/stateful-ci/bin/stateful-ci.js"
expect_forwarded "bun runtime: SIGTERM to the launcher alone reaches the binary (42)" \
  "$BUN" "$work/bun-project/node_modules/stateful-ci/bin/stateful-ci.js"

# --- a local registry: publish, then npx and bunx ----------------------------
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
registry="http://127.0.0.1:$port/"
mkdir -p "$work/verdaccio/storage"
# max_body_size: verdaccio refuses publishes over 10mb by default; the
# dev-profile binary scripts/test.sh packs is about 11 MB compressed (a
# release build about 4 MB).
cat >"$work/verdaccio/config.yaml" <<EOF
storage: $work/verdaccio/storage
max_body_size: 100mb
auth:
  htpasswd:
    file: $work/verdaccio/htpasswd
    max_users: 1
uplinks: {}
packages:
  '**':
    access: \$all
    publish: \$authenticated
    unpublish: \$authenticated
web:
  enable: false
log: { type: stdout, format: pretty, level: warn }
EOF
node "$VERDACCIO" --config "$work/verdaccio/config.yaml" --listen "127.0.0.1:$port" >"$work/verdaccio.log" 2>&1 &
registry_pid=$!
ready=""
for _ in $(seq 1 300); do
  if curl -fsS "${registry}-/ping" >/dev/null 2>&1; then ready=1; break; fi
  if ! kill -0 "$registry_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -n "$ready" ]; then
  ok "verdaccio $VERDACCIO_VERSION answers on 127.0.0.1:$port (no uplinks)"
  token="$(curl -fsS -X PUT -H 'content-type: application/json' \
    -d '{"name":"ci","password":"local-test-only"}' "${registry}-/user/org.couchdb.user:ci" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token||""))')"
  printf '//127.0.0.1:%s/:_authToken=%s\n' "$port" "$token" >"$work/npmrc"
  published=1
  for tgz in "$platform_tgz" "$launcher"; do
    if ! npm publish "$tgz" --registry "$registry" >"$work/publish.log" 2>&1; then
      published=""
      not_ok "npm publish $(basename "$tgz") to the local registry" "$(tail -10 "$work/publish.log")"
    fi
  done
  [ -n "$published" ] && ok "both packages publish to the local registry"
  # This machine's binary under the Windows package's name, for the Action's
  # simulated Windows runner (tests/action-harness).
  win32_args=()
  mkdir -p "$work/win32-extract" && tar -xzf "$platform_tgz" -C "$work/win32-extract"
  if node "$root/npm/stage.js" --version "$version" --binary "$work/win32-extract/package/bin/stateful-ci" \
    --platform win32-x64 --out "$work/win32-stage" >/dev/null &&
    (cd "$work/win32-stage/cli-win32-x64" && npm pack --silent --pack-destination "$work/win32-stage" >/dev/null) &&
    npm publish "$work/win32-stage/stateful-ci-cli-win32-x64-$version.tgz" --registry "$registry" >"$work/publish-win32.log" 2>&1; then
    win32_args=(--win32-published)
    ok "the win32-x64 package (this machine's binary as stateful-ci.exe) publishes for the Windows layout test"
  else
    not_ok "publish the win32-x64 stand-in package" "$(tail -10 "$work/publish-win32.log" 2>/dev/null)"
  fi

  mkdir -p "$work/npx-dir"
  expect "npx stateful-ci --version from the local registry" 0 "stateful-ci $version" \
    bash -c 'cd "$1" && npx --yes --registry "$2" stateful-ci --version' _ "$work/npx-dir" "$registry"
  expect "npx stateful-ci@$version --version from the local registry" 0 "stateful-ci $version" \
    bash -c 'cd "$1" && npx --yes --registry "$2" "stateful-ci@$3" --version' _ "$work/npx-dir" "$registry" "$version"
  mkdir -p "$work/bunx-dir"
  printf '[install]\nregistry = "%s"\n' "$registry" >"$work/bunx-dir/bunfig.toml"
  expect "bunx stateful-ci --version from the local registry" 0 "stateful-ci $version" \
    env BUN_CONFIG_REGISTRY="$registry" bash -c 'cd "$1" && "$2" x stateful-ci --version' _ "$work/bunx-dir" "$BUN"

  # `bunx stateful-ci init --yes` from the registry, once the binary has init.
  if "$npm_bin" init --help >/dev/null 2>&1 && "$npm_bin" --help 2>/dev/null | grep -q '\binit\b'; then
    mkdir -p "$work/init-repo" && git -C "$work/init-repo" init -q
    cp "$work/bunx-dir/bunfig.toml" "$work/init-repo/"
    echo '{"name":"demo","private":true,"scripts":{"test":"true"}}' >"$work/init-repo/package.json"
    if (cd "$work/init-repo" && BUN_CONFIG_REGISTRY="$registry" "$BUN" x stateful-ci init --yes >"$work/init.log" 2>&1) &&
      [ -f "$work/init-repo/stateful-ci.toml" ] && [ -f "$work/init-repo/.github/workflows/stateful-ci.yml" ]; then
      ok "bunx stateful-ci init --yes writes stateful-ci.toml and the workflow"
      sha="$(git -C "$root" rev-parse HEAD)"
      if grep -qE "^        uses: stateful-ci/stateful-ci@$sha # v$version\$" "$work/init-repo/.github/workflows/stateful-ci.yml" &&
        ! grep -q "command:" "$work/init-repo/.github/workflows/stateful-ci.yml"; then
        ok "the generated workflow uses the one-step action pinned by commit ($sha # v$version)"
      else
        not_ok "the generated workflow pins the one-step action by commit" "$(grep -n 'uses:\|command:' "$work/init-repo/.github/workflows/stateful-ci.yml")"
      fi
      if bash "$root/scripts/lint-yaml.sh" "$work/init-repo/.github/workflows/stateful-ci.yml" >"$work/lint-init.log" 2>&1; then
        ok "the generated workflow passes actionlint and zizmor"
      else
        not_ok "the generated workflow passes actionlint and zizmor" "$(tail -30 "$work/lint-init.log")"
      fi
    else
      not_ok "bunx stateful-ci init --yes" "$(tail -20 "$work/init.log")"
    fi
  else
    skip "bunx stateful-ci init --yes from the local registry" "this binary has no init command yet"
  fi
else
  not_ok "verdaccio starts" "$(tail -20 "$work/verdaccio.log")"
  registry=""
fi

# --- lint --------------------------------------------------------------------
if bash "$root/scripts/lint-yaml.sh" "$root/action.yml" "$root"/.github/workflows/*.yml >"$work/lint.log" 2>&1 &&
  ! grep -q "accepted" "$work/lint.log"; then
  ok "action.yml and .github/workflows: $(tail -1 "$work/lint.log"), no finding"
else
  not_ok "action.yml and the workflows pass actionlint and zizmor with no finding" "$(tail -30 "$work/lint.log")"
fi
mkdir -p "$work/planted"
sed 's|run: bash .ci/run|run: echo "${{ github.event.pull_request.title }}" \&\& bash .ci/run|' \
  "$root/.github/workflows/ci.yml" >"$work/planted/ci.yml"
if ! grep -q 'pull_request.title }}" && bash' "$work/planted/ci.yml"; then
  not_ok "planting an injection into a copy of ci.yml" "the sed pattern no longer matches ci.yml"
elif bash "$root/scripts/lint-yaml.sh" "$work/planted/ci.yml" >"$work/lint-planted.log" 2>&1; then
  not_ok "the linters catch \${{ github.event.pull_request.title }} planted in run:" "$(tail -10 "$work/lint-planted.log")"
elif grep -q "template-injection" "$work/lint-planted.log"; then
  ok "the linters catch \${{ github.event.pull_request.title }} planted in run: (zizmor template-injection)"
else
  not_ok "the linters name the planted injection" "$(tail -10 "$work/lint-planted.log")"
fi

# --- `stateful-ci dev` from the npm install -----------------------------------
# The installed binary alone (no checkout next to it: the npm project is in a
# temporary directory) runs the local backend: it finds Node 22 on PATH,
# unpacks the emulator it carries into a named cache folder and installs its
# npm packages there on first use, prints its backend line, and serves a save
# and a restore with tokens from serve.mjs's test issuer. With only an old
# Node it names what is missing. ISSUER TOKEN_URL REQUEST_TOKEN.
dev_from_the_npm_install() {
  local issuer="$1" token_url="$2" request_token="$3"
  local d="$work/dev" port
  mkdir -p "$d/src/out" "$d/dst"
  printf 'state from the npm install\n' >"$d/src/out/a.txt"
  mkdir -p "$d/old-node"
  printf '#!/bin/sh\necho v20.11.1\n' >"$d/old-node/node"
  chmod +x "$d/old-node/node"
  expect_stderr "npm: stateful-ci dev with only Node < 22.12 names what is missing" 1 \
    "stateful-ci dev needs Node.js 22.12 or newer to run the local Cloudflare emulator; found only v20.11.1" \
    env STATEFUL_CI_NODE="$d/old-node/node" XDG_CACHE_HOME="$d/cache" STATEFUL_CI_DEFAULT_BRANCH=main "$npm_bin" dev --port 9 --repository acme/app
  port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
  # A fresh cache folder: the first-use install really happens (npm's own
  # download cache is the tools folder's, so reruns are quick).
  (cd "$d" && PATH="$(dirname "$NODE22"):$PATH" XDG_CACHE_HOME="$d/cache" npm_config_cache="$TOOLS_DIR/npm-cache" \
    STATEFUL_CI_DEFAULT_BRANCH=main exec "$npm_bin" dev --port "$port" --repository acme/app --oidc-issuer "$issuer" \
    >"$d/dev.out" 2>"$d/dev.err" </dev/null) &
  local dev_pid=$!
  for _ in $(seq 720); do
    grep -q '^backend: ' "$d/dev.out" && break
    kill -0 "$dev_pid" 2>/dev/null || break
    sleep 0.25
  done
  local backend
  backend="$(sed -n 's/^backend: //p' "$d/dev.out" | head -1)"
  if [ "$backend" = "http://127.0.0.1:$port" ]; then
    ok "npm: stateful-ci dev from the installed tarball prints its backend line ($backend)"
    if ls -d "$d"/cache/stateful-ci/emulator-"$version"-* >/dev/null 2>&1; then
      ok "npm: dev unpacked its emulator into a named cache folder ($(basename "$(ls -d "$d"/cache/stateful-ci/emulator-*)"))"
    else
      not_ok "npm: dev's emulator cache folder" "$(find "$d/cache" -maxdepth 3 2>&1 | head -5)"
    fi
    local run=(env ACTIONS_ID_TOKEN_REQUEST_URL="$token_url" ACTIONS_ID_TOKEN_REQUEST_TOKEN="$request_token"
      GITHUB_RUN_ID=77 STATEFUL_CI_CACHE_DIR="$d/client-cache" "$npm_bin")
    local saved restored
    saved="$(cd "$d/src" && "${run[@]}" save --backend "$backend" --path out --json 2>"$d/save.err")"
    restored="$(cd "$d/dst" && "${run[@]}" restore --backend "$backend" --path out --json 2>"$d/restore.err")"
    if [[ "$saved" == *'"outcome":"saved"'* ]] && [[ "$restored" == *'"outcome":"hit"'* ]] &&
      cmp -s "$d/src/out/a.txt" "$d/dst/out/a.txt"; then
      ok "npm: save and restore through the installed binary's dev backend give back the file"
    else
      not_ok "npm: save + restore through dev" "save: $saved $(tail -3 "$d/save.err")" \
        "restore: $restored $(tail -3 "$d/restore.err")"
    fi
  else
    not_ok "npm: stateful-ci dev from the installed tarball prints its backend line" \
      "stdout: $(head -5 "$d/dev.out")" "stderr: $(tail -15 "$d/dev.err")"
  fi
  # A signal to the launcher alone (a process manager, `kill <pid>`) is
  # passed on to the binary, which stops its emulator and exits; the
  # launcher ends the way the binary did. Before the launcher passed
  # signals on, this left the binary and its emulator running with no
  # parent: CI runs found them still serving an hour later.
  local child="" p status=0
  for p in /proc/[0-9]*; do
    [ "$(sed 's/.*) //' "$p/stat" 2>/dev/null | cut -d' ' -f2)" = "$dev_pid" ] && child="${p#/proc/}"
  done
  kill -INT "$dev_pid" 2>/dev/null
  wait "$dev_pid" 2>/dev/null || status=$?
  if [ -z "$child" ]; then
    not_ok "npm: the launcher runs dev as its child" "no child of pid $dev_pid found"
  elif kill -0 "$child" 2>/dev/null; then
    not_ok "npm: SIGINT to the launcher alone stops dev" "pid $child still runs"
    kill -KILL "$child" 2>/dev/null
  elif [ "$status" != 130 ]; then
    not_ok "npm: SIGINT to the launcher alone stops dev" "the launcher exited with $status, not 130"
  else
    ok "npm: SIGINT to the launcher alone stops dev and its emulator (exit 130)"
  fi
}

# --- the Action harness ------------------------------------------------------
win32_args=("${win32_args[@]}")
binary="$(cd "$work/npm-project" && node -e 'const p=require("path");console.log(p.join(p.dirname(require.resolve(process.argv[1]+"/package.json")),"bin","stateful-ci"))' "@stateful-ci/cli-$host_platform")"
# The backend scenario runs against the real Worker under workerd with the
# fake OIDC issuer (tests/worker/lib/serve.mjs) when the Worker bundle and
# Node 22 are set up (scripts/test.sh does that first).
backend_args=()
node22="$NODE22"
if [ -x "$node22" ] && [ -f "$root/worker-template/dist/index_bg.wasm" ] && [ -d "$root/tests/worker/node_modules/miniflare" ]; then
  mkfifo "$work/serve.in"
  WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
    "$node22" "$root/tests/worker/lib/serve.mjs" --repository acme/app <"$work/serve.in" >"$work/serve.log" 2>&1 &
  serve_pid=$!
  exec 9>"$work/serve.in" # serve.mjs stops when this is closed
  for _ in $(seq 240); do
    grep -q '^backend: ' "$work/serve.log" && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.25
  done
  if grep -q '^backend: ' "$work/serve.log"; then
    field() { sed -n "s/^$1: //p" "$work/serve.log" | head -1; }
    # `--flag=value`: the request token is random base64url and may start with `-`,
    # which argparse would take for an option (CI failed so at stop 22).
    backend_args=("--backend-url=$(field backend)" "--oidc-request-url=$(field actions-token-url)" "--oidc-request-token=$(field actions-token-request-token)")
    dev_from_the_npm_install "$(field issuer)" "$(field actions-token-url)" "$(field actions-token-request-token)"
  else
    not_ok "start the Worker under workerd for the Action's backend scenario" "$(tail -20 "$work/serve.log")"
  fi
fi
python3 "$root/tests/action-harness/test_action.py" --binary "$binary" ${registry:+--registry "$registry"} \
  "${win32_args[@]}" "${backend_args[@]}" >"$work/harness.log" 2>&1
harness_status=$?
if [ -n "${serve_pid:-}" ]; then
  exec 9>&-
  wait "$serve_pid" 2>/dev/null || true
fi
sed 's/^/  harness: /' "$work/harness.log" | grep -v ' passed, .* failed' | head -200
counts="$(tail -1 "$work/harness.log")"
if [[ "$counts" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
  passed=$((passed + BASH_REMATCH[1]))
  failed=$((failed + BASH_REMATCH[2]))
  skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
  [ "$harness_status" -ne 0 ] && [ "${BASH_REMATCH[2]}" = 0 ] && not_ok "harness exit status $harness_status"
else
  not_ok "the action harness ran to its summary (exit $harness_status)" "$(tail -20 "$work/harness.log")"
fi

echo "$passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
[ "$failed" -eq 0 ]
