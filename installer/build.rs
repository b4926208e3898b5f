//! Embeds the Worker bundle (`worker-template/dist/index.js`,
//! `index_bg.wasm`) and the D1 migrations (`migrations/*.sql`) into the
//! installer. A missing bundle does not fail the build (everyday
//! `cargo build` needs no wasm toolchain): it warns, and deploy/upgrade/dev
//! then fail naming `scripts/build-worker.sh`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let dist = root.join("worker-template/dist");
    let migrations = root.join("migrations");
    println!("cargo:rerun-if-changed={}", dist.display());
    println!("cargo:rerun-if-changed={}", migrations.display());
    let mut out = String::new();
    let js = dist.join("index.js");
    let wasm = dist.join("index_bg.wasm");
    for f in [&js, &wasm] {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    if js.is_file() && wasm.is_file() {
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

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}
