//! The built-in deny list: credential files that are never captured,
//! whatever the configuration says. Matching is by file name (and for a few
//! entries by the last two path components), so the rule holds at any depth.

/// Names that are never captured, at any depth.
const NAMES: &[&str] = &[
    ".env",
    ".ssh",
    ".aws",
    ".azure",
    ".kube",
    ".gnupg",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    "credentials.toml",
];
/// File name suffixes that are never captured.
const SUFFIXES: &[&str] = &[".pem", ".key", ".p12", ".pfx"];
/// `parent/name` pairs that are never captured.
const PAIRS: &[(&str, &str)] = &[
    (".config", "gcloud"),
    (".docker", "config.json"),
    (".cargo", "credentials"),
];

/// Whether the entry at `rel` (a `/`-separated relative path) is a
/// credential that must not be captured. A denied directory is skipped with
/// everything below it.
pub fn is_denied(rel: &str) -> bool {
    let mut comps = rel.rsplit('/');
    let name = comps.next().unwrap_or("");
    let parent = comps.next();
    if NAMES.contains(&name) || name.starts_with(".env.") {
        return true;
    }
    if SUFFIXES
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
    {
        return true;
    }
    matches!(parent, Some(p) if PAIRS.iter().any(|(pp, n)| *pp == p && *n == name))
}

#[cfg(test)]
mod tests {
    use super::is_denied;

    #[test]
    fn credentials_are_denied_at_any_depth() {
        for p in [
            ".env",
            "a/.env.local",
            "x/.ssh",
            "node_modules/pkg/.npmrc",
            "a/server.pem",
            "tls.key",
            "c.p12",
            "c.pfx",
            "home/id_rsa",
            "id_ed25519",
            ".cargo-home/credentials.toml",
            ".cargo/credentials",
            "h/.config/gcloud",
            "h/.docker/config.json",
            ".aws",
            ".azure",
            ".kube",
            ".netrc",
            ".pypirc",
        ] {
            assert!(is_denied(p), "{p}");
        }
    }

    #[test]
    fn ordinary_files_pass() {
        for p in [
            "node_modules/env/index.js",
            ".environment",
            "keys.json",
            "a/.key",
            "id_rsa.pub",
            "docker/config.json",
        ] {
            assert!(!is_denied(p), "{p}");
        }
    }
}
