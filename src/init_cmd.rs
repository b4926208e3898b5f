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

/// How the user started this binary, for the next-step lines: `bunx
/// stateful-ci` after `bunx stateful-ci init`, `npx stateful-ci` after npx.
/// `STATEFUL_CI_LAUNCHER` (set by a launcher that knows) wins; else the
/// package manager that ran the npm launcher, from `npm_config_user_agent`
/// (`bun/1.2.3 npm/? node/...`) or `npm_execpath`; else plain `stateful-ci`.
pub fn invoked_as() -> String {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    launcher_command(
        var("STATEFUL_CI_LAUNCHER").as_deref(),
        var("npm_config_user_agent").as_deref(),
        var("npm_execpath").as_deref(),
    )
}

/// [`invoked_as`] from the variables' values.
pub fn launcher_command(
    launcher: Option<&str>,
    user_agent: Option<&str>,
    execpath: Option<&str>,
) -> String {
    if let Some(l) = launcher.map(str::trim) {
        let safe = l.len() <= 64
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" @._/-".contains(&b));
        if safe && l.ends_with("stateful-ci") {
            return l.to_string();
        }
    }
    let agent = user_agent
        .and_then(|ua| ua.split_whitespace().next())
        .map(|first| first.split('/').next().unwrap_or(""));
    let from_execpath = || {
        let e = execpath?.rsplit(['/', '\\']).next()?.to_ascii_lowercase();
        if e.starts_with("bun") {
            Some("bun")
        } else if e.starts_with("pnpm") {
            Some("pnpm")
        } else if e.starts_with("yarn") {
            Some("yarn")
        } else if e.starts_with("npm") || e.starts_with("npx") {
            Some("npm")
        } else {
            None
        }
    };
    let yarn_classic = user_agent.is_some_and(|ua| ua.starts_with("yarn/1."));
    match agent.or_else(from_execpath) {
        Some("bun") => "bunx stateful-ci",
        Some("pnpm") => "pnpm dlx stateful-ci",
        Some("yarn") if !yarn_classic => "yarn dlx stateful-ci",
        Some("npm") | Some("yarn") => "npx stateful-ci",
        _ => "stateful-ci",
    }
    .to_string()
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
    let color = interactive && p.color_wanted();
    let mut ui = Terminal::new(color);
    let out = init::run(&opts, &mut ui)?;

    if mode == Mode::Check {
        for d in &out.diffs {
            p.out(&d.to_string());
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
        p.info(&format!(
            "hint: run `{} init --yes --force` to write them, or keep your edits",
            invoked_as()
        ));
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
    let me = invoked_as();
    p.info("");
    p.info("Next steps:");
    p.info(&format!(
        "  1. {me} deploy   {account_hint}: creates the backend in your Cloudflare account and records its URL in {CONFIG_FILE}"
    ));
    p.info(&format!(
        "  2. git add {CONFIG_FILE} {} && git commit -m \"CI: keep the workspace with stateful-ci\"",
        out.workflow_path
    ));
    p.info("  3. push: the first run saves the workspace, the next ones restore it (until the backend exists, the workflow's restore and save steps warn and let the job run)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::launcher_command as l;

    #[test]
    fn next_steps_name_the_command_the_user_ran() {
        assert_eq!(l(None, None, None), "stateful-ci");
        assert_eq!(
            l(None, Some("bun/1.2.3 npm/? node/v22.0.0 linux x64"), None),
            "bunx stateful-ci"
        );
        assert_eq!(
            l(
                None,
                Some("npm/10.8.2 node/v22.0.0 linux x64 workspaces/false"),
                None
            ),
            "npx stateful-ci"
        );
        assert_eq!(
            l(None, Some("pnpm/9.1.0 npm/? node/v20"), None),
            "pnpm dlx stateful-ci"
        );
        assert_eq!(
            l(None, Some("yarn/4.5.0 npm/? node/v20"), None),
            "yarn dlx stateful-ci"
        );
        assert_eq!(
            l(None, Some("yarn/1.22.22 npm/? node/v20"), None),
            "npx stateful-ci"
        );
        assert_eq!(
            l(None, None, Some("/home/u/.bun/bin/bun")),
            "bunx stateful-ci"
        );
        assert_eq!(
            l(None, None, Some("/usr/lib/node_modules/npm/bin/npx-cli.js")),
            "npx stateful-ci"
        );
        assert_eq!(
            l(Some("bunx stateful-ci"), Some("npm/10"), None),
            "bunx stateful-ci"
        );
        // A launcher value that is not a plain command is not echoed.
        assert_eq!(l(Some("rm -rf /; stateful-ci"), None, None), "stateful-ci");
    }
}
