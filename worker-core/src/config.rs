//! The Worker's settings, read from its plain-text bindings (set by
//! `stateful-ci deploy`, or by `stateful-ci dev`) and secrets.

/// GitHub Actions' OIDC issuer.
pub use stateful_ci_trust::GITHUB_ISSUER;

/// Binding names. Plain text unless marked secret.
pub mod vars {
    /// Comma-separated `OWNER/NAME` list of repositories allowed to use the
    /// backend (case-insensitive). Required.
    pub const ALLOWED_REPOSITORIES: &str = "ALLOWED_REPOSITORIES";
    /// Audience the tokens must carry; default `stateful-ci`.
    pub const OIDC_AUDIENCE: &str = "OIDC_AUDIENCE";
    /// Only set by `stateful-ci dev --oidc-issuer URL`: trust this issuer
    /// (JWKS at `URL/.well-known/jwks`) instead of GitHub's. Health reports it.
    pub const OIDC_TEST_ISSUER: &str = "OIDC_TEST_ISSUER";
    /// The default branch name (e.g. `main`); default `main`.
    pub const DEFAULT_BRANCH: &str = "DEFAULT_BRANCH";
    /// Comma-separated extra trusted refs (e.g. `refs/heads/release`).
    pub const TRUSTED_REFS: &str = "TRUSTED_REFS";
    /// Snapshots older than this many days are swept (each scope keeps its
    /// head); default 14.
    pub const RETENTION_DAYS: &str = "RETENTION_DAYS";
    /// Secret: key for read grants (any string of 32+ bytes).
    pub const GRANT_KEY: &str = "GRANT_KEY";
    /// Secret: bearer token of the admin routes; unset disables them.
    pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
}

/// How long a restore's read grant stays valid.
pub const GRANT_TTL_SECS: i64 = 3600;
/// The shortest grant key accepted.
pub const MIN_GRANT_KEY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub issuer: String,
    pub test_mode: bool,
    pub audience: String,
    /// Lower-cased `owner/name`.
    pub allowed_repositories: Vec<String>,
    pub default_branch: String,
    /// Branches trusted besides the default branch, as given.
    pub trusted_refs: Vec<String>,
    pub retention_days: u32,
    /// What token verification accepts (issuer, audience, allow-list).
    pub verify: stateful_ci_trust::VerifyConfig,
    /// Which branches are trusted.
    pub trust: stateful_ci_trust::TrustConfig,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Reads the settings through `var` (binding name to value).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let audience = get(vars::OIDC_AUDIENCE)
            .unwrap_or_else(|| stateful_ci_protocol::wire::DEFAULT_AUDIENCE.into());
        let allowed: Vec<String> = get(vars::ALLOWED_REPOSITORIES)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let named = |name: &str, e: &dyn std::fmt::Display| {
            ConfigError(format!("setting {name}: {e}; fix it and redeploy"))
        };
        let verify = match get(vars::OIDC_TEST_ISSUER) {
            Some(url) => stateful_ci_trust::VerifyConfig::test_issuer(
                url.trim_end_matches('/'),
                &audience,
                &allowed,
            )
            .map_err(|e| named(vars::OIDC_TEST_ISSUER, &e))?,
            None => stateful_ci_trust::VerifyConfig::github(&audience, &allowed)
                .map_err(|e| named(vars::ALLOWED_REPOSITORIES, &e))?,
        };
        let default_branch = get(vars::DEFAULT_BRANCH).unwrap_or_else(|| "main".into());
        let default_branch = default_branch.trim_start_matches("refs/heads/").to_string();
        let mut trust = stateful_ci_trust::TrustConfig::new(&default_branch)
            .map_err(|e| named(vars::DEFAULT_BRANCH, &e))?;
        let trusted_refs: Vec<String> = get(vars::TRUSTED_REFS)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for t in &trusted_refs {
            trust = trust
                .with_trusted_ref(t)
                .map_err(|e| named(vars::TRUSTED_REFS, &e))?;
        }
        let retention_days = match get(vars::RETENTION_DAYS) {
            None => 14,
            Some(v) => v.parse::<u32>().ok().filter(|d| *d >= 1).ok_or_else(|| {
                ConfigError(format!(
                    "{} is {v:?}; set it to a whole number of days, at least 1",
                    vars::RETENTION_DAYS
                ))
            })?,
        };
        Ok(Config {
            issuer: verify.issuer().to_string(),
            test_mode: verify.is_test_mode(),
            audience,
            allowed_repositories: verify.allowed_repositories().to_vec(),
            default_branch,
            trusted_refs,
            retention_days,
            verify,
            trust,
        })
    }

    /// Where the issuer publishes its keys.
    pub fn jwks_url(&self) -> String {
        self.verify.jwks_url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_trust_github_only() {
        let c = cfg(&[("ALLOWED_REPOSITORIES", "Acme/App, acme/lib")]).unwrap();
        assert_eq!(c.issuer, GITHUB_ISSUER);
        assert!(!c.test_mode);
        assert_eq!(c.audience, "stateful-ci");
        assert_eq!(c.allowed_repositories, vec!["acme/app", "acme/lib"]);
        assert_eq!(c.default_branch, "main");
        assert_eq!(c.retention_days, 14);
        assert_eq!(c.jwks_url(), format!("{GITHUB_ISSUER}/.well-known/jwks"));
    }

    #[test]
    fn test_issuer_switches_on_test_mode() {
        let c = cfg(&[
            ("OIDC_TEST_ISSUER", "http://127.0.0.1:9/"),
            ("TRUSTED_REFS", "release,refs/heads/x"),
        ])
        .unwrap();
        assert!(c.test_mode);
        assert_eq!(c.jwks_url(), "http://127.0.0.1:9/.well-known/jwks");
        assert_eq!(c.trusted_refs, vec!["release", "refs/heads/x"]);
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let e = cfg(&[("ALLOWED_REPOSITORIES", "justaname")]).unwrap_err();
        assert!(e.0.contains("ALLOWED_REPOSITORIES"), "{e}");
        let e = cfg(&[("RETENTION_DAYS", "0")]).unwrap_err();
        assert!(e.0.contains("RETENTION_DAYS"), "{e}");
        let e = cfg(&[("OIDC_TEST_ISSUER", "file:///x")]).unwrap_err();
        assert!(e.0.contains("OIDC_TEST_ISSUER"), "{e}");
        let e = cfg(&[("TRUSTED_REFS", "refs/tags/v1")]).unwrap_err();
        assert!(e.0.contains("TRUSTED_REFS"), "{e}");
    }
}
