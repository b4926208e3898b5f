#!/usr/bin/env bash
# Benchmark of the presets on real projects, with the real package managers
# and registries: does the workflow `stateful-ci init --yes` writes make the
# next run faster, and does it stay exactly as strict as the lock file?
#
#   scripts/bench-presets.sh [PROJECT...]     (default: all of them)
#
# Projects (fixtures in scripts/bench-presets/, each with a fixed lock file and
# a change.patch that removes a dependency and adds or moves another):
#   npm pnpm yarn-classic yarn-berry bun   an express/lodash app with eslint,
#                                          typescript and vitest (~260 packages)
#   cargo                                  clap, regex, serde, serde_json
#   pip uv                                 flask, requests, rich, pytest
# Go, Gradle and Maven are skipped (this machine reaches no Go module proxy and
# no Maven repository); the table says so.
#
# For each project it commits the fixture to a local origin, runs
# `stateful-ci init --yes` there and commits what init wrote, then runs that
# workflow step by step (scripts/bench-presets/runner.py) as a fresh runner
# would: a fresh clone at the same workspace path, an empty HOME, a minimal
# environment, a local `--store` in place of the backend:
#   cold    the same steps without the restore and save steps, empty caches
#   first   with stateful-ci, empty store (restore misses, save fills it)
#   second  the same commit again (restores the first run's snapshot)
#   change  the commit with change.patch (restores a snapshot taken on the
#           other lock file)
#   back    the base commit again (restores the change's snapshot); checked,
#           not timed
# After each run it checks the installed packages against the lock file: every
# locked package at its locked version, nothing else (the removed dependency is
# gone). A failed check fails the script.
#
# Prints per project the cold time and first/second/change as ratios to cold
# (median of REPEAT, default 1). Goals (issue 11): second <= 0.4x cold for npm,
# pnpm, bun, cargo, pip and uv; first <= 1.15x cold everywhere.
#
# TINY=1 uses the tiny fixtures in scripts/bench-presets/tiny/ (npm, pip, cargo:
# two or three packages each) and checks without timing goals: that is
# scripts/test-presets.sh, which CI runs.
# Environment: BENCH_NODE (22, the default, or system), REPEAT (default 1),
# BENCH_PRESETS_DIR (work folder, default a temporary one, removed at the end
# unless KEEP=1), STATEFUL_CI_BIN (default:
# a release build of this checkout). Tools (pnpm, yarn, bun, uv) are installed
# from npm and PyPI into $STATEFUL_CI_TOOLS/bench-presets, with their own
# caches; no run touches the machine's own package caches.
# Not run in CI: it takes minutes and needs the registries.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIX=$ROOT/scripts/bench-presets
REPEAT=${REPEAT:-1}
TINY=${TINY:-0}
if [ "$TINY" = 1 ]; then
  FIXROOT=$FIX/tiny
  ALL=(npm pip cargo)
else
  FIXROOT=$FIX
  ALL=(npm pnpm yarn-classic yarn-berry bun cargo pip uv)
fi
if [ $# -gt 0 ]; then PROJECTS=("$@"); else PROJECTS=("${ALL[@]}"); fi

WORK=${BENCH_PRESETS_DIR:-$(mktemp -d -t stateful-ci-bench-presets.XXXXXX)}
mkdir -p "$WORK"
if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_PRESETS_DIR:-}" ]; then trap 'rm -rf "$WORK"' EXIT; fi

# ---- tools -------------------------------------------------------------------
# shellcheck source=scripts/lib/tools.sh
source "$ROOT/scripts/lib/tools.sh"
BT="$TOOLS_DIR/bench-presets"
PNPM_VERSION=10.34.9
YARN_CLASSIC_VERSION=1.22.22
YARN_BERRY_VERSION=4.18.1
UV_VERSION=0.13.9
mkdir -p "$BT" "$WORK/bin-classic" "$WORK/bin-berry"
wants() { [[ " ${PROJECTS[*]} " == *" $1 "* ]]; }
# Tool installs use their own npm cache, not the machine's.
export npm_config_cache="$BT/npm-cache"
bt_npm() { # DIR PACKAGE@VERSION
  [ -d "$BT/$1/node_modules" ] || tools_npm_install "$BT/$1" "$2"
}
node_shim() { # FILE SCRIPT
  printf '#!/bin/sh\nexec node %q "$@"\n' "$2" >"$1"
  chmod +x "$1"
}
# Node for the node projects: 22 by default (Node 20 reached its end of life
# in April 2026; Node 22.1+ has the compile cache the node preset keeps),
# BENCH_NODE=system for the machine's own node.
case "${BENCH_NODE:-22}" in
  22)
    bash "$ROOT/scripts/setup-node.sh" >/dev/null
    ln -sf "$NODE22" "$WORK/bin-classic/node"
    ;;
  system) rm -f "$WORK/bin-classic/node" ;;
  *) echo "bench-presets: BENCH_NODE=$BENCH_NODE: use 22 (the default) or system" >&2; exit 2 ;;
esac
if wants pnpm; then
  bt_npm "pnpm-$PNPM_VERSION" "pnpm@$PNPM_VERSION"
  node_shim "$WORK/bin-classic/pnpm" "$BT/pnpm-$PNPM_VERSION/node_modules/pnpm/bin/pnpm.cjs"
fi
if wants yarn-classic; then
  bt_npm "yarn-$YARN_CLASSIC_VERSION" "yarn@$YARN_CLASSIC_VERSION"
  node_shim "$WORK/bin-classic/yarn" "$BT/yarn-$YARN_CLASSIC_VERSION/node_modules/yarn/bin/yarn.js"
fi
if wants yarn-berry; then
  bt_npm "berry-$YARN_BERRY_VERSION" "@yarnpkg/cli-dist@$YARN_BERRY_VERSION"
  node_shim "$WORK/bin-berry/yarn" "$BT/berry-$YARN_BERRY_VERSION/node_modules/@yarnpkg/cli-dist/bin/yarn.js"
fi
if wants bun; then
  TOOLS_DIR="$BT" ensure_bun
  ln -sf "$BUN" "$WORK/bin-classic/bun"
fi
if wants uv; then
  if ! [ -x "$BT/uv-$UV_VERSION/bin/uv" ]; then
    tools_log "installing uv==$UV_VERSION (PyPI) into $BT"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
      --no-cache-dir --target "$BT/uv-$UV_VERSION" "uv==$UV_VERSION" >&2
  fi
  ln -sf "$BT/uv-$UV_VERSION/bin/uv" "$WORK/bin-classic/uv"
fi
unset npm_config_cache
ensure_pyyaml

# ---- the binary --------------------------------------------------------------
if [ -z "${STATEFUL_CI_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked --quiet -p stateful-ci)
  STATEFUL_CI_BIN=$ROOT/target/release/stateful-ci
fi
BIN=$STATEFUL_CI_BIN
RUSTUP_HOME_DIR=$(rustup show home 2>/dev/null || echo "$HOME/.rustup")
CARGO_BIN_DIR=$(dirname "$(command -v cargo)")

# ---- helpers -----------------------------------------------------------------
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The environment of a fresh runner: the tools on PATH, an empty HOME, nothing
# from this machine's own configuration (no PIP_FIND_LINKS and the like).
runner_env() { # PROJECT HOME
  local bin="$WORK/bin-classic"
  [ "$1" = yarn-berry ] && bin="$WORK/bin-berry:$WORK/bin-classic"
  echo env -i "PATH=$bin:$CARGO_BIN_DIR:/usr/local/bin:/usr/bin:/bin" "HOME=$2" \
    "${PYTHONPATH:+PYTHONPATH=$PYTHONPATH}" \
    "LANG=C.UTF-8" "RUSTUP_HOME=$RUSTUP_HOME_DIR" "TMPDIR=$2/tmp" \
    "SSL_CERT_FILE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" \
    "NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
}

# Make the origin: base commit (fixture + what init wrote), change commit.
make_origin() { # PROJECT
  local p=$1 d="$WORK/$1"
  rm -rf "$d"
  mkdir -p "$d/src-tree"
  local t="$d/src-tree"
  if [ "$TINY" != 1 ]; then
    case $p in
      npm | pnpm | yarn-classic | yarn-berry | bun) cp -a "$FIX/node-common/." "$t/" ;;
      pip | uv) cp -a "$FIX/python-common/." "$t/" ;;
    esac
  fi
  cp -a "$FIXROOT/$p/." "$t/"
  rm -f "$t/change.patch"
  printf 'node_modules/\ntarget/\n.venv/\n.stateful-ci/\n.pnpm-store/\ndist/\n__pycache__/\n' > "$t/.gitignore"
  (
    cd "$t"
    git init -q -b main
    git add -A
    git -c user.name=bench -c user.email=bench@localhost commit -q -m base
    "$BIN" init --yes >"$d/init.log" 2>&1
    git add -A
    git -c user.name=bench -c user.email=bench@localhost commit -q -m "stateful-ci init"
    git tag base
    patch -s -p1 <"$FIXROOT/$p/change.patch"
    git add -A
    git -c user.name=bench -c user.email=bench@localhost commit -q -m change
    git tag change
  )
}

# One run: fresh clone of REF at the workspace path, empty HOME, the workflow.
# Appends the job's seconds to $WORK/$p/t.LABEL.
run_job() { # PROJECT LABEL REF [--cold]
  local p=$1 label=$2 ref=$3 cold=${4:-}
  local d="$WORK/$p" ws="$WORK/$p/ws" home="$WORK/$p/home"
  # The last run's trees are moved aside, not deleted, until the script
  # ends: on ext4 without a journal (some VMs), creating files within 60 s
  # of deleting many (360 s once new files dirty the freed inodes' table
  # blocks) is several times slower (fs/ext4/ialloc.c recently_deleted()),
  # which charged the next run's restore for the
  # previous run's cleanup. A fresh runner starts on a clean disk.
  mkdir -p "$WORK/trash"
  [ -e "$ws" ] && mv "$ws" "$(mktemp -d "$WORK/trash/ws.XXXXXX")"
  [ -e "$home" ] && mv "$home" "$(mktemp -d "$WORK/trash/home.XXXXXX")"
  mkdir -p "$home/tmp"
  git clone -q "$d/src-tree" "$ws"
  git -C "$ws" checkout -q "$ref"
  local out rc=0
  # shellcheck disable=SC2046 # runner_env is a word list on purpose
  out=$($(runner_env "$p" "$home") python3 "$FIX/runner.py" --workflow "$ws/.github/workflows/stateful-ci.yml" \
    --workspace "$ws" --bin "$BIN" --store "$d/store" --log "$d/$label.log" ${cold:+"$cold"}) || rc=$?
  echo "$out" >"$d/$label.json"
  if [ $rc -ne 0 ]; then
    echo "bench-presets: $p $label: a step failed; log: $d/$label.log" >&2
    tail -n 30 "$d/$label.log" >&2
    exit 1
  fi
  python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['seconds'])" "$d/$label.json" >>"$d/t.$label"
}

# The installed packages are exactly the lock file's.
check_lock() { # PROJECT LABEL
  local p=$1 ws="$WORK/$1/ws" home="$WORK/$1/home"
  # shellcheck disable=SC2046
  if ! $(runner_env "$p" "$home") python3 "$FIX/check_lock.py" "$p" "$ws" >"$WORK/$p/check.$2.log" 2>&1; then
    echo "bench-presets: $p $2: the installed packages differ from the lock file:" >&2
    cat "$WORK/$p/check.$2.log" >&2
    exit 1
  fi
  echo "ok"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

# ---- the runs ----------------------------------------------------------------
declare -A RESULT
for p in "${PROJECTS[@]}"; do
  [ -d "$FIXROOT/$p" ] || { echo "bench-presets: no fixture $p (have: ${ALL[*]})" >&2; exit 2; }
  echo "== $p" >&2
  make_origin "$p"
  checks=()
  for _ in $(seq "$REPEAT"); do
    rm -rf "$WORK/$p/store"
    run_job "$p" cold base --cold
    run_job "$p" first base
    checks+=("first:$(check_lock "$p" first)")
    run_job "$p" second base
    checks+=("second:$(check_lock "$p" second)")
    run_job "$p" change change
    checks+=("change:$(check_lock "$p" change)")
    run_job "$p" back base
    checks+=("back:$(check_lock "$p" back)")
  done
  d="$WORK/$p"
  cold=$(median <"$d/t.cold")
  RESULT[$p]="$cold $(median <"$d/t.first") $(median <"$d/t.second") $(median <"$d/t.change")"
  echo "   cold $cold s, steps of the second run: $(python3 -c "import json,sys; print(', '.join(f\"{s['name']} {s['seconds']:.2f}\" for s in json.load(open(sys.argv[1]))['steps'] if s['kind'] != 'skip'))" "$d/second.json")" >&2
done

# ---- the table ---------------------------------------------------------------
cores=$(nproc)
if [ "$TINY" = 1 ]; then
  echo
  echo "== stateful-ci presets check (tiny fixtures, real registries, local store)"
  for p in "${PROJECTS[@]}"; do
    read -r c f s ch <<<"${RESULT[$p]}"
    printf '%-8s lock file respected after first, second, change and back runs (cold %.1fs, first %.1fs, second %.1fs, change %.1fs)\n' "$p" "$c" "$f" "$s" "$ch"
  done
  exit 0
fi
echo
echo "== stateful-ci presets benchmark ($cores cores, median of $REPEAT, real registries, local store)"
# setup: what stateful-ci changes in a job, the second run's restore +
# install + save over cold's install step (build and test steps run the same
# in both, so on a busy machine their noise dominates the job ratio).
setup_ratio() { # PROJECT
  python3 - "$WORK/$1/cold.json" "$WORK/$1/second.json" <<'PY'
import json, sys
def steps(path):
    return {s["name"]: s["seconds"] for s in json.load(open(path))["steps"] if s["kind"] != "skip"}
cold, second = steps(sys.argv[1]), steps(sys.argv[2])
ours = sum(v for k, v in second.items() if k == "Install" or k.startswith(("Restore", "Save")))
print(f"{ours / cold['Install']:.2f}x" if cold.get("Install") else "-")
PY
}
printf '%-13s %9s %8s %8s %8s %7s  %s\n' project "cold" first second change setup "goals / lock check"
for p in "${PROJECTS[@]}"; do
  read -r c f s ch <<<"${RESULT[$p]}"
  goal=""
  case $p in
    npm | pnpm | bun | cargo | pip | uv)
      goal=$(awk -v s="$s" -v c="$c" 'BEGIN { print (s / c <= 0.4) ? "second<=0.4x yes" : "second<=0.4x NO" }') ;;
  esac
  first_ok=$(awk -v f="$f" -v c="$c" 'BEGIN { print (f / c <= 1.15) ? "first<=1.15x yes" : "first<=1.15x NO" }')
  printf '%-13s %8.2fs %8s %8s %8s %7s  %s\n' "$p" "$c" "$(ratio "$f" "$c")" "$(ratio "$s" "$c")" "$(ratio "$ch" "$c")" "$(setup_ratio "$p")" \
    "${goal:+$goal, }$first_ok, lock ok"
done
printf '%-13s %s\n' go "skipped: this machine reaches no Go module proxy (preset: GOMODCACHE/GOCACHE in .cache/, GOFLAGS=-modcacherw)"
printf '%-13s %s\n' gradle "skipped: this machine reaches no Maven/Gradle repository (preset: GRADLE_USER_HOME=.gradle-home)"
printf '%-13s %s\n' maven "skipped: this machine reaches no Maven repository (preset: -Dmaven.repo.local=.m2/repository)"
echo "cold = the same steps without restore/save and empty caches; ratios are job time over cold; checkout not timed;"
echo "setup = the second run's restore + install + save over cold's install step (- where the job has no install step)."
rm -rf "$WORK/trash"
