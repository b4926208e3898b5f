//! stateful-ci's status report and dashboard.
//!
//! Owns: gathering what `stateful-ci status` shows ([`gather`]: the config
//! file, the `[deployment]` record read through its one owner
//! `stateful_ci_runtime::deployment`, a local store's heads, the Worker's
//! health and admin routes, with the admin token found where `deploy` stored
//! it through `stateful_ci_installer::secrets`), the [`model::Status`] it
//! produces, and three renderings of it: plain text ([`text`]), JSON (serde
//! on the model) and the terminal dashboard ([`tui`]). It does not read the
//! environment's colour settings: the binary's printer passes them.
//!
//! Must not: change any state (it only reads the store, the config and the
//! Worker), print or store a secret (the admin token lives only inside
//! [`gather::AdminToken`], whose `Debug` is redacted, and never enters the
//! model), or deploy anything (that is the installer's job).

pub mod gather;
pub mod model;
pub mod text;
pub mod tui;

pub use gather::{AdminToken, Options, gather};
pub use model::Status;
