// The action's main step (action.yml `runs.main`).
//
// One-step form (no `command` input): restores the workspace now; the post
// step (post.cjs) saves it at the end of the job according to `save-on`.
// Two-step form (`command: restore` / `command: save`, as workflows written
// for the original composite action do): does exactly that command, and the
// post step does nothing.
"use strict";

const { annotate, runCommand } = require("./report.cjs");
const { checkVersion, obtainCli, ownVersion } = require("./install.cjs");
const { ACTION_ROOT, exportVariable, readInputs, saveState, SAVE_ON_FAILURE_ENV } = require("./runner.cjs");

async function main() {
  let inputs;
  try {
    inputs = readInputs();
  } catch (err) {
    annotate("error", err.message);
    return 2;
  }
  let cli;
  try {
    const version = inputs.version || ownVersion(ACTION_ROOT);
    const got = await obtainCli({ actionRoot: ACTION_ROOT, version, log: (m) => process.stdout.write(`${m}\n`) });
    const said = checkVersion(got.bin, version, got.source !== "STATEFUL_CI_BINARY");
    process.stdout.write(`${said}\n`);
    cli = got.bin;
  } catch (err) {
    // Without a CLI the job runs cold: a warning unless strict (like any
    // other cache failure), and the post step has nothing to do.
    annotate(inputs.strict ? "error" : "warning", `stateful-ci: ${err.message}`);
    saveState("mode", "none");
    return inputs.strict ? 1 : 0;
  }
  saveState("cli", cli);
  if (inputs.command) {
    saveState("mode", "explicit");
    return runCommand(cli, inputs.command, inputs);
  }
  saveState("mode", "auto");
  saveState("save-on", inputs.saveOn);
  // The post step's `post-if` reads this: with save-on: always it also runs
  // after a failed step (post-if cannot read inputs, only env).
  exportVariable(SAVE_ON_FAILURE_ENV, inputs.saveOn === "always" ? "true" : "false");
  if (inputs.saveOn === "never") process.stdout.write("save-on: never; the workspace will not be saved\n");
  return runCommand(cli, "restore", inputs);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    annotate("error", `stateful-ci action: ${err && err.stack ? err.stack : err}`);
    process.exitCode = 1;
  },
);
