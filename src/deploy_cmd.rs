//! `stateful-ci deploy`: glue between the command line and the installer's
//! plan/apply. Also the helpers `upgrade`, `destroy` share: the account (flag,
//! environment, else what `init` or `deploy` recorded in stateful-ci.toml),
//! the Cloudflare client from the environment, the confirmation rules, the
//! repository default from `git remote`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use stateful_ci_installer::bundle::Bundle;
use stateful_ci_installer::cloudflare::{ACCOUNT_ENV, Client};
use stateful_ci_installer::credentials;
use stateful_ci_installer::deploy::{
    ConfigFile, Deployer, Plan, Record, Repository, Settings, record, repos,
};
use stateful_ci_runtime::Error;

use crate::printer::Printer;

#[derive(Args, Clone)]
pub struct DeployArgs {
    /// Cloudflare account id (default: CLOUDFLARE_ACCOUNT_ID, then the
    /// `[deployment] account_id` that `init` or `deploy` recorded in
    /// stateful-ci.toml).
    #[arg(long, value_name = "ID")]
    pub account_id: Option<String>,
    /// Name of the Worker, R2 bucket and D1 database.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// GitHub repository allowed to use the backend, OWNER/NAME (repeatable;
    /// default: the `origin` remote).
    #[arg(long = "repository", value_name = "OWNER/NAME")]
    pub repositories: Vec<String>,
    /// The repository's default branch (its runs are trusted): BRANCH for
    /// every repository, or OWNER/NAME=BRANCH (repeatable). Default: the
    /// record, else the clone's origin/HEAD; never assumed.
    #[arg(
        long,
        value_name = "[OWNER/NAME=]BRANCH",
        env = "STATEFUL_CI_DEFAULT_BRANCH"
    )]
    pub default_branch: Vec<String>,
    /// GitHub's numeric id of an allowed repository, OWNER/NAME=ID
    /// (repeatable): tokens of another repository that takes over the name
    /// are refused. Without it the backend pins the first run's ids.
    #[arg(long = "repository-id", value_name = "OWNER/NAME=ID")]
    pub repository_ids: Vec<String>,
    /// Trust a branch's runs only when GitHub reports the branch as
    /// protected (`ref_protected`); see docs/TRUST.md.
    #[arg(long, value_name = "true|false")]
    pub require_protected_branch: Option<bool>,
    /// The OIDC audience the Worker accepts.
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// Apply without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Deploy even if the deployed Worker is newer.
    #[arg(long)]
    pub force: bool,
    /// Directory of stateful-ci.toml (default: the current directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The account to work on: `--account-id`, else `CLOUDFLARE_ACCOUNT_ID`, else
/// the `[deployment] account_id` recorded in stateful-ci.toml (by `init
/// --account-id` or the interactive init, or by an earlier `deploy`).
pub fn account_id(flag: Option<&str>, config: &ConfigFile) -> Result<String, Error> {
    let env_set = std::env::var(ACCOUNT_ENV).is_ok_and(|v| !v.trim().is_empty());
    if flag.is_some() || env_set {
        return Ok(credentials::account_id(flag)?);
    }
    match config.read()? {
        Some(rec) => credentials::account_id(Some(&rec.account_id)).map_err(|e| {
            Error::user(
                format!(
                    "{}: [deployment] account_id: {}",
                    config.path.display(),
                    e.message
                ),
                "fix it with `stateful-ci init --yes --account-id ID`, or set CLOUDFLARE_ACCOUNT_ID",
            )
        }),
        None => Err(Error::user(
            format!(
                "no Cloudflare account id: no --account-id, {ACCOUNT_ENV} is not set and {} records none",
                config.path.display()
            ),
            format!(
                "run `stateful-ci init --yes --account-id ID` to record it (the 32-digit id on the dashboard's Workers & Pages overview), or set {ACCOUNT_ENV}"
            ),
        )),
    }
}

/// The Cloudflare client: base URL, token, retries (with a note on each).
pub fn client(account: &str, printer: &Printer) -> Result<Client, Error> {
    let token = credentials::api_token(account)?;
    let mut policy = stateful_ci_installer::cloudflare::retry_policy();
    if let Some(n) = env_num("STATEFUL_CI_CF_MAX_ATTEMPTS") {
        policy.max_attempts = n.max(1) as u32;
    }
    if let Some(ms) = env_num("STATEFUL_CI_CF_RETRY_BASE_MS") {
        policy.base_delay = Duration::from_millis(ms);
    }
    let _ = printer;
    Ok(Client::new(&Client::base_from_env(), token)
        .with_policy(policy)
        .on_retry(|e| {
            crate::printer::note(&format!(
                "Cloudflare API: {}; retry {} in {:.1}s",
                e.reason,
                e.attempt,
                e.delay.as_secs_f64()
            ))
        }))
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

pub fn health_timeout() -> Duration {
    Duration::from_secs(env_num("STATEFUL_CI_HEALTH_TIMEOUT_SECS").unwrap_or(90))
}

pub fn config_file(dir: &Option<PathBuf>) -> ConfigFile {
    let d = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    ConfigFile::new(record::default_config_path(&d))
}

/// Ask unless `--yes`; refuse without a terminal.
pub fn confirm(yes: bool, question: &str, flag_hint: &str) -> Result<bool, Error> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(Error::user(
            format!("{question} needs a confirmation, and there is no terminal to ask on"),
            format!("pass {flag_hint} to go ahead without asking"),
        ));
    }
    dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()
        .map_err(|e| {
            Error::user(
                format!("cannot read the answer: {e}"),
                format!("pass {flag_hint}"),
            )
        })
}

/// `OWNER/NAME` of the `origin` remote, if it is on GitHub.
pub fn origin_repository(dir: &Option<PathBuf>) -> Option<String> {
    repos::origin_repository(&dir.clone().unwrap_or_else(|| PathBuf::from(".")))
}

/// Each repository's default branch, from flags, the record, the clone or a
/// question on a terminal; an error naming the fix otherwise.
pub fn resolve_repositories(
    names: Vec<String>,
    branch_flags: &[String],
    id_flags: &[String],
    dir: &Option<PathBuf>,
    rec: Option<&Record>,
) -> Result<Vec<Repository>, Error> {
    let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut out = repos::resolve(&repos::Sources {
        names,
        branch_flags: branch_flags.to_vec(),
        id_flags: id_flags.to_vec(),
        record: rec.map(|r| r.repositories.clone()).unwrap_or_default(),
        origin: repos::origin(&dir),
        recorded_default_branch: rec.and_then(|r| r.default_branch.clone()),
    })?;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    for r in out.iter_mut().filter(|r| r.default_branch.is_empty()) {
        if !interactive {
            break;
        }
        let answer: String = dialoguer::Input::new()
            .with_prompt(format!(
                "default branch of {} (its runs are trusted; see Settings > General on GitHub)",
                r.name
            ))
            .interact_text()
            .map_err(|e| {
                Error::user(
                    format!("cannot read the answer: {e}"),
                    "pass --default-branch BRANCH",
                )
            })?;
        r.default_branch = answer.trim().trim_start_matches("refs/heads/").to_string();
    }
    let missing: Vec<&Repository> = out.iter().filter(|r| r.default_branch.is_empty()).collect();
    if !missing.is_empty() {
        return Err(repos::unknown_branch_error(&missing).into());
    }
    Ok(out)
}

pub fn print_plan(plan: &Plan, printer: &Printer) {
    printer.out(&plan.to_string());
}

pub fn settings_from(
    args: &DeployArgs,
    account: &str,
    rec: Option<&Record>,
) -> Result<Settings, Error> {
    let mut names = args.repositories.clone();
    if names.is_empty() {
        names = rec
            .map(|r| r.repositories.iter().map(|x| x.name.clone()).collect())
            .unwrap_or_default();
    }
    if names.is_empty() {
        names.extend(origin_repository(&args.dir));
    }
    let repositories = if names.is_empty() {
        Vec::new() // validate() says what to do
    } else {
        resolve_repositories(
            names,
            &args.default_branch,
            &args.repository_ids,
            &args.dir,
            rec,
        )?
    };
    let s = Settings {
        account_id: account.to_string(),
        name: args
            .name
            .clone()
            .or_else(|| rec.map(|r| r.script.clone()).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "stateful-ci".into()),
        repositories,
        require_protected: args
            .require_protected_branch
            .unwrap_or_else(|| rec.is_some_and(|r| r.require_protected)),
        audience: args
            .audience
            .clone()
            .or_else(|| rec.and_then(|r| r.audience.clone()))
            .unwrap_or_else(|| "stateful-ci".into()),
        oidc_test_issuer: None,
    };
    s.validate()?;
    Ok(s)
}

pub fn deploy(args: &DeployArgs, printer: &Printer) -> Result<ExitCode, Error> {
    run(args, printer, "deploy")
}

/// deploy and upgrade share this: verify, observe, plan, confirm, apply.
pub fn run(args: &DeployArgs, printer: &Printer, verb: &str) -> Result<ExitCode, Error> {
    let config = config_file(&args.dir);
    let account = account_id(args.account_id.as_deref(), &config)?;
    let rec = config.read()?.filter(|r| r.account_id == account);
    // A record with only the account (what init writes) deployed nothing.
    if verb == "upgrade" && rec.as_ref().is_none_or(|r| r.script.is_empty()) {
        return Err(Error::user(
            format!(
                "nothing to upgrade: {} has no deployment for account {account}",
                config.path.display()
            ),
            "run `stateful-ci deploy` first (or run upgrade in the directory whose stateful-ci.toml records the deployment)",
        ));
    }
    let settings = settings_from(args, &account, rec.as_ref())?;
    let bundle = Bundle::load()?;
    let client = client(&account, printer)?;
    let deployer = Deployer {
        client: &client,
        settings,
        bundle,
        config,
        health_base: None,
        health_timeout: health_timeout(),
    };
    deployer.verify()?;
    let seen = deployer.observe()?;
    let plan = deployer.plan(&seen, args.force)?;
    print_plan(&plan, printer);
    if args.dry_run {
        printer.summary("dry run: nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    if !plan.is_empty() && !confirm(args.yes, &format!("{verb}: apply this plan?"), "--yes")? {
        printer.info("nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    let out = deployer.apply(&plan, &seen, &|s| printer.info(&format!("- {s}")))?;
    for n in &out.notes {
        printer.info(n);
    }
    printer.summary(&format!(
        "{verb}: Worker {} answers at {}",
        deployer.bundle.version, out.worker_url
    ));
    // The workflow, not the checked-out stateful-ci.toml, names the backend.
    printer.info(&format!(
        "next: set the repository secret STATEFUL_CI_BACKEND_URL to {} (gh secret set STATEFUL_CI_BACKEND_URL --body {}); the workflow `stateful-ci init` writes passes it to the action",
        out.worker_url, out.worker_url
    ));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use stateful_ci_installer::deploy::repos::parse_github_remote as p;

    #[test]
    fn github_remotes_parse() {
        assert_eq!(
            p("git@github.com:octo/app.git").as_deref(),
            Some("octo/app")
        );
        assert_eq!(
            p("https://github.com/octo/app").as_deref(),
            Some("octo/app")
        );
        assert_eq!(p("https://gitlab.com/octo/app"), None);
        assert_eq!(p("https://github.com/octo"), None);
    }
}
