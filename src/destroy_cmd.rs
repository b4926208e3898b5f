//! `stateful-ci destroy`: delete what the deployment record says this tool
//! created, after the user types the Worker's name (or passes `--yes`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stateful_ci_installer::deploy::{destroy as run_destroy, destroy_items};
use stateful_ci_runtime::Error;

use crate::deploy_cmd;
use crate::printer::Printer;

#[derive(Args, Clone)]
pub struct DestroyArgs {
    /// Delete without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Directory of stateful-ci.toml (default: the current directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn destroy(args: &DestroyArgs, printer: &Printer) -> Result<ExitCode, Error> {
    let config = deploy_cmd::config_file(&args.dir);
    let account = deploy_cmd::account_id(None, &config)?;
    let Some(rec) = config.read()? else {
        return Err(Error::user(
            format!(
                "nothing to destroy: {} has no [deployment] record",
                config.path.display()
            ),
            "run destroy in the directory whose stateful-ci.toml records the deployment; it deletes only what that record names",
        ));
    };
    if rec.account_id != account {
        return Err(Error::user(
            format!(
                "the deployment record is for account {}, but CLOUDFLARE_ACCOUNT_ID is {account}",
                rec.account_id
            ),
            format!(
                "set CLOUDFLARE_ACCOUNT_ID={} to destroy that deployment",
                rec.account_id
            ),
        ));
    }
    let items = destroy_items(&rec);
    printer.out_line(&format!("account {}", rec.account_id));
    printer.out_line("to delete:");
    for i in &items {
        printer.out_line(&format!("  - {i}"));
    }
    if items.is_empty() {
        printer.out_line("  (nothing this tool created; only the record is cleared)");
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Err(Error::user(
                "destroy needs a confirmation, and there is no terminal to ask on",
                "pass --yes to delete without asking",
            ));
        }
        let typed: String = dialoguer::Input::new()
            .with_prompt(format!(
                "type the Worker's name ({}) to delete all of this",
                rec.script
            ))
            .allow_empty(true)
            .interact_text()
            .map_err(|e| Error::user(format!("cannot read the answer: {e}"), "pass --yes"))?;
        if typed.trim() != rec.script {
            printer.info("the name did not match: nothing was deleted");
            return Ok(ExitCode::from(1));
        }
    }
    let client = deploy_cmd::client(&account, printer)?;
    run_destroy(&client, &config, &rec, &|s| printer.info(&format!("- {s}")))?;
    printer.summary(&format!(
        "destroy: {} deleted; the deployment record is cleared",
        rec.script
    ));
    Ok(ExitCode::SUCCESS)
}
