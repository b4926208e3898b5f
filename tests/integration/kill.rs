//! A save killed with SIGKILL at any point leaves the previous snapshot
//! intact and restorable.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::tree::{assert_same, snapshot};
use crate::util::*;

/// Start `cmd` (output discarded) and SIGKILL it after `after` (at most
/// 30 s); whether it was still running then, so the kill landed part way.
fn kill_after(cmd: &mut Command, after: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after.min(Duration::from_secs(30)));
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    running
}

#[test]
fn sigkill_during_save_keeps_the_previous_snapshot() {
    let a = Area::new();
    // Generation 1: small.
    write(&a.path("gen1/out/a.txt"), b"generation one");
    a.ok("gen1", &["save", "--store", &a.store(), "--path", "out"]);
    let pristine = a.path("pristine-store");
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(a.path("store"))
            .arg(&pristine)
            .status()
            .unwrap()
            .success()
    );

    // Generation 2: large enough that a save takes a while (several packs).
    for i in 0..6 {
        write(
            &a.path(&format!("gen2/out/big{i}.bin")),
            &noise(12 * 1024 * 1024, i),
        );
    }
    for i in 0..2000 {
        write(
            &a.path(&format!("gen2/out/small/{i}.txt")),
            format!("file {i}\n").repeat(50).as_bytes(),
        );
    }

    // Time one uninterrupted save to spread the kills over its duration.
    let t = Instant::now();
    a.ok(
        "gen2",
        &[
            "save",
            "--store",
            &pristine.join("x").to_string_lossy(),
            "--path",
            "out",
        ],
    );
    let full = t.elapsed();

    let mut interrupted = 0;
    for step in 1..=8u32 {
        let _ = std::fs::remove_dir_all(a.path("store"));
        assert!(
            std::process::Command::new("cp")
                .arg("-a")
                .arg(&pristine)
                .arg(a.path("store"))
                .status()
                .unwrap()
                .success()
        );
        let _ = std::fs::remove_dir_all(a.path("store/x"));
        let mut save = bin();
        save.args(["save", "--store", &a.store(), "--path", "out"])
            .current_dir(a.path("gen2"))
            .env("STATEFUL_CI_CACHE_DIR", a.path(&format!("cache-{step}")));
        interrupted += u32::from(kill_after(&mut save, full.mul_f64(step as f64 / 9.0)));

        let dst = format!("restored-{step}");
        a.ok(
            &dst,
            &[
                "restore",
                "--store",
                &a.store(),
                "--path",
                "out",
                "--strict",
            ],
        );
        let got = snapshot(&a.path(&dst), &[]);
        if got == snapshot(&a.path("gen1"), &[]) {
            continue;
        }
        // The save finished before the kill: then it must be generation 2, exactly.
        assert_same(&a.path("gen2"), &a.path(&dst), &[]);
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} of 8 kills landed during a save; the test lost its point"
    );
}

/// A restore killed with SIGKILL at any point never leaves a half-written
/// file in view: every file and symlink outside the private names is the
/// old tree's or the new one's, whole. The next restore gives the new tree
/// exactly, removes the dead restore's private names, and a save after it
/// finds nothing changed.
#[test]
fn sigkill_during_restore_leaves_no_half_written_file() {
    let a = Area::new();
    let args = ["--store", &a.store(), "--path", "out"];
    // Generation 1 on disk; generation 2, which changes most of it, in
    // the store.
    for i in 0..4 {
        write(&a.path(&format!("old/out/big{i}.bin")), &noise(6 << 20, i));
    }
    for i in 0..1500 {
        write(
            &a.path(&format!("old/out/d{}/f{i}.txt", i % 30)),
            format!("old {i}\n").repeat(40).as_bytes(),
        );
    }
    a.ok("old", &[&["save"][..], &args].concat());
    for i in 0..4 {
        write(
            &a.path(&format!("new/out/big{i}.bin")),
            &noise(6 << 20, i + 10),
        );
    }
    for i in 0..1500 {
        let dir = if i % 3 == 0 { i % 30 + 100 } else { i % 30 };
        write(
            &a.path(&format!("new/out/d{dir}/f{i}.txt")),
            format!("new {i}\n").repeat(40).as_bytes(),
        );
    }
    a.ok("new", &[&["save"][..], &args].concat());
    let (old, new) = (snapshot(&a.path("old"), &[]), snapshot(&a.path("new"), &[]));
    let copy_old = |ws: &str| {
        let _ = std::fs::remove_dir_all(a.path(ws));
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(a.path("old"))
            .arg(a.path(ws))
            .status()
            .unwrap();
        assert!(status.success());
    };

    // Time one whole restore to spread the kills over it.
    copy_old("timed");
    let t = Instant::now();
    a.ok("timed", &[&["restore"][..], &args].concat());
    let full = t.elapsed();
    assert_same(&a.path("new"), &a.path("timed"), &[]);

    let mut interrupted = 0;
    for step in 1..=6u32 {
        let ws = format!("ws{step}");
        copy_old(&ws);
        let mut restore = bin();
        restore
            .arg("restore")
            .args(args)
            .current_dir(a.path(&ws))
            .env("STATEFUL_CI_CACHE_DIR", a.path("cache"));
        interrupted += u32::from(kill_after(&mut restore, full.mul_f64(step as f64 / 7.0)));

        for (path, node) in snapshot(&a.path(&ws), &[]) {
            if path.contains(".stateful-ci") || node.kind == "dir" {
                continue;
            }
            let whole = |t: &std::collections::BTreeMap<String, crate::tree::Node>| {
                t.get(&path).is_some_and(|n| {
                    n.kind == node.kind && n.content == node.content && n.target == node.target
                })
            };
            assert!(
                whole(&old) || whole(&new),
                "step {step}: {path} is neither the old file nor the new one"
            );
        }

        a.ok(&ws, &[&["restore"][..], &args].concat());
        assert_same(&a.path("new"), &a.path(&ws), &[]);
        let left: Vec<_> = snapshot(&a.path(&ws), &[])
            .into_keys()
            .filter(|p| p.contains(".stateful-ci"))
            .collect();
        assert!(left.is_empty(), "step {step}: private names left: {left:?}");
        let again = a.ok(&ws, &[&["save", "--json"][..], &args].concat());
        assert_eq!(again["outcome"], "unchanged", "step {step}: {again}");
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} of 6 kills landed during a restore; the test lost its point"
    );
}
