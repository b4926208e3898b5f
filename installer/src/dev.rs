//! `stateful-ci dev`: the whole backend on this machine. It starts the local
//! Cloudflare emulator (`tests/cloudflare-emulator`, carried inside the
//! binary and made ready by [`crate::emulator`]: Node 22+, miniflare),
//! deploys the embedded Worker into it through the same code path as
//! `deploy` (with `OIDC_TEST_ISSUER` set only here), pins the Worker to a
//! port, and serves until SIGINT/SIGTERM, then stops everything it started.
//!
//! Must not: write the deployment record into the user's `stateful-ci.toml`
//! (it keeps its own in a temporary directory), or leave a process behind.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Error;

use crate::bundle::Bundle;
use crate::cloudflare::{ApiToken, Client};
use crate::deploy::{ConfigFile, Deployer, Settings};

pub use crate::emulator::EMULATOR_DIR_ENV;
/// The emulator's default account and token (see its README).
pub const DEV_ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
pub const DEV_TOKEN: &str = "emulator-token-all-permissions";

/// Node 22 as installed by `scripts/setup-node.sh` ([`crate::tools`]).
pub fn node22() -> PathBuf {
    crate::tools::node22()
}

/// A running emulator; dropping it stops it and its workerd.
pub struct Emulator {
    child: Option<Child>,
    pub api: String,
    pub control: String,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

pub struct EmulatorOptions {
    pub worker_port: Option<u16>,
    pub config: Option<PathBuf>,
}

impl Emulator {
    pub fn start(opts: &EmulatorOptions) -> Result<Emulator, Error> {
        Emulator::start_with(opts, &|_| {})
    }

    /// Start it; `progress` hears about a first run's install.
    pub fn start_with(opts: &EmulatorOptions, progress: &dyn Fn(&str)) -> Result<Emulator, Error> {
        let node = crate::emulator::find_node()?;
        let dir = crate::emulator::prepare(&node, progress)?;
        let cli = dir.join("src/cli.js");
        let node = node.bin;
        let mut cmd = Command::new(&node);
        cmd.arg(&cli).args(["--port", "0", "--exit-on-stdin-close"]);
        if let Some(p) = opts.worker_port {
            cmd.args(["--worker-port", &p.to_string()]);
        }
        if let Some(c) = &opts.config {
            cmd.arg("--config").arg(c);
        }
        cmd.env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches us, and we
            // stop the whole group (node and workerd) in order.
            .process_group(0);
        unsafe {
            cmd.pre_exec(|| {
                // Signals blocked for `wait_for_signal` must not stay blocked in the child.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::user(
                format!("cannot start {}: {e}", node.display()),
                format!(
                    "install Node.js 22 LTS or newer, or set {} to its binary",
                    crate::emulator::NODE_ENV
                ),
            )
        })?;
        EMULATOR_GROUP.store(child.id() as i32, Ordering::SeqCst);
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        {
            let mut err = child.stderr.take().expect("piped");
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                let mut buf = String::new();
                let _ = err.read_to_string(&mut buf);
                let mut t = tail.lock().unwrap();
                t.extend(
                    buf.lines()
                        .rev()
                        .take(20)
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev(),
                );
            });
        }
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("emulator: api=") {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let mut emu = Emulator {
            child: Some(child),
            api: String::new(),
            control: String::new(),
            stderr_tail,
        };
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(rest) => {
                let mut parts = rest.split_whitespace();
                emu.api = parts.next().unwrap_or_default().to_string();
                emu.control = parts
                    .find_map(|p| p.strip_prefix("control="))
                    .unwrap_or_default()
                    .to_string();
                Ok(emu)
            }
            Err(_) => {
                emu.stop();
                std::thread::sleep(Duration::from_millis(100));
                let tail = emu.stderr_tail.lock().unwrap().join("\n");
                Err(Error::user(
                    format!("the local Cloudflare emulator did not start: {tail}"),
                    format!(
                        "run `stateful-ci dev` again; if it still fails, run `{} {}` by hand to see why",
                        node.display(),
                        cli.display()
                    ),
                ))
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM to its process group, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        let _ = EMULATOR_GROUP.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if started.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // Anything left in the group (workerd) goes too.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct DevOptions {
    pub port: u16,
    pub oidc_issuer: Option<String>,
    /// Each allowed repository with its own default branch (learned by the
    /// caller from flags, the clone or init's record; never assumed).
    pub repositories: Vec<crate::deploy::Repository>,
    pub require_protected: bool,
    pub audience: String,
}

/// A running dev backend.
pub struct DevSession {
    pub emulator: Emulator,
    pub backend: String,
    _state: tempfile::TempDir,
}

/// Start the emulator and deploy the embedded Worker into it.
pub fn start(opts: &DevOptions, progress: &dyn Fn(&str)) -> Result<DevSession, Error> {
    let bundle = Bundle::load()?;
    let settings = Settings {
        account_id: DEV_ACCOUNT.into(),
        name: "stateful-ci".into(),
        repositories: opts.repositories.clone(),
        require_protected: opts.require_protected,
        audience: opts.audience.clone(),
        oidc_test_issuer: opts.oidc_issuer.clone(),
    };
    settings.validate()?;
    let state = tempfile::tempdir().map_err(|e| {
        Error::user(
            format!("cannot create a temporary directory: {e}"),
            "check TMPDIR and free space",
        )
    })?;
    progress("starting the local Cloudflare emulator");
    let emulator = Emulator::start_with(
        &EmulatorOptions {
            worker_port: Some(opts.port),
            config: None,
        },
        progress,
    )?;
    let client = Client::new(&emulator.api, ApiToken::new(DEV_TOKEN));
    let backend = format!("http://127.0.0.1:{}", opts.port);
    let deployer = Deployer {
        client: &client,
        settings,
        bundle,
        config: ConfigFile::new(state.path().join("stateful-ci.toml")),
        health_base: Some(backend.clone()),
        health_timeout: Duration::from_secs(60),
    };
    deployer.verify()?;
    let seen = deployer.observe()?;
    let plan = deployer.plan(&seen, false)?;
    deployer.apply(&plan, &seen, progress)?;
    Ok(DevSession {
        emulator,
        backend,
        _state: state,
    })
}

/// Process group of the running emulator (0: none), for the signal thread.
static EMULATOR_GROUP: AtomicI32 = AtomicI32::new(0);
/// Set once the backend serves; before that a signal stops at once.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Block SIGINT and SIGTERM (call before any thread starts, so no thread
/// takes them by default) and hand them to one thread: while starting up, a
/// signal stops the emulator's process group and exits (128 + signal); once
/// [`serving`] was called, the signal is sent on the returned channel and the
/// caller stops in order.
pub fn take_signals() -> Receiver<i32> {
    let set = signal_set();
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        loop {
            let mut sig: libc::c_int = 0;
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if SERVING.load(Ordering::SeqCst) {
                let _ = tx.send(sig);
            } else {
                let pg = EMULATOR_GROUP.load(Ordering::SeqCst);
                if pg > 0 {
                    unsafe {
                        libc::kill(-pg, libc::SIGTERM);
                    }
                }
                std::process::exit(128 + sig);
            }
        }
    });
    rx
}

/// From now on signals go to the channel of [`take_signals`].
pub fn serving() {
    SERVING.store(true, Ordering::SeqCst);
}

fn signal_set() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}
