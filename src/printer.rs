//! All terminal output goes through this module: [`Printer`] decides
//! between a progress bar (interactive terminal), plain lines (logs) and
//! GitHub Actions workflow commands (`GITHUB_ACTIONS=true`), reads `NO_COLOR`
//! (the only place that does; [`Printer::color_wanted`] tells the others),
//! and implements the engine's `Reporter`. Results meant for scripts (JSON,
//! plans, reports) go to stdout through [`Printer::out`]; everything else to
//! stderr. No other module of the binary uses `println!`/`eprintln!`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use console::style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stateful_ci_runtime::{Error, Phase, Reporter};

pub struct Printer {
    tty: bool,
    no_color: bool,
    github: bool,
    color: bool,
    bar: Mutex<Option<ProgressBar>>,
    warnings: Mutex<Vec<String>>,
}

impl Printer {
    pub fn from_env() -> Self {
        let tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let github = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
        if no_color || !tty {
            console::set_colors_enabled_stderr(false);
            console::set_colors_enabled(false);
        }
        Printer {
            tty,
            no_color,
            github,
            color: tty && !no_color,
            bar: Mutex::new(None),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// Whether colour is allowed at all (`NO_COLOR` unset); callers that
    /// draw on a terminal of their own (init's prompts, the dashboard) ask.
    pub fn color_wanted(&self) -> bool {
        !self.no_color
    }

    /// A result for scripts or the reader, on stdout, exactly as given.
    pub fn out(&self, text: &str) {
        self.finish_bar();
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
    }

    /// [`Printer::out`] with a newline.
    pub fn out_line(&self, line: &str) {
        self.out(&format!("{line}\n"));
    }

    /// Open a collapsible group in GitHub's log.
    pub fn group(&self, title: &str) {
        if self.github {
            eprintln!("::group::{title}");
        }
    }

    pub fn end_group(&self) {
        self.finish_bar();
        if self.github {
            eprintln!("::endgroup::");
        }
    }

    /// The one summary line of a run.
    pub fn summary(&self, line: &str) {
        self.finish_bar();
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            if self.color {
                style(line).bold().to_string()
            } else {
                line.to_string()
            }
        );
    }

    pub fn info(&self, line: &str) {
        self.finish_bar();
        eprintln!("{line}");
    }

    pub fn error(&self, e: &Error) {
        self.finish_bar();
        if self.github {
            eprintln!("::error::{}", escape_command(&e.message));
        }
        eprintln!("{} {}", style("error:").red().bold(), e.message);
        if let Some(h) = &e.hint {
            eprintln!("{} {h}", style("hint:").cyan().bold());
        }
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.warnings.lock().unwrap())
    }

    fn finish_bar(&self) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }
}

impl Reporter for Printer {
    fn phase(&self, phase: Phase, total: Option<u64>) {
        self.finish_bar();
        if self.tty && !self.github {
            let bar = match total {
                Some(t) if t > 0 => {
                    let b = ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr());
                    b.set_style(
                        ProgressStyle::with_template(
                            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    b
                }
                _ => {
                    let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    // A save packs as its walk goes: the bytes are counted,
                    // their total is not known until the end.
                    let template = if phase == Phase::Pack {
                        "{spinner} {msg} {bytes} {bytes_per_sec}"
                    } else {
                        "{spinner} {msg}"
                    };
                    b.set_style(ProgressStyle::with_template(template).expect("valid template"));
                    b.enable_steady_tick(std::time::Duration::from_millis(120));
                    b
                }
            };
            bar.set_message(phase.label());
            *self.bar.lock().unwrap() = Some(bar);
        } else if total.is_some_and(|t| t > 0) {
            eprintln!("{} ({})", phase.label(), human_bytes(total.unwrap_or(0)));
        } else if phase == Phase::Pack {
            eprintln!("{}", phase.label());
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.bar.lock().unwrap() {
            bar.inc(bytes);
        }
    }

    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap().push(message.to_string());
        let bar = self.bar.lock().unwrap();
        let line = if self.github {
            format!("::warning::{}", escape_command(message))
        } else {
            format!("{} {message}", style("warning:").yellow().bold())
        };
        match &*bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

/// A line on stderr for callbacks that cannot hold the printer (they must
/// be `'static`, e.g. the Cloudflare client's retry hook).
pub fn note(line: &str) {
    eprintln!("{line}");
}

/// Escape a message for a GitHub workflow command.
fn escape_command(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

pub use stateful_ci_dashboard::text::human_bytes;
