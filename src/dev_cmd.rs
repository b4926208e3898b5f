//! `stateful-ci dev`: the whole backend on this machine (emulator + the
//! embedded Worker), until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Args;
#[cfg(unix)]
use stateful_ci_installer::dev::{self, DevOptions};
use stateful_ci_runtime::Error;

#[cfg(unix)]
use crate::deploy_cmd;
use crate::printer::Printer;

#[derive(Args, Clone)]
pub struct DevArgs {
    /// Port of the Worker (the backend URL).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// Trust this OIDC issuer (JWKS at URL/.well-known/jwks) instead of GitHub's.
    #[arg(long, value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// GitHub repository allowed to use the backend, OWNER/NAME (repeatable;
    /// default: the `origin` remote).
    #[arg(long = "repository", value_name = "OWNER/NAME")]
    pub repositories: Vec<String>,
    /// The repository's default branch (its runs are trusted): BRANCH, or
    /// OWNER/NAME=BRANCH (repeatable). Default: learned from this clone's
    /// origin/HEAD or init's record in stateful-ci.toml; never assumed.
    #[arg(
        long,
        value_name = "[OWNER/NAME=]BRANCH",
        env = "STATEFUL_CI_DEFAULT_BRANCH"
    )]
    pub default_branch: Vec<String>,
    /// GitHub's numeric id of an allowed repository, OWNER/NAME=ID
    /// (repeatable); without it the backend pins the first run's ids.
    #[arg(long = "repository-id", value_name = "OWNER/NAME=ID")]
    pub repository_ids: Vec<String>,
    /// Trust a branch's runs only when the token says `ref_protected: true`.
    #[arg(long)]
    pub require_protected_branch: bool,
    /// The OIDC audience the Worker accepts.
    #[arg(long, default_value = "stateful-ci")]
    pub audience: String,
}

/// `dev` runs the emulator's process group and waits for Unix signals.
#[cfg(not(unix))]
pub fn dev(_args: &DevArgs, _printer: &Printer) -> Result<ExitCode, Error> {
    Err(Error::user(
        "`stateful-ci dev` runs on Linux and macOS only",
        "run it in WSL, or deploy to Cloudflare with `stateful-ci deploy`",
    ))
}

#[cfg(unix)]
pub fn dev(args: &DevArgs, printer: &Printer) -> Result<ExitCode, Error> {
    // Before any thread starts, so every thread leaves SIGINT/SIGTERM to us.
    let signals = dev::take_signals();
    let mut names = args.repositories.clone();
    if names.is_empty() {
        names.extend(deploy_cmd::origin_repository(&None));
    }
    // init's record (or a deployment's) in this directory's stateful-ci.toml.
    let rec = deploy_cmd::config_file(&None).read().ok().flatten();
    let repositories = if names.is_empty() {
        Vec::new() // validate() says what to do
    } else {
        deploy_cmd::resolve_repositories(
            names,
            &args.default_branch,
            &args.repository_ids,
            &None,
            rec.as_ref(),
        )?
    };
    for r in &repositories {
        printer.info(&format!(
            "- {}: trusted branch {}{}",
            r.name,
            r.default_branch,
            r.id.as_deref()
                .map(|id| format!(", repository id {id}"))
                .unwrap_or_default()
        ));
    }
    let opts = DevOptions {
        port: args.port,
        oidc_issuer: args.oidc_issuer.clone(),
        repositories,
        require_protected: args.require_protected_branch,
        audience: args.audience.clone(),
    };
    let mut session = dev::start(&opts, &|s| printer.info(&format!("- {s}")))?;
    if args.oidc_issuer.is_some() {
        printer.info("warning: this Worker trusts the test issuer given by --oidc-issuer; never use it for real runs");
    }
    printer.out_line(&format!("backend: {}", session.backend));
    dev::serving();
    let sig = loop {
        match signals.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(sig) => break sig,
            Err(_) if !session.emulator.alive() => break 0,
            Err(_) => {}
        }
    };
    session.emulator.stop();
    if sig == 0 {
        return Err(Error::user(
            "the local Cloudflare emulator stopped unexpectedly",
            "run `stateful-ci dev` again; if it keeps stopping, run the emulator by hand (tests/cloudflare-emulator/README.md) to see why",
        ));
    }
    printer.info("stopped");
    Ok(ExitCode::from(if sig == libc::SIGINT { 130 } else { 143 }))
}
