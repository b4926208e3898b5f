"""Runs an action (composite or JavaScript) the way a GitHub runner does, on this machine.

What it reproduces, because action.yml depends on it:
  - a job: `GITHUB_WORKSPACE` (the working directory of every step),
    `RUNNER_TEMP`, `GITHUB_ACTIONS=true`, `CI=true`, `RUNNER_OS`, the usual
    `GITHUB_*` identity variables; `GITHUB_ACTION_PATH` = the action's folder;
  - per step: a fresh `GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`, `GITHUB_ENV` and
    `GITHUB_PATH` file (heredoc `name<<DELIM` values included), the step's
    `env:` evaluated, `run:` written to a file and run as GitHub does
    (`bash --noprofile --norc -eo pipefail FILE`), later steps skipped after a
    failure unless their `if:` says `always()`/`failure()`;
  - expressions: `${{ inputs.X }}`, `${{ steps.ID.outputs.X }}`,
    `${{ github.action_path }}`, `${{ github.workspace }}`, `${{ runner.temp }}`,
    `${{ env.X }}`; inputs get their defaults and required ones are enforced.
    Composite actions get no `INPUT_*` variables from GitHub, so neither do
    they here. Any other expression is an error (so the harness never passes
    an action that GitHub would run differently), and so is `${{` in `run:`;
  - workflow commands on stdout and stderr: `::error`/`::warning`/`::notice` become
    annotations, `::stop-commands::TOKEN` ... `::TOKEN::` is honoured.
  - OIDC: put `ACTIONS_ID_TOKEN_REQUEST_URL`/`ACTIONS_ID_TOKEN_REQUEST_TOKEN`
    (a fake issuer's) into the job's env, as a runner does with
    `id-token: write`; the harness passes them to every step.

JavaScript actions (`runs.using: node20|node24`), as the runner runs them:
  - `main` with `node` (the runner's own node: here the one on PATH), every
    declared input as `INPUT_<NAME>` (upper-cased, spaces as `_`, hyphens
    kept) with its default, and a `GITHUB_STATE` file besides the others;
  - `post` when the job ends (`Job.finish()`), in reverse order, with the
    main step's state as `STATE_<name>`, after evaluating `post-if`
    (`success()`, `failure()`, `always()`, `env.X == 'v'`, `env.X != 'v'`,
    joined by `||` / `&&`) against the job's status and its env (including
    `GITHUB_ENV` writes of earlier steps);
  - `platform="win32"` on a Job simulates a Windows runner: `RUNNER_OS=Windows`
    and a node preload that makes `process.platform` say `win32` (so the
    action picks the Windows package and `stateful-ci.exe`).

What it does not do: docker actions, `uses:` steps inside the composite,
contexts other than the ones above, masking in logs.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
NAME = r"[A-Za-z_][A-Za-z0-9_-]*"


class HarnessError(Exception):
    """The action uses something the harness (or GitHub) would not run."""


@dataclass
class StepRun:
    name: str
    status: str  # success, failure, skipped
    exit_code: int | None
    stdout: str
    stderr: str
    outputs: dict[str, str]


@dataclass
class ActionRun:
    status: str  # success or failure
    outputs: dict[str, str]
    steps: list[StepRun]
    summary: str
    annotations: list[tuple[str, str]] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(f"--- {s.name} [{s.status}]\n{s.stdout}{s.stderr}" for s in self.steps)

    def failed_exit_code(self) -> int | None:
        for step in self.steps:
            if step.status == "failure":
                return step.exit_code
        return None


def parse_file_commands(text: str) -> dict[str, str]:
    """Parses a GITHUB_OUTPUT/GITHUB_ENV file: `k=v` lines and `k<<DELIM` blocks."""
    values: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            body = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise HarnessError(f"file command {key!r}: delimiter {delimiter!r} never closes")
            i += 1
            values[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
        else:
            raise HarnessError(f"file command line is neither k=v nor k<<DELIM: {line!r}")
    return values


def unescape_command_data(data: str) -> str:
    return data.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


class Job:
    """One job on a fresh runner: its own workspace and temp folder."""

    def __init__(
        self, root: Path, env: dict[str, str] | None = None, name: str = "job", platform: str = "linux"
    ):
        self.root = Path(root)
        self.workspace = self.root / "workspace"
        self.temp = self.root / "runner-temp"
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.temp.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_REPOSITORY": "octo-org/octo-repo",
            "GITHUB_REPOSITORY_OWNER": "octo-org",
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_REF_NAME": "main",
            "GITHUB_SHA": "0" * 40,
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_RUN_ID": "1",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": name,
            "GITHUB_WORKFLOW": "stateful-ci",
        }
        if platform == "win32":
            preload = self.root / "pretend-win32.cjs"
            preload.write_text(
                'Object.defineProperty(process, "platform", { value: "win32" });\n', encoding="utf-8"
            )
            self.env["RUNNER_OS"] = "Windows"
            self.env["NODE_OPTIONS"] = f'--require "{preload}"'
        self.env.update(env or {})
        self.summary = ""
        self._counter = 0
        self.failed = False  # a step of the job failed (post-if's success()/failure())
        self.job_env: dict[str, str] = {}  # GITHUB_ENV writes, for later steps and post-if
        self._posts: list[tuple[Path, dict, dict[str, str], dict[str, str]]] = []

    # -- JavaScript actions -------------------------------------------------

    def _node_step(self, action_dir: Path, script: str, inputs: dict[str, str], state: dict[str, str], name: str):
        files = self._step_files()
        files["state"] = files["output"].parent / "state"
        files["state"].write_text("", encoding="utf-8")
        env = dict(self.env)
        env.update(self.job_env)
        for key, value in inputs.items():
            env[f"INPUT_{key.replace(' ', '_').upper()}"] = value
        for key, value in state.items():
            env[f"STATE_{key}"] = value
        env.update(
            {
                "GITHUB_ACTION_PATH": str(action_dir),
                "GITHUB_OUTPUT": str(files["output"]),
                "GITHUB_STEP_SUMMARY": str(files["summary"]),
                "GITHUB_ENV": str(files["env"]),
                "GITHUB_PATH": str(files["path"]),
                "GITHUB_STATE": str(files["state"]),
            }
        )
        proc = subprocess.run(
            ["node", str(action_dir / script)],
            check=False,
            cwd=self.workspace,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        outputs = parse_file_commands(files["output"].read_text(encoding="utf-8"))
        self.job_env.update(parse_file_commands(files["env"].read_text(encoding="utf-8")))
        new_state = parse_file_commands(files["state"].read_text(encoding="utf-8"))
        summary = files["summary"].read_text(encoding="utf-8")
        self.summary += summary
        status = "success" if proc.returncode == 0 else "failure"
        self.failed = self.failed or status == "failure"
        step = StepRun(name, status, proc.returncode, proc.stdout, "", outputs)
        run = ActionRun(status, outputs, [step], summary, self._workflow_commands(proc.stdout))
        return run, new_state

    def _uses_node(self, action_dir: Path, spec: dict, with_: dict[str, str]) -> ActionRun:
        runs = spec["runs"]
        inputs = self._inputs(spec.get("inputs") or {}, with_)
        for output in (spec.get("outputs") or {}).values():
            if output and "value" in output:
                raise HarnessError("a JavaScript action's outputs have no value:")
        if "pre" in runs:
            raise HarnessError("runs.pre is not supported by the harness")
        run, state = self._node_step(action_dir, runs["main"], inputs, {}, "main")
        if "post" in runs:
            self._posts.append((action_dir, runs, inputs, state))
        return run

    def finish(self) -> list[ActionRun | None]:
        """Ends the job: runs the post steps, last registered first. Returns
        one entry per post step, None where post-if skipped it."""
        results: list[ActionRun | None] = []
        while self._posts:
            action_dir, runs, inputs, state = self._posts.pop()
            condition = runs.get("post-if", "success()")
            if not self._post_if(str(condition)):
                results.append(None)
                continue
            run, _ = self._node_step(action_dir, runs["post"], inputs, state, "post")
            results.append(run)
        return results

    def _post_if(self, condition: str) -> bool:
        text = EXPRESSION.sub(r"\1", condition).strip()
        env = dict(self.env)
        env.update(self.job_env)

        def atom(a: str) -> bool:
            a = a.strip()
            if a == "success()":
                return not self.failed
            if a == "failure()":
                return self.failed
            if a == "always()":
                return True
            m = re.fullmatch(rf"env\.({NAME})\s*(==|!=)\s*'([^']*)'", a)
            if m:
                equal = env.get(m.group(1), "") == m.group(3)
                return equal if m.group(2) == "==" else not equal
            raise HarnessError(f"post-if: {a!r} is not supported by the harness")

        return any(all(atom(a) for a in part.split("&&")) for part in text.split("||"))

    def uses(self, action_dir: Path, with_: dict[str, str] | None = None) -> ActionRun:
        """Runs the composite action in action_dir/action.yml with these inputs."""
        action_dir = Path(action_dir).resolve()
        spec = yaml.safe_load((action_dir / "action.yml").read_text(encoding="utf-8"))
        runs = spec.get("runs") or {}
        if runs.get("using") in ("node20", "node24"):
            return self._uses_node(action_dir, spec, with_ or {})
        if runs.get("using") != "composite":
            raise HarnessError(f"only composite and JavaScript actions run here, not {runs.get('using')!r}")
        inputs = self._inputs(spec.get("inputs") or {}, with_ or {})
        contexts = {
            "inputs": inputs,
            "steps": {},
            "github": {"action_path": str(action_dir), "workspace": str(self.workspace)},
            "runner": {"temp": str(self.temp), "os": "Linux"},
            "env": dict(self.env),
        }
        step_env: dict[str, str] = {}  # GITHUB_ENV writes, for later steps
        extra_path: list[str] = []
        results: list[StepRun] = []
        annotations: list[tuple[str, str]] = []
        summary = ""
        failed = False
        for index, step in enumerate(runs.get("steps") or []):
            name = step.get("name") or step.get("id") or f"step {index}"
            if "uses" in step:
                raise HarnessError(f"{name}: `uses:` steps inside the composite are not supported here")
            if "run" not in step:
                raise HarnessError(f"{name}: a step without run:")
            if "${{" in str(step["run"]):
                raise HarnessError(f"{name}: `${{{{` inside run: (GitHub would splice it into the script)")
            if not self._should_run(step.get("if"), failed, name):
                results.append(StepRun(name, "skipped", None, "", "", {}))
                continue
            files = self._step_files()
            env = dict(self.env)
            env.update(step_env)
            if extra_path:
                env["PATH"] = ":".join(reversed(extra_path)) + ":" + env["PATH"]
            contexts["env"] = dict(env)
            for key, value in (step.get("env") or {}).items():
                env[key] = self._evaluate(str(value), contexts, f"{name}: env.{key}")
            env.update(
                {
                    "GITHUB_ACTION_PATH": str(action_dir),
                    "GITHUB_OUTPUT": str(files["output"]),
                    "GITHUB_STEP_SUMMARY": str(files["summary"]),
                    "GITHUB_ENV": str(files["env"]),
                    "GITHUB_PATH": str(files["path"]),
                }
            )
            cwd = self.workspace / self._evaluate(
                str(step.get("working-directory", ".")), contexts, f"{name}: working-directory"
            )
            proc = subprocess.run(
                self._shell(step.get("shell"), files["script"], str(step["run"]), name),
                check=False,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                # One stream, in order: the runner reads workflow commands on both.
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            annotations += self._workflow_commands(proc.stdout)
            outputs = parse_file_commands(files["output"].read_text(encoding="utf-8"))
            step_env.update(parse_file_commands(files["env"].read_text(encoding="utf-8")))
            extra_path += [p for p in files["path"].read_text(encoding="utf-8").splitlines() if p]
            summary += files["summary"].read_text(encoding="utf-8")
            status = "success" if proc.returncode == 0 else "failure"
            results.append(StepRun(name, status, proc.returncode, proc.stdout, "", outputs))
            if "id" in step:
                contexts["steps"][step["id"]] = {"outputs": outputs, "outcome": status, "conclusion": status}
            failed = failed or status == "failure"
        action_outputs = {}
        for key, spec_output in (spec.get("outputs") or {}).items():
            action_outputs[key] = self._evaluate(str(spec_output.get("value", "")), contexts, f"outputs.{key}")
        self.summary += summary
        return ActionRun("failure" if failed else "success", action_outputs, results, summary, annotations)

    # -- internals ---------------------------------------------------------

    def _inputs(self, declared: dict, given: dict[str, str]) -> dict[str, str]:
        unknown = set(given) - set(declared)
        if unknown:
            raise HarnessError(f"inputs not declared by the action: {sorted(unknown)}")
        values = {}
        for name, spec in declared.items():
            spec = spec or {}
            if name in given:
                values[name] = str(given[name])
            elif spec.get("required") and "default" not in spec:
                raise HarnessError(f"required input {name!r} not given")
            else:
                values[name] = str(spec.get("default", ""))
        return values

    def _should_run(self, condition, failed: bool, name: str) -> bool:
        if condition is None:
            return not failed
        text = EXPRESSION.sub(r"\1", str(condition)).strip()
        if text == "always()":
            return True
        if text == "success()":
            return not failed
        if text == "failure()":
            return failed
        raise HarnessError(f"{name}: if: {condition!r} is not supported by the harness")

    def _evaluate(self, text: str, contexts: dict, where: str) -> str:
        def replace(match: re.Match) -> str:
            expr = match.group(1)
            m = re.fullmatch(rf"(inputs|github|runner|env)\.({NAME})", expr)
            if m:
                table = contexts[m.group(1)]
                if m.group(1) == "inputs" and m.group(2) not in table:
                    raise HarnessError(f"{where}: ${{{{ {expr} }}}}: no such input")
                return str(table.get(m.group(2), ""))
            m = re.fullmatch(rf"steps\.({NAME})\.(outputs)\.({NAME})", expr)
            if m:
                if m.group(1) not in contexts["steps"]:
                    # GitHub evaluates a skipped or unknown step's output to ''.
                    return ""
                return str(contexts["steps"][m.group(1)]["outputs"].get(m.group(3), ""))
            raise HarnessError(f"{where}: expression ${{{{ {expr} }}}} is not supported by the harness")

        return EXPRESSION.sub(replace, text)

    def _step_files(self) -> dict[str, Path]:
        self._counter += 1
        folder = self.temp / "_runner_file_commands" / f"step{self._counter}"
        folder.mkdir(parents=True, exist_ok=True)
        files = {k: folder / k for k in ("output", "summary", "env", "path")}
        for f in files.values():
            f.write_text("", encoding="utf-8")
        files["script"] = folder / "script.sh"
        return files

    def _shell(self, shell, script: Path, body: str, name: str) -> list[str]:
        script.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")
        if shell == "bash":
            return ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)]
        if shell == "sh":
            return ["sh", "-e", str(script)]
        raise HarnessError(f"{name}: shell {shell!r} is not supported (composite run steps must name bash or sh)")

    @staticmethod
    def _workflow_commands(stdout: str) -> list[tuple[str, str]]:
        found = []
        stopped_by = None
        for line in stdout.splitlines():
            if stopped_by is not None:
                if line == f"::{stopped_by}::":
                    stopped_by = None
                continue
            m = re.match(r"^::([a-z-]+)(?: [^:]*)?::(.*)$", line)
            if not m:
                continue
            if m.group(1) == "stop-commands":
                stopped_by = m.group(2)
            elif m.group(1) in ("error", "warning", "notice"):
                found.append((m.group(1), unescape_command_data(m.group(2))))
        return found


def new_root(prefix: str = "action-harness-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def random_token() -> str:
    return secrets.token_hex(8)
