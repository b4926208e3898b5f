//! A save killed with SIGKILL at any point leaves the previous snapshot
//! intact and restorable.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::tree::{assert_same, snapshot};
use crate::util::*;

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
        let mut child = bin()
            .args(["save", "--store", &a.store(), "--path", "out"])
            .current_dir(a.path("gen2"))
            .env("STATEFUL_CI_CACHE_DIR", a.path(&format!("cache-{step}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(step as f64 / 9.0).min(Duration::from_secs(30)));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

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
