//! The run summary's schema, checked by its reader: the GitHub Action's own
//! parser (`action/report.cjs`: `parseReport`, `reportProblems`,
//! `outputsFor`) runs under Node over the real stdout of `save --json` and
//! `restore --json` (saved, unchanged, hit, miss, skipped). A field renamed
//! in `RunSummary` (runtime/src/report.rs) makes `reportProblems` name it,
//! and this test fail.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::*;

const CHECK: &str = r#"
const { parseReport, reportProblems, outputsFor } = require(process.argv[1]);
const command = process.argv[2];
const stdout = require("node:fs").readFileSync(0, "utf8");
const report = parseReport(stdout);
process.stdout.write(JSON.stringify(report === null
  ? { parsed: false }
  : { parsed: true, problems: reportProblems(report), outputs: outputsFor(command, report) }));
"#;

/// The Action's parser over `stdout` of `command`.
fn action_reads(command: &str, stdout: &str) -> Value {
    let node = stateful_ci_installer::tools::node22();
    assert!(
        node.is_file(),
        "Node 22 is missing at {}: run `bash scripts/setup-node.sh` first",
        node.display()
    );
    let report = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("action/report.cjs");
    let mut child = Command::new(node)
        .arg("-e")
        .arg(CHECK)
        .arg(&report)
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdout.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `args` in `ws`, has the Action read the output, checks it has no
/// problem; returns (what the CLI printed, the Action's outputs).
fn run_and_read(a: &Area, ws: &str, args: &[&str]) -> (Value, Value) {
    let out = a.run(ws, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?} printed more than one JSON object ({e}): {stdout}"));
    let read = action_reads(args[0], &stdout);
    assert_eq!(read["parsed"], true, "{args:?}: {stdout}");
    assert_eq!(
        read["problems"],
        serde_json::json!([]),
        "{args:?}: {stdout}"
    );
    (printed, read["outputs"].clone())
}

#[test]
fn the_actions_parser_reads_every_summary_the_cli_prints() {
    let a = Area::new();
    write(&a.path("w/out/a.txt"), b"hello summary\n");
    write(&a.path("w/out/b.bin"), &noise(10_000, 3));
    let store = a.store();
    let common = ["--store", store.as_str(), "--path", "out", "--json"];
    let with = |cmd: &'static str| [&[cmd][..], &common[..]].concat();

    // restore before any save: a miss.
    let (printed, outputs) = run_and_read(&a, "empty", &with("restore"));
    assert_eq!(printed["outcome"], "miss");
    assert_eq!(outputs["restored"], "false");
    assert_eq!(outputs["snapshot-id"], "");

    let (saved, outputs) = run_and_read(&a, "w", &with("save"));
    assert_eq!(saved["outcome"], "saved");
    let id = saved["snapshot_id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(outputs["snapshot-id"], id.as_str());
    assert_eq!(outputs["bytes"], "10014");
    assert_eq!(outputs["outcome"], "saved");

    let (again, _) = run_and_read(&a, "w", &with("save"));
    assert_eq!(again["outcome"], "unchanged");

    let (hit, outputs) = run_and_read(&a, "other", &with("restore"));
    assert_eq!(hit["outcome"], "hit");
    assert_eq!(
        hit["source"]["scope"].as_str().map(|s| !s.is_empty()),
        Some(true)
    );
    assert_eq!(outputs["restored"], "true");
    assert_eq!(outputs["cache-hit"], "true");
    assert_eq!(outputs["snapshot-id"], id.as_str());
    assert_eq!(
        std::fs::read(a.path("other/out/a.txt")).unwrap(),
        b"hello summary\n"
    );

    // No backend at all: skipped, with the reason.
    let (skipped, outputs) = run_and_read(&a, "bare", &["save", "--path", "out", "--json"]);
    assert_eq!(skipped["outcome"], "skipped");
    assert!(skipped["error"].is_string());
    assert_eq!(outputs["outcome"], "skipped");

    // The check is real: a renamed field is named by the Action's parser.
    let renamed = serde_json::to_string(&saved)
        .unwrap()
        .replace("\"snapshot_id\"", "\"snapshot\"");
    let read = action_reads("save", &renamed);
    assert_eq!(
        read["problems"],
        serde_json::json!(["no field snapshot_id"]),
        "{read}"
    );
}
