//! `save` and `restore`: resolve the configuration and the store, run the
//! engine, print one summary line (and JSON on request).
//!
//! A cache failure (store unreachable, damaged snapshot) never breaks the
//! user's build: it is reported as a warning and the command exits 0, unless
//! `--strict` is given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use stateful_ci_runtime::{
    Config, Error, LocalStore, Overrides, RestoreOptions, RestoreOutcome, SaveOptions, SaveOutcome,
    Store, WindowCut,
};

use stateful_ci_runtime::config;
use stateful_ci_runtime::report::{Command, Outcome, RunSummary};
use stateful_ci_runtime::store::WorkerStore;
use stateful_ci_runtime::store::worker::OidcSource;

use crate::SnapshotArgs;
use crate::printer::{Printer, human_bytes};

fn workspace(args: &SnapshotArgs) -> Result<PathBuf, Error> {
    match &args.dir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().map_err(|e| {
            Error::user(
                format!("cannot read the current directory: {e}"),
                "run from the repository root",
            )
        }),
    }
}

/// Events whose code or inputs come from outside the repository's writers
/// (pull requests, comments, other workflows' artifacts): a save from them
/// into a local store (no trust separation: one scope, read by every later
/// run on that disk) is refused unless explicitly allowed.
const UNTRUSTED_EVENTS: &[&str] = &[
    "pull_request",
    "pull_request_target",
    "pull_request_review",
    "pull_request_review_comment",
    "issue_comment",
    "workflow_run",
    "discussion_comment",
];

/// Env var that, set to `1`/`true`, does what `--allow-untrusted-save` does.
pub const ALLOW_UNTRUSTED_SAVE_ENV: &str = "STATEFUL_CI_ALLOW_UNTRUSTED_SAVE";

/// Issue 10, item 9: a local store has no trust separation, so on a shared
/// self-hosted runner a fork's pull request save would become what the
/// default branch restores. Refused (a cache failure: a warning and exit 0,
/// exit 1 with --strict) unless allowed.
fn check_local_save(event: Option<&str>, allowed: bool) -> Result<(), Error> {
    match event {
        Some(e) if UNTRUSTED_EVENTS.contains(&e) && !allowed => Err(Error::store(format!(
            "not saving to a local store in a `{e}` run: a local store has no trust separation, so this run's state would be restored by every later run on this machine, including the default branch's"
        ))
        .with_hint(format!(
            "use a deployed backend (it keeps pull request state apart), or, if every run on this runner is trusted, pass --allow-untrusted-save (or set {ALLOW_UNTRUSTED_SAVE_ENV}=1)"
        ))),
        _ => Ok(()),
    }
}

fn open_store(
    args: &SnapshotArgs,
    config: &Config,
    saving: bool,
    p: &Printer,
) -> Result<Box<dyn Store>, Error> {
    if let Some(dir) = &args.store {
        if saving {
            let env_allowed = std::env::var(ALLOW_UNTRUSTED_SAVE_ENV)
                .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
            check_local_save(
                std::env::var("GITHUB_EVENT_NAME").ok().as_deref(),
                args.allow_untrusted_save || env_allowed,
            )?;
        }
        let scope = args
            .scope
            .clone()
            .unwrap_or_else(|| config.workspace.clone());
        return Ok(Box::new(LocalStore::open(dir, &scope)?));
    }
    // The URL and audience come from the flag/environment only, never from
    // the checked-out stateful-ci.toml (see config::Backend).
    if let Some(note) = config::ignored_backend_keys_note(config) {
        stateful_ci_runtime::Reporter::warn(p, &note);
    }
    let audience = std::env::var(config::AUDIENCE_ENV).ok();
    let backend = config::backend_from_env(args.backend.as_deref(), audience.as_deref())?
        .ok_or_else(|| {
            Error::user(
                "no store given",
                format!(
                    "pass --store DIR (a local directory) or --backend URL (a deployed Worker; also {}; in a workflow, the action's backend-url input)",
                    config::BACKEND_URL_ENV
                ),
            )
        })?;
    let oidc = OidcSource::from_env(Some(&backend.audience))?;
    Ok(Box::new(WorkerStore::new(
        &backend.url,
        &config.workspace,
        oidc,
    )?))
}

fn load(args: &SnapshotArgs) -> Result<(PathBuf, Config), Error> {
    let ws = workspace(args)?;
    let ov = Overrides {
        paths: args.paths.clone(),
        exclude: args.excludes.clone(),
    };
    let config = Config::load(&ws, &ov)?;
    Ok((ws, config))
}

/// No store at all: no `--store`, no `--backend`, no STATEFUL_CI_BACKEND_URL
/// and no `[backend] url`. This is a workflow committed before `deploy` ran:
/// one warning with the fix and exit 0 (the job runs cold), unless
/// `--strict`.
fn no_backend(
    command: Command,
    args: &SnapshotArgs,
    config: &Config,
    p: &Printer,
) -> Option<Result<ExitCode, Error>> {
    if args.store.is_some() || args.backend.is_some() || config.backend_url.is_some() {
        return None;
    }
    let fix = "run `stateful-ci deploy` (it records [backend] url in stateful-ci.toml; commit that), or set STATEFUL_CI_BACKEND_URL in the workflow";
    if args.strict {
        return Some(Err(Error::user(
            format!("{}: no backend is configured", command.as_str()),
            fix,
        )));
    }
    stateful_ci_runtime::Reporter::warn(
        p,
        &format!(
            "stateful-ci {} skipped: no backend is configured, so the job runs without a snapshot. To fix: {fix}.",
            command.as_str()
        ),
    );
    if args.json {
        print_json(
            p,
            &RunSummary {
                error: Some("no backend configured".into()),
                warnings: p.take_warnings(),
                ..RunSummary::empty(command, Outcome::Skipped)
            },
        );
    }
    Some(Ok(ExitCode::SUCCESS))
}

/// Windows of a fixed number of entries, from the environment variable
/// `var` (STATEFUL_CI_SAVE_WINDOW: entries a save takes from the walk at a
/// time; STATEFUL_CI_RESTORE_WINDOW: entries a restore plans and stages at
/// a time). A knob for tests (a small tree spread over many windows) and
/// for measuring the memory a window costs; unset, unreadable or 0, none.
fn fixed_window(var: &str) -> Option<WindowCut> {
    positive(var).map(WindowCut::fixed)
}

/// A positive count from the environment variable `var`; unset,
/// unreadable or 0, none. Test knobs only: STATEFUL_CI_SAVE_MAX_NEW_BLOBS
/// is how many new blobs a save remembers for deduplication
/// (`stateful_ci_runtime::save::MAX_NEW_BLOBS`), so a small tree can show
/// what a save past the cap does.
fn positive(var: &str) -> Option<usize> {
    std::env::var(var)
        .ok()
        .and_then(|w| w.parse::<usize>().ok())
        .filter(|&w| w > 0)
}

pub fn save(args: &SnapshotArgs, p: &Printer) -> Result<ExitCode, Error> {
    let (ws, config) = load(args)?;
    if let Some(done) = no_backend(Command::Save, args, &config, p) {
        return done;
    }
    p.group("stateful-ci save");
    let opts = SaveOptions {
        window: fixed_window("STATEFUL_CI_SAVE_WINDOW").unwrap_or(SaveOptions::default().window),
        max_new_blobs: positive("STATEFUL_CI_SAVE_MAX_NEW_BLOBS")
            .unwrap_or(SaveOptions::default().max_new_blobs),
        ..SaveOptions::default()
    };
    let result = open_store(args, &config, true, p)
        .and_then(|store| stateful_ci_runtime::save(&ws, &config, store.as_ref(), p, &opts));
    p.end_group();
    match result {
        Ok(s) => {
            let outcome = match s.outcome {
                SaveOutcome::Saved => "saved",
                SaveOutcome::Unchanged => "unchanged",
            };
            if s.skipped_credentials > 0 {
                p.info(&format!(
                    "skipped {} credential file(s) (never captured)",
                    s.skipped_credentials
                ));
            }
            p.summary(&format!(
                "{outcome} {} files, {} ({} new, {:.0}% reused), {} stored in {} objects, {}, snapshot {} gen {}",
                s.files,
                human_bytes(s.bytes),
                human_bytes(s.new_bytes),
                s.dedup_ratio() * 100.0,
                human_bytes(s.stored_bytes),
                s.objects_sent,
                secs(s.duration),
                short(&s.head.snapshot.hash.to_hex()),
                s.head.generation,
            ));
            if args.json {
                print_json(
                    p,
                    &RunSummary {
                        warnings: p.take_warnings(),
                        ..RunSummary::saved(&s)
                    },
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => cache_failure(Command::Save, e, args, p),
    }
}

pub fn restore(args: &SnapshotArgs, p: &Printer) -> Result<ExitCode, Error> {
    let (ws, config) = load(args)?;
    if let Some(done) = no_backend(Command::Restore, args, &config, p) {
        return done;
    }
    p.group("stateful-ci restore");
    let opts = RestoreOptions {
        window: fixed_window("STATEFUL_CI_RESTORE_WINDOW")
            .unwrap_or(RestoreOptions::default().window),
        ..RestoreOptions::default()
    };
    let result = open_store(args, &config, false, p)
        .and_then(|store| stateful_ci_runtime::restore(&ws, &config, store.as_ref(), p, &opts));
    p.end_group();
    match result {
        Ok(s) if s.outcome == RestoreOutcome::Miss => {
            p.summary(
                "miss: no snapshot to restore yet; the job runs cold and `save` will create one",
            );
            if args.json {
                print_json(
                    p,
                    &RunSummary {
                        warnings: p.take_warnings(),
                        ..RunSummary::restored(&s)
                    },
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(s) => {
            let src = s.source.as_ref().expect("a hit has a source");
            p.summary(&format!(
                "restored {} files, {} ({} files written, {} fetched in {} requests, {} removed), {}, snapshot {} gen {} from {}",
                s.files,
                human_bytes(s.bytes),
                s.files_written,
                human_bytes(s.bytes_fetched),
                s.objects_fetched,
                s.removed,
                secs(s.duration),
                short(&src.head.snapshot.hash.to_hex()),
                src.head.generation,
                src.scope,
            ));
            if args.json {
                print_json(
                    p,
                    &RunSummary {
                        warnings: p.take_warnings(),
                        ..RunSummary::restored(&s)
                    },
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => cache_failure(Command::Restore, e, args, p),
    }
}

/// A cache failure is a warning and a miss unless `--strict`; any other
/// error is the user's to fix.
fn cache_failure(
    command: Command,
    e: Error,
    args: &SnapshotArgs,
    p: &Printer,
) -> Result<ExitCode, Error> {
    if !e.is_cache_failure() || args.strict {
        return Err(e);
    }
    let what = if command == Command::Restore {
        "the job goes on cold"
    } else {
        "the previous snapshot stays in place"
    };
    stateful_ci_runtime::Reporter::warn(
        p,
        &format!(
            "{} failed: {}; {what} (use --strict to fail instead)",
            command.as_str(),
            e.message
        ),
    );
    if args.json {
        print_json(
            p,
            &RunSummary {
                error: Some(e.message),
                warnings: p.take_warnings(),
                ..RunSummary::empty(command, Outcome::Error)
            },
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(p: &Printer, v: &RunSummary) {
    p.out_line(&v.to_json_line());
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn short(hex: &str) -> &str {
    &hex[..12.min(hex.len())]
}

#[cfg(test)]
mod tests {
    use super::check_local_save;

    #[test]
    fn local_saves_from_pull_request_like_events_are_refused_unless_allowed() {
        for e in [
            "pull_request",
            "pull_request_target",
            "issue_comment",
            "workflow_run",
        ] {
            let err = check_local_save(Some(e), false).unwrap_err();
            assert!(err.is_cache_failure(), "a warning, not a broken build");
            assert!(err.message.contains("no trust separation"), "{err:?}");
            assert!(err.hint.unwrap().contains("--allow-untrusted-save"));
            check_local_save(Some(e), true).unwrap();
        }
        for e in [
            None,
            Some("push"),
            Some("schedule"),
            Some("workflow_dispatch"),
        ] {
            check_local_save(e, false).unwrap();
        }
    }
}
