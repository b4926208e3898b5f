//! Embeds the Worker bundle (`worker-template/dist/index.js`,
//! `index_bg.wasm`) and the D1 migrations (`migrations/*.sql`) into the
//! installer, and the commit of this project's GitHub Action that `init`
//! pins.
//!
//! Everyday builds: a missing bundle does not fail the build (`cargo build`
//! needs no wasm toolchain): it warns, and deploy/upgrade/dev then fail
//! naming `scripts/build-worker.sh`.
//!
//! Release builds (`STATEFUL_CI_RELEASE=1`, set by release.yml and
//! scripts/npm-pack.sh): a missing bundle is a build error, and
//! `STATEFUL_CI_ACTION_SHA` (the 40-hex commit the release is built from,
//! which is also the commit of its action.yml) is required. Without it a
//! development build pins the action by its version tag instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    println!("cargo:rerun-if-env-changed={}", gate::RELEASE_ENV);
    println!("cargo:rerun-if-env-changed={}", gate::ACTION_SHA_ENV);
    println!("cargo:rerun-if-env-changed={}", gate::WORKER_DIST_ENV);
    let dist = match std::env::var_os(gate::WORKER_DIST_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => root.join("worker-template/dist"),
    };
    let migrations = root.join("migrations");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!("cargo:rerun-if-changed={}", migrations.display());
    let mut out = String::new();
    let js = dist.join("index.js");
    let wasm = dist.join("index_bg.wasm");
    for f in [&js, &wasm] {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let present = js.is_file() && wasm.is_file();
    let var = |name| std::env::var(name).ok();
    let gate = gate::decide(
        var(gate::RELEASE_ENV).as_deref(),
        var(gate::ACTION_SHA_ENV).as_deref(),
        present,
        &std::env::var("CARGO_PKG_VERSION").unwrap(),
    )
    .unwrap_or_else(|e| fail(&format!("{e} (bundle looked for in {})", dist.display())));
    writeln!(
        out,
        "pub const ACTION_SHA: Option<&str> = {:?};\npub const ACTION_USES: &str = {:?};",
        gate.action_sha, gate.action_uses
    )
    .unwrap();
    if present {
        writeln!(
            out,
            "pub const BUNDLE: Option<(&[u8], &[u8])> = Some((include_bytes!({:?}), include_bytes!({:?})));",
            js.display().to_string(),
            wasm.display().to_string()
        )
        .unwrap();
    } else {
        println!(
            "cargo:warning=the Worker bundle ({}) is missing: this build cannot deploy; run scripts/build-worker.sh (after scripts/setup-wasm.sh) and build again",
            dist.display()
        );
        out.push_str("pub const BUNDLE: Option<(&[u8], &[u8])> = None;\n");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&migrations)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "sql"));
    files.sort();
    out.push_str("pub const MIGRATIONS: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            name(f),
            f.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("bundle.rs");
    std::fs::write(dest, out).unwrap();
}

#[allow(dead_code)]
mod gate {
    include!("build_gate.rs");
}

/// A build error with the cause and the fix.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}
