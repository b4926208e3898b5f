//! Helpers: run the binary, build sample trees.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stateful-ci"));
    c.env_remove("GITHUB_ACTIONS").env("NO_COLOR", "1");
    // Every restore of these small trees spans many windows (the default
    // is 65,536 entries), so what a window hands to the next is tested
    // everywhere: directories open across windows, removal lists, private
    // names, the stat index written a window at a time.
    c.env("STATEFUL_CI_RESTORE_WINDOW", "7");
    // `dev` runs the clone's prepared emulator (scripts/setup.sh emulator),
    // not the copy inside the binary, which tests/npm/test.sh covers from an
    // npm install (its first use installs packages from the registry).
    c.env(
        "STATEFUL_CI_EMULATOR_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cloudflare-emulator"),
    );
    c
}

/// A temporary area with a private cache dir (the stat index lives there).
pub struct Area {
    pub dir: tempfile::TempDir,
}

impl Area {
    pub fn new() -> Self {
        Area {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run `stateful-ci args...` in workspace `ws`.
    pub fn run(&self, ws: &str, args: &[&str]) -> Output {
        std::fs::create_dir_all(self.path(ws)).unwrap();
        bin()
            .args(args)
            .current_dir(self.path(ws))
            .env("STATEFUL_CI_CACHE_DIR", self.path("cache"))
            .output()
            .unwrap()
    }

    /// Run and require success; returns the parsed `--json` line if any.
    pub fn ok(&self, ws: &str, args: &[&str]) -> serde_json::Value {
        self.ok_with(ws, args, &[])
    }

    /// [`Area::ok`] with extra environment variables (window sizes).
    pub fn ok_with(&self, ws: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
        std::fs::create_dir_all(self.path(ws)).unwrap();
        let out = bin()
            .args(args)
            .current_dir(self.path(ws))
            .env("STATEFUL_CI_CACHE_DIR", self.path("cache"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn store(&self) -> String {
        self.path("store").to_string_lossy().into_owned()
    }
}

pub fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Set a path's mtime (not following symlinks) to a fixed value.
pub fn set_mtime(p: &Path, secs: i64, nsec: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0);
}

/// A workspace exercising every kind of entry the format supports.
pub fn rich_tree(root: &Path) {
    let nm = root.join("node_modules");
    write(&nm.join("pkg/index.js"), b"module.exports = 1;\n");
    write(&nm.join("pkg/empty.txt"), b"");
    write(
        &nm.join("sp ace/\u{fc}ni\u{e7}\u{f8}d\u{e9} \u{1F600}.txt"),
        "unicode and spaces".as_bytes(),
    );
    write(&nm.join(".bin/tool"), b"#!/bin/sh\necho tool\n");
    chmod(&nm.join(".bin/tool"), 0o755);
    write(
        &nm.join("big/random.bin"),
        &noise(3 * 1024 * 1024 + 12345, 7),
    );
    write(
        &nm.join("big/text.txt"),
        "line of text\n".repeat(200_000).as_bytes(),
    );
    // The same bytes in several files, small (one blob) and large (the
    // same chunks): a restore verifies each blob once and writes it to
    // every file that holds it.
    write(&nm.join("copy/index.js"), b"module.exports = 1;\n");
    write(&nm.join("copy/deep/index.js"), b"module.exports = 1;\n");
    write(
        &nm.join("copy/random.bin"),
        &noise(3 * 1024 * 1024 + 12345, 7),
    );
    std::fs::create_dir_all(nm.join("empty/dir")).unwrap();
    std::os::unix::fs::symlink("../pkg/index.js", nm.join(".bin/pkg")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", nm.join("dangling")).unwrap();
    // Credentials that must never be captured.
    write(&nm.join(".npmrc"), b"//registry/:_authToken=SECRET-TOKEN-1");
    write(&nm.join("pkg/.env.local"), b"API_KEY=SECRET-TOKEN-2");
    write(
        &nm.join("pkg/server.pem"),
        b"-----BEGIN PRIVATE KEY----- SECRET-TOKEN-3",
    );
    set_mtime(&nm.join("pkg/index.js"), 1_600_000_000, 123_456_789);
    set_mtime(&nm.join(".bin/pkg"), 1_500_000_000, 5);
    set_mtime(&nm.join("empty/dir"), 1_400_000_000, 0);
}

/// SIGTERM, wait up to 20 s, then SIGKILL.
pub fn stop_gracefully(child: &mut std::process::Child) {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let started = std::time::Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.wait();
}
