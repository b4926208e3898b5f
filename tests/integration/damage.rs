//! A damaged store or a hostile manifest never produces a wrong file, never
//! writes outside the configured paths, and never breaks the build unless
//! `--strict` is given.

use std::path::Path;

use stateful_ci_protocol::{Codec, EntryKind};
use stateful_ci_runtime::objects::{Planted, plant as plant_in};
use stateful_ci_runtime::{LocalStore, Store};

use crate::tree::{assert_same, snapshot};
use crate::util::*;

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn objects(store: &Path, sub: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(store.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Two generations saved, and a workspace holding generation 1.
fn two_generations(a: &Area) {
    write(
        &a.path("src/out/a.txt"),
        &"alpha\n".repeat(1000).into_bytes(),
    );
    write(&a.path("src/out/b.bin"), &noise(2 * 1024 * 1024 + 3, 1));
    a.ok("src", &["save", "--store", &a.store(), "--path", "out"]);
    a.ok("old", &["restore", "--store", &a.store(), "--path", "out"]);
    write(
        &a.path("src/out/a.txt"),
        &"beta\n".repeat(1000).into_bytes(),
    );
    write(&a.path("src/out/c.bin"), &noise(300_000, 2));
    a.ok("src", &["save", "--store", &a.store(), "--path", "out"]);
}

#[test]
fn flipped_bytes_never_produce_a_wrong_file() {
    let a = Area::new();
    two_generations(&a);
    copy_dir(&a.path("store"), &a.path("intact"));
    let before = snapshot(&a.path("old"), &[]);
    for pack in objects(&a.path("store"), "packs") {
        let mut b = std::fs::read(&pack).unwrap();
        let n = b.len();
        for i in [n / 3, n / 2, n - 1] {
            b[i] ^= 0x55;
        }
        std::fs::write(&pack, b).unwrap();
    }
    let out = a.run(
        "old",
        &["restore", "--store", &a.store(), "--path", "out", "--json"],
    );
    assert!(
        out.status.success(),
        "a cache failure is not a build failure"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("does not match its hash")
            || stderr.contains("decompress"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "error");
    assert_eq!(
        snapshot(&a.path("old"), &[]),
        before,
        "the workspace must be untouched"
    );

    let strict = a.run(
        "old",
        &[
            "restore",
            "--store",
            &a.store(),
            "--path",
            "out",
            "--strict",
        ],
    );
    assert_eq!(strict.status.code(), Some(1));
    assert_eq!(snapshot(&a.path("old"), &[]), before);

    // The intact copy still restores generation 2 exactly.
    a.ok(
        "old",
        &[
            "restore",
            "--store",
            a.path("intact").to_str().unwrap(),
            "--path",
            "out",
        ],
    );
    assert_same(&a.path("src"), &a.path("old"), &[]);
}

#[test]
fn missing_objects_never_produce_a_wrong_file() {
    let a = Area::new();
    two_generations(&a);
    let before = snapshot(&a.path("old"), &[]);
    for (i, p) in objects(&a.path("store"), "packs").iter().enumerate() {
        if i % 2 == 0 {
            std::fs::remove_file(p).unwrap();
        }
    }
    // An empty workspace needs every blob: the restore fails and writes nothing.
    let out = a.run(
        "fresh",
        &["restore", "--store", &a.store(), "--path", "out", "--json"],
    );
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "error");
    assert!(snapshot(&a.path("fresh"), &[]).is_empty());
    // A warm workspace may need only what survived; either way no file is wrong.
    a.run("old", &["restore", "--store", &a.store(), "--path", "out"]);
    let after = snapshot(&a.path("old"), &[]);
    if after != before {
        assert_same(&a.path("src"), &a.path("old"), &[]);
    }
    // With the manifests gone too, --strict fails and nothing changes.
    for p in objects(&a.path("store"), "manifests") {
        std::fs::remove_file(p).unwrap();
    }
    let out = a.run(
        "old",
        &[
            "restore",
            "--store",
            &a.store(),
            "--path",
            "out",
            "--strict",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&a.path("old"), &[]), after);
    // A save after the damage stores what is missing again and restores exactly.
    a.ok("src", &["save", "--store", &a.store(), "--path", "out"]);
    let _ = std::fs::remove_dir_all(a.path("fresh"));
    a.ok(
        "fresh",
        &["restore", "--store", &a.store(), "--path", "out"],
    );
    assert_same(&a.path("src"), &a.path("fresh"), &[]);
}

/// Write a hand-made snapshot into a local store and point the head at it.
fn plant(store: &Path, entries: Vec<Planted>) {
    let s = LocalStore::open(store, "default").unwrap();
    plant_in(&s as &dyn Store, &["node_modules".to_string()], &entries).unwrap();
}

fn dir(path: &str) -> Planted {
    Planted {
        path: path.into(),
        kind: EntryKind::Dir,
        mode: 0o755,
        target: None,
        data: vec![],
        stored: None,
    }
}

fn file(path: &str, data: &[u8]) -> Planted {
    Planted {
        path: path.into(),
        kind: EntryKind::File,
        mode: 0o644,
        target: None,
        data: data.to_vec(),
        stored: None,
    }
}

fn link(path: &str, target: &str) -> Planted {
    Planted {
        path: path.into(),
        kind: EntryKind::Symlink,
        mode: 0o777,
        target: Some(target.into()),
        data: vec![],
        stored: None,
    }
}

const PWN: &[u8] = b"pwned";

/// Restore a planted snapshot into workspace `w`; nothing may appear in `outside`.
fn restore_planted(a: &Area, entries: Vec<Planted>) -> std::process::Output {
    std::fs::create_dir_all(a.path("outside")).unwrap();
    plant(&a.path("store"), entries);
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
    assert!(
        snapshot(&a.path("outside"), &[]).is_empty(),
        "something was written outside the workspace"
    );
    assert!(!a.path("pwn.txt").exists() && !Path::new("/tmp/stateful-ci-pwn.txt").exists());
    out
}

#[test]
fn crafted_manifests_cannot_escape() {
    let outside = Area::new();
    let cases: Vec<Vec<Planted>> = vec![
        vec![dir("node_modules"), file("node_modules/../pwn.txt", PWN)],
        vec![dir("node_modules"), file("/tmp/stateful-ci-pwn.txt", PWN)],
        vec![
            dir("node_modules"),
            link("node_modules/l", outside.path("outside").to_str().unwrap()),
            file("node_modules/l/pwn.txt", PWN),
        ],
        vec![dir("node_modules"), file("node_modules2/pwn.txt", PWN)],
        // Case-insensitive or normalising file systems (macOS runners): `X`
        // a symlink to outside and `x/` a directory name the same place.
        vec![
            dir("node_modules"),
            link("node_modules/X", outside.path("outside").to_str().unwrap()),
            dir("node_modules/x"),
            file("node_modules/x/pwn.txt", PWN),
        ],
        vec![
            dir("node_modules"),
            file("node_modules/cafe\u{301}", PWN),
            file("node_modules/caf\u{e9}", PWN),
        ],
    ];
    for entries in cases {
        let paths: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
        let a = Area::new();
        let out = restore_planted(&a, entries);
        assert!(
            out.status.success(),
            "a hostile snapshot is a cache failure, not a crash"
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["outcome"], "error", "{paths:?}");
        assert!(
            !a.path("w/node_modules").exists(),
            "nothing is written from a rejected manifest"
        );
    }
}

#[test]
fn restore_never_writes_through_a_symlink_on_disk() {
    let a = Area::new();
    std::fs::create_dir_all(a.path("w/node_modules")).unwrap();
    std::fs::create_dir_all(a.path("outside")).unwrap();
    std::os::unix::fs::symlink(a.path("outside"), a.path("w/node_modules/evil")).unwrap();
    // No directory entry for `evil`: the parent must still not be followed.
    let out = restore_planted(
        &a,
        vec![dir("node_modules"), file("node_modules/evil/pwn.txt", PWN)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(a.path("w/node_modules/evil/pwn.txt")).unwrap(),
        PWN
    );
    assert!(
        std::fs::symlink_metadata(a.path("w/node_modules/evil"))
            .unwrap()
            .is_dir()
    );

    // A symlinked root ancestor is refused outright.
    let b = Area::new();
    std::fs::create_dir_all(b.path("outside")).unwrap();
    std::fs::create_dir_all(b.path("w")).unwrap();
    std::os::unix::fs::symlink(b.path("outside"), b.path("w/a")).unwrap();
    write(&b.path("src/a/cache/x"), b"x");
    b.ok("src", &["save", "--store", &b.store(), "--path", "a/cache"]);
    let out = b.run(
        "w",
        &["restore", "--store", &b.store(), "--path", "a/cache"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    assert!(snapshot(&b.path("outside"), &[]).is_empty());
}

#[test]
fn hostile_blobs_and_credentials_are_refused() {
    // A zstd frame that inflates past its claimed size.
    let a = Area::new();
    let bomb_plain = vec![0u8; 4 * 1024 * 1024];
    let bomb = zstd::encode_all(&bomb_plain[..], 3).unwrap();
    plant(
        &a.path("store"),
        vec![
            dir("node_modules"),
            Planted {
                stored: Some((Codec::Zstd, bomb)),
                ..file("node_modules/x", &bomb_plain[..10])
            },
        ],
    );
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
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "error");
    assert!(!a.path("w/node_modules/x").exists());

    // Credentials inside a snapshot are not written.
    let b = Area::new();
    let out = restore_planted(
        &b,
        vec![
            dir("node_modules"),
            file("node_modules/.npmrc", PWN),
            file("node_modules/ok", PWN),
        ],
    );
    assert!(out.status.success());
    assert!(b.path("w/node_modules/ok").exists());
    assert!(!b.path("w/node_modules/.npmrc").exists());
}

#[test]
fn a_save_over_a_head_with_lost_packs_stores_them_again() {
    let a = Area::new();
    write(&a.path("src/out/a.txt"), b"alpha");
    write(&a.path("src/out/b.bin"), &noise(100_000, 3));
    let args = ["--store", &a.store(), "--path", "out", "--json"];
    a.ok("src", &[&["save"][..], &args].concat());
    for p in objects(&a.path("store"), "packs") {
        std::fs::remove_file(p).unwrap();
    }
    // Same content, but the head can no longer be restored: not "unchanged".
    let again = a.ok("src", &[&["save"][..], &args].concat());
    assert_eq!(again["outcome"], "saved", "{again}");
    a.ok(
        "fresh",
        &[
            "restore",
            "--store",
            &a.store(),
            "--path",
            "out",
            "--strict",
        ],
    );
    assert_same(&a.path("src"), &a.path("fresh"), &[]);
}
