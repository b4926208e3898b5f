#!/usr/bin/env bash
# Benchmark of the snapshot engine against tar|zstd, in one run:
#
#   scripts/bench-runtime.sh [WORKDIR]
#
# 1. The bench workspace: >= 20k small source-like files (~200 MB) and four
#    56 MiB partly compressible build artefacts (scripts/bench/gen-workspace.py).
# 2. A node_modules-like tree of N_NM (default 120,000) small files.
# 3. Peak RSS only (cold save, restore, no-change save, 1% edit save), on a
#    node_modules-like tree of N_HUGE (default 500,000)
#    files (HUGE=0 skips it).
# For 1 and 2 it times, in this one run:
#   baseline pack:    tar -cf - | zstd -T0 --long=30
#   baseline unpack:  zstd -d --long=30 | tar -x
#   cold save, restore into an empty dir, restore onto a matching tree,
#   no-change save (beside one stat walk of the tree with find, the floor of
#   any save that looks at every file), and a save after appending to 1% of
#   the .js files (and, in 1, rewriting 1 MiB inside one large file).
# and prints medians (RUNS and NM_RUNS, default 3 each; one run of 2 moved
# its ratios by 0.2 from one hour to the next on one machine) of wall time and
# of CPU time (user + system; a fair comparison on a busy machine, where
# wall time favours whichever side runs more threads), ratios against the
# baselines, stored bytes against tar.zst, the 1% save's stored bytes against
# the cold save's, objects per save and peak RSS. At its end it runs
# scripts/bench-backend.sh if that file exists.
# BIN=path benchmarks that binary instead of `cargo build --release` (the
# glibc build): for example the static musl build the npm packages and the
# Action ship, whose path `scripts/cross-build.sh x86_64-unknown-linux-musl`
# prints; it is passed on to bench-backend.sh.
# This is a benchmark, not a test: it prints figures and exits 0.
#
# No tree is deleted until the script exits (only a store's few packs and
# the archives): trees a workload is done with are moved aside (into
# $WORK/trash). On ext4 without a journal (this
# project's VM; GitHub's runners have a journal), the inode allocator skips
# inodes freed in the last 60 s (RECENTCY_MIN), or 360 s when their inode
# table block is dirty, which it is as soon as new files are being created
# beside them (fs/ext4/ialloc.c, recently_deleted()). A restore run within
# minutes of deleting a large tree spent 43% of its time there, 70 s after
# a sync: waiting after removals was not enough, not deleting is.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${RUNS:-3}
NM_RUNS=${NM_RUNS:-3}
N_SMALL=${N_SMALL:-20000}
N_LARGE=${N_LARGE:-4}
LARGE_MIB=${LARGE_MIB:-56}
N_NM=${N_NM:-120000}
N_HUGE=${N_HUGE:-500000}
HUGE=${HUGE:-1}
WORK=${1:-$(mktemp -d -t stateful-ci-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/trash"

USER_BIN=${BIN:-}
if [ -z "$USER_BIN" ]; then
  cargo build --release --locked --quiet
  BIN=$REPO/target/release/stateful-ci
fi
[ -x "$BIN" ] || { echo "bench-runtime: BIN=$BIN is not an executable file; point BIN at a built stateful-ci, or leave it unset to build one" >&2; exit 1; }

now() { date +%s.%N; }
# set_aside PATH...: move trees out of the way, to be deleted at exit.
set_aside() { local p; for p in "$@"; do [ -e "$p" ] && mv "$p" "$(mktemp -d "$WORK/trash/x.XXXXXX")"; done; return 0; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.3f", a / b }'; }
REPORT=$WORK/report.txt
: > "$REPORT"

# bench NAME RUNS PATHS...: the full comparison on $WORK/NAME/ws.
bench() {
  local name=$1 runs=$2; shift 2
  local paths=("$@") D=$WORK/$name
  local peak=0
  # run_timed LABEL CMD...: appends the elapsed seconds to $D/t.LABEL and tracks peak RSS.
  run_timed() {
    local label=$1; shift
    local t0 t1 rss
    t0=$(now)
    /usr/bin/time -f '%U %S %M' -o "$D/rss" "$@" >"$D/out.json" 2>"$D/err.log" || { cat "$D/err.log" >&2; exit 1; }
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >> "$D/t.$label"
    # CPU seconds (user + system, children included): unlike wall time,
    # hardly affected by other load on the machine.
    tail -n1 "$D/rss" | awk '{ printf "%.3f\n", $1 + $2 }' >> "$D/c.$label"
    # System CPU alone: the kernel's part (creating, writing, stat-ing files).
    tail -n1 "$D/rss" | awk '{ printf "%.3f\n", $2 }' >> "$D/s.$label"
    rss=$(tail -n1 "$D/rss" | awk '{ print $3 }')
    case $label in tar | untar | statwalk | tarx) ;; *) if [ "$rss" -gt "$peak" ]; then peak=$rss; fi ;; esac
  }
  json() { python3 -c "import json,sys; print(json.load(open('$D/out.json'))['$1'])"; }
  local files bytes
  files=$(find "${paths[@]/#/$D/ws/}" -type f | wc -l)
  bytes=$(du -sb "${paths[@]/#/$D/ws/}" | awk '{s+=$1} END {print s}')
  printf 'paths = [%s]\n' "$(printf '"%s", ' "${paths[@]}" | sed 's/, $//')" > "$D/ws/stateful-ci.toml"
  cp "$D/ws/stateful-ci.toml" "$D/cfg.toml"
  cd "$D/ws"
  export STATEFUL_CI_CACHE_DIR
  # Each baseline runs right beside the run it is compared with (pack beside
  # cold save, unpack and tar -x beside restore), so a file system that
  # slows down or speeds up during the benchmark moves both sides of a
  # ratio alike.
  for _ in $(seq "$runs"); do
    rm -f "$D/base.tar.zst"; sync
    run_timed tar bash -c "tar -cf - ${paths[*]} | zstd -q -T0 --long=30 -o '$D/base.tar.zst'"
    rm -rf "$D/store" "$D/cache"; sync
    STATEFUL_CI_CACHE_DIR=$D/cache
    run_timed cold "$BIN" save --store "$D/store" --json
  done
  local cold_stored cold_objects cold_peak=$peak
  cold_stored=$(json stored_bytes); cold_objects=$(json objects_sent)
  local base_bytes; base_bytes=$(stat -c %s "$D/base.tar.zst")
  # The floor under any restore: creating the files, with nothing to
  # decompress or verify (tar -x of the uncompressed archive, one thread).
  zstd -q -d --long=30 -c "$D/base.tar.zst" > "$D/base.tar"
  for i in $(seq "$runs"); do
    mkdir -p "$D/untar-$i"; sync
    run_timed untar bash -c "zstd -q -d --long=30 -c '$D/base.tar.zst' | tar -xf - -C '$D/untar-$i'"
    mkdir -p "$D/tarx-$i"; sync
    run_timed tarx tar -xf "$D/base.tar" -C "$D/tarx-$i"
    mkdir -p "$D/r-$i"; cp "$D/cfg.toml" "$D/r-$i/stateful-ci.toml"; sync
    STATEFUL_CI_CACHE_DIR=$D/cache-r-$i
    run_timed restore_empty "$BIN" restore --store "$D/store" -C "$D/r-$i" --json
  done
  rm -f "$D/base.tar"
  for _ in $(seq "$runs"); do
    run_timed restore_match "$BIN" restore --store "$D/store" -C "$D/r-$runs" --json
  done
  [ "$(json files_written)" = 0 ] || { echo "restore onto a matching tree rewrote files" >&2; exit 1; }
  for p in "${paths[@]}"; do
    diff -r --no-dereference "$D/ws/$p" "$D/r-$runs/$p" >/dev/null || { echo "restored tree $p differs" >&2; exit 1; }
  done

  STATEFUL_CI_CACHE_DIR=$D/cache
  for _ in $(seq "$runs"); do
    run_timed nochange "$BIN" save --store "$D/store" --json
  done
  local nochange_outcome nochange_objects
  nochange_outcome=$(json outcome); nochange_objects=$(json objects_sent)
  # The floor under any save that looks at every file: one stat walk (size,
  # times, inode of each entry) with find, on one thread.
  for _ in $(seq "$runs"); do
    run_timed statwalk bash -c "find ${paths[*]} -printf '%s %T@ %C@ %i\n' >/dev/null"
  done

  # 1% edit: append to 1% of the .js files, rewrite 1 MiB inside one large file.
  find "${paths[@]}" -type f -name '*.js' | sort | awk 'NR % 100 == 0' | while read -r f; do echo "// edited" >> "$f"; done
  if [ -f target/blob0.bin ]; then
    python3 - target/blob0.bin <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(20 * 1024 * 1024)
    f.write(os.urandom(1024 * 1024))
PY
  fi
  run_timed edit "$BIN" save --store "$D/store" --json
  local edit_stored edit_objects
  edit_stored=$(json stored_bytes); edit_objects=$(json objects_sent)
  STATEFUL_CI_CACHE_DIR=$D/cache-e
  mkdir -p "$D/r-edit"; cp "$D/cfg.toml" "$D/r-edit/stateful-ci.toml"
  run_timed restore_edit "$BIN" restore --store "$D/store" -C "$D/r-edit" --json
  cd "$REPO"

  m() { median < "$D/t.$1"; }
  c() { median < "$D/c.$1"; }
  k() { median < "$D/s.$1"; }
  # Fastest-slowest of a label's runs: this VM's timings move between runs.
  spread() { sort -g "$D/t.$1" | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%s-%s", a, b }'; }
  local tar_t untar_t tx_t cold_t re_t rm_t nc_t sw_t ed_t
  tar_t=$(m tar); untar_t=$(m untar); tx_t=$(m tarx); cold_t=$(m cold); re_t=$(m restore_empty); rm_t=$(m restore_match); nc_t=$(m nochange); sw_t=$(m statwalk); ed_t=$(m edit)
  cat >> "$REPORT" <<REPORT

== $name: $files files, $((bytes / 1048576)) MiB, $(nproc) cores, median of $runs
baseline tar|zstd -T0 --long=30     ${tar_t}s  (${base_bytes} bytes)
baseline zstd -d | tar -x           ${untar_t}s
cold save                           ${cold_t}s  ratio to tar|zstd: $(ratio "$cold_t" "$tar_t")  (goal <= 0.8)  CPU $(c cold)s vs $(c tar)s = $(ratio "$(c cold)" "$(c tar)")
  stored                            ${cold_stored} bytes in ${cold_objects} objects = $(ratio "$cold_stored" "$base_bytes")x tar.zst  (goal <= 1.0, <= 20 objects)
restore into an empty dir           ${re_t}s  ratio to unpack:   $(ratio "$re_t" "$untar_t")  (goal <= 0.6)  CPU $(c restore_empty)s vs $(c untar)s = $(ratio "$(c restore_empty)" "$(c untar)")
  creating the files (tar -x alone) ${tx_t}s  ratio to unpack:   $(ratio "$tx_t" "$untar_t")  system CPU $(k tarx)s, restore's $(k restore_empty)s  (the floor of a restore: the kernel's part, on one thread)
restore onto a matching tree        ${rm_t}s  ratio to unpack:   $(ratio "$rm_t" "$untar_t")
no-change save                      ${nc_t}s  ratio to cold:     $(ratio "$nc_t" "$cold_t")  (goal <= 0.05)  outcome ${nochange_outcome}, ${nochange_objects} objects
  one stat walk (find -printf)      ${sw_t}s  ratio to cold:     $(ratio "$sw_t" "$cold_t")  (the floor of a save that looks at every file)
1% edit save                        ${ed_t}s  stored ${edit_stored} bytes in ${edit_objects} objects = $(ratio "$((edit_stored * 100))" "$cold_stored")% of cold  (goal <= 1%)
peak RSS (stateful-ci)              $((peak / 1024)) MiB, cold save $((cold_peak / 1024)) MiB  (goal <= 256 MiB)
REPORT
  if [ "$runs" -gt 1 ]; then
    printf '%-36s%s\n' "spread of $runs runs (s)" "tar|zstd $(spread tar), cold $(spread cold), unpack $(spread untar), restore $(spread restore_empty)" >> "$REPORT"
  fi
  tail -n 14 "$REPORT"
  set_aside "$D"/untar-* "$D"/tarx-* "$D"/r-* "$D"/cache-r-*
}

echo "== generating the bench workspace"
mkdir -p "$WORK/bench"
python3 scripts/bench/gen-workspace.py "$WORK/bench/ws" "$N_SMALL" "$N_LARGE" "$LARGE_MIB"
bench bench "$RUNS" node_modules target
set_aside "$WORK/bench"

echo "== generating a node_modules-like tree of $N_NM files"
mkdir -p "$WORK/nm"
python3 scripts/bench/gen-workspace.py --node-modules "$WORK/nm/ws" "$N_NM"
bench nm "$NM_RUNS" node_modules
set_aside "$WORK/nm"

if [ "$HUGE" = 1 ]; then
  echo "== generating a node_modules-like tree of $N_HUGE files (peak RSS only)"
  H=$WORK/huge
  mkdir -p "$H"
  python3 scripts/bench/gen-workspace.py --node-modules "$H/ws" "$N_HUGE" 600
  printf 'paths = ["node_modules"]\n' > "$H/ws/stateful-ci.toml"
  mkdir -p "$H/r"; cp "$H/ws/stateful-ci.toml" "$H/r/"
  t0=$(now)
  STATEFUL_CI_CACHE_DIR=$H/cache /usr/bin/time -f %M -o "$H/rss.save" "$BIN" save --store "$H/store" -C "$H/ws" --json >/dev/null
  t1=$(now)
  STATEFUL_CI_CACHE_DIR=$H/cache-r /usr/bin/time -f %M -o "$H/rss.restore" "$BIN" restore --store "$H/store" -C "$H/r" --json >/dev/null
  t2=$(now)
  STATEFUL_CI_CACHE_DIR=$H/cache /usr/bin/time -f %M -o "$H/rss.nochange" "$BIN" save --store "$H/store" -C "$H/ws" --json >/dev/null
  t3=$(now)
  # A save that reads some files holds, besides the walk and the stat
  # index, the blobs it may deduplicate against (at 500,000 files a hash
  # map of them once took the save to 328 MB): 1% of the .js files edited.
  (cd "$H/ws" && find node_modules -type f -name '*.js' | sort | awk 'NR % 100 == 0' | while read -r f; do echo "// edited" >> "$f"; done)
  t4=$(now)
  STATEFUL_CI_CACHE_DIR=$H/cache /usr/bin/time -f %M -o "$H/rss.edit" "$BIN" save --store "$H/store" -C "$H/ws" --json >/dev/null
  t5=$(now)
  cat >> "$REPORT" <<REPORT

== huge: $N_HUGE files (node_modules-like), peak RSS (goal <= 256 MiB)
cold save                           $(($(tail -n1 "$H/rss.save") / 1024)) MiB  ($(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s)
restore into an empty dir           $(($(tail -n1 "$H/rss.restore") / 1024)) MiB  ($(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')s)
no-change save                      $(($(tail -n1 "$H/rss.nochange") / 1024)) MiB  ($(awk -v a="$t2" -v b="$t3" 'BEGIN{printf "%.1f", b-a}')s)
1% edit save                        $(($(tail -n1 "$H/rss.edit") / 1024)) MiB  ($(awk -v a="$t4" -v b="$t5" 'BEGIN{printf "%.1f", b-a}')s)
REPORT
  set_aside "$H"
fi

echo
echo "=========== stateful-ci runtime benchmark ($(date -u +%Y-%m-%d), $(nproc) cores) ==========="
linkage=dynamically; ldd "$BIN" > /dev/null 2>&1 || linkage=statically
echo "binary: $BIN ($("$BIN" --version), $linkage linked)"
cat "$REPORT"

if [ -f scripts/bench-backend.sh ]; then
  echo
  echo "== backend (scripts/bench-backend.sh)"
  # No tree was deleted above (see set_aside): no need to wait.
  SETTLE=${SETTLE:-0} BIN=$USER_BIN bash scripts/bench-backend.sh
fi
