//! Project detection from a listing of the repository root (file names) and
//! the text of a few small manifests. Pure: the caller reads the disk.

use std::collections::BTreeMap;

/// What init looked at: the names of the entries at the repository root and
/// the contents of the manifests it reads (`package.json`, `pyproject.toml`,
/// `requirements.txt`), by name.
#[derive(Debug, Clone, Default)]
pub struct ProjectFiles {
    pub names: Vec<String>,
    pub contents: BTreeMap<String, String>,
}

/// The manifests whose text detection reads, when present.
pub const READ_FILES: &[&str] = &["package.json", "pyproject.toml", "requirements.txt"];

impl ProjectFiles {
    pub fn from_names(names: &[&str]) -> Self {
        ProjectFiles {
            names: names.iter().map(|s| s.to_string()).collect(),
            contents: BTreeMap::new(),
        }
    }

    pub fn with(mut self, name: &str, text: &str) -> Self {
        if !self.has(name) {
            self.names.push(name.to_string());
        }
        self.contents.insert(name.to_string(), text.to_string());
        self
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    fn text(&self, name: &str) -> &str {
        self.contents.get(name).map(String::as_str).unwrap_or("")
    }
}

/// The JavaScript package manager, from the lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePm {
    Npm,
    Pnpm,
    /// Yarn 2+ (a `.yarnrc.yml` is present).
    YarnBerry,
    YarnClassic,
    Bun,
}

impl NodePm {
    pub fn name(self) -> &'static str {
        match self {
            NodePm::Npm => "npm",
            NodePm::Pnpm => "pnpm",
            NodePm::YarnBerry | NodePm::YarnClassic => "yarn",
            NodePm::Bun => "bun",
        }
    }
}

/// The Python installer, from the lock file (or `[tool.poetry]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyManager {
    /// `requirements.txt` or a plain `pyproject.toml`, into `.venv`.
    Pip,
    /// `uv.lock`.
    Uv,
    /// `poetry.lock`, or `[tool.poetry]` in pyproject.toml.
    Poetry,
}

/// One kind of project found, with what the workflow needs to build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    Node {
        pm: NodePm,
        /// A lock file was found (so the install can be frozen).
        locked: bool,
        /// Scripts in package.json, among `build`, `test`.
        scripts: Vec<String>,
    },
    Rust {
        locked: bool,
    },
    Python {
        manager: PyManager,
        requirements: bool,
        pyproject: bool,
        pytest: bool,
    },
    Go,
    Gradle {
        wrapper: bool,
    },
    Maven {
        wrapper: bool,
    },
}

impl Detected {
    /// The preset of `runtime::config::PRESETS` for this kind.
    pub fn preset(&self) -> &'static str {
        match self {
            Detected::Node { .. } => "node",
            Detected::Rust { .. } => "rust",
            Detected::Python { .. } => "python",
            Detected::Go => "go",
            Detected::Gradle { .. } => "gradle",
            Detected::Maven { .. } => "maven",
        }
    }

    /// What was seen, for the user: e.g. "package.json with pnpm-lock.yaml".
    pub fn describe(&self) -> String {
        match self {
            Detected::Node { pm, locked, .. } => {
                let lock = match (pm, locked) {
                    (_, false) => "no lock file".to_string(),
                    (NodePm::Npm, true) => "package-lock.json".into(),
                    (NodePm::Pnpm, true) => "pnpm-lock.yaml".into(),
                    (NodePm::YarnBerry | NodePm::YarnClassic, true) => "yarn.lock".into(),
                    (NodePm::Bun, true) => "a bun lock file".into(),
                };
                let article = if *pm == NodePm::Npm { "an" } else { "a" };
                format!("{article} {} project (package.json with {lock})", pm.name())
            }
            Detected::Rust { .. } => "a Rust project (Cargo.toml)".into(),
            Detected::Python {
                manager,
                requirements,
                pyproject,
                ..
            } => {
                let mut what = Vec::new();
                match manager {
                    PyManager::Uv => what.push("uv.lock"),
                    PyManager::Poetry => what.push("poetry"),
                    PyManager::Pip => {}
                }
                if *pyproject {
                    what.push("pyproject.toml");
                }
                if *requirements {
                    what.push("requirements.txt");
                }
                format!("a Python project ({})", what.join(", "))
            }
            Detected::Go => "a Go module (go.mod)".into(),
            Detected::Gradle { .. } => "a Gradle build".into(),
            Detected::Maven { .. } => "a Maven build (pom.xml)".into(),
        }
    }

    /// A default for a preset chosen by hand, where detection found nothing
    /// of that kind.
    pub fn default_for(preset: &str) -> Option<Detected> {
        Some(match preset {
            "node" => Detected::Node {
                pm: NodePm::Npm,
                locked: false,
                scripts: Vec::new(),
            },
            "rust" => Detected::Rust { locked: false },
            "python" => Detected::Python {
                manager: PyManager::Pip,
                requirements: false,
                pyproject: false,
                pytest: false,
            },
            "go" => Detected::Go,
            "gradle" => Detected::Gradle { wrapper: false },
            "maven" => Detected::Maven { wrapper: false },
            _ => return None,
        })
    }
}

/// Every kind of project found at the root, most likely first.
pub fn detect(files: &ProjectFiles) -> Vec<Detected> {
    let mut out = Vec::new();
    if files.has("package.json") {
        let (pm, locked) = if files.has("pnpm-lock.yaml") {
            (NodePm::Pnpm, true)
        } else if files.has("bun.lock") || files.has("bun.lockb") {
            (NodePm::Bun, true)
        } else if files.has("yarn.lock") {
            let berry = files.has(".yarnrc.yml");
            (
                if berry {
                    NodePm::YarnBerry
                } else {
                    NodePm::YarnClassic
                },
                true,
            )
        } else if files.has("package-lock.json") || files.has("npm-shrinkwrap.json") {
            (NodePm::Npm, true)
        } else {
            (NodePm::Npm, false)
        };
        out.push(Detected::Node {
            pm,
            locked,
            scripts: package_scripts(files.text("package.json")),
        });
    }
    if files.has("Cargo.toml") {
        out.push(Detected::Rust {
            locked: files.has("Cargo.lock"),
        });
    }
    let pyproject = files.has("pyproject.toml");
    let requirements = files.has("requirements.txt");
    if pyproject || requirements || files.has("setup.py") {
        let pytest = ["pyproject.toml", "requirements.txt"]
            .iter()
            .any(|f| files.text(f).contains("pytest"))
            || files.has("pytest.ini")
            || files.has("conftest.py");
        let manager = if files.has("uv.lock") {
            PyManager::Uv
        } else if files.has("poetry.lock") || files.text("pyproject.toml").contains("[tool.poetry")
        {
            PyManager::Poetry
        } else {
            PyManager::Pip
        };
        out.push(Detected::Python {
            manager,
            requirements,
            pyproject,
            pytest,
        });
    }
    if files.has("go.mod") {
        out.push(Detected::Go);
    }
    if [
        "build.gradle",
        "build.gradle.kts",
        "settings.gradle",
        "settings.gradle.kts",
    ]
    .iter()
    .any(|f| files.has(f))
    {
        out.push(Detected::Gradle {
            wrapper: files.has("gradlew"),
        });
    }
    if files.has("pom.xml") {
        out.push(Detected::Maven {
            wrapper: files.has("mvnw"),
        });
    }
    out
}

/// The `build` and `test` scripts that package.json defines. A `test` that
/// is npm's placeholder (`echo "Error: no test specified" && exit 1`) does
/// not count. Malformed JSON gives none: the workflow then gets placeholders.
fn package_scripts(text: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let Some(scripts) = v.get("scripts").and_then(|s| s.as_object()) else {
        return Vec::new();
    };
    ["build", "test"]
        .iter()
        .filter(|name| {
            scripts
                .get(**name)
                .and_then(|s| s.as_str())
                .is_some_and(|s| !s.contains("no test specified"))
        })
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_package_managers_come_from_the_lock_file() {
        let cases: &[(&[&str], NodePm, bool)] = &[
            (&["package.json"], NodePm::Npm, false),
            (&["package.json", "package-lock.json"], NodePm::Npm, true),
            (&["package.json", "pnpm-lock.yaml"], NodePm::Pnpm, true),
            (&["package.json", "yarn.lock"], NodePm::YarnClassic, true),
            (
                &["package.json", "yarn.lock", ".yarnrc.yml"],
                NodePm::YarnBerry,
                true,
            ),
            (&["package.json", "bun.lockb"], NodePm::Bun, true),
            (&["package.json", "bun.lock"], NodePm::Bun, true),
        ];
        for (names, want_pm, want_locked) in cases {
            let found = detect(&ProjectFiles::from_names(names));
            match &found[..] {
                [Detected::Node { pm, locked, .. }] => {
                    assert_eq!((*pm, *locked), (*want_pm, *want_locked), "{names:?}")
                }
                other => panic!("{names:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn package_scripts_are_read_and_npm_placeholder_is_not_a_test() {
        let f = ProjectFiles::default().with(
            "package.json",
            r#"{"scripts":{"build":"tsc","test":"vitest","lint":"eslint ."}}"#,
        );
        assert!(
            matches!(&detect(&f)[0], Detected::Node { scripts, .. } if scripts == &["build", "test"])
        );
        let f = ProjectFiles::default().with(
            "package.json",
            r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#,
        );
        assert!(matches!(&detect(&f)[0], Detected::Node { scripts, .. } if scripts.is_empty()));
        let f = ProjectFiles::default().with("package.json", "{not json");
        assert!(matches!(&detect(&f)[0], Detected::Node { scripts, .. } if scripts.is_empty()));
    }

    #[test]
    fn other_ecosystems_and_their_order() {
        let f = ProjectFiles::from_names(&[
            "Cargo.toml",
            "Cargo.lock",
            "go.mod",
            "pom.xml",
            "mvnw",
            "build.gradle.kts",
            "README.md",
        ])
        .with("requirements.txt", "pytest==8\nrequests\n");
        let presets: Vec<_> = detect(&f).iter().map(Detected::preset).collect();
        assert_eq!(presets, ["rust", "python", "go", "gradle", "maven"]);
        let found = detect(&f);
        assert_eq!(found[0], Detected::Rust { locked: true });
        assert_eq!(
            found[1],
            Detected::Python {
                manager: PyManager::Pip,
                requirements: true,
                pyproject: false,
                pytest: true
            }
        );
        assert_eq!(found[3], Detected::Gradle { wrapper: false });
        assert_eq!(found[4], Detected::Maven { wrapper: true });
        assert!(detect(&ProjectFiles::from_names(&["README.md", "src"])).is_empty());
    }

    #[test]
    fn python_installers_come_from_the_lock_file() {
        let manager = |f: ProjectFiles| match &detect(&f)[..] {
            [Detected::Python { manager, .. }] => *manager,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            manager(ProjectFiles::from_names(&["requirements.txt"])),
            PyManager::Pip
        );
        assert_eq!(
            manager(ProjectFiles::from_names(&["pyproject.toml", "uv.lock"])),
            PyManager::Uv
        );
        assert_eq!(
            manager(ProjectFiles::from_names(&["pyproject.toml", "poetry.lock"])),
            PyManager::Poetry
        );
        assert_eq!(
            manager(
                ProjectFiles::default().with("pyproject.toml", "[tool.poetry]\nname = \"x\"\n")
            ),
            PyManager::Poetry
        );
        assert_eq!(
            manager(ProjectFiles::default().with("pyproject.toml", "[project]\nname = \"x\"\n")),
            PyManager::Pip
        );
    }

    #[test]
    fn every_detected_preset_exists_in_the_runtime() {
        for p in stateful_ci_runtime::config::preset_names() {
            let d = Detected::default_for(p).expect("a default for every preset");
            assert_eq!(d.preset(), p);
            stateful_ci_runtime::config::preset_paths(d.preset()).unwrap();
        }
    }
}
