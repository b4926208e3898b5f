//! `stateful-ci init`: the command line of the installer's `init` (see
//! `installer/src/init/`). It picks the mode (terminal, `--yes`, `--check`),
//! runs it and prints what was written, the drift diffs (stdout) and the next
//! steps (stderr).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use stateful_ci_installer::init::{self, FileResult, Mode, Options, Request, prompt::Terminal};
use stateful_ci_runtime::Error;
use stateful_ci_runtime::config::CONFIG_FILE;

use crate::printer::Printer;

#[derive(Args, Clone, Debug)]
pub struct InitArgs {
    /// Take every default without asking (detected preset, no account).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Preset of paths to keep (node, rust, python, go, gradle, maven).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Path to keep besides the preset's (repeatable; sets `paths`).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<String>,
    /// Glob to leave out (repeatable; sets `exclude`).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Cloudflare account id, recorded for `deploy`.
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// Where to write the workflow, relative to the repository root.
    #[arg(long, value_name = "FILE", default_value = init::WORKFLOW_FILE)]
    pub workflow: String,
    /// Write nothing; exit 1 with a unified diff when the files differ from
    /// what init would write.
    #[arg(long, conflicts_with = "force")]
    pub check: bool,
    /// Replace a workflow that was changed since init wrote it.
    #[arg(long)]
    pub force: bool,
    /// Repository root (default: the current directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

pub fn run(args: &InitArgs, p: &Printer) -> Result<ExitCode, Error> {
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(|e| {
            Error::user(
                format!("cannot read the current directory: {e}"),
                "run init from the repository root",
            )
        })?,
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let mode = if args.check {
        Mode::Check
    } else if args.yes {
        Mode::Defaults
    } else if interactive {
        Mode::Interactive
    } else {
        return Err(Error::user(
            "init asks questions, but this is not an interactive terminal",
            "pass --yes to take the defaults (with --preset NAME, --path P, --exclude GLOB, --account-id ID to choose)",
        ));
    };
    let opts = Options {
        root,
        request: Request {
            preset: args.preset.clone(),
            paths: args.paths.clone(),
            excludes: args.excludes.clone(),
            account_id: args.account_id.clone(),
        },
        workflow: args.workflow.clone(),
        mode,
        force: args.force,
        version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let color = interactive && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut ui = Terminal::new(color);
    let out = init::run(&opts, &mut ui)?;

    if mode == Mode::Check {
        for d in &out.diffs {
            print!("{d}");
        }
        let drift: Vec<&str> = [
            (out.config, CONFIG_FILE),
            (out.workflow, out.workflow_path.as_str()),
        ]
        .iter()
        .filter(|(r, _)| *r == FileResult::Drift)
        .map(|(_, f)| *f)
        .collect();
        if drift.is_empty() {
            p.summary("init --check: stateful-ci.toml and the workflow are what init would write");
            return Ok(ExitCode::SUCCESS);
        }
        p.summary(&format!(
            "init --check: {} differ{} from what init would write (diff on stdout)",
            drift.join(" and "),
            if drift.len() == 1 { "s" } else { "" }
        ));
        p.info("hint: run `stateful-ci init --yes --force` to write them, or keep your edits");
        return Ok(ExitCode::from(1));
    }

    let said = |r: FileResult| match r {
        FileResult::Created => "created",
        FileResult::Updated => "updated",
        FileResult::Unchanged => "unchanged",
        FileResult::Kept => "kept (yours)",
        FileResult::Drift => "differs",
    };
    p.summary(&format!("{CONFIG_FILE}: {}", said(out.config)));
    p.summary(&format!("{}: {}", out.workflow_path, said(out.workflow)));
    for n in &out.notes {
        p.info(&format!("note: {n}"));
    }
    let account_hint = if out.account_id.is_some() {
        "with CLOUDFLARE_API_TOKEN set (or the token in the keyring)"
    } else {
        "with CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID set"
    };
    p.info("");
    p.info("Next steps:");
    p.info(&format!(
        "  1. stateful-ci deploy   {account_hint}: creates the backend in your Cloudflare account and records its URL in {CONFIG_FILE}"
    ));
    p.info(&format!(
        "  2. git add {CONFIG_FILE} {} && git commit -m \"CI: keep the workspace with stateful-ci\"",
        out.workflow_path
    ));
    p.info("  3. push: the first run saves the workspace, the next ones restore it");
    Ok(ExitCode::SUCCESS)
}
