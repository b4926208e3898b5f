#!/usr/bin/env bash
# Benchmark of the snapshot engine against tar|zstd on a CI-like workspace.
#
#   scripts/bench-runtime.sh [WORKDIR]
#
# Builds >= 20k small text files (~200 MB) and >= 200 MiB of partly
# compressible large files, then times, in this one run:
#   baseline pack:    tar -cf - | zstd -T0 --long=30
#   baseline unpack:  zstd -d --long=30 | tar -x
#   cold save, restore into an empty dir, restore onto a matching tree,
#   no-change save, and a save after appending to 1% of the small files and
#   rewriting 1 MiB inside one large file.
# Prints medians (of RUNS, default 3), ratios against the baselines, bytes
# stored by the 1% save over the cold save, objects per save and peak RSS.
# This is a benchmark, not a test: it prints figures and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
N_SMALL=${N_SMALL:-20000}
N_LARGE=${N_LARGE:-4}
LARGE_MIB=${LARGE_MIB:-56}
WORK=${1:-$(mktemp -d -t stateful-ci-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

cargo build --release --locked --quiet
BIN=$PWD/target/release/stateful-ci

echo "== building the workspace in $WORK"
python3 scripts/bench/gen-workspace.py "$WORK/ws" "$N_SMALL" "$N_LARGE" "$LARGE_MIB"
printf 'paths = ["node_modules", "target"]\n' > "$WORK/ws/stateful-ci.toml"
cp "$WORK/ws/stateful-ci.toml" "$WORK/cfg.toml"
files=$(find "$WORK/ws/node_modules" "$WORK/ws/target" -type f | wc -l)
bytes=$(du -sb "$WORK/ws/node_modules" "$WORK/ws/target" | awk '{s+=$1} END {print s}')
echo "files: $files, bytes: $bytes"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
peak_rss_kib=0
# run_timed LABEL CMD...: appends the elapsed seconds to $WORK/t.LABEL and tracks peak RSS.
run_timed() {
  local label=$1; shift
  local t0 t1
  t0=$(now)
  /usr/bin/time -f %M -o "$WORK/rss" "$@" >"$WORK/out.json" 2>"$WORK/err.log" || { cat "$WORK/err.log" >&2; exit 1; }
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >> "$WORK/t.$label"
  local rss; rss=$(tail -n1 "$WORK/rss")
  if [ "$label" != tar ] && [ "$label" != untar ] && [ "$rss" -gt "$peak_rss_kib" ]; then peak_rss_kib=$rss; fi
}
json() { python3 -c "import json,sys; print(json.load(open('$WORK/out.json'))['$1'])"; }

cd "$WORK/ws"
export STATEFUL_CI_CACHE_DIR
for i in $(seq "$RUNS"); do
  rm -f "$WORK/base.tar.zst"
  run_timed tar bash -c "tar -cf - node_modules target | zstd -q -T0 --long=30 -o '$WORK/base.tar.zst'"
  rm -rf "$WORK/untar"; mkdir -p "$WORK/untar"
  run_timed untar bash -c "zstd -q -d --long=30 -c '$WORK/base.tar.zst' | tar -xf - -C '$WORK/untar'"
done
base_bytes=$(stat -c %s "$WORK/base.tar.zst")

for i in $(seq "$RUNS"); do
  rm -rf "$WORK/store" "$WORK/cache"
  STATEFUL_CI_CACHE_DIR=$WORK/cache
  run_timed cold "$BIN" save --store "$WORK/store" --json
done
cold_stored=$(json stored_bytes); cold_objects=$(json objects_sent)

for i in $(seq "$RUNS"); do
  rm -rf "$WORK/r"; mkdir -p "$WORK/r"; cp "$WORK/cfg.toml" "$WORK/r/stateful-ci.toml"
  STATEFUL_CI_CACHE_DIR=$WORK/cache-r-$i
  run_timed restore_empty "$BIN" restore --store "$WORK/store" -C "$WORK/r" --json
done
for i in $(seq "$RUNS"); do
  run_timed restore_match "$BIN" restore --store "$WORK/store" -C "$WORK/r" --json
done
[ "$(json files_written)" = 0 ] || { echo "restore onto a matching tree rewrote files" >&2; exit 1; }
diff -r "$WORK/ws/node_modules" "$WORK/r/node_modules" >/dev/null && diff -r "$WORK/ws/target" "$WORK/r/target" >/dev/null \
  || { echo "restored tree differs" >&2; exit 1; }

STATEFUL_CI_CACHE_DIR=$WORK/cache
for i in $(seq "$RUNS"); do
  run_timed nochange "$BIN" save --store "$WORK/store" --json
done
nochange_outcome=$(json outcome); nochange_objects=$(json objects_sent)

# 1% edit: append to 1% of the small files, rewrite 1 MiB inside one large file.
find node_modules -type f -name '*.js' | sort | awk 'NR % 100 == 0' | while read -r f; do echo "// edited" >> "$f"; done
python3 - "$WORK/ws/target/blob0.bin" <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(20 * 1024 * 1024)
    f.write(os.urandom(1024 * 1024))
PY
run_timed edit "$BIN" save --store "$WORK/store" --json
edit_stored=$(json stored_bytes); edit_objects=$(json objects_sent)

m() { median < "$WORK/t.$1"; }
tar_t=$(m tar); untar_t=$(m untar); cold_t=$(m cold); re_t=$(m restore_empty); rm_t=$(m restore_match); nc_t=$(m nochange); ed_t=$(m edit)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
cat <<REPORT

== stateful-ci runtime benchmark ($files files, $((bytes / 1048576)) MiB, $(nproc) cores, median of $RUNS)
baseline tar|zstd -T0 --long=30     ${tar_t}s  (${base_bytes} bytes)
baseline zstd -d | tar -x           ${untar_t}s
cold save                           ${cold_t}s  ratio to tar|zstd: $(ratio "$cold_t" "$tar_t")  (goal <= 1.0, aim 0.8)  stored ${cold_stored} bytes in ${cold_objects} objects
restore into an empty dir           ${re_t}s  ratio to unpack:   $(ratio "$re_t" "$untar_t")  (goal <= 1.0, aim 0.8)
restore onto a matching tree        ${rm_t}s  ratio to unpack:   $(ratio "$rm_t" "$untar_t")
no-change save                      ${nc_t}s  ratio to cold:     $(ratio "$nc_t" "$cold_t")  (goal <= 0.2, aim 0.1)  outcome ${nochange_outcome}, ${nochange_objects} objects
1% edit save                        ${ed_t}s  stored ${edit_stored} bytes in ${edit_objects} objects = $(ratio "$((edit_stored * 100))" "$cold_stored")% of cold  (goal <= 5%, aim 2%)
peak RSS (stateful-ci)              $((peak_rss_kib / 1024)) MiB  (goal <= 256 MiB)
REPORT
