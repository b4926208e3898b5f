// The action's post step (action.yml `runs.post`): saves the workspace the
// main step restored, in the one-step form. `post-if` already left it out
// after a failed step unless save-on is `always`; here `never`, the two-step
// form and a main step that got no CLI end it quietly.
"use strict";

const fs = require("node:fs");
const { annotate, runCommand } = require("./report.cjs");
const { readInputs, state } = require("./runner.cjs");

function main() {
  const mode = state("mode");
  if (mode === "explicit") {
    process.stdout.write("stateful-ci: the command input was given; nothing to do after the job\n");
    return 0;
  }
  if (mode !== "auto") {
    process.stdout.write("stateful-ci: the main step did not restore (see its messages); not saving\n");
    return 0;
  }
  const saveOn = state("save-on");
  if (saveOn === "never") {
    process.stdout.write("stateful-ci: save-on: never; not saving\n");
    return 0;
  }
  let inputs;
  try {
    inputs = readInputs();
  } catch (err) {
    annotate("error", err.message);
    return 2;
  }
  const cli = state("cli");
  if (!cli || !fs.existsSync(cli)) {
    annotate(inputs.strict ? "error" : "warning", "stateful-ci: the CLI the main step installed is gone; not saving");
    return inputs.strict ? 1 : 0;
  }
  return runCommand(cli, "save", inputs);
}

try {
  process.exitCode = main();
} catch (err) {
  annotate("error", `stateful-ci action: ${err && err.stack ? err.stack : err}`);
  process.exitCode = 1;
}
