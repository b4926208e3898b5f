#!/usr/bin/env bash
# The main job on a local default, no Cloudflare account needed: two
# "runners" share a workspace through a local store. The first runs cold and
# saves; the second restores, changes a little, and saves only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
BIN=$PWD/target/debug/stateful-ci
DEMO=${DEMO_DIR:-$(mktemp -d -t stateful-ci-demo.XXXXXX)}
export STATEFUL_CI_CACHE_DIR=$DEMO/cache
STORE=$DEMO/store

echo "== runner 1: a cold job in $DEMO/runner1"
mkdir -p "$DEMO/runner1" && cd "$DEMO/runner1"
"$BIN" restore --store "$STORE" --path node_modules --path .next/cache
python3 "$OLDPWD/scripts/bench/gen-workspace.py" . 3000 1 8 >/dev/null
rm -rf target
mkdir -p .next/cache && echo "build cache" > .next/cache/fetch-cache.json
echo "//registry/:_authToken=never-captured" > node_modules/.npmrc
"$BIN" save --store "$STORE" --path node_modules --path .next/cache

echo
echo "== runner 2: a fresh machine restores, changes one package, saves"
mkdir -p "$DEMO/runner2" && cd "$DEMO/runner2"
"$BIN" restore --store "$STORE" --path node_modules --path .next/cache
diff -r --exclude=.npmrc "$DEMO/runner1/node_modules" node_modules && echo "node_modules restored exactly"
echo "// patched" >> node_modules/pkg000/lib/file1.js
"$BIN" save --store "$STORE" --path node_modules --path .next/cache

echo
echo "demo files are in $DEMO (store: $STORE)"
