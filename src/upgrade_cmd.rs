//! `stateful-ci upgrade`: deploy this binary's Worker over the recorded
//! deployment (new D1 migrations and Durable Object steps only, secrets and
//! data kept), after showing the plan.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stateful_ci_runtime::Error;

use crate::deploy_cmd::{self, DeployArgs};
use crate::printer::Printer;

#[derive(Args, Clone)]
pub struct UpgradeArgs {
    /// Cloudflare account id (default: CLOUDFLARE_ACCOUNT_ID, then the one
    /// recorded in stateful-ci.toml).
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// Apply without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Deploy even if the deployed Worker is newer (a downgrade).
    #[arg(long)]
    pub force: bool,
    /// Directory of stateful-ci.toml (default: the current directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn upgrade(args: &UpgradeArgs, printer: &Printer) -> Result<ExitCode, Error> {
    let d = DeployArgs {
        account_id: args.account_id.clone(),
        name: None,
        repositories: Vec::new(),
        default_branch: Vec::new(),
        repository_ids: Vec::new(),
        require_protected_branch: None,
        audience: None,
        yes: args.yes,
        dry_run: args.dry_run,
        force: args.force,
        dir: args.dir.clone(),
    };
    deploy_cmd::run(&d, printer, "upgrade")
}
