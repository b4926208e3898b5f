//! The deployment record's reader and writer live in
//! `stateful_ci_runtime::deployment` (one owner for `stateful-ci.toml`,
//! shared with the dashboard and the runtime's config reader); this module
//! re-exports them for `deploy`, `upgrade` and `destroy`.

use std::path::{Path, PathBuf};

pub use stateful_ci_runtime::deployment::{ConfigFile, Record, key};

pub fn default_config_path(dir: &Path) -> PathBuf {
    dir.join(stateful_ci_runtime::config::CONFIG_FILE)
}
