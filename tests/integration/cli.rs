//! The interface contract: version, exit codes, messages that name the
//! input and the fix.

use crate::util::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_matches_the_contract() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("stateful-ci {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_miss_exits_zero_and_says_so() {
    let a = Area::new();
    let out = a.run(
        "w",
        &[
            "restore",
            "--store",
            &a.store(),
            "--path",
            "node_modules",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("miss"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "miss");
    assert_eq!(json["snapshot_id"], serde_json::Value::Null);
}

#[test]
fn bad_usage_exits_two() {
    let out = bin().args(["restore", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_configuration_names_the_input_and_the_fix() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("", &[], "stateful-ci init"),
        ("pathz = [\"x\"]\n", &[], "did you mean `paths`"),
        ("preset = \"rusty\"\n", &[], "did you mean \"rust\""),
        ("", &["--path", "/etc"], "absolute path"),
        ("", &["--path", "../up"], "leaves the workspace"),
        ("paths = []\n", &[], "empty list"),
    ];
    for (toml, extra, want) in cases {
        let a = Area::new();
        if !toml.is_empty() {
            write(&a.path("w/stateful-ci.toml"), toml.as_bytes());
        }
        let mut args = vec!["save", "--store"];
        let store = a.store();
        args.push(&store);
        args.extend_from_slice(extra);
        let out = a.run("w", &args);
        assert_eq!(out.status.code(), Some(1), "{toml:?} {extra:?}");
        let err = stderr(&out);
        assert!(
            err.contains(want) && err.contains("hint:"),
            "{toml:?} {extra:?}: {err}"
        );
        assert!(
            !a.path("store/manifests").exists(),
            "nothing stored on bad input"
        );
    }
}

#[test]
fn a_non_store_directory_is_refused() {
    let a = Area::new();
    write(&a.path("w/out/x"), b"x");
    write(&a.path("notastore/precious.txt"), b"keep me");
    let out = a.run(
        "w",
        &[
            "save",
            "--store",
            a.path("notastore").to_str().unwrap(),
            "--path",
            "out",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a stateful-ci store"));
    assert_eq!(std::fs::read_dir(a.path("notastore")).unwrap().count(), 1);
}

#[test]
fn legacy_json_config_is_read() {
    let a = Area::new();
    write(
        &a.path("w/stateful-ci.json"),
        br#"{"paths": ["out"], "exclude": ["*.log"]}"#,
    );
    write(&a.path("w/out/a.txt"), b"a");
    write(&a.path("w/out/b.log"), b"b");
    let j = a.ok("w", &["save", "--store", &a.store(), "--json"]);
    assert_eq!(j["files"], 1);
}
