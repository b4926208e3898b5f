//! Logic of the stateful-ci Worker that needs no Workers runtime; see
//! README.md. No I/O, no clocks, no `worker` crate: time, keys and stored
//! state are parameters, so all of it is tested natively.

pub mod auth;
pub mod commit;
pub mod config;
pub mod grant;
pub mod range;
pub mod retention;
pub mod visibility;

pub use auth::{AuthError, RunClass, RunContext, Scope, Tenant};
pub use config::Config;
