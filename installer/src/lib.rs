//! The deployment orchestrator: everything that sets stateful-ci up in a
//! repository (`init`) and in a Cloudflare account (`deploy`, `upgrade`,
//! `destroy`, and `dev`, which does the same against the local emulator).
//!
//! Pure planning is kept apart from I/O: a plan is computed from observed
//! state and printed or applied, so it can be tested without a network.
//! This crate does not print; the binary renders what it returns.
pub mod init;

pub mod bundle;
pub mod cloudflare;
pub mod credentials;
pub mod deploy;
#[cfg(unix)]
pub mod dev;
