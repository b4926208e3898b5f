#!/usr/bin/env python3
"""Tests of action.yml (a JavaScript action: main restores, post saves), run
through harness.py with the real stateful-ci binary.

usage: python3 tests/action-harness/test_action.py --binary PATH [--registry URL [--win32-published]]
         [--backend-url URL --oidc-request-url URL [--oidc-request-token T]]

--binary    the stateful-ci binary the action gets through STATEFUL_CI_BINARY
--registry  a loopback npm registry (the local verdaccio of tests/npm/test.sh)
            that has the packed packages: also tests the action's own install
            (download, integrity and checksum-list verification, reuse)
--win32-published  that registry also has @stateful-ci/cli-win32-x64 (this
            machine's binary under the Windows name): the Windows layout test
--backend-url URL --oidc-request-url URL [--oidc-request-token T]
            a running backend and a fake issuer's token endpoint: also runs
            the miss/save/hit scenario through `backend-url`

Prints one line per test and closes with `N passed, N failed`; exit 1 if any
failed. Backend runs: a job's env may carry STATEFUL_CI_BACKEND_URL and a fake
issuer's ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN (see Job in harness.py).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import os
import secrets
import threading
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
        self.win32_published = False
        self.host_platform = subprocess.run(
            ["node", "-p", f"require({str(REPO / 'npm/stateful-ci/bin/stateful-ci.js')!r}).platformKey()"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.backend = backend
        self.root = new_root()

    def job(self, name: str, platform: str = "linux", **env) -> Job:
        base = {"STATEFUL_CI_BINARY": str(self.binary)}
        base.update(env)
        return Job(self.root / name, {k: v for k, v in base.items() if v is not None}, name=name, platform=platform)

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
    marker = ctx.root / "cli-ran"
    cli = ctx.fake_cli("marker", f"open({str(marker)!r}, 'w').close()")
    job = ctx.job("reject", STATEFUL_CI_BINARY=str(cli))
    run = job.uses(REPO, with_)
    check(run.status == "failure" and run.steps[0].exit_code == 2, f"inputs {with_} were not refused with 2", run)
    errors = [text for level, text in run.annotations if level == "error"]
    check(any(words in e for e in errors), f"no ::error naming {words!r}: {errors}", run)
    check(not marker.exists(), "the CLI ran although the inputs were bad", run)
    posts = job.finish()
    check(all(p is None or "not saving" in p.steps[0].stdout for p in posts), "the post step saved", run)


@test
def rejects_unknown_command(ctx: Ctx):
    expect_input_rejected(ctx, {"command": "restore; touch /tmp/pwned"}, "'command' must be 'restore', 'save' or empty")


@test
def rejects_bad_save_on(ctx: Ctx):
    expect_input_rejected(ctx, {"save-on": "sometimes"}, "'save-on' must be 'success', 'always' (default) or 'never'")


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
def missing_binary_is_a_warning_unless_strict(ctx: Ctx):
    job = ctx.job("nobinary", STATEFUL_CI_BINARY=str(ctx.root / "does-not-exist"))
    run = job.uses(REPO, {"store": str(ctx.root / "store")})
    check(run.status == "success", "a missing CLI failed a non-strict job", run)
    check(any("STATEFUL_CI_BINARY" in t for _, t in run.annotations), "the warning does not name STATEFUL_CI_BINARY", run)
    post = job.finish()[0]
    check(post is not None and "not saving" in post.steps[0].stdout, "the post step did not stand down", run)
    strict = ctx.job("nobinary2", STATEFUL_CI_BINARY=str(ctx.root / "nope")).uses(REPO, {"strict": "true"})
    check(strict.status == "failure", "a missing CLI passed a strict job", strict)


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
    check(run.outputs["restored"] == "true" and run.outputs["cache-hit"] == "true", f"outputs {run.outputs}", run)
    check(run.outputs["snapshot-id"] == report["snapshot_id"], "snapshot-id did not survive GITHUB_OUTPUT intact", run)
    check(run.outputs["bytes"] == "2048", f"bytes={run.outputs['bytes']!r}", run)
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


# -- the real CLI: main restores, post saves; the two-step form ---------------


def cli_has(binary: Path, command: str) -> bool:
    proc = subprocess.run([str(binary), command, "--help"], check=False, capture_output=True, text=True)
    return proc.returncode == 0 and "--store" in proc.stdout


FILES = {
    "node_modules/left-pad/index.js": b"module.exports = (s, n) => s.padStart(n);\n",
    "node_modules/left-pad/package.json": b'{"name":"left-pad","version":"1.3.0"}\n',
    "target/debug/app": bytes(range(256)) * 64,
}


def one_step_miss_then_hit(ctx: Ctx, where: dict[str, str], env: dict[str, str], tag: str, platform="linux"):
    """Job 1: main restores (miss), post saves; job 2, fresh: main restores (hit)."""
    inputs = {"paths": "node_modules\ntarget\n", **where}
    job1 = ctx.job(f"{tag}-job1", platform=platform, **env)
    write_files(job1.workspace, FILES)
    main1 = job1.uses(REPO, inputs)
    check(main1.status == "success", "the first main step failed", main1)
    check(main1.outputs["cache-hit"] == "false", f"first restore outputs {main1.outputs}", main1)
    check(main1.outputs["outcome"] == "miss", f"first restore outcome {main1.outputs['outcome']!r}", main1)
    post1 = job1.finish()[0]
    check(post1 is not None, "the post step did not run after a successful job", main1)
    check(post1.status == "success", "the post step failed", post1)
    check(post1.outputs["outcome"] == "saved", f"post outcome {post1.outputs.get('outcome')!r}", post1)
    check("### stateful-ci save: saved" in post1.summary, f"save summary:\n{post1.summary}", post1)
    total = sum(len(v) for v in FILES.values())
    check(int(post1.outputs["bytes"]) >= total, f"save bytes {post1.outputs['bytes']} < {total}", post1)

    job2 = ctx.job(f"{tag}-job2", platform=platform, **env)
    check(not (job2.workspace / "node_modules").exists(), "job2's workspace is not fresh")
    main2 = job2.uses(REPO, inputs)
    check(main2.outputs["cache-hit"] == "true" and main2.outputs["restored"] == "true", f"outputs {main2.outputs}", main2)
    check(main2.outputs["snapshot-id"] == post1.outputs["snapshot-id"], "restored another snapshot", main2)
    check(tree_digest(job2.workspace, FILES) == tree_digest(job1.workspace, FILES), "restored files differ", main2)
    for row in ("| Files | 3 |", "| Bytes |", "| New bytes |", "| Snapshot |", "| Source trust class |", "| Time |"):
        check(row in main2.summary, f"the restore summary lacks {row!r}:\n{main2.summary}", main2)
    post2 = job2.finish()[0]
    check(post2 is not None and post2.outputs.get("outcome") in ("unchanged", "saved"), "job 2's post step", post2)
    return main1, main2


@test
def one_step_main_restores_and_post_saves(ctx: Ctx):
    if not (cli_has(ctx.binary, "restore") and cli_has(ctx.binary, "save")):
        return "skipped: this stateful-ci binary has no restore/save --store yet"
    one_step_miss_then_hit(ctx, {"store": str(ctx.root / "store")}, {}, "store")


def snapshot_count(ctx: Ctx, store: Path) -> int:
    probe = ctx.job(f"probe-{secrets.token_hex(4)}")
    run = probe.uses(REPO, {"command": "restore", "store": str(store), "paths": "node_modules\ntarget\n"})
    return 0 if run.outputs.get("cache-hit") != "true" else 1


@test
def save_on_decides_after_a_failed_step(ctx: Ctx):
    if not (cli_has(ctx.binary, "restore") and cli_has(ctx.binary, "save")):
        return "skipped: this stateful-ci binary has no restore/save --store yet"
    cases = [
        # save-on, the job failed, post runs, a snapshot is saved
        ("always", True, True, True),
        (None, True, True, True),  # the default is always
        ("success", True, False, False),
        ("success", False, True, True),
        ("never", False, True, False),
    ]
    for save_on, job_failed, post_runs, saved in cases:
        store = ctx.root / f"store-save-on-{save_on}-{job_failed}"
        job = ctx.job(f"save-on-{save_on}-{job_failed}")
        write_files(job.workspace, FILES)
        inputs = {"store": str(store), "paths": "node_modules\ntarget\n"}
        if save_on:
            inputs["save-on"] = save_on
        main = job.uses(REPO, inputs)
        check(main.status == "success", f"save-on {save_on}: main failed", main)
        job.failed = job_failed  # a later step of the job failed
        post = job.finish()[0]
        what = f"save-on {save_on}, job failed {job_failed}"
        check((post is not None) == post_runs, f"{what}: post ran = {post is not None}", main)
        if post is not None:
            check(post.status == "success", f"{what}: the post step failed", post)
            check(("outcome" in post.outputs) == saved, f"{what}: post outputs {post.outputs}", post)
        check(snapshot_count(ctx, store) == (1 if saved else 0), f"{what}: the store does not match", main)


@test
def two_step_form_still_works(ctx: Ctx):
    if not (cli_has(ctx.binary, "restore") and cli_has(ctx.binary, "save")):
        return "skipped: this stateful-ci binary has no restore/save --store yet"
    store = ctx.root / "two-step-store"
    inputs = {"store": str(store), "paths": "node_modules\ntarget\n"}
    job1 = ctx.job("two-step1")
    write_files(job1.workspace, FILES)
    restore = job1.uses(REPO, {"command": "restore", **inputs})
    check(restore.outputs["outcome"] == "miss", f"restore outputs {restore.outputs}", restore)
    save = job1.uses(REPO, {"command": "save", **inputs})
    check(save.outputs["outcome"] == "saved" and save.outputs["snapshot-id"], f"save outputs {save.outputs}", save)
    posts = job1.finish()
    check(len(posts) == 2, f"{len(posts)} post steps, not 2", save)
    for post in posts:
        check(post is not None and "nothing to do" in post.steps[0].stdout, "a two-step post step acted", post)
        check(post.outputs == {}, f"a two-step post step set outputs {post.outputs}", post)
    job2 = ctx.job("two-step2")
    hit = job2.uses(REPO, {"command": "restore", **inputs})
    check(hit.outputs["restored"] == "true" and hit.outputs["snapshot-id"] == save.outputs["snapshot-id"], "no hit", hit)
    check(tree_digest(job2.workspace, FILES) == tree_digest(job1.workspace, FILES), "restored files differ", hit)


@test
def one_step_with_a_backend(ctx: Ctx):
    """Against a running backend with a fake OIDC issuer's token endpoint, as a
    runner with `id-token: write` provides."""
    if not ctx.backend:
        return "skipped: no --backend-url/--oidc-request-url given"
    env = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": ctx.backend["oidc_url"],
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": ctx.backend["oidc_token"],
    }
    _, main2 = one_step_miss_then_hit(ctx, {"backend-url": ctx.backend["url"]}, env, "backend")
    check("none (local store)" not in main2.summary, "a backend restore shows no trust class", main2)


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
    check("paths from stateful-ci.toml" in save.steps[0].stdout, "the run did not use the config's paths", save)
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
    check(any(not_a_dir.name in w for w in warnings), f"no warning naming the store: {lenient.annotations}", lenient)
    check("- error: " in lenient.summary, f"the summary does not show the error:\n{lenient.summary}", lenient)
    strict = job.uses(REPO, {"command": "restore", "store": str(not_a_dir), "paths": "cache", "strict": "true"})
    check(strict.status == "failure" and strict.failed_exit_code() == 1, "a strict restore did not fail with 1", strict)
    check(any(level == "error" for level, _ in strict.annotations), "no error annotation", strict)


# -- the action's own install: pinned registry, verified ----------------------


def version_of(binary: Path) -> str:
    return subprocess.run([str(binary), "--version"], check=False, capture_output=True, text=True).stdout.split()[-1]


def registry_job(ctx: Ctx, name: str, registry: str, platform="linux", **env) -> Job:
    """A job whose npm configuration names a dead registry (env and a .npmrc
    in the checked-out tree): the action must not care."""
    job = ctx.job(
        name,
        platform=platform,
        STATEFUL_CI_BINARY=None,
        STATEFUL_CI_ACTION_REGISTRY=registry,
        npm_config_registry="http://127.0.0.1:9/",
        **env,
    )
    job.env.pop("STATEFUL_CI_BINARY", None)
    (job.workspace / ".npmrc").write_text("registry=http://127.0.0.1:9/\n", encoding="utf-8")
    return job


@test
def installs_the_cli_from_the_pinned_registry_and_verifies_it(ctx: Ctx):
    if not ctx.registry:
        return "skipped: no --registry given (tests/npm/test.sh gives one)"
    version = version_of(ctx.binary)
    job = registry_job(ctx, "install", ctx.registry)
    run = job.uses(REPO, {"command": "restore", "store": str(ctx.root / "install-store"), "paths": "x"})
    out = run.steps[0].stdout
    check(run.status == "success", "installing the CLI failed", run)
    check(f"Downloading @stateful-ci/cli-{ctx.host_platform}@{version}" in out, "no download from the registry", run)
    check("tarball SHA-512 matches the registry's integrity" in out, "the tarball was not verified", run)
    check(f"stateful-ci {version}" in out, f"the CLI did not say {version}", run)
    # The same job again (the two-step form's save): the verified binary is reused.
    again = job.uses(REPO, {"command": "restore", "store": str(ctx.root / "install-store"), "paths": "x"})
    check("verified earlier in this job" in again.steps[0].stdout, "the verified binary was not reused", again)
    # Tampered afterwards: downloaded and verified afresh.
    cached = next((ctx.root / "install" / "runner-temp" / "stateful-ci-cli").glob("*/stateful-ci"))
    cached.write_bytes(b"#!/bin/sh\necho pwned\n")
    third = job.uses(REPO, {"command": "restore", "store": str(ctx.root / "install-store"), "paths": "x"})
    check("Verified" in third.steps[0].stdout and third.status == "success", "a tampered copy was used", third)


@test
def the_action_source_checksum_list_is_enforced(ctx: Ctx):
    if not ctx.registry:
        return "skipped: no --registry given"
    version = version_of(ctx.binary)
    copy = ctx.root / "action-copy"
    for part in ("action", "npm"):
        shutil.copytree(REPO / part, copy / part)
    for f in ("action.yml", "Cargo.toml"):
        shutil.copy(REPO / f, copy / f)
    checksums = copy / "action" / "checksums.json"
    doc = json.loads(checksums.read_text())
    doc["versions"][version] = {ctx.host_platform: "0" * 64}
    checksums.write_text(json.dumps(doc))
    bad = registry_job(ctx, "listed-bad", ctx.registry).uses(copy, {"strict": "true", "store": str(ctx.root / "s1")})
    check(bad.status == "failure", "a binary not matching checksums.json was accepted", bad)
    check(any("action/checksums.json" in t for _, t in bad.annotations), f"annotations {bad.annotations}", bad)
    doc["versions"][version] = {ctx.host_platform: hashlib.sha256(ctx.binary.read_bytes()).hexdigest()}
    checksums.write_text(json.dumps(doc))
    good = registry_job(ctx, "listed-good", ctx.registry).uses(copy, {"store": str(ctx.root / "s2")})
    check(good.status == "success", "the listed binary was refused", good)
    check("binary SHA-256 matches action/checksums.json" in good.steps[0].stdout, "the list was not checked", good)


@test
def a_tarball_that_does_not_match_its_integrity_is_refused(ctx: Ctx):
    """A registry (a local server) whose tarball differs from the integrity it
    publishes: the action refuses it and never runs it."""
    version = version_of(ctx.binary)
    pkg = f"@stateful-ci/cli-{ctx.host_platform}"
    tgz = b"\x1f\x8b not the published bytes"
    record = {
        "name": pkg,
        "versions": {
            version: {"dist": {"tarball": "", "integrity": "sha512-" + base64.b64encode(hashlib.sha512(b"x").digest()).decode()}}
        },
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = tgz if self.path.endswith(".tgz") else json.dumps(record).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    record["versions"][version]["dist"]["tarball"] = f"{base}{pkg}/-/cli.tgz"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = registry_job(ctx, "bad-integrity", base).uses(REPO, {"strict": "true", "version": version})
    finally:
        server.shutdown()
    check(run.status == "failure", "a tarball not matching its integrity was accepted", run)
    check(any("is not the published integrity" in t for _, t in run.annotations), f"annotations {run.annotations}", run)


@test
def the_job_environment_cannot_redirect_the_download(ctx: Ctx):
    job = registry_job(ctx, "redirect", "https://registry.example.invalid/")
    run = job.uses(REPO, {"strict": "true"})
    check(run.status == "failure", "a non-loopback registry override was accepted", run)
    check(any("may only name a registry on this runner" in t for _, t in run.annotations), f"{run.annotations}", run)


@test
def windows_runner_layout_installs_the_exe_and_saves_in_post(ctx: Ctx):
    """A Windows runner simulated (process.platform win32, RUNNER_OS Windows,
    paths with spaces): the action picks @stateful-ci/cli-win32-x64 and its
    stateful-ci.exe (tests/npm/test.sh publishes this machine's binary under
    that name), verifies it, restores in main and saves in post."""
    if not ctx.registry or not ctx.win32_published:
        return "skipped: no --registry with the win32-x64 package given"
    if not (cli_has(ctx.binary, "restore") and cli_has(ctx.binary, "save")):
        return "skipped: this stateful-ci binary has no restore/save --store yet"
    env = {"STATEFUL_CI_BINARY": None, "STATEFUL_CI_ACTION_REGISTRY": ctx.registry}
    store = ctx.root / "Program Files" / "store dir"
    main1, _ = one_step_miss_then_hit(ctx, {"store": str(store)}, env, "windows layout", platform="win32")
    out = main1.steps[0].stdout
    check("@stateful-ci/cli-win32-x64@" in out, "the Windows package was not chosen", main1)
    exe = list((ctx.root / "windows layout-job1" / "runner-temp" / "stateful-ci-cli").glob("*-win32-x64/stateful-ci.exe"))
    check(len(exe) == 1, "no stateful-ci.exe was installed", main1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, type=Path)
    parser.add_argument("--registry", help="a local registry with the packed packages (loopback)")
    parser.add_argument("--win32-published", action="store_true", help="the registry also has cli-win32-x64")
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
    ctx.win32_published = args.win32_published
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
