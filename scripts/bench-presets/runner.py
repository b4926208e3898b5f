#!/usr/bin/env python3
"""Run a workflow that `stateful-ci init` generated, step by step, as a fresh
GitHub-hosted runner would, on this machine.

Used by scripts/bench-presets.sh (timings) and scripts/test-presets.sh
(correctness). The caller has already made the fresh clone at the workspace
path and an empty HOME; this script runs the job's steps in order:

- `run:` steps with `bash --noprofile --norc -eo pipefail` (GitHub's default
  shell on Linux), in the workspace, with the job's `env:` (where
  `${{ github.workspace }}` is the workspace path) on top of the given
  environment;
- the project's own action (`stateful-ci/stateful-ci@...`) as `stateful-ci
  restore --store DIR` (a local directory store in place of the backend)
  where it stands, and `stateful-ci save --store DIR` as its post step at
  the end of the job (also after a failed step, as the action's post step
  runs); with `with: command: restore|save` only that command, where it
  stands. With `--cold` these steps are left out, which is the baseline: the
  same job without stateful-ci;
- other actions (checkout, setup-*) and `run:` steps named "Set up ..."
  (corepack enable, pipx install uv) do nothing: the clone is made by the
  caller and the tools are on PATH. They are the same with and without
  stateful-ci, and running them here would change this machine.

Any other `${{ }}` expression is an error: the harness would not know its
value, and guessing would time something else than the real job.

Prints one JSON object: {"steps": [{"name", "kind", "seconds", "ok"}],
"seconds": total}. Exits 1 when a step fails (after `if: always()` steps ran).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import yaml

EXPR = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def substitute(text, workspace, where):
    def one(m):
        if m.group(1) == "github.workspace":
            return workspace
        raise SystemExit(f"runner: {where}: unsupported expression ${{{{ {m.group(1)} }}}}")

    return EXPR.sub(one, str(text))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workflow", required=True)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--bin", required=True, help="the stateful-ci binary")
    ap.add_argument("--store", required=True, help="local directory store")
    ap.add_argument("--cold", action="store_true", help="leave the stateful-ci steps out")
    ap.add_argument("--job", default=None)
    ap.add_argument("--log", default=None, help="append every step's output here")
    args = ap.parse_args()

    with open(args.workflow) as f:
        wf = yaml.safe_load(f)
    jobs = wf["jobs"]
    job = jobs[args.job] if args.job else next(iter(jobs.values()))
    ws = os.path.abspath(args.workspace)
    env = dict(os.environ)
    # PYTHONPATH may carry this harness's own PyYAML; the job must not see it.
    env.pop("PYTHONPATH", None)
    env["GITHUB_WORKSPACE"] = ws
    env["CI"] = "true"
    env["GITHUB_ACTIONS"] = "true"
    for k, v in (job.get("env") or {}).items():
        env[k] = substitute(v, ws, f"env.{k}")

    log = open(args.log, "a") if args.log else subprocess.DEVNULL
    results = []
    failed = False
    post_save = None
    steps = list(job["steps"])
    for i, step in enumerate(steps + [None]):
        if step is None:
            if post_save is None:
                break
            step = post_save
        name = step.get("name", f"step {i}")
        cond = str(step.get("if", "")).strip()
        if failed and cond != "always()":
            continue
        uses = step.get("uses", "")
        if uses:
            action = uses.split("@")[0]
            if action != "stateful-ci/stateful-ci":
                results.append({"name": name, "kind": "skip", "seconds": 0.0, "ok": True})
                continue
            if args.cold:
                continue
            command = (step.get("with") or {}).get("command")
            if command is None and step is not post_save:
                # The one-step form: restore here, save as the post step.
                post_save = {"name": "Save the workspace (post step)", "uses": uses, "with": {"command": "save"}, "if": "always()"}
                command = "restore"
            if command not in ("restore", "save"):
                raise SystemExit(f"runner: step {name!r}: the action's command must be restore or save")
            argv = [args.bin, command, "--store", args.store]
            kind = command
        elif name.startswith("Set up "):
            results.append({"name": name, "kind": "skip", "seconds": 0.0, "ok": True})
            continue
        else:
            script = substitute(step["run"], ws, f"step {name!r}")
            argv = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script]
            kind = "run"
        if log is not subprocess.DEVNULL:
            log.write(f"\n### {name}: {' '.join(argv[:2]) if kind != 'run' else step['run']}\n")
            log.flush()
        t0 = time.monotonic()
        rc = subprocess.run(argv, cwd=ws, env=env, stdout=log, stderr=log).returncode
        dt = time.monotonic() - t0
        results.append({"name": name, "kind": kind, "seconds": round(dt, 3), "ok": rc == 0})
        if rc != 0:
            failed = True
    total = round(sum(r["seconds"] for r in results), 3)
    print(json.dumps({"steps": results, "seconds": total, "ok": not failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
