#!/usr/bin/env python3
"""Tests of action.yml, run through harness.py with the real stateful-ci binary.

usage: python3 tests/action-harness/test_action.py --binary PATH [--registry URL]
         [--backend-url URL --oidc-request-url URL [--oidc-request-token T]]

--binary    the stateful-ci binary the action gets through STATEFUL_CI_BINARY
--registry  an npm registry (the local verdaccio of tests/npm/test.sh) that has
            the packed stateful-ci packages: also tests the action's own
            install path (npm exec, no STATEFUL_CI_BINARY)
--backend-url URL --oidc-request-url URL [--oidc-request-token T]
            a running backend and a fake issuer's token endpoint: also runs
            the miss/save/hit scenario through `backend-url`

Prints one line per test and closes with `N passed, N failed`; exit 1 if any
failed. Backend runs: a job's env may carry STATEFUL_CI_BACKEND_URL and a fake
issuer's ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN (see Job in harness.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ActionRun, Job, new_root

REPO = Path(__file__).resolve().parents[2]
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def check(condition, message, run: ActionRun | None = None):
    if not condition:
        detail = f"\n{run.log}" if run is not None else ""
        raise AssertionError(f"{message}{detail}")


def tree_digest(root: Path, relative_paths) -> dict[str, str]:
    return {p: hashlib.sha256((root / p).read_bytes()).hexdigest() for p in relative_paths}


def write_files(root: Path, files: dict[str, bytes]):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class Ctx:
    def __init__(self, binary: Path, registry: str | None, backend: dict[str, str] | None = None):
        self.binary = binary
        self.registry = registry
        self.backend = backend
        self.root = new_root()

    def job(self, name: str, **env) -> Job:
        base = {"STATEFUL_CI_BINARY": str(self.binary)}
        base.update(env)
        return Job(self.root / name, {k: v for k, v in base.items() if v is not None}, name=name)

    def fake_cli(self, name: str, body: str) -> Path:
        """A stand-in CLI, only for what the real one cannot be made to print
        (hostile text, broken output): it tests the action's handling of it."""
        path = self.root / f"{name}.py"
        prelude = "if sys.argv[1:] == ['--version']:\n    print('stateful-ci 0.0.0-stand-in')\n    sys.exit(0)\n"
        path.write_text(f"#!{sys.executable}\nimport json, sys\n{prelude}{body}\n", encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path


# -- input checks: nothing runs before the inputs are known good --------------


def expect_input_rejected(ctx: Ctx, with_: dict[str, str], words: str):
    run = ctx.job("reject").uses(REPO, with_)
    check(run.status == "failure", f"inputs {with_} were accepted", run)
    check(run.steps[0].status == "failure" and run.steps[0].exit_code == 2, "the check step did not exit 2", run)
    check(all(s.status == "skipped" for s in run.steps[1:]), "steps ran after the input check failed", run)
    errors = [text for level, text in run.annotations if level == "error"]
    check(any(words in e for e in errors), f"no ::error naming {words!r}: {errors}", run)


@test
def rejects_unknown_command(ctx: Ctx):
    expect_input_rejected(ctx, {"command": "restore; touch /tmp/pwned"}, "'command' must be 'restore' or 'save'")


@test
def rejects_bad_strict(ctx: Ctx):
    expect_input_rejected(ctx, {"command": "save", "strict": "yes"}, "'strict' must be 'true' or 'false'")


@test
def rejects_store_and_backend_together(ctx: Ctx):
    expect_input_rejected(
        ctx, {"command": "save", "store": "/tmp/x", "backend-url": "http://127.0.0.1:1"}, "'backend-url' are both set"
    )


@test
def rejects_version_that_is_not_a_version(ctx: Ctx):
    expect_input_rejected(ctx, {"command": "save", "version": "latest"}, "'version' must be a version")


@test
def missing_binary_is_a_clear_failure(ctx: Ctx):
    job = ctx.job("nobinary", STATEFUL_CI_BINARY=str(ctx.root / "does-not-exist"))
    run = job.uses(REPO, {"command": "restore", "store": str(ctx.root / "store")})
    check(run.status == "failure" and run.steps[1].status == "failure", "a missing binary was not a failure", run)
    check(any("STATEFUL_CI_BINARY" in t for _, t in run.annotations), "the error does not name STATEFUL_CI_BINARY", run)


# -- what the action makes of the CLI's report --------------------------------


@test
def hostile_report_text_stays_inert(ctx: Ctx):
    report = {
        "command": "restore",
        "outcome": "hit",
        "snapshot_id": "snap|1\n::error::injected",
        "files": 3,
        "bytes": 2048,
        "new_bytes": 0,
        "objects_sent": 0,
        "dedup_ratio": 1.0,
        "duration_ms": 1500,
        "source": {"scope": "refs/heads/main`<b>", "trust": "trusted"},
        "warnings": ["first line\n::error::second line", "100%0A"],
    }
    cli = ctx.fake_cli("hostile", f"print(json.dumps({report!r}))")
    run = ctx.job("hostile", STATEFUL_CI_BINARY=str(cli)).uses(REPO, {"command": "restore"})
    check(run.status == "success", "a hit with warnings failed the step", run)
    check(run.outputs["restored"] == "true", f"restored={run.outputs['restored']!r}", run)
    check(run.outputs["snapshot-id"] == report["snapshot_id"], "snapshot-id did not survive GITHUB_OUTPUT intact", run)
    check(run.outputs["bytes"] == "2048", f"bytes={run.outputs['bytes']!r}", run)
    # The CLI annotates its own warnings (escaped); the action adds none, and
    # nothing in the report becomes a workflow command.
    check(run.annotations == [], f"annotations {run.annotations}", run)
    check("- warning: first line ::error::second line" in run.summary, f"warnings in the summary:\n{run.summary}", run)
    rows = [line for line in run.summary.splitlines() if line.startswith("|")]
    check(len(rows) == 8, f"the summary table has {len(rows)} rows, not 8:\n{run.summary}", run)
    check("<b>" not in run.summary and "`" not in run.summary, f"markup reached the summary:\n{run.summary}", run)
    check("| Time | 1.50 s |" in run.summary, f"no time row:\n{run.summary}", run)


@test
def cli_failure_exit_code_passes_through(ctx: Ctx):
    cli = ctx.fake_cli("failing", "sys.stderr.write('stateful-ci: the store is unreadable\\n')\nsys.exit(1)")
    run = ctx.job("failing", STATEFUL_CI_BINARY=str(cli)).uses(REPO, {"command": "save", "store": "/nonexistent"})
    check(run.status == "failure" and run.failed_exit_code() == 1, "exit code 1 did not fail the step with 1", run)
    check(run.outputs["restored"] == "false" and run.outputs["snapshot-id"] == "", f"outputs {run.outputs}", run)
    check("failed" in run.summary, f"the summary does not say it failed:\n{run.summary}", run)


@test
def no_report_is_a_warning_unless_strict(ctx: Ctx):
    cli = ctx.fake_cli("silent", "pass")
    lenient = ctx.job("silent", STATEFUL_CI_BINARY=str(cli)).uses(REPO, {"command": "restore"})
    check(lenient.status == "success", "no report failed a non-strict run", lenient)
    check(any(level == "warning" for level, _ in lenient.annotations), "no warning for a missing report", lenient)
    strict = ctx.job("silent2", STATEFUL_CI_BINARY=str(cli)).uses(REPO, {"command": "restore", "strict": "true"})
    check(strict.status == "failure", "no report passed a strict run", strict)


# -- the real CLI: miss, save, then hit in a fresh job ------------------------


def cli_has(binary: Path, command: str) -> bool:
    proc = subprocess.run([str(binary), command, "--help"], check=False, capture_output=True, text=True)
    return proc.returncode == 0 and "--store" in proc.stdout


def miss_save_hit(ctx: Ctx, where: dict[str, str], env: dict[str, str], tag: str) -> ActionRun:
    """Job 1: restore (miss) then save; job 2, fresh workspace: restore (hit)."""
    files = {
        "node_modules/left-pad/index.js": b"module.exports = (s, n) => s.padStart(n);\n",
        "node_modules/left-pad/package.json": b'{"name":"left-pad","version":"1.3.0"}\n',
        "target/debug/app": bytes(range(256)) * 64,
    }
    inputs = {"paths": "node_modules\ntarget\n", **where}

    job1 = ctx.job(f"{tag}-job1", **env)
    write_files(job1.workspace, files)
    restore1 = job1.uses(REPO, {"command": "restore", **inputs})
    check(restore1.status == "success", "the first restore failed", restore1)
    check(restore1.outputs["restored"] == "false", f"first restore outputs {restore1.outputs}", restore1)
    check(restore1.outputs["outcome"] == "miss", f"first restore outcome {restore1.outputs['outcome']!r}", restore1)
    save = job1.uses(REPO, {"command": "save", **inputs})
    check(save.status == "success", "the save failed", save)
    check(save.outputs["outcome"] == "saved", f"save outcome {save.outputs['outcome']!r}", save)
    check(save.outputs["snapshot-id"] != "", "the save gave no snapshot-id", save)
    total = sum(len(v) for v in files.values())
    check(int(save.outputs["bytes"]) >= total, f"save bytes {save.outputs['bytes']} < {total}", save)
    check("### stateful-ci save: saved" in save.summary, f"save summary:\n{save.summary}", save)

    job2 = ctx.job(f"{tag}-job2", **env)
    check(not (job2.workspace / "node_modules").exists(), "job2's workspace is not fresh")
    restore2 = job2.uses(REPO, {"command": "restore", **inputs})
    check(restore2.status == "success", "the second restore failed", restore2)
    check(restore2.outputs["restored"] == "true", f"second restore outputs {restore2.outputs}", restore2)
    check(restore2.outputs["snapshot-id"] == save.outputs["snapshot-id"], "restored another snapshot", restore2)
    check(restore2.outputs["bytes"] == save.outputs["bytes"], "restored bytes differ from saved bytes", restore2)
    check(
        tree_digest(job2.workspace, files) == tree_digest(job1.workspace, files),
        "the restored files differ from the saved ones",
        restore2,
    )
    summary = restore2.summary
    for row in ("| Files | 3 |", "| Bytes |", "| New bytes |", "| Snapshot |", "| Source trust class |", "| Time |"):
        check(row in summary, f"the restore summary lacks {row!r}:\n{summary}", restore2)
    check(job2.summary == summary, "the job summary is not the steps' summaries", restore2)
    return restore2


@test
def miss_then_save_then_hit_with_a_directory_store(ctx: Ctx):
    if not (cli_has(ctx.binary, "restore") and cli_has(ctx.binary, "save")):
        return "skipped: this stateful-ci binary has no restore/save --store yet"
    miss_save_hit(ctx, {"store": str(ctx.root / "store")}, {}, "store")


@test
def miss_then_save_then_hit_with_a_backend(ctx: Ctx):
    """Against a running backend (`stateful-ci dev`, say) with a fake OIDC
    issuer's token endpoint, as a runner with `id-token: write` provides."""
    if not ctx.backend:
        return "skipped: no --backend-url/--oidc-request-url given"
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": ctx.backend["oidc_url"],
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": ctx.backend["oidc_token"],
    }
    restore2 = miss_save_hit(ctx, {"backend-url": ctx.backend["url"]}, env, "backend")
    check("none (local store)" not in restore2.summary, "a backend restore shows no trust class", restore2)


@test
def paths_from_stateful_ci_toml_and_exclude_lines(ctx: Ctx):
    if not (cli_has(ctx.binary, "restore") and cli_has(ctx.binary, "save")):
        return "skipped: this stateful-ci binary has no restore/save --store yet"
    store = ctx.root / "toml-store"
    config = {"stateful-ci.toml": b'paths = ["cache"]\n'}
    kept = {"cache/keep/data.bin": b"\x00\x01" * 300, "cache/notes.txt": b"kept\n"}
    left_out = {"cache/debug.log": b"not saved\n"}
    inputs = {"store": str(store), "paths": "# comments and blank lines are ignored\n\n!**/*.log\n"}
    job1 = ctx.job("toml1")
    write_files(job1.workspace, {**config, **kept, **left_out})
    save = job1.uses(REPO, {"command": "save", **inputs})
    check(save.outputs.get("outcome") == "saved", f"save outputs {save.outputs}", save)
    check("paths from stateful-ci.toml" in save.steps[2].stdout, "the run did not use the config's paths", save)
    job2 = ctx.job("toml2")
    write_files(job2.workspace, config)
    restore = job2.uses(REPO, {"command": "restore", **inputs})
    check(restore.outputs.get("restored") == "true", f"restore outputs {restore.outputs}", restore)
    check(tree_digest(job2.workspace, kept) == tree_digest(job1.workspace, kept), "kept files differ", restore)
    check(not (job2.workspace / "cache/debug.log").exists(), "an excluded file was restored", restore)


@test
def cache_failure_is_a_warning_unless_strict(ctx: Ctx):
    if not cli_has(ctx.binary, "restore"):
        return "skipped: this stateful-ci binary has no restore --store yet"
    not_a_dir = ctx.root / "store-is-a-file"
    not_a_dir.write_text("not a directory\n")
    job = ctx.job("broken-store")
    write_files(job.workspace, {"cache/a": b"a"})
    lenient = job.uses(REPO, {"command": "restore", "store": str(not_a_dir), "paths": "cache"})
    check(lenient.status == "success", "a broken store failed a non-strict restore", lenient)
    check(lenient.outputs["restored"] == "false", f"outputs {lenient.outputs}", lenient)
    check(lenient.outputs["outcome"] == "error", f"outcome {lenient.outputs['outcome']!r}", lenient)
    warnings = [text for level, text in lenient.annotations if level == "warning"]
    check(
        any(str(not_a_dir.name) in w for w in warnings), f"no warning naming the store: {lenient.annotations}", lenient
    )
    check("- error: " in lenient.summary, f"the summary does not show the error:\n{lenient.summary}", lenient)
    strict = job.uses(REPO, {"command": "restore", "store": str(not_a_dir), "paths": "cache", "strict": "true"})
    check(strict.status == "failure" and strict.failed_exit_code() == 1, "a strict restore did not fail with 1", strict)
    check(strict.outputs["restored"] == "false", f"outputs {strict.outputs}", strict)
    check(any(level == "error" for level, _ in strict.annotations), "no error annotation", strict)


# -- the action's own install path, through a local registry -----------------


@test
def installs_the_cli_from_the_registry(ctx: Ctx):
    if not ctx.registry:
        return "skipped: no --registry given (tests/npm/test.sh gives one)"
    version = subprocess.run(
        [str(ctx.binary), "--version"], check=False, capture_output=True, text=True
    ).stdout.split()[-1]
    cache = ctx.root / "npm-cache"
    job = ctx.job(
        "install",
        STATEFUL_CI_BINARY=None,
        npm_config_registry=ctx.registry,
        npm_config_cache=str(cache),
        npm_config_userconfig=str(ctx.root / "no-npmrc"),
    )
    job.env.pop("STATEFUL_CI_BINARY", None)
    run = job.uses(REPO, {"command": "restore", "store": str(ctx.root / "install-store"), "version": version})
    install = run.steps[1]
    check(install.status == "success", "installing the CLI from the registry failed", run)
    check(f"stateful-ci {version}" in install.stdout, f"the installed CLI did not say {version}", run)
    bin_path = install.outputs.get("bin", "")
    check(str(cache) in bin_path, f"the CLI was not installed into npm's cache: {bin_path!r}", run)
    # The default version is the action's own: the one in its Cargo.toml.
    run2 = job.uses(REPO, {"command": "restore", "store": str(ctx.root / "install-store")})
    check(f"Installing stateful-ci {version}" in run2.steps[1].stdout, "the default version is not Cargo.toml's", run2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, type=Path)
    parser.add_argument("--registry")
    parser.add_argument("--backend-url", help="a running backend for the backend scenario")
    parser.add_argument("--oidc-request-url", help="ACTIONS_ID_TOKEN_REQUEST_URL of a fake issuer")
    parser.add_argument("--oidc-request-token", default="harness", help="ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder for inspection")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        print(f"test_action: --binary {args.binary} is not an executable file", file=sys.stderr)
        return 2
    backend = None
    if args.backend_url or args.oidc_request_url:
        if not (args.backend_url and args.oidc_request_url):
            print("test_action: --backend-url and --oidc-request-url go together", file=sys.stderr)
            return 2
        backend = {"url": args.backend_url, "oidc_url": args.oidc_request_url, "oidc_token": args.oidc_request_token}
    ctx = Ctx(args.binary.resolve(), args.registry, backend)
    passed = failed = skipped = 0
    for fn in TESTS:
        try:
            outcome = fn(ctx)
        except Exception:  # noqa: BLE001 -- report every failure, go on
            failed += 1
            print(f"FAIL {fn.__name__}\n{traceback.format_exc()}")
            continue
        if isinstance(outcome, str) and outcome.startswith("skipped"):
            skipped += 1
            print(f"SKIP {fn.__name__}: {outcome}")
        else:
            passed += 1
            print(f"ok   {fn.__name__}")
    if not args.keep:
        shutil.rmtree(ctx.root, ignore_errors=True)
    else:
        print(f"kept {ctx.root}")
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
