//! What `stateful-ci dev` needs to run the local Cloudflare emulator, found
//! or made ready from the binary alone (an npm-installed binary has no
//! repository next to it):
//!
//! - **Node.js 22.12+**: `STATEFUL_CI_NODE`, else `node` on `PATH`, else
//!   the tools folder's Node 22 ([`crate::tools`]). Otherwise a clear error
//!   naming what was found and what is needed.
//! - **The emulator's files** (its JavaScript, the Cloudflare API contract
//!   it validates every request against, its pinned `package.json`) travel
//!   inside the binary (`include_str!` of `tests/cloudflare-emulator`) and
//!   are unpacked on first use into a named, versioned cache folder:
//!   `$XDG_CACHE_HOME/stateful-ci/emulator-<version>-<hash>` (default
//!   `~/.cache/...`), where `<hash>` covers the embedded files, so a new
//!   binary never runs an older emulator.
//! - **Its npm packages** (miniflare with its workerd binary, ajv) are
//!   installed there on first use with that Node's npm, from the npm
//!   registry npm is configured for; the folder only appears (atomic rename)
//!   once the install succeeded.
//!
//! `STATEFUL_CI_EMULATOR_DIR` points at a prepared copy instead (a clone's
//! `tests/cloudflare-emulator` after `scripts/setup.sh emulator`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

pub const EMULATOR_DIR_ENV: &str = "STATEFUL_CI_EMULATOR_DIR";
/// A Node.js binary to use instead of looking on `PATH`.
pub const NODE_ENV: &str = "STATEFUL_CI_NODE";
/// The oldest Node the emulator's packages accept (its package.json `engines`).
pub const NODE_MIN: (u32, u32) = (22, 12);

macro_rules! embed {
    ($($rel:literal),* $(,)?) => {
        &[$(($rel, include_str!(concat!("../../tests/cloudflare-emulator/", $rel)))),*]
    };
}

/// The emulator's files, relative to its folder.
pub const FILES: &[(&str, &str)] = embed!(
    "package.json",
    ".npmrc",
    "src/admin-worker.js",
    "src/cli.js",
    "src/openapi.js",
    "src/runtime.js",
    "src/server.js",
    "src/sql.js",
    "contract/cloudflare-subset.openapi.json",
);

/// The marker written once the npm install finished.
const READY: &str = "node_modules/.stateful-ci-ready";

/// A Node.js that can run the emulator.
#[derive(Debug, Clone)]
pub struct Node {
    pub bin: PathBuf,
    pub version: String,
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.trim().trim_start_matches('v').split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Node 22.12+ (see the module's doc), or an error naming what was found.
pub fn find_node() -> Result<Node, Error> {
    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    if let Some(p) = std::env::var_os(NODE_ENV).filter(|v| !v.is_empty()) {
        candidates.push((NODE_ENV.to_string(), PathBuf::from(p)));
    } else {
        if let Some(p) = on_path("node") {
            candidates.push(("PATH".into(), p));
        }
        let tools = crate::tools::node22();
        if tools.is_file() {
            candidates.push(("the tools folder".into(), tools));
        }
    }
    let mut seen = Vec::new();
    for (from, bin) in candidates {
        match version_of(&bin) {
            Some(v) if parse_version(&v).is_some_and(|x| x >= NODE_MIN) => {
                return Ok(Node { bin, version: v });
            }
            Some(v) => seen.push(format!("{v} at {} (from {from})", bin.display())),
            None => seen.push(format!("{} (from {from}) does not run", bin.display())),
        }
    }
    let found = if seen.is_empty() {
        "no `node` on PATH".to_string()
    } else {
        format!("found only {}", seen.join(", "))
    };
    Err(Error::user(
        format!(
            "stateful-ci dev needs Node.js {}.{} or newer to run the local Cloudflare emulator; {found}",
            NODE_MIN.0, NODE_MIN.1
        ),
        format!(
            "install Node.js 22 LTS (or newer) and put it on PATH, or set {NODE_ENV} to its node binary"
        ),
    ))
}

/// The cache folder of this binary's emulator.
pub fn cache_dir() -> Result<PathBuf, Error> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .ok_or_else(|| {
            Error::user(
                "stateful-ci dev: no cache folder (neither XDG_CACHE_HOME nor HOME is set)",
                format!("set XDG_CACHE_HOME, or {EMULATOR_DIR_ENV} to a prepared emulator folder"),
            )
        })?;
    let mut h = blake3::Hasher::new();
    for (rel, text) in FILES {
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(text.as_bytes());
        h.update(&[0]);
    }
    let hash = h.finalize().to_hex();
    Ok(base.join("stateful-ci").join(format!(
        "emulator-{}-{}",
        env!("CARGO_PKG_VERSION"),
        &hash[..12]
    )))
}

/// The emulator's folder, ready to run with `node`: the override, or this
/// binary's copy in the cache (unpacked and npm-installed on first use;
/// `progress` says so, as it takes a minute).
pub fn prepare(node: &Node, progress: &dyn Fn(&str)) -> Result<PathBuf, Error> {
    if let Some(d) = std::env::var_os(EMULATOR_DIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(d);
        if !dir.join("src/cli.js").is_file() || !dir.join("node_modules/miniflare").is_dir() {
            return Err(Error::user(
                format!(
                    "{EMULATOR_DIR_ENV}={} is not a prepared emulator (src/cli.js and node_modules/miniflare)",
                    dir.display()
                ),
                format!(
                    "run `bash scripts/setup.sh emulator` in that clone, or unset {EMULATOR_DIR_ENV} to use the emulator inside this binary"
                ),
            ));
        }
        return Ok(dir);
    }
    let dir = cache_dir()?;
    if dir.join(READY).is_file() {
        return Ok(dir);
    }
    progress(&format!(
        "first run: unpacking the local Cloudflare emulator into {} and installing its npm packages (miniflare, ajv) with Node {}",
        dir.display(),
        node.version
    ));
    let parent = dir.parent().expect("a named folder");
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::user(
            format!("stateful-ci dev: cannot {what} {}: {e}", p.display()),
            "check that the cache folder is writable (or set XDG_CACHE_HOME)",
        )
    };
    std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        dir.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    for (rel, text) in FILES {
        let p = tmp.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| io("create", &tmp, e))?;
        std::fs::write(&p, text).map_err(|e| io("write", &p, e))?;
    }
    npm_install(node, &tmp)?;
    std::fs::write(tmp.join(READY), env!("CARGO_PKG_VERSION")).map_err(|e| io("write", &tmp, e))?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another `dev` finished first: use its copy.
        Err(_) if dir.join(READY).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(io("move into place", &dir, e)),
    }
    Ok(dir)
}

/// `npm install` in `dir` with `node`'s npm (next to it, else on PATH),
/// with `node` first on PATH so npm and the packages' checks see it.
fn npm_install(node: &Node, dir: &Path) -> Result<(), Error> {
    let node_dir = node.bin.parent().unwrap_or(Path::new("."));
    let npm = [node_dir.join("npm"), node_dir.join("npm.cmd")]
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| on_path("npm"))
        .ok_or_else(|| {
            Error::user(
                format!(
                    "stateful-ci dev needs npm to install the emulator's packages once; there is none next to {} or on PATH",
                    node.bin.display()
                ),
                "install npm (it comes with Node.js) and run `stateful-ci dev` again",
            )
        })?;
    let mut path = vec![node_dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&p));
    }
    let out = Command::new(&npm)
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-package-lock",
            "--omit=dev",
        ])
        .current_dir(dir)
        .env("PATH", std::env::join_paths(path).unwrap_or_default())
        .output()
        .map_err(|e| {
            Error::user(
                format!("stateful-ci dev: cannot run {}: {e}", npm.display()),
                "install npm (it comes with Node.js) and run `stateful-ci dev` again",
            )
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let _ = std::fs::remove_dir_all(dir);
        return Err(Error::user(
            format!(
                "stateful-ci dev: `npm install` of the emulator's packages failed: {}",
                tail.join(" | ")
            ),
            "check that npm can reach its registry (proxy, .npmrc), then run `stateful-ci dev` again",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compared() {
        assert_eq!(parse_version("v22.12.0"), Some((22, 12)));
        assert!(parse_version("v20.20.2").unwrap() < NODE_MIN);
        assert!(parse_version("v24.1.0").unwrap() >= NODE_MIN);
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn the_embedded_emulator_is_complete() {
        let names: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"src/cli.js"));
        assert!(names.contains(&"contract/cloudflare-subset.openapi.json"));
        // Every module the emulator imports by relative path is embedded.
        for (name, text) in FILES.iter().filter(|(n, _)| n.ends_with(".js")) {
            for line in text.lines().filter(|l| l.contains("from \"./")) {
                let m = line
                    .split("from \"./")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                assert!(
                    names.contains(&format!("src/{m}").as_str()),
                    "{name} imports {m}"
                );
            }
        }
        assert!(cache_dir().unwrap().to_string_lossy().contains("emulator-"));
    }
}
