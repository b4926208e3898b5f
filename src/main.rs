//! The `stateful-ci` binary: a thin front over the crates that do the work.
//! It parses the command line, builds the store, and prints; everything else
//! lives in `stateful-ci-runtime` (snapshots) and, for deployment, the
//! installer.

mod deploy_cmd;
mod destroy_cmd;
mod dev_cmd;
mod init_cmd;
mod printer;
mod snapshot_cmd;
mod status_cmd;
mod upgrade_cmd;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::printer::Printer;

#[derive(Parser)]
#[command(
    name = "stateful-ci",
    version,
    about = "A persistent workspace for ephemeral GitHub Actions runners",
    long_about = "stateful-ci restores selected paths (package stores, build outputs, caches) before a job and saves them after it, into a store you own: a local directory or a Worker in your Cloudflare account."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Save the workspace's configured paths as a new snapshot.
    Save(SnapshotArgs),
    /// Restore the configured paths from the latest snapshot (a miss exits 0).
    Restore(SnapshotArgs),
    /// Set this repository up: write stateful-ci.toml and the workflow.
    Init(init_cmd::InitArgs),
    /// Provision the backend in your Cloudflare account (plan, then apply).
    Deploy(deploy_cmd::DeployArgs),
    /// Deploy this binary's Worker over the recorded deployment.
    Upgrade(upgrade_cmd::UpgradeArgs),
    /// Delete what `deploy` created and clear the deployment record.
    Destroy(destroy_cmd::DestroyArgs),
    /// Run the whole backend on this machine (local Cloudflare emulator).
    Dev(dev_cmd::DevArgs),
    /// Show the config, the deployment and recent runs (`--json` for scripts).
    Status(status_cmd::StatusArgs),
}

#[derive(Args, Clone)]
pub struct SnapshotArgs {
    /// Use a local directory as the store (created if missing).
    #[arg(long, value_name = "DIR", conflicts_with = "backend")]
    pub store: Option<std::path::PathBuf>,
    /// Use a deployed stateful-ci Worker (default: STATEFUL_CI_BACKEND_URL;
    /// never `[backend] url` of stateful-ci.toml). Authenticates with the
    /// runner's GitHub OIDC token (audience: STATEFUL_CI_AUDIENCE, default
    /// stateful-ci), sent over https only (http only to loopback).
    #[arg(long, value_name = "URL", env = "STATEFUL_CI_BACKEND_URL")]
    pub backend: Option<String>,
    /// Path to keep, relative to the repository root (repeatable; replaces
    /// the configured paths).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<String>,
    /// Glob to leave out (repeatable; replaces the configured excludes).
    #[arg(long = "exclude", value_name = "P")]
    pub excludes: Vec<String>,
    /// Scope (head name) inside a local store. A backend chooses the scope
    /// itself from the run's verified identity.
    #[arg(long, value_name = "NAME")]
    pub scope: Option<String>,
    /// Fail (exit 1) on a cache error instead of warning and going on cold.
    #[arg(long)]
    pub strict: bool,
    /// Save to a local --store even in a pull-request-like run
    /// (GITHUB_EVENT_NAME pull_request, pull_request_target, issue_comment,
    /// workflow_run, ...): a local store has no trust separation.
    #[arg(long)]
    pub allow_untrusted_save: bool,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Workspace root (default: the current directory).
    #[arg(long, short = 'C', value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// The static Linux release binaries are built against musl, whose
/// allocator serialises every thread on one lock. A no-change save of
/// 120,000 files with musl's allocator made 9,675 futex calls (glibc's
/// build: 172) and took 0.49-0.93 s (glibc's: 0.29-0.33 s); with mimalloc,
/// 530 futex calls and 0.39-0.44 s (the rest of that gap was Rust's std on
/// musl stat-ing each entry by its full path, which the walk no longer
/// does: 0.30-0.32 s since). ripgrep likewise replaces musl's allocator
/// (with jemalloc).
///
/// mimalloc keeps freed memory for a while and commits its arenas up
/// front: left so, a cold save of 120,000 files peaked at 151-156 MiB
/// resident where glibc's build peaked at 79-83 MiB. [`tune_allocator`]
/// makes it return freed memory at once and commit arenas as they are
/// used: 82-84 MiB. At 500,000 files: cold save 211 MiB (glibc's 208),
/// no-change save 228 (213), restore 163 (188); the no-change save is
/// 169 MiB since it streams the stat index (docs/BENCHMARKS.md).
#[cfg(all(target_os = "linux", target_env = "musl"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(target_os = "linux", target_env = "musl"))]
fn tune_allocator() {
    // mimalloc.h's `mi_option_e` (kept stable across versions for its
    // ABI); the Rust bindings do not name these two.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // Values set in the environment (`MIMALLOC_PURGE_DELAY`, ...) win.
    // SAFETY: setting an option is always allowed; both are read when
    // memory is next purged or an arena made.
    unsafe {
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}

/// glibc raises its mmap threshold each time a large block is freed (up to
/// 32 MiB), after which large buffers (the lists a save or restore of a big
/// tree grows and drops) come from the heap, which they leave fragmented:
/// a save of 500,000 files peaked at 359 MiB resident for 262 MiB of live
/// heap (heaptrack). A fixed threshold turns that adjustment off, so large
/// buffers keep their own mappings and go back to the system when freed:
/// 271 MiB. Other C libraries (musl, macOS, Windows) have no such rule.
/// A threshold set in the environment (`MALLOC_MMAP_THRESHOLD_`, glibc's
/// own tunable) is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a parameter of glibc's allocator; it is
    // called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let printer = Printer::from_env();
    let result = match cli.command {
        Some(Command::Save(args)) => snapshot_cmd::save(&args, &printer),
        Some(Command::Restore(args)) => snapshot_cmd::restore(&args, &printer),
        Some(Command::Init(args)) => init_cmd::run(&args, &printer),
        Some(Command::Deploy(args)) => deploy_cmd::deploy(&args, &printer),
        Some(Command::Upgrade(args)) => upgrade_cmd::upgrade(&args, &printer),
        Some(Command::Destroy(args)) => destroy_cmd::destroy(&args, &printer),
        Some(Command::Dev(args)) => dev_cmd::dev(&args, &printer),
        Some(Command::Status(args)) => status_cmd::status(&args, &printer),
        None => status_cmd::dashboard(
            &status_cmd::StatusArgs {
                limit: 50,
                backend: std::env::var("STATEFUL_CI_BACKEND_URL").ok(),
                ..Default::default()
            },
            &printer,
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            printer.error(&e);
            ExitCode::from(1)
        }
    }
}
