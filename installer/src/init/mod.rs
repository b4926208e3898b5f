//! `stateful-ci init`: sets a repository up for stateful-ci. It writes
//! `stateful-ci.toml` (what to keep) and a workflow (checkout, restore, the
//! project's own commands, save), and can record the Cloudflare account and
//! keep the API token in the OS keyring for `deploy`.
//!
//! What it owns: project detection ([`detect`]), the config text and its
//! in-place edits ([`config`]), the generated workflow and its drift marker
//! ([`workflow`]), the prompts ([`prompt`]) and the account listing and
//! keyring ([`cloud`]). The pure parts take text and return text; disk,
//! terminal and network are touched only in [`run`], [`prompt`] and
//! [`cloud`].
//!
//! What it must not do: overwrite a workflow the user changed without being
//! asked to (`--force`, or a yes on the terminal), rewrite config keys it
//! was not asked about, print or store a token anywhere but the keyring, or
//! provision anything (that is `deploy`).

pub mod cloud;
pub mod config;
pub mod detect;
pub mod prompt;
pub mod workflow;

use std::path::{Path, PathBuf};

use crate::Error;
use stateful_ci_runtime::config::{
    CONFIG_FILE, LEGACY_CONFIG_FILE, parse_toml, preset_names, preset_paths,
};

pub use config::{ConfigChanges, CurrentConfig};
pub use detect::{Detected, ProjectFiles};
pub use workflow::Existing;

/// The default workflow path.
pub const WORKFLOW_FILE: &str = ".github/workflows/stateful-ci.yml";

/// Answers given on the command line (empty lists: not given).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub preset: Option<String>,
    pub paths: Vec<String>,
    pub excludes: Vec<String>,
    pub account_id: Option<String>,
}

/// How init runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ask on the terminal.
    Interactive,
    /// Take every default (`--yes`).
    Defaults,
    /// Write nothing; report drift (`--check`).
    Check,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub root: PathBuf,
    pub request: Request,
    /// The workflow's path, relative to the root.
    pub workflow: String,
    pub mode: Mode,
    /// Replace a workflow the user changed.
    pub force: bool,
    /// The generator's version (the binary's).
    pub version: String,
}

/// What init found on disk.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub files: ProjectFiles,
    pub config: Option<String>,
    pub workflow: Option<String>,
    pub branch: String,
    /// `config` was converted from the original project's
    /// `stateful-ci.json` (no `stateful-ci.toml` yet): the keys carried over.
    pub converted_from_json: Option<Vec<&'static str>>,
}

/// What init would write.
#[derive(Debug, Clone)]
pub struct Plan {
    pub detected: Vec<Detected>,
    pub config: String,
    pub workflow: String,
    pub workflow_state: Existing,
}

/// The non-interactive answers: the flags, else what the existing file
/// says (kept as is), else what detection found.
pub fn default_changes(inputs: &Inputs, req: &Request) -> Result<ConfigChanges, Error> {
    let detected = detect::detect(&inputs.files);
    let preset = match &req.preset {
        Some(p) => {
            preset_paths(p).map_err(|e| e.in_file("--preset"))?;
            Some(Some(p.clone()))
        }
        None if inputs.config.is_some() || !req.paths.is_empty() => None,
        None => match detected.first() {
            Some(d) => Some(Some(d.preset().to_string())),
            None => {
                return Err(Error::user(
                    "init cannot tell what kind of project this is (no package.json, Cargo.toml, pyproject.toml, requirements.txt, go.mod, build.gradle or pom.xml at the repository root)",
                    format!(
                        "pass --preset NAME (one of: {}) or --path P for each directory to keep",
                        preset_names().join(", ")
                    ),
                ));
            }
        },
    };
    Ok(ConfigChanges {
        preset,
        paths: (!req.paths.is_empty()).then(|| req.paths.clone()),
        exclude: (!req.excludes.is_empty()).then(|| req.excludes.clone()),
        account_id: req.account_id.clone(),
    })
}

/// The files init would write for these answers.
pub fn plan(
    inputs: &Inputs,
    changes: &ConfigChanges,
    workflow_path: &str,
    version: &str,
) -> Result<Plan, Error> {
    let detected = detect::detect(&inputs.files);
    let config = config::apply(inputs.config.as_deref(), changes)?;
    let parsed = parse_toml(&config).map_err(|e| e.in_file(CONFIG_FILE))?;
    let fallback;
    let kind = match &parsed.preset {
        Some(p) => match detected.iter().find(|d| d.preset() == p) {
            Some(d) => Some(d),
            None => {
                fallback = Detected::default_for(p);
                fallback.as_ref()
            }
        },
        None => detected.first(),
    };
    let workflow = workflow::generate(&workflow::WorkflowSpec {
        kind,
        branch: &inputs.branch,
        path: workflow_path,
        version,
    });
    let workflow_state = workflow::classify(inputs.workflow.as_deref(), &workflow);
    Ok(Plan {
        detected,
        config,
        workflow,
        workflow_state,
    })
}

/// A unified diff from `old` (absent: an empty file) to `new`, headed by
/// `path`; empty when they are equal.
pub fn unified_diff(path: &str, old: Option<&str>, new: &str) -> String {
    let old = old.unwrap_or("");
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileResult {
    Created,
    Updated,
    Unchanged,
    /// The user's changed workflow, left alone.
    Kept,
    /// `--check`: differs from what init would write.
    Drift,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub config: FileResult,
    pub workflow: FileResult,
    pub workflow_path: String,
    /// Unified diffs (`--check`), one per drifting file.
    pub diffs: Vec<String>,
    /// Things the user should know (keyring result, skipped steps).
    pub notes: Vec<String>,
    /// The account recorded, if any.
    pub account_id: Option<String>,
}

/// Read what init looks at.
pub fn read_inputs(root: &Path, workflow: &str) -> Result<Inputs, Error> {
    let mut files = ProjectFiles::default();
    let entries = std::fs::read_dir(root).map_err(|e| {
        Error::user(
            format!("cannot list {}: {e}", root.display()),
            "run init from the repository root",
        )
    })?;
    for entry in entries.flatten() {
        files
            .names
            .push(entry.file_name().to_string_lossy().into_owned());
    }
    files.names.sort();
    for name in detect::READ_FILES {
        let p = root.join(name);
        if let Ok(meta) = std::fs::metadata(&p) {
            if meta.is_file() && meta.len() <= 1 << 20 {
                if let Ok(text) = std::fs::read_to_string(&p) {
                    files.contents.insert(name.to_string(), text);
                }
            }
        }
    }
    let mut config = read_optional(&root.join(CONFIG_FILE))?;
    let mut converted_from_json = None;
    if config.is_none() {
        if let Some(json) = read_optional(&root.join(LEGACY_CONFIG_FILE))? {
            let (text, kept) = config::from_json(&json)?;
            config = Some(text);
            converted_from_json = Some(kept);
        }
    }
    Ok(Inputs {
        files,
        config,
        workflow: read_optional(&root.join(workflow))?,
        branch: default_branch(root),
        converted_from_json,
    })
}

fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::user(
            format!("cannot read {}: {e}", path.display()),
            "check the file's permissions and that it is UTF-8 text",
        )),
    }
}

/// The branch whose pushes the workflow runs on: the remote's default
/// branch, else the current branch, else `main`.
fn default_branch(root: &Path) -> String {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    git(&["symbolic-ref", "--short", "refs/remotes/origin/HEAD"])
        .and_then(|s| s.strip_prefix("origin/").map(String::from))
        .or_else(|| git(&["symbolic-ref", "--short", "HEAD"]))
        .unwrap_or_else(|| "main".into())
}

/// Validate `--workflow`: a relative path inside the repository ending in
/// `.yml` or `.yaml`.
pub fn check_workflow_path(p: &str) -> Result<(), Error> {
    let path = Path::new(p);
    if path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
        return Err(Error::user(
            format!("--workflow {p:?} is not inside the repository"),
            "give a path relative to the repository root, e.g. .github/workflows/stateful-ci.yml",
        ));
    }
    if !(p.ends_with(".yml") || p.ends_with(".yaml")) {
        return Err(Error::user(
            format!("--workflow {p:?} does not end in .yml or .yaml"),
            "name a workflow file, e.g. .github/workflows/stateful-ci.yml",
        ));
    }
    Ok(())
}

/// Run init. `ui` is used in interactive mode only.
pub fn run(opts: &Options, ui: &mut dyn prompt::Ui) -> Result<Outcome, Error> {
    check_workflow_path(&opts.workflow)?;
    let inputs = read_inputs(&opts.root, &opts.workflow)?;
    let mut notes = Vec::new();
    let (changes, token) = match opts.mode {
        Mode::Interactive => {
            let answers = prompt::ask(&inputs, &opts.request, ui)?;
            (answers.changes, answers.store_token)
        }
        Mode::Defaults | Mode::Check => (default_changes(&inputs, &opts.request)?, None),
    };
    let plan = plan(&inputs, &changes, &opts.workflow, &opts.version)?;
    let account_id = config::current(&plan.config)
        .ok()
        .and_then(|c| c.account_id);

    if opts.mode == Mode::Check {
        let mut diffs = Vec::new();
        let on_disk = match inputs.converted_from_json {
            Some(_) => None,
            None => inputs.config.as_deref(),
        };
        let config_diff = unified_diff(CONFIG_FILE, on_disk, &plan.config);
        let workflow_diff =
            unified_diff(&opts.workflow, inputs.workflow.as_deref(), &plan.workflow);
        let status = |d: &str| {
            if d.is_empty() {
                FileResult::Unchanged
            } else {
                FileResult::Drift
            }
        };
        let (config_state, workflow_state) = (status(&config_diff), status(&workflow_diff));
        diffs.extend(
            [config_diff, workflow_diff]
                .into_iter()
                .filter(|d| !d.is_empty()),
        );
        return Ok(Outcome {
            config: config_state,
            workflow: workflow_state,
            workflow_path: opts.workflow.clone(),
            diffs,
            notes,
            account_id,
        });
    }

    let write_workflow = match plan.workflow_state {
        Existing::Missing | Existing::Untouched => true,
        Existing::Same => false,
        Existing::Changed if opts.force => true,
        Existing::Changed if opts.mode == Mode::Interactive => {
            let diff = unified_diff(&opts.workflow, inputs.workflow.as_deref(), &plan.workflow);
            ui.confirm_overwrite(&opts.workflow, &diff)?
        }
        Existing::Changed => {
            return Err(Error::user(
                format!(
                    "{} was changed since init wrote it (or was not written by init); init did not overwrite it and wrote nothing",
                    opts.workflow
                ),
                "pass --force to replace it with the generated workflow, or run `stateful-ci init --check` to see the difference",
            ));
        }
    };

    let config_result = match &inputs.config {
        None => FileResult::Created,
        Some(_) if inputs.converted_from_json.is_some() => FileResult::Created,
        Some(old) if *old == plan.config => FileResult::Unchanged,
        Some(_) => FileResult::Updated,
    };
    if config_result != FileResult::Unchanged {
        write_file(&opts.root.join(CONFIG_FILE), &plan.config)?;
    }
    if let Some(kept) = &inputs.converted_from_json {
        let kept = if kept.is_empty() {
            "no keys".to_string()
        } else {
            kept.join(", ")
        };
        notes.push(format!(
            "converted {LEGACY_CONFIG_FILE} into {CONFIG_FILE} (kept: {kept}); stateful-ci now reads only {CONFIG_FILE}, so remove the old file: git rm {LEGACY_CONFIG_FILE}"
        ));
    }
    let workflow_result = if write_workflow {
        write_file(&opts.root.join(&opts.workflow), &plan.workflow)?;
        if inputs.workflow.is_none() {
            FileResult::Created
        } else {
            FileResult::Updated
        }
    } else if plan.workflow_state == Existing::Same {
        FileResult::Unchanged
    } else {
        notes.push(format!(
            "kept your changed {}; `stateful-ci init --check` shows how it differs from the generated one",
            opts.workflow
        ));
        FileResult::Kept
    };

    if let Some(store) = token {
        notes.push(cloud::store_token(&store.account_id, &store.token));
    }
    Ok(Outcome {
        config: config_result,
        workflow: workflow_result,
        workflow_path: opts.workflow.clone(),
        diffs: Vec::new(),
        notes,
        account_id,
    })
}

/// Write through a temporary file in the same directory, so a reader never
/// sees half a file.
fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let fail = |e: std::io::Error| {
        Error::user(
            format!("cannot write {}: {e}", path.display()),
            "check that the directory is writable",
        )
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.init-{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(names: &[&str], config: Option<&str>) -> Inputs {
        Inputs {
            files: ProjectFiles::from_names(names),
            config: config.map(String::from),
            workflow: None,
            branch: "main".into(),
            converted_from_json: None,
        }
    }

    #[test]
    fn defaults_come_from_flags_then_the_file_then_detection() {
        let i = inputs(&["Cargo.toml"], None);
        let c = default_changes(&i, &Request::default()).unwrap();
        assert_eq!(c.preset, Some(Some("rust".into())));
        let c = default_changes(
            &i,
            &Request {
                preset: Some("go".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.preset, Some(Some("go".into())));
        // An existing file keeps its preset; only the flags change things.
        let i = inputs(&["Cargo.toml"], Some("preset = \"node\"\n"));
        let c = default_changes(
            &i,
            &Request {
                excludes: vec!["x".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.preset, None);
        assert_eq!(c.exclude, Some(vec!["x".into()]));
        let p = plan(&i, &c, WORKFLOW_FILE, "0.1.0").unwrap();
        assert!(p.config.starts_with("preset = \"node\"\n"));
        assert!(p.workflow.contains("npm install"), "{}", p.workflow);
    }

    #[test]
    fn nothing_detected_and_an_unknown_preset_are_errors_with_the_fix() {
        let err = default_changes(&inputs(&["README.md"], None), &Request::default()).unwrap_err();
        assert!(err.hint.unwrap().contains("--preset NAME"));
        let err = default_changes(
            &inputs(&[], None),
            &Request {
                preset: Some("pyhton".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.message.contains("unknown preset \"pyhton\""), "{err}");
        assert!(err.hint.unwrap().contains("did you mean \"python\""));
    }

    #[test]
    fn paths_alone_need_no_detection() {
        let i = inputs(&[], None);
        let c = default_changes(
            &i,
            &Request {
                paths: vec!["build".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let p = plan(&i, &c, WORKFLOW_FILE, "0.1.0").unwrap();
        assert_eq!(parse_toml(&p.config).unwrap().paths, ["build"]);
        assert!(p.workflow.contains("fill in the install step"));
    }

    #[test]
    fn diffs_are_unified_and_empty_when_equal() {
        assert_eq!(unified_diff("f", Some("a\n"), "a\n"), "");
        let d = unified_diff("f.yml", Some("a\nb\nc\n"), "a\nB\nc\n");
        assert!(d.starts_with("--- a/f.yml\n+++ b/f.yml\n@@"), "{d}");
        assert!(d.contains("\n-b\n+B\n"), "{d}");
        assert!(unified_diff("new", None, "x\n").contains("+x"));
    }

    #[test]
    fn workflow_paths_are_checked() {
        assert!(check_workflow_path(WORKFLOW_FILE).is_ok());
        assert!(check_workflow_path("/etc/x.yml").is_err());
        assert!(check_workflow_path("../x.yml").is_err());
        assert!(check_workflow_path("ci.txt").is_err());
    }
}
