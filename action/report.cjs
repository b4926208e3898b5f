// Runs `stateful-ci restore|save --json` and turns its report into the step's
// outputs ($GITHUB_OUTPUT), a table in $GITHUB_STEP_SUMMARY and annotations.
// Inputs come from the environment only (never from expressions). No
// dependencies: node's built-ins.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const { spawnSync } = require("node:child_process");

const env = process.env;

// Escaping for workflow commands (::error::), so that no text in a message
// can end the command or start another one.
function commandData(text) {
  return String(text).replace(/%/g, "%25").replace(/\r/g, "%0D").replace(/\n/g, "%0A");
}

function annotate(level, message) {
  process.stdout.write(`::${level} title=stateful-ci::${commandData(message)}\n`);
}

// Text from the CLI or the backend, made inert in a Markdown table cell.
function cell(text) {
  return String(text)
    .replace(/[\r\n]+/g, " ")
    .replace(/[\\`*_[\]<>|&#]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const human = unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
  return unit === 0 ? human : `${human} (${n.toLocaleString("en-US")} B)`;
}

function formatCount(n) {
  return typeof n === "number" && Number.isFinite(n) ? n.toLocaleString("en-US") : "-";
}

function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "-";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function writeOutputs(values) {
  if (!env.GITHUB_OUTPUT) return;
  let text = "";
  for (const [name, value] of Object.entries(values)) {
    const delimiter = `stateful_ci_${crypto.randomBytes(16).toString("hex")}`;
    text += `${name}<<${delimiter}\n${value}\n${delimiter}\n`;
  }
  fs.appendFileSync(env.GITHUB_OUTPUT, text);
}

function writeSummary(command, report, failure) {
  if (!env.GITHUB_STEP_SUMMARY) return;
  const lines = [];
  if (failure) {
    lines.push(`### stateful-ci ${command}: failed`, "", cell(failure), "");
  } else {
    const source = report.source
      ? `${report.source.trust ? cell(report.source.trust) : "none (local store)"} (scope ${cell(report.source.scope)})`
      : "-";
    lines.push(
      `### stateful-ci ${command}: ${cell(report.outcome)}`,
      "",
      "| | |",
      "| --- | --- |",
      `| Files | ${formatCount(report.files)} |`,
      `| Bytes | ${formatBytes(report.bytes)} |`,
      `| New bytes | ${formatBytes(report.new_bytes)} |`,
      `| Snapshot | ${report.snapshot_id ? cell(report.snapshot_id) : "-"} |`,
      `| Source trust class | ${source} |`,
      `| Time | ${formatDuration(report.duration_ms)} |`,
      "",
    );
    if (report.error) lines.push(`- error: ${cell(report.error)}`);
    for (const warning of report.warnings || []) lines.push(`- warning: ${cell(warning)}`);
    if (report.error || (report.warnings || []).length) lines.push("");
  }
  fs.appendFileSync(env.GITHUB_STEP_SUMMARY, `${lines.join("\n")}\n`);
}

function cliArgs(command, inputs) {
  const args = [command, "--json"];
  if (inputs.store) args.push("--store", inputs.store);
  if (inputs.backendUrl) args.push("--backend", inputs.backendUrl);
  for (const raw of (inputs.paths || "").split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    if (line.startsWith("!")) args.push("--exclude", line.slice(1).trim());
    else args.push("--path", line);
  }
  if (inputs.strict) args.push("--strict");
  return args;
}

// The fields of the CLI's run summary this action reads, with their JSON
// types. The CLI defines them once (runtime/src/report.rs, `RunSummary`);
// tests/integration/summary_schema.rs runs this check over the real output
// of `save --json` and `restore --json`, so a renamed field fails there.
const REPORT_FIELDS = {
  command: ["string"],
  outcome: ["string"],
  snapshot_id: ["string", "null"],
  files: ["number"],
  bytes: ["number"],
  new_bytes: ["number"],
  duration_ms: ["number"],
  source: ["object", "null"],
  warnings: ["array"],
};
// Present only on some outcomes.
const OPTIONAL_REPORT_FIELDS = { error: ["string"] };

function jsonType(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

// What is wrong with a parsed report (empty when it is as expected).
function reportProblems(report) {
  const problems = [];
  for (const [name, types] of Object.entries(REPORT_FIELDS)) {
    if (!(name in report)) problems.push(`no field ${name}`);
    else if (!types.includes(jsonType(report[name]))) {
      problems.push(`${name} is ${jsonType(report[name])}, expected ${types.join(" or ")}`);
    }
  }
  for (const [name, types] of Object.entries(OPTIONAL_REPORT_FIELDS)) {
    if (name in report && !types.includes(jsonType(report[name]))) {
      problems.push(`${name} is ${jsonType(report[name])}, expected ${types.join(" or ")}`);
    }
  }
  if (report.source && (typeof report.source.scope !== "string" || !("trust" in report.source))) {
    problems.push("source lacks scope or trust");
  }
  return problems;
}

// The step's outputs for a parsed report.
function outputsFor(command, report) {
  const restored = command === "restore" && report.outcome === "hit";
  return {
    restored: restored ? "true" : "false",
    "cache-hit": restored ? "true" : "false",
    "snapshot-id": report.snapshot_id || "",
    bytes: String(Number.isFinite(report.bytes) ? report.bytes : 0),
    outcome: report.outcome,
  };
}

// The JSON report: exactly one object on stdout by contract; tolerate other
// lines before it.
function parseReport(stdout) {
  const text = stdout.trim();
  const candidates = [text, ...text.split("\n").reverse()];
  for (const candidate of candidates) {
    try {
      const value = JSON.parse(candidate);
      if (value && typeof value === "object" && typeof value.outcome === "string") return value;
    } catch {
      // try the next candidate
    }
  }
  return null;
}

// Runs the CLI for `command` with the inputs and reports; returns the exit
// code for the step.
function runCommand(cli, command, inputs) {
  const strict = inputs.strict;
  const args = cliArgs(command, inputs);
  const pathCount = args.filter((a) => a === "--path").length;
  process.stdout.write(
    `Running stateful-ci ${command} (${pathCount ? `${pathCount} path(s) from the paths input` : "paths from stateful-ci.toml"})\n`,
  );

  // The CLI speaks to the runner itself when GITHUB_ACTIONS=true: log groups,
  // and its errors and warnings as escaped ::error::/::warning:: commands. So
  // its stderr goes straight to the log, and its warnings are not repeated.
  const result = spawnSync(cli, args, {
    stdio: ["ignore", "pipe", "inherit"],
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
    windowsHide: true,
  });

  const empty = { restored: "false", "cache-hit": "false", "snapshot-id": "", bytes: "0", outcome: "error" };
  if (result.error) {
    const message = `could not run the stateful-ci CLI at ${cli}: ${result.error.message}`;
    annotate("error", message);
    writeOutputs(empty);
    writeSummary(command, null, message);
    return 1;
  }
  const status = result.status === null ? 1 : result.status;
  const report = parseReport(result.stdout || "");
  if (!report) {
    const message =
      status === 0
        ? "the stateful-ci CLI printed no JSON report; the workspace was not restored/saved (is the CLI older than this action?)"
        : `stateful-ci ${command} failed with exit code ${status} (see its messages above)`;
    writeOutputs(empty);
    writeSummary(command, null, message);
    if (status !== 0) {
      annotate("error", message);
      return status;
    }
    annotate(strict ? "error" : "warning", message);
    return strict ? 1 : 0;
  }

  const problems = reportProblems(report);
  if (problems.length) {
    annotate("warning", `the stateful-ci CLI's report is not the one this action reads (${problems.join("; ")}); are the CLI and the action the same version?`);
  }
  writeOutputs(outputsFor(command, report));
  writeSummary(command, report, null);
  if (status !== 0) annotate("error", `stateful-ci ${command} failed with exit code ${status}`);
  return status;
}

module.exports = {
  annotate,
  commandData,
  runCommand,
  writeOutputs,
  cliArgs,
  parseReport,
  reportProblems,
  outputsFor,
  REPORT_FIELDS,
};
