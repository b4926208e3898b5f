//! The stateful-ci snapshot engine.
//!
//! It owns everything between a workspace on disk and a [`store::Store`]:
//! configuration ([`config`], and the `[deployment]` record that `deploy`
//! writes in the same file: [`deployment`]), the walk ([`scan`]), content-defined
//! chunking, compression and packing ([`save`]), verified restore
//! ([`restore`]) and the local stat index that lets both skip unchanged
//! files ([`statindex`]). It does not print (it reports through
//! [`report::Reporter`]), parse command lines, or know about Cloudflare
//! accounts; the byte format it writes is described in `FORMAT.md`.

pub mod config;
pub mod deny;
pub mod deployment;
pub mod error;
pub mod fsat;
pub mod objects;
pub mod report;
pub mod restore;
pub mod save;
pub mod scan;
pub mod statindex;
pub mod store;

pub use config::{Config, Overrides};
pub use error::{Error, ErrorKind, Result};
pub use report::{Phase, Reporter, Silent};
pub use restore::{RestoreOptions, RestoreOutcome, RestoreSummary, restore};
pub use save::{SaveOptions, SaveOutcome, SaveSummary, save};
pub use stateful_ci_protocol::limits::WindowCut;
pub use store::{CasOutcome, LocalStore, RestorePoint, Store};
