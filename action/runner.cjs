// The runner's side of a JavaScript action, with node's built-ins only (what
// @actions/core does): inputs from INPUT_* variables, state handed from the
// main step to the post step through $GITHUB_STATE (read back as STATE_*),
// variables for later steps through $GITHUB_ENV, and the checks every input
// gets before anything runs.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const ACTION_ROOT = path.resolve(__dirname, "..");
// Read by action.yml's post-if: `true` when the post step saves after a
// failed step too (save-on: always).
const SAVE_ON_FAILURE_ENV = "STATEFUL_CI_SAVE_ON_FAILURE";

// The runner sets INPUT_<NAME> with the name upper-cased and spaces as `_`
// (hyphens stay: INPUT_BACKEND-URL).
function input(name) {
  return (process.env[`INPUT_${name.replace(/ /g, "_").toUpperCase()}`] || "").trim();
}

function fileCommand(variable, name, value) {
  const file = process.env[variable];
  if (!file) return;
  const delimiter = `stateful_ci_${crypto.randomBytes(16).toString("hex")}`;
  fs.appendFileSync(file, `${name}<<${delimiter}\n${value}\n${delimiter}\n`);
}

function saveState(name, value) {
  fileCommand("GITHUB_STATE", name, value);
}

function state(name) {
  return process.env[`STATE_${name}`] || "";
}

function exportVariable(name, value) {
  process.env[name] = value;
  fileCommand("GITHUB_ENV", name, value);
}

const VERSION = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;

// All inputs, checked; throws an Error whose message names the input and
// the fix.
function readInputs() {
  const command = input("command");
  if (!["", "restore", "save"].includes(command)) {
    throw new Error(
      "input 'command' must be 'restore', 'save' or empty; leave it empty to restore now and save at the end of the job",
    );
  }
  const saveOn = input("save-on") || "always";
  if (!["success", "always", "never"].includes(saveOn)) {
    throw new Error("input 'save-on' must be 'success', 'always' (default) or 'never'");
  }
  const strict = input("strict") || "false";
  if (!["true", "false"].includes(strict)) throw new Error("input 'strict' must be 'true' or 'false'");
  const store = input("store");
  const backendUrl = input("backend-url");
  if (store && backendUrl) {
    throw new Error(
      "inputs 'store' and 'backend-url' are both set; set one of them (store: a local directory, backend-url: the deployed backend)",
    );
  }
  const version = input("version");
  if (version && !VERSION.test(version)) {
    throw new Error("input 'version' must be a version like 1.2.3, or empty for this action's own version");
  }
  return {
    command,
    saveOn,
    strict: strict === "true",
    store,
    backendUrl,
    version,
    paths: process.env["INPUT_PATHS"] || "",
  };
}

module.exports = { ACTION_ROOT, SAVE_ON_FAILURE_ENV, exportVariable, input, readInputs, saveState, state };
