//! Save then restore gives back exactly the tree, across generations, and
//! never stores credentials.

use crate::tree::assert_same;
use crate::util::*;

const CREDS: &[&str] = &[".npmrc", ".env.local", "server.pem"];

#[test]
fn round_trip_is_exact() {
    let a = Area::new();
    rich_tree(&a.path("src"));
    let saved = a.ok(
        "src",
        &[
            "save",
            "--store",
            &a.store(),
            "--path",
            "node_modules",
            "--json",
        ],
    );
    assert_eq!(saved["outcome"], "saved");
    assert_eq!(saved["skipped_credentials"], 3);
    let restored = a.ok(
        "dst",
        &[
            "restore",
            "--store",
            &a.store(),
            "--path",
            "node_modules",
            "--json",
        ],
    );
    assert_eq!(restored["outcome"], "hit");
    assert_eq!(restored["snapshot_id"], saved["snapshot_id"]);
    assert_same(&a.path("src"), &a.path("dst"), CREDS);
    // A restore into an empty directory reads every frame of its one
    // snapshot, the pieces' and the data's: "fetched" counts them all.
    let packs: u64 = std::fs::read_dir(a.path("store/packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let fetched = restored["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched >= packs,
        "fetched {fetched} of {packs} stored bytes: {restored}"
    );
    for c in CREDS {
        assert!(
            !crate::tree::snapshot(&a.path("dst"), &[])
                .keys()
                .any(|k| k.ends_with(c)),
            "{c} restored"
        );
    }
}

#[test]
fn credentials_never_reach_the_store() {
    let a = Area::new();
    rich_tree(&a.path("src"));
    a.ok(
        "src",
        &["save", "--store", &a.store(), "--path", "node_modules"],
    );
    // Decode every blob of the snapshot, and keep the raw objects too.
    let store = stateful_ci_runtime::LocalStore::open(&a.path("store"), "default").unwrap();
    let head = stateful_ci_runtime::Store::save_head(&store)
        .unwrap()
        .unwrap();
    let m = stateful_ci_runtime::objects::load_manifest(&store, &head.snapshot).unwrap();
    let mut plain = m.to_json();
    let nodes = stateful_ci_runtime::objects::load_nodes(&store, &m).unwrap();
    // One generation: no frame is delta-coded, each decodes on its own.
    let mut frames: Vec<_> = m.frames.iter().map(|f| f.frame).collect();
    frames.extend(
        nodes
            .iter()
            .flat_map(|n| n.blobs.iter().map(|b| b.1.frame())),
    );
    frames.sort_by_key(|f| (f.pack, f.offset));
    frames.dedup();
    for f in &frames {
        plain.extend(stateful_ci_runtime::objects::fetch_frame(&store, &m.packs, f).unwrap());
    }
    for sub in ["packs", "manifests"] {
        for ent in std::fs::read_dir(a.path("store").join(sub)).unwrap() {
            plain.extend(std::fs::read(ent.unwrap().path()).unwrap());
        }
    }
    let text = String::from_utf8_lossy(&plain);
    assert!(
        text.contains("module.exports"),
        "sanity: decoded content is searchable"
    );
    assert!(
        !text.contains("SECRET-TOKEN"),
        "a credential reached the store"
    );
    assert!(!text.contains(".npmrc") && !text.contains("server.pem"));
}

#[test]
fn second_generation_over_a_stale_tree() {
    let a = Area::new();
    rich_tree(&a.path("src"));
    let args = ["--store", &a.store(), "--path", "node_modules"];
    a.ok("src", &[&["save"][..], &args].concat());
    a.ok("stale", &[&["restore"][..], &args].concat());

    // Edit, add, delete, change kinds and modes.
    let nm = a.path("src/node_modules");
    write(&nm.join("pkg/index.js"), b"module.exports = 2;\n");
    write(&nm.join("pkg/new.js"), b"new file\n");
    std::fs::remove_file(nm.join("pkg/empty.txt")).unwrap();
    std::fs::remove_dir_all(nm.join("empty")).unwrap();
    write(&nm.join("empty"), b"now a file");
    std::fs::remove_file(nm.join("dangling")).unwrap();
    std::fs::create_dir(nm.join("dangling")).unwrap();
    chmod(&nm.join(".bin/tool"), 0o700);
    let mut big = std::fs::read(nm.join("big/random.bin")).unwrap();
    big[1_500_000..1_500_100].copy_from_slice(&[0xAB; 100]);
    write(&nm.join("big/random.bin"), &big);
    let second = a.ok("src", &[&["save", "--json"][..], &args].concat());
    assert_eq!(second["outcome"], "saved");
    assert_eq!(second["generation"], 2);
    assert!(
        second["new_bytes"].as_u64().unwrap() < 5 * 1024 * 1024,
        "only changed chunks are new: {second}"
    );

    // Stale workspace has a local extra file that the snapshot does not have.
    write(&a.path("stale/node_modules/pkg/junk.js"), b"junk");
    let r = a.ok("stale", &[&["restore", "--json"][..], &args].concat());
    assert_eq!(r["generation"], 2);
    assert_same(&a.path("src"), &a.path("stale"), CREDS);

    // Restoring again onto the matching tree writes nothing.
    let again = a.ok("stale", &[&["restore", "--json"][..], &args].concat());
    assert_eq!(again["files_written"], 0, "{again}");
    assert_same(&a.path("src"), &a.path("stale"), CREDS);
}

/// A save after a restore (the CI sequence) reuses the pieces whose entries
/// it finds unchanged without rebuilding them (by the digests the restore
/// recorded in the stat index), so a change that alters no content (an
/// mtime, a directory's mtime, a mode, a symlink's target) must still reach
/// the snapshot: a restore of it gives the edited tree back exactly.
#[test]
fn save_after_restore_records_changes_that_keep_content() {
    let a = Area::new();
    let nm = a.path("src/node_modules");
    rich_tree(&a.path("src"));
    // Enough entries for many pieces (16 entries each on average).
    for i in 0..600 {
        write(
            &nm.join(format!("many/d{}/f{i}.js", i % 40)),
            format!("// {i}\n").as_bytes(),
        );
    }
    let args = ["--store", &a.store(), "--path", "node_modules", "--json"];
    a.ok("src", &[&["save"][..], &args].concat());
    a.ok("ci", &[&["restore"][..], &args].concat());

    let ci = a.path("ci/node_modules");
    set_mtime(&ci.join("many/d3/f43.js"), 1_700_000_000, 42);
    set_mtime(&ci.join("many/d7"), 1_650_000_000, 7);
    chmod(&ci.join("many/d11/f91.js"), 0o600);
    std::fs::remove_file(ci.join(".bin/pkg")).unwrap();
    std::os::unix::fs::symlink("../big/text.txt", ci.join(".bin/pkg")).unwrap();
    set_mtime(&ci.join(".bin/pkg"), 1_500_000_000, 5);
    let saved = a.ok("ci", &[&["save"][..], &args].concat());
    assert_eq!(saved["outcome"], "saved", "{saved}");

    a.ok("check", &[&["restore"][..], &args].concat());
    assert_same(&a.path("ci"), &a.path("check"), CREDS);

    // And with nothing changed after that restore, the save is "unchanged".
    let again = a.ok("check", &[&["save"][..], &args].concat());
    assert_eq!(again["outcome"], "unchanged", "{again}");
    assert_eq!(again["files_read"], 0, "{again}");
}

#[test]
fn unchanged_save_writes_nothing_and_reads_nothing() {
    let a = Area::new();
    write(&a.path("w/out/a.txt"), b"a");
    write(&a.path("w/out/b.txt"), b"b");
    // Whether or not the stat index lets the second save skip reading (the
    // files are too fresh to be trusted), the outcome must be "unchanged".
    let args = ["--store", &a.store(), "--path", "out", "--json"];
    let first = a.ok("w", &[&["save"][..], &args].concat());
    let second = a.ok("w", &[&["save"][..], &args].concat());
    assert_eq!(second["outcome"], "unchanged");
    assert_eq!(second["objects_sent"], 0);
    assert_eq!(second["snapshot_id"], first["snapshot_id"]);
}

#[test]
fn a_save_without_a_stat_index_stores_only_new_bytes() {
    // The same tree in a second directory has no stat index of its own:
    // its save reads every file and finds the head's blobs in the head's
    // snapshot (loaded and verified), so only the edited file is new.
    let a = Area::new();
    rich_tree(&a.path("src"));
    let args = ["--store", &a.store(), "--path", "node_modules"];
    a.ok("src", &[&["save"][..], &args].concat());
    rich_tree(&a.path("other"));
    write(
        &a.path("other/node_modules/pkg/index.js"),
        b"module.exports = 22;\n",
    );
    let other = a.ok("other", &[&["save", "--json"][..], &args].concat());
    assert_eq!(other["outcome"], "saved", "{other}");
    assert_eq!(other["generation"], 2, "{other}");
    assert_eq!(
        other["new_bytes"], 21,
        "only the edited file is new: {other}"
    );
    assert!(other["files_read"].as_u64().unwrap() > 5, "{other}");
    let r = a.ok("check", &[&["restore", "--json"][..], &args].concat());
    assert_eq!(r["generation"], 2);
    assert_same(&a.path("other"), &a.path("check"), CREDS);
}

/// Past the number of new blobs a save remembers, it forgets those of
/// earlier windows (memory stays bounded whatever the file count): a file
/// that repeats a forgotten blob stores it again, which costs bytes, and
/// the snapshot still restores exactly.
#[test]
fn forgotten_blobs_cost_bytes_never_content() {
    let a = Area::new();
    // Ten contents that do not compress, each in six files spread over
    // the tree, so over many windows of eight entries.
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let contents: Vec<Vec<u8>> = (0..10)
        .map(|_| {
            (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect();
    for i in 0..60 {
        write(
            &a.path(&format!("src/node_modules/d{}/f{i:02}", i % 7)),
            &contents[i % 10],
        );
    }
    let save = |store: &str, max: &str| {
        let s = a.path(store).display().to_string();
        a.ok_with(
            "src",
            &["save", "--store", &s, "--path", "node_modules", "--json"],
            &[
                ("STATEFUL_CI_SAVE_WINDOW", "8"),
                ("STATEFUL_CI_SAVE_MAX_NEW_BLOBS", max),
            ],
        )
    };
    let whole = save("store-whole", "0");
    let capped = save("store-capped", "2");
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n(&whole, "new_bytes"),
        10 * 4096,
        "each content once: {whole}"
    );
    assert!(
        n(&capped, "new_bytes") >= 20 * 4096
            && n(&capped, "stored_bytes") > n(&whole, "stored_bytes") + 10 * 4096,
        "forgotten blobs are stored again: {capped} against {whole}"
    );
    let s = a.path("store-capped").display().to_string();
    a.ok("dst", &["restore", "--store", &s, "--path", "node_modules"]);
    assert_same(&a.path("src"), &a.path("dst"), CREDS);

    // A copy of the tree has no stat index: its save loads the head's
    // blobs to deduplicate against, all of them, or only as many as the
    // cap, and stores the rest again.
    for i in 0..60 {
        write(
            &a.path(&format!("copy/node_modules/d{}/f{i:02}", i % 7)),
            &contents[i % 10],
        );
    }
    let w = a.path("store-whole").display().to_string();
    let copy = |max: &str| {
        a.ok_with(
            "copy",
            &["save", "--store", &w, "--path", "node_modules", "--json"],
            &[("STATEFUL_CI_SAVE_MAX_NEW_BLOBS", max)],
        )
    };
    let all = copy("0");
    assert_eq!(n(&all, "new_bytes"), 0, "{all}");
    std::fs::remove_dir_all(a.path("cache")).ok();
    let some = copy("2");
    assert!(n(&some, "new_bytes") >= 8 * 4096, "{some}");
    a.ok(
        "dst2",
        &["restore", "--store", &w, "--path", "node_modules"],
    );
    assert_same(&a.path("copy"), &a.path("dst2"), CREDS);
}

/// Variants of one large file (Next.js ships four builds of each runtime
/// and source map) are packed with their chunks side by side, so each
/// variant costs about its differences; the tree restores exactly. The
/// same files under names that do not mark them as variants are packed one
/// after the other, and cost more.
#[test]
fn variants_of_a_large_file_are_stored_by_their_differences() {
    let a = Area::new();
    // 3 MB of words, compressible but unlike anything else in the tree.
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let words = [
        "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta",
    ];
    let mut base = Vec::new();
    while base.len() < 3_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        base.extend_from_slice(words[(x % 8) as usize].as_bytes());
        base.extend_from_slice(format!("{} ", x % 1000).as_bytes());
    }
    // Each variant differs from the base every 40 KB.
    let variant = |n: usize| {
        let mut v = base.clone();
        for at in (n * 1000..v.len()).step_by(40_000) {
            v[at] = b'A' + n as u8;
        }
        v
    };
    let dir = "node_modules/next/dist/compiled";
    let mut stored = Vec::new();
    for (ws, names) in [
        (
            "fam",
            [
                "app.runtime.js",
                "app-turbo.runtime.js",
                "app-experimental.runtime.js",
            ],
        ),
        (
            "apart",
            ["one.runtime.js", "two.runtime.js", "three.runtime.js"],
        ),
    ] {
        for (n, name) in names.iter().enumerate() {
            write(&a.path(&format!("{ws}/{dir}/{name}")), &variant(n));
        }
        write(&a.path(&format!("{ws}/{dir}/small.js")), b"x");
        let store = a.path(&format!("store-{ws}")).display().to_string();
        let args = ["--store", &store, "--path", "node_modules"];
        let saved = a.ok(ws, &[&["save", "--json"][..], &args].concat());
        stored.push(saved["stored_bytes"].as_u64().unwrap());
        let out = format!("{ws}-out");
        a.ok(&out, &[&["restore"][..], &args].concat());
        assert_same(&a.path(ws), &a.path(&out), CREDS);
    }
    assert!(
        stored[0] * 10 < stored[1] * 7,
        "variants packed side by side store {} bytes, apart {}",
        stored[0],
        stored[1]
    );
}

/// A save takes the walk's entries a window at a time. Over many small
/// windows it stores the same tree a single window would, its stat index
/// (copied from the old one for windows that did not change, written for
/// the rest) lets the next save read only what changed, and a save with
/// other windows finds the same snapshot unchanged.
#[test]
fn a_save_a_window_at_a_time_is_whole() {
    let a = Area::new();
    rich_tree(&a.path("src"));
    for i in 0..400 {
        let ext = ["js", "json", "md", "d.ts"][i % 4];
        write(
            &a.path(&format!("src/node_modules/w/d{:02}/f{i}.{ext}", i % 23)),
            format!("// {i} {}\n", "x".repeat(i % 50)).as_bytes(),
        );
    }
    // Paths whose order is not that of a walk by name ('-' and '.' sort
    // before '/').
    for p in ["w/a/x", "w/a-b", "w/a.txt", "w/a0/y", "w/a/b/c"] {
        write(&a.path(&format!("src/node_modules/{p}")), p.as_bytes());
    }
    // A file changed within two seconds of being read is not trusted by
    // the stat index (the racy window): read again by the next save.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(2100));
    settle();
    let args = ["--store", &a.store(), "--path", "node_modules", "--json"];
    let windowed = |ws: &str, window: &str, cmd: &[&str]| {
        a.ok_with(
            ws,
            &[cmd, &args[..]].concat(),
            &[("STATEFUL_CI_SAVE_WINDOW", window)],
        )
    };
    let first = windowed("src", "7", &["save"]);
    assert_eq!(first["outcome"], "saved", "{first}");
    let files = first["files"].as_u64().unwrap();
    assert!(files > 400, "{first}");
    assert_eq!(first["files_read"], files);
    a.ok("dst", &[&["restore"][..], &args].concat());
    assert_same(&a.path("src"), &a.path("dst"), CREDS);

    // Nothing changed: nothing read, whatever the window.
    for window in ["7", "1", "100000"] {
        let again = windowed("src", window, &["save"]);
        assert_eq!(again["outcome"], "unchanged", "window {window}: {again}");
        assert_eq!(again["files_read"], 0, "window {window}: {again}");
    }

    // A change late in path order: the windows before it copy the old
    // index's records. One edit, one new file, one deleted.
    write(&a.path("src/node_modules/w/d21/f389.json"), b"edited\n");
    write(&a.path("src/node_modules/w/d22/new.js"), b"new\n");
    std::fs::remove_file(a.path("src/node_modules/w/d22/f390.md")).unwrap();
    settle();
    let edit = windowed("src", "7", &["save"]);
    assert_eq!(edit["outcome"], "saved", "{edit}");
    assert_eq!(edit["files_read"], 2, "{edit}");
    assert_eq!(edit["files"], files, "{edit}");
    // The index it wrote is whole: the next save reads nothing.
    let after = windowed("src", "5", &["save"]);
    assert_eq!(after["outcome"], "unchanged", "{after}");
    assert_eq!(after["files_read"], 0, "{after}");
    a.ok("dst", &[&["restore"][..], &args].concat());
    assert_same(&a.path("src"), &a.path("dst"), CREDS);

    // A deletion alone, early in path order, with the rest unchanged.
    std::fs::remove_file(a.path("src/node_modules/w/a-b")).unwrap();
    let deleted = windowed("src", "3", &["save"]);
    assert_eq!(deleted["outcome"], "saved", "{deleted}");
    assert_eq!(deleted["files_read"], 0, "{deleted}");
    let after = windowed("src", "64", &["save"]);
    assert_eq!(after["outcome"], "unchanged", "{after}");
    assert_eq!(after["files_read"], 0, "{after}");
    a.ok("dst", &[&["restore"][..], &args].concat());
    assert_same(&a.path("src"), &a.path("dst"), CREDS);
}

/// A restore a window at a time gives the same tree whatever the window:
/// directories whose entries span windows (and whose children sort apart,
/// as `a-b` and `a.txt` do from `a/`), a new read-only directory, names to
/// remove in a directory that stays, kinds that change, files replaced.
/// And a save of the restored tree stores nothing: the files the restore
/// replaced or touched are read again (their records' ctimes differ), the
/// rest not at all.
#[test]
fn a_restore_a_window_at_a_time_is_whole() {
    let a = Area::new();
    rich_tree(&a.path("src"));
    let nm = a.path("src/node_modules");
    for i in 0..60 {
        write(
            &nm.join(format!("w/d{:02}/f{i}.js", i % 9)),
            format!("// {i}\n").as_bytes(),
        );
    }
    for p in ["w/a/x", "w/a-b", "w/a.txt", "w/a0/y", "w/a/b/c"] {
        write(&nm.join(p), p.as_bytes());
    }
    let args = ["--store", &a.store(), "--path", "node_modules", "--json"];
    a.ok("src", &[&["save"][..], &args].concat());
    let stale = ["stale1", "stale3", "stale-default"];
    for ws in stale {
        a.ok(ws, &[&["restore"][..], &args].concat());
    }

    // The second generation: edits, a new read-only directory, kinds that
    // change, removals.
    write(&nm.join("w/d03/f12.js"), b"edited\n");
    write(&nm.join("w/a/b/new.js"), b"new\n");
    write(&nm.join("w/ro/inside.txt"), b"in a read-only directory\n");
    chmod(&nm.join("w/ro"), 0o555);
    std::fs::remove_file(nm.join("w/a-b")).unwrap();
    std::fs::create_dir(nm.join("w/a-b")).unwrap();
    write(&nm.join("w/a-b/z"), b"z");
    std::fs::remove_dir_all(nm.join("w/a0")).unwrap();
    write(&nm.join("w/a0"), b"now a file");
    std::fs::remove_file(nm.join("w/d05/f5.js")).unwrap();
    let second = a.ok("src", &[&["save"][..], &args].concat());
    assert_eq!(second["outcome"], "saved", "{second}");

    for (ws, window) in stale.iter().zip(["1", "3", "65536"]) {
        // Local junk the snapshot does not have, early and late.
        write(&a.path(&format!("{ws}/node_modules/w/a/junk")), b"junk");
        write(
            &a.path(&format!("{ws}/node_modules/w/d08/junk.js")),
            b"junk",
        );
        a.ok_with(
            ws,
            &[&["restore"][..], &args].concat(),
            &[("STATEFUL_CI_RESTORE_WINDOW", window)],
        );
        assert_same(&a.path("src"), &a.path(ws), CREDS);
        let left: Vec<_> = std::fs::read_dir(a.path(&format!("{ws}/node_modules/w")))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".stateful-ci"))
            .collect();
        assert!(
            left.is_empty(),
            "window {window}: staged leftovers {left:?}"
        );

        let again = a.ok(ws, &[&["save"][..], &args].concat());
        assert_eq!(again["outcome"], "unchanged", "window {window}: {again}");
        assert_eq!(again["new_bytes"], 0, "window {window}: {again}");
        // The files the restore wrote into directories that stayed.
        assert!(
            again["files_read"].as_u64().unwrap() <= 4,
            "window {window}: {again}"
        );
    }
    chmod(&nm.join("w/ro"), 0o755);
    for ws in stale {
        chmod(&a.path(&format!("{ws}/node_modules/w/ro")), 0o755);
    }
}

/// A number decided by (seed, salt, path): a random tree made of these is
/// the same every run, and a second tree can follow the first at chosen
/// paths only.
fn pick(seed: u64, salt: u64, path: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&salt.to_le_bytes());
    h.update(path.as_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap())
}

/// Names chosen so that entries sort between a directory and what is in
/// it (`a-b`, `a.x` come after `a` and before `a/...`; `a0` after all of
/// them), plus one that is not ASCII.
const NAMES: &[&str] = &["a", "a-b", "a.x", "a0", "b", "\u{e9}t\u{e9}"];

/// Write at `root/rel` what the tree of `seed` has there. With `like`,
/// six paths in ten hold what the tree of `like` has instead (a stale
/// copy of it: some entries the same, some changed in content, kind,
/// mode or time, some missing, some extra).
fn random_tree(root: &std::path::Path, rel: &str, depth: u32, seed: u64, like: Option<u64>) {
    let own = seed;
    let seed = match like {
        Some(l) if pick(own, 0, rel) % 10 < 6 => l,
        _ => own,
    };
    let p = root.join(rel);
    let r = pick(seed, 1, rel);
    let time = |p: &std::path::Path| {
        set_mtime(
            p,
            1_600_000_000 + (r >> 20) as i64 % 1000,
            (r >> 40) as i64 % 1_000_000_000,
        )
    };
    match r % 100 {
        _ if depth == 0 => {}
        0..=24 => return,
        25..=54 if depth < 4 => {}
        25..=84 => {
            // 40 contents in all, so some files are copies of others.
            let c = pick(seed, 2, rel) % 40;
            write(&p, &noise((c as usize * 997) % 5000, c));
            chmod(&p, [0o644, 0o755, 0o600][(r >> 8) as usize % 3]);
            time(&p);
            return;
        }
        _ => {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(format!("../t{}", (r >> 8) % 4), &p).unwrap();
            time(&p);
            return;
        }
    }
    std::fs::create_dir_all(&p).unwrap();
    for name in NAMES {
        random_tree(root, &format!("{rel}/{name}"), depth + 1, own, like);
    }
    chmod(&p, [0o755, 0o700, 0o750][(r >> 8) as usize % 3]);
    time(&p);
}

/// Every private name left below `dir`.
fn leftovers(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".stateful-ci") {
            out.push(e.path());
        } else if e.file_type().unwrap().is_dir() {
            out.extend(leftovers(&e.path()));
        }
    }
    out
}

/// Random trees, saved and restored with windows of every size from one
/// entry up, onto random stale copies: each restore gives the saved tree
/// exactly (content, kinds, modes, times), leaves no private name, and the
/// save after it finds nothing changed. Then a second generation is
/// restored onto the first.
#[test]
fn random_trees_restore_whole_whatever_the_windows() {
    for seed in 1..=12u64 {
        let a = Area::new();
        let args = ["--store", &a.store(), "--path", "node_modules", "--json"];
        let save_window = ["1", "3", "7", "100000"][seed as usize % 4];
        let windows = ["1", "2", "3", "5", "8", "100000"];
        let run = |ws: &str, cmd: &str, window: &str| {
            let env = [
                ("STATEFUL_CI_SAVE_WINDOW", save_window),
                ("STATEFUL_CI_RESTORE_WINDOW", window),
            ];
            a.ok_with(ws, &[&[cmd][..], &args].concat(), &env)
        };

        random_tree(&a.path("src"), "node_modules", 0, seed, None);
        std::fs::create_dir_all(a.path("ws")).unwrap();
        if seed % 6 != 0 {
            random_tree(&a.path("ws"), "node_modules", 0, seed + 1000, Some(seed));
        }
        assert_eq!(run("src", "save", "")["outcome"], "saved");
        let window = windows[seed as usize % windows.len()];
        run("ws", "restore", window);
        assert_same(&a.path("src"), &a.path("ws"), &[]);
        assert_eq!(leftovers(&a.path("ws")), Vec::<std::path::PathBuf>::new());
        let again = run("ws", "save", "");
        assert_eq!(again["outcome"], "unchanged", "seed {seed}: {again}");

        // The second generation, restored onto the first.
        random_tree(&a.path("src2"), "node_modules", 0, seed + 2000, Some(seed));
        assert_eq!(run("src2", "save", "")["outcome"], "saved");
        let window = windows[(seed as usize + 3) % windows.len()];
        run("ws", "restore", window);
        assert_same(&a.path("src2"), &a.path("ws"), &[]);
        assert_eq!(leftovers(&a.path("ws")), Vec::<std::path::PathBuf>::new());
        assert_eq!(run("ws", "save", "")["outcome"], "unchanged", "seed {seed}");
    }
}

/// A stat index cut short (a full disk, a crash of something else) is
/// refused as a whole when it is opened: the save reads every file and
/// still stores only what changed, and the snapshot is exact.
#[test]
fn a_damaged_stat_index_costs_reads_never_content() {
    let a = Area::new();
    rich_tree(&a.path("src"));
    for i in 0..300 {
        write(
            &a.path(&format!("src/node_modules/many/d{}/f{i}.js", i % 20)),
            format!("// {i}\n").as_bytes(),
        );
    }
    let args = ["--store", &a.store(), "--path", "node_modules", "--json"];
    a.ok("src", &[&["save"][..], &args].concat());
    a.ok("ci", &[&["restore"][..], &args].concat());
    let mut cut = 0;
    for e in std::fs::read_dir(a.path("cache/stat-index")).unwrap() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(e.unwrap().path())
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
        cut += 1;
    }
    assert!(cut > 0, "no stat index was written");
    write(&a.path("ci/node_modules/many/d3/f43.js"), b"// edited\n");
    let saved = a.ok("ci", &[&["save"][..], &args].concat());
    assert_eq!(saved["outcome"], "saved", "{saved}");
    assert_eq!(saved["new_bytes"], 10, "only the edit is new: {saved}");
    assert!(saved["files_read"].as_u64().unwrap() > 300, "{saved}");
    a.ok("check", &[&["restore"][..], &args].concat());
    assert_same(&a.path("ci"), &a.path("check"), CREDS);
}

#[test]
fn excludes_are_honoured_on_save_and_restore() {
    let a = Area::new();
    write(&a.path("w/out/keep.txt"), b"keep");
    write(&a.path("w/out/debug.log"), b"log");
    write(&a.path("w/out/tmp/x"), b"tmp");
    write(
        &a.path("w/stateful-ci.toml"),
        b"paths = [\"out\"]\nexclude = [\"*.log\", \"out/tmp\"]\n",
    );
    a.ok("w", &["save", "--store", &a.store()]);
    write(
        &a.path("r/stateful-ci.toml"),
        b"paths = [\"out\"]\nexclude = [\"*.log\", \"out/tmp\"]\n",
    );
    write(&a.path("r/out/tmp/local"), b"local, excluded, must survive");
    a.ok("r", &["restore", "--store", &a.store()]);
    assert_eq!(std::fs::read(a.path("r/out/keep.txt")).unwrap(), b"keep");
    assert!(!a.path("r/out/debug.log").exists());
    assert_eq!(
        std::fs::read(a.path("r/out/tmp/local")).unwrap(),
        b"local, excluded, must survive"
    );
}

/// A save that edits a few files scattered over many pieces stores the
/// rewritten pieces delta-coded against the frames holding their previous
/// versions (FORMAT.md, "Delta-coded frames"), one dictionary deep across
/// generations; restores of every generation are exact, and a damaged
/// dictionary fails the restore without writing a file.
#[test]
fn scattered_edits_store_pieces_as_deltas() {
    let a = Area::new();
    let nm = a.path("src/node_modules");
    for i in 0..3000 {
        write(
            &nm.join(format!("p{:03}/lib/f{i}.js", i % 120)),
            format!("module.exports = {i};\n// {}\n", "x".repeat(i % 97)).as_bytes(),
        );
    }
    let args = ["--store", &a.store(), "--path", "node_modules", "--json"];
    a.ok("src", &[&["save"][..], &args].concat());
    // The CI sequence: restore on a fresh runner, edit, save.
    a.ok("ci", &[&["restore"][..], &args].concat());
    let cold_packs = head_manifest(&a).packs.len();
    let ci = a.path("ci/node_modules");
    let edit = |every: usize, from: usize, tag: &str| {
        for i in (from..3000).step_by(every) {
            let p = ci.join(format!("p{:03}/lib/f{i}.js", i % 120));
            let mut b = std::fs::read(&p).unwrap();
            b.extend_from_slice(tag.as_bytes());
            write(&p, &b);
        }
    };

    for (generation, from) in [(2, 0), (3, 25)] {
        edit(50, from, &format!("// edit {generation}\n"));
        let saved = a.ok("ci", &[&["save"][..], &args].concat());
        assert_eq!(saved["generation"], generation, "{saved}");
        let m = head_manifest(&a);
        let delta: Vec<_> = m.frames.iter().filter(|f| f.dict.is_some()).collect();
        assert!(
            !delta.is_empty(),
            "no delta-coded frame in generation {generation}"
        );
        for f in &delta {
            let d = f.dict.unwrap();
            // One level deep: the dictionary is a frame the cold save wrote.
            assert!((d.pack as usize) < cold_packs, "{f:?}");
            // About the changed entries, not the whole pieces' JSON.
            assert!(f.frame.length * 8 < f.frame.raw_len, "{f:?}");
        }
        let check = format!("check{generation}");
        let r = a.ok(&check, &[&["restore"][..], &args].concat());
        assert_eq!(r["generation"], generation, "{r}");
        assert_same(&a.path("ci"), &a.path(&check), &[]);
    }

    // Damage the dictionary (a frame of the cold save holding pieces that
    // generation 3 rewrote): the restore fails before writing anything.
    let m = head_manifest(&a);
    let d = m.frames.iter().find_map(|f| f.dict).unwrap();
    let pack = a.path("store").join(m.packs[d.pack as usize].to_string());
    let mut b = std::fs::read(&pack).unwrap();
    b[(d.offset + d.length / 2) as usize] ^= 0x55;
    std::fs::write(&pack, b).unwrap();
    let out = a.run("fresh", &[&["restore", "--strict"][..], &args].concat());
    assert!(
        !out.status.success(),
        "a damaged dictionary was not noticed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not match its hash") || stderr.contains("decompress"),
        "{stderr}"
    );
    assert!(
        crate::tree::snapshot(&a.path("fresh"), &["stateful-ci.toml", ".stateful-ci"])
            .keys()
            .all(|k| !k.starts_with("node_modules/")),
        "a file was written from a damaged snapshot"
    );
}

fn head_manifest(a: &Area) -> stateful_ci_protocol::Manifest {
    let store = stateful_ci_runtime::LocalStore::open(&a.path("store"), "default").unwrap();
    let head = stateful_ci_runtime::Store::save_head(&store)
        .unwrap()
        .unwrap();
    stateful_ci_runtime::objects::load_manifest(&store, &head.snapshot).unwrap()
}
