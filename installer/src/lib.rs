//! The deployment orchestrator: everything that sets stateful-ci up in a
//! repository (`init`) and in a Cloudflare account (`deploy`, `upgrade`,
//! `destroy`, and `dev`, which does the same against the local emulator).
//!
//! Pure planning is kept apart from I/O: a plan is computed from observed
//! state and printed or applied, so it can be tested without a network.
//! This crate does not print; the binary renders what it returns. Its
//! errors are its own ([`Error`]: a message and a `hint:`), converted to the
//! engine's at the binary's edge. Secrets at rest have one owner
//! ([`secrets`]); the deployment record is `stateful_ci_runtime::deployment`.
pub mod init;

pub mod bundle;
pub mod cloudflare;
pub mod credentials;
pub mod deploy;
#[cfg(unix)]
pub mod dev;
pub mod emulator;
pub mod error;
pub mod secrets;
pub mod tools;

pub use error::{Error, Result};
