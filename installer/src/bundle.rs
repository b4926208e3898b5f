//! The Worker bundle this binary deploys: the modules, the D1 migrations
//! and the Durable Object migration steps, with the version they make up
//! (crate version + bundle hash).
//!
//! Embedded at build time by `build.rs`; a release build
//! (`STATEFUL_CI_RELEASE=1`) fails without the bundle, an everyday build
//! only warns (see `build_gate.rs`). The same build stamps the commit of this
//! project's GitHub Action that `init` pins ([`ACTION_USES`]).
//! `STATEFUL_CI_BUNDLE_DIR` replaces
//! it with a directory (for tests and development): every `*.js` and
//! `*.wasm` file in it is a module (`index.js` is the main module),
//! `migrations/*.sql` are the D1 migrations, and `do-migrations.json`
//! (`[{"tag": "v1", "new_sqlite_classes": ["..."]}]`) the Durable Object
//! steps.

use std::path::Path;

use crate::Error;
use serde::Deserialize;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/bundle.rs"));
}

pub const BUNDLE_DIR_ENV: &str = "STATEFUL_CI_BUNDLE_DIR";
pub const MAIN_MODULE: &str = "index.js";
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `uses:` value `init` writes for this project's action: in a release
/// build `stateful-ci/stateful-ci@<40-hex commit> # vX.Y.Z` (the commit the
/// release was built from, set through `STATEFUL_CI_ACTION_SHA`); in a
/// development build the version tag `stateful-ci/stateful-ci@vX.Y.Z`.
pub const ACTION_USES: &str = embedded::ACTION_USES;
/// The commit in [`ACTION_USES`], when this build was stamped with one.
pub const ACTION_SHA: Option<&str> = embedded::ACTION_SHA;

#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// One Durable Object migration step (tags are applied in order).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DoStep {
    pub tag: String,
    #[serde(default)]
    pub new_sqlite_classes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub modules: Vec<Module>,
    /// `(file name, SQL)`, in order.
    pub migrations: Vec<(String, String)>,
    pub do_steps: Vec<DoStep>,
    /// `X.Y.Z+<12 hex of the bundle hash>`.
    pub version: String,
}

/// The Durable Object class the Worker exports, created by migration `v1`.
pub const COORDINATOR_CLASS: &str = "ScopeCoordinator";

fn builtin_do_steps() -> Vec<DoStep> {
    vec![DoStep {
        tag: "v1".into(),
        new_sqlite_classes: vec![COORDINATOR_CLASS.into()],
    }]
}

impl Bundle {
    /// The override directory if set, else the embedded bundle.
    pub fn load() -> Result<Bundle, Error> {
        if let Some(dir) = std::env::var_os(BUNDLE_DIR_ENV) {
            return Bundle::from_dir(Path::new(&dir));
        }
        let Some((js, wasm)) = embedded::BUNDLE else {
            return Err(Error::user(
                "this stateful-ci binary was built without the Worker bundle (worker-template/dist was missing at build time)",
                "run scripts/setup-wasm.sh and scripts/build-worker.sh, then build stateful-ci again",
            ));
        };
        let modules = vec![
            Module {
                name: MAIN_MODULE.into(),
                content_type: "application/javascript+module",
                bytes: js.to_vec(),
            },
            Module {
                name: "index_bg.wasm".into(),
                content_type: "application/wasm",
                bytes: wasm.to_vec(),
            },
        ];
        let migrations = embedded::MIGRATIONS
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        Ok(Bundle::assemble(modules, migrations, builtin_do_steps()))
    }

    pub fn from_dir(dir: &Path) -> Result<Bundle, Error> {
        let read_err = |p: &Path, e: std::io::Error| {
            Error::user(
                format!("{BUNDLE_DIR_ENV}: cannot read {}: {e}", p.display()),
                format!(
                    "point {BUNDLE_DIR_ENV} at a directory holding index.js, its wasm and migrations/, or unset it"
                ),
            )
        };
        let mut modules = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| read_err(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let content_type = if name.ends_with(".js") || name.ends_with(".mjs") {
                "application/javascript+module"
            } else if name.ends_with(".wasm") {
                "application/wasm"
            } else {
                continue;
            };
            let bytes = std::fs::read(&p).map_err(|e| read_err(&p, e))?;
            modules.push(Module {
                name,
                content_type,
                bytes,
            });
        }
        if !modules.iter().any(|m| m.name == MAIN_MODULE) {
            return Err(Error::user(
                format!("{BUNDLE_DIR_ENV}: {} has no {MAIN_MODULE}", dir.display()),
                "build the bundle with scripts/build-worker.sh and point the variable at worker-template/dist",
            ));
        }
        // The main module goes first.
        modules.sort_by_key(|m| m.name != MAIN_MODULE);
        let mut migrations = Vec::new();
        let mdir = dir.join("migrations");
        if mdir.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(&mdir)
                .map_err(|e| read_err(&mdir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "sql"))
                .collect();
            files.sort();
            for f in files {
                let sql = std::fs::read_to_string(&f).map_err(|e| read_err(&f, e))?;
                migrations.push((f.file_name().unwrap().to_string_lossy().into_owned(), sql));
            }
        }
        let dof = dir.join("do-migrations.json");
        let do_steps = if dof.is_file() {
            let text = std::fs::read_to_string(&dof).map_err(|e| read_err(&dof, e))?;
            serde_json::from_str(&text).map_err(|e| {
                Error::user(
                    format!("{}: not a list of Durable Object steps: {e}", dof.display()),
                    r#"write [{"tag": "v1", "new_sqlite_classes": ["ScopeCoordinator"]}, ...]"#,
                )
            })?
        } else {
            builtin_do_steps()
        };
        Ok(Bundle::assemble(modules, migrations, do_steps))
    }

    fn assemble(
        modules: Vec<Module>,
        migrations: Vec<(String, String)>,
        do_steps: Vec<DoStep>,
    ) -> Bundle {
        let mut h = blake3::Hasher::new();
        for m in &modules {
            h.update(m.name.as_bytes());
            h.update(&(m.bytes.len() as u64).to_le_bytes());
            h.update(&m.bytes);
        }
        for (n, s) in &migrations {
            h.update(n.as_bytes());
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        for s in &do_steps {
            h.update(s.tag.as_bytes());
            for c in &s.new_sqlite_classes {
                h.update(c.as_bytes());
            }
        }
        let hash = h.finalize().to_hex();
        Bundle {
            modules,
            migrations,
            do_steps,
            version: format!("{CRATE_VERSION}+{}", &hash[..12]),
        }
    }
}

/// The `X.Y.Z` part of a worker version, as numbers.
pub fn semver_of(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['+', '-']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

#[cfg(test)]
#[path = "../build_gate.rs"]
#[allow(dead_code)]
mod build_gate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_action_pin_is_a_full_commit_with_its_version_or_the_version_tag() {
        match ACTION_SHA {
            Some(sha) => {
                assert_eq!(sha.len(), 40, "{sha}");
                assert!(
                    sha.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                );
                assert_eq!(
                    ACTION_USES,
                    format!("stateful-ci/stateful-ci@{sha} # v{CRATE_VERSION}")
                );
            }
            None => assert_eq!(
                ACTION_USES,
                format!("stateful-ci/stateful-ci@v{CRATE_VERSION}")
            ),
        }
    }

    #[test]
    fn a_release_build_fails_without_the_bundle_or_the_commit() {
        use build_gate::decide;
        let sha = "0123456789abcdef0123456789abcdef01234567";
        // Everyday builds go on without the bundle.
        let g = decide(None, None, false, "1.2.3").unwrap();
        assert!(g.bundle_optional);
        assert_eq!(g.action_uses, "stateful-ci/stateful-ci@v1.2.3");
        assert!(decide(Some("0"), None, false, "1.2.3").is_ok());
        // A release without the bundle is an error naming the fix.
        let e = decide(Some("1"), Some(sha), false, "1.2.3").unwrap_err();
        assert!(
            e.contains("Worker bundle") && e.contains("scripts/build-worker.sh"),
            "{e}"
        );
        // ... and without the commit.
        let e = decide(Some("1"), None, true, "1.2.3").unwrap_err();
        assert!(e.contains("STATEFUL_CI_ACTION_SHA"), "{e}");
        // A complete release.
        let g = decide(Some("1"), Some(sha), true, "1.2.3").unwrap();
        assert!(!g.bundle_optional);
        assert_eq!(
            g.action_uses,
            format!("stateful-ci/stateful-ci@{sha} # v1.2.3")
        );
        // Bad values are named.
        assert!(
            decide(Some("yes"), None, true, "1")
                .unwrap_err()
                .contains("STATEFUL_CI_RELEASE=\"yes\"")
        );
        for bad in ["abc", &sha.to_uppercase(), &format!("{sha}0")] {
            assert!(
                decide(None, Some(bad), true, "1")
                    .unwrap_err()
                    .contains("40 lowercase hex")
            );
        }
    }

    #[test]
    fn versions_compare_by_their_numbers() {
        assert_eq!(semver_of("0.10.2+abc"), Some((0, 10, 2)));
        assert!(semver_of("0.10.2+abc") > semver_of("0.9.9+fff"));
        assert_eq!(semver_of("x"), None);
    }

    #[test]
    fn an_override_dir_needs_a_main_module() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("other.js"), "x").unwrap();
        let e = Bundle::from_dir(d.path()).unwrap_err();
        assert!(e.message.contains("no index.js"), "{}", e.message);
        std::fs::write(d.path().join("index.js"), "export default {}").unwrap();
        std::fs::create_dir(d.path().join("migrations")).unwrap();
        std::fs::write(d.path().join("migrations/0001_a.sql"), "SELECT 1;").unwrap();
        let b = Bundle::from_dir(d.path()).unwrap();
        assert_eq!(b.modules[0].name, "index.js");
        assert_eq!(b.migrations.len(), 1);
        assert_eq!(b.do_steps, builtin_do_steps());
        assert!(b.version.starts_with(CRATE_VERSION));
    }
}
