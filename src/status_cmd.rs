//! `stateful-ci status` and the dashboard bare `stateful-ci` opens: glue
//! between the command line and `stateful-ci-dashboard`, which gathers and
//! renders. Nothing here prints a secret: the admin token stays inside the
//! dashboard crate's `AdminToken`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use stateful_ci_dashboard::{Options, gather, text, tui};
use stateful_ci_runtime::Error;

use crate::printer::Printer;

#[derive(Args, Clone, Default)]
pub struct StatusArgs {
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also describe a local directory store (its scopes, heads and sizes).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The Worker to ask (default: STATEFUL_CI_BACKEND_URL, then the
    /// deployment record, then `[backend] url` in stateful-ci.toml). Its
    /// admin routes need STATEFUL_CI_ADMIN_TOKEN or the keyring entry
    /// `deploy` made.
    #[arg(long, value_name = "URL", env = "STATEFUL_CI_BACKEND_URL")]
    pub backend: Option<String>,
    /// How many recent runs, snapshots and scopes to show (1-500).
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
    /// Workspace root (default: the current directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

fn options(args: &StatusArgs) -> Result<Options, Error> {
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().map_err(|e| {
            Error::user(
                format!("cannot read the current directory: {e}"),
                "run from the repository root or pass -C DIR",
            )
        })?,
    };
    Ok(Options {
        root,
        store: args.store.clone(),
        backend: args.backend.clone(),
        limit: args.limit,
        binary_version: env!("CARGO_PKG_VERSION").to_string(),
        use_admin_token: true,
    })
}

pub fn status(args: &StatusArgs, printer: &Printer) -> Result<ExitCode, Error> {
    let status = gather(&options(args)?);
    if args.json {
        let s = serde_json::to_string_pretty(&status).map_err(|e| {
            Error::user(
                format!("cannot encode the status as JSON: {e}"),
                "report this bug",
            )
        })?;
        printer.out_line(&s);
    } else {
        printer.out(&text::render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

/// Bare `stateful-ci`: the dashboard on a terminal, else `status`.
pub fn dashboard(args: &StatusArgs, printer: &Printer) -> Result<ExitCode, Error> {
    if !(std::io::stdout().is_terminal() && std::io::stdin().is_terminal()) {
        return status(args, printer);
    }
    let opts = options(args)?;
    let first = gather(&opts);
    let every = std::env::var("STATEFUL_CI_DASHBOARD_REFRESH_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(10);
    tui::run(
        first,
        || gather(&opts),
        Duration::from_secs(every),
        printer.color_wanted(),
    )
    .map_err(|e| {
        Error::user(
            format!("the dashboard could not use the terminal: {e}"),
            "run `stateful-ci status` for a plain-text report",
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
