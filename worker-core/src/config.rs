//! The Worker's settings, read from its plain-text bindings (set by
//! `stateful-ci deploy`, or by `stateful-ci dev`) and secrets.

/// GitHub Actions' OIDC issuer.
pub use stateful_ci_trust::GITHUB_ISSUER;

/// Binding names. Plain text unless marked secret.
pub mod vars {
    /// JSON list of the repositories allowed to use the backend, one object
    /// each: `{"name": "OWNER/NAME", "default_branch": "master", "id":
    /// "424242", "owner_id": "2020"}`. `default_branch` is required (learned
    /// by `deploy`/`dev`, never assumed); `id` and `owner_id` are GitHub's
    /// numeric ids when known (else the Worker pins the first verified
    /// token's ids for that name). Written by `stateful-ci deploy` and `dev`.
    pub const REPOSITORIES: &str = "REPOSITORIES";
    /// Legacy (before `REPOSITORIES`): comma-separated `OWNER/NAME` list,
    /// read only when `REPOSITORIES` is unset, together with `DEFAULT_BRANCH`.
    pub const ALLOWED_REPOSITORIES: &str = "ALLOWED_REPOSITORIES";
    /// Legacy: the default branch of every `ALLOWED_REPOSITORIES` entry.
    /// Required with it: there is no default.
    pub const DEFAULT_BRANCH: &str = "DEFAULT_BRANCH";
    /// Audience the tokens must carry; default `stateful-ci`.
    pub const OIDC_AUDIENCE: &str = "OIDC_AUDIENCE";
    /// Only set by `stateful-ci dev --oidc-issuer URL`: trust this issuer
    /// (JWKS at `URL/.well-known/jwks`) instead of GitHub's. Health reports it.
    pub const OIDC_TEST_ISSUER: &str = "OIDC_TEST_ISSUER";
    /// Comma-separated extra trusted refs (e.g. `refs/heads/release`).
    pub const TRUSTED_REFS: &str = "TRUSTED_REFS";
    /// `true`: a branch event is trusted only when its token says
    /// `ref_protected: true` (see docs/TRUST.md); default `false`.
    pub const REQUIRE_PROTECTED_REF: &str = "REQUIRE_PROTECTED_REF";
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

/// One allowed repository as `REPOSITORIES` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySetting {
    /// `OWNER/NAME`.
    pub name: String,
    /// The repository's default branch (`master` or `refs/heads/master`).
    pub default_branch: String,
    /// GitHub's numeric repository id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// GitHub's numeric owner id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

/// The most entries `REPOSITORIES` may list (bounds the per-request lookup).
pub const MAX_REPOSITORIES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub issuer: String,
    pub test_mode: bool,
    pub audience: String,
    /// Lower-cased `owner/name`.
    pub allowed_repositories: Vec<String>,
    /// Each allowed repository with its default branch and known ids.
    pub repositories: Vec<RepositorySetting>,
    /// Branches trusted besides each repository's default branch, as given.
    pub trusted_refs: Vec<String>,
    /// Whether trusted runs need `ref_protected: true`.
    pub require_protected: bool,
    pub retention_days: u32,
    /// What token verification accepts (issuer, audience, allow-list).
    pub verify: stateful_ci_trust::VerifyConfig,
    /// Which branches are trusted, per allowed repository (same order as
    /// `verify.allowed()`).
    trust: Vec<stateful_ci_trust::TrustConfig>,
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
        let named = |name: &str, e: &dyn std::fmt::Display| {
            ConfigError(format!("setting {name}: {e}; fix it and redeploy"))
        };
        let list = |name: &str| -> Vec<String> {
            get(name)
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let audience = get(vars::OIDC_AUDIENCE)
            .unwrap_or_else(|| stateful_ci_protocol::wire::DEFAULT_AUDIENCE.into());
        let (repositories, source) = match get(vars::REPOSITORIES) {
            Some(json) => {
                let repos: Vec<RepositorySetting> = serde_json::from_str(&json).map_err(|e| {
                    named(
                        vars::REPOSITORIES,
                        &format!(
                            "not a JSON list of {{\"name\", \"default_branch\", \"id\", \"owner_id\"}} objects ({e})"
                        ),
                    )
                })?;
                if repos.len() > MAX_REPOSITORIES {
                    return Err(named(
                        vars::REPOSITORIES,
                        &format!("{} repositories, at most {MAX_REPOSITORIES}", repos.len()),
                    ));
                }
                (repos, vars::REPOSITORIES)
            }
            None => {
                let names = list(vars::ALLOWED_REPOSITORIES);
                let branch = get(vars::DEFAULT_BRANCH);
                let repos = match branch {
                    Some(b) => names
                        .into_iter()
                        .map(|name| RepositorySetting {
                            name,
                            default_branch: b.clone(),
                            id: None,
                            owner_id: None,
                        })
                        .collect(),
                    None if names.is_empty() => Vec::new(),
                    None => {
                        return Err(ConfigError(format!(
                            "setting {} is missing: the default branch of the allowed repositories is never assumed \
                             (a branch named `main` is not trusted where the default branch is `master`); \
                             redeploy with `stateful-ci deploy` (it sets {} per repository)",
                            vars::DEFAULT_BRANCH,
                            vars::REPOSITORIES
                        )));
                    }
                };
                (repos, vars::ALLOWED_REPOSITORIES)
            }
        };
        let mut allowed = Vec::with_capacity(repositories.len());
        for r in &repositories {
            allowed.push(
                stateful_ci_trust::AllowedRepository::new(
                    &r.name,
                    r.id.as_deref(),
                    r.owner_id.as_deref(),
                )
                .map_err(|e| named(source, &e))?,
            );
        }
        let verify = match get(vars::OIDC_TEST_ISSUER) {
            Some(url) => stateful_ci_trust::VerifyConfig::test_issuer_allowing(
                url.trim_end_matches('/'),
                &audience,
                allowed,
            )
            .map_err(|e| named(vars::OIDC_TEST_ISSUER, &e))?,
            None => stateful_ci_trust::VerifyConfig::github_allowing(&audience, allowed)
                .map_err(|e| named(source, &e))?,
        };
        let require_protected = match get(vars::REQUIRE_PROTECTED_REF).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(named(
                    vars::REQUIRE_PROTECTED_REF,
                    &format!("{v:?} is not `true` or `false`"),
                ));
            }
        };
        let trusted_refs = list(vars::TRUSTED_REFS);
        for extra in &trusted_refs {
            stateful_ci_trust::TrustConfig::check_branch(extra)
                .map_err(|e| named(vars::TRUSTED_REFS, &e))?;
        }
        let mut trust = Vec::with_capacity(repositories.len());
        for r in &repositories {
            let branch = r.default_branch.trim();
            let mut t = stateful_ci_trust::TrustConfig::new(branch)
                .map_err(|e| named(source, &format!("default branch of `{}`: {e}", r.name)))?;
            for extra in &trusted_refs {
                t = t
                    .with_trusted_ref(extra)
                    .map_err(|e| named(vars::TRUSTED_REFS, &e))?;
            }
            trust.push(t.require_protected(require_protected));
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
            allowed_repositories: verify.allowed_repositories(),
            repositories,
            trusted_refs,
            require_protected,
            retention_days,
            verify,
            trust,
        })
    }

    /// Where the issuer publishes its keys.
    pub fn jwks_url(&self) -> String {
        self.verify.jwks_url()
    }

    /// The trust settings of the allowed repository `entry` (as returned by
    /// `verify.match_repository`): its own default branch and the extras.
    pub fn trust_for(
        &self,
        entry: &stateful_ci_trust::AllowedRepository,
    ) -> Option<&stateful_ci_trust::TrustConfig> {
        let i = self.verify.allowed().iter().position(|a| a == entry)?;
        self.trust.get(i)
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
        let c = cfg(&[
            ("ALLOWED_REPOSITORIES", "Acme/App, acme/lib"),
            ("DEFAULT_BRANCH", "trunk"),
        ])
        .unwrap();
        assert_eq!(c.issuer, GITHUB_ISSUER);
        assert!(!c.test_mode);
        assert!(!c.require_protected);
        assert_eq!(c.audience, "stateful-ci");
        assert_eq!(c.allowed_repositories, vec!["acme/app", "acme/lib"]);
        assert_eq!(c.repositories[1].default_branch, "trunk");
        assert_eq!(c.retention_days, 14);
        assert_eq!(c.jwks_url(), format!("{GITHUB_ISSUER}/.well-known/jwks"));
    }

    /// Issue 10, item 1: the default branch is never assumed to be `main`.
    #[test]
    fn the_default_branch_is_never_assumed() {
        let e = cfg(&[("ALLOWED_REPOSITORIES", "acme/app")]).unwrap_err();
        assert!(
            e.0.contains("DEFAULT_BRANCH") && e.0.contains("never assumed"),
            "{e}"
        );
        let e = cfg(&[("REPOSITORIES", r#"[{"name":"acme/app"}]"#)]).unwrap_err();
        assert!(e.0.contains("REPOSITORIES"), "{e}");
    }

    #[test]
    fn repositories_carry_their_own_default_branch_and_ids() {
        let c = cfg(&[
            (
                "REPOSITORIES",
                r#"[{"name":"acme/app","default_branch":"master","id":"42","owner_id":"7"},
                    {"name":"acme/lib","default_branch":"refs/heads/main"}]"#,
            ),
            ("REQUIRE_PROTECTED_REF", "true"),
            ("TRUSTED_REFS", "release"),
        ])
        .unwrap();
        assert!(c.require_protected);
        let app = &c.verify.allowed()[0];
        assert_eq!(app.repository_id.as_deref(), Some("42"));
        let t = c.trust_for(app).unwrap();
        assert_eq!(t.default_branch(), "refs/heads/master");
        assert!(t.is_trusted_ref("refs/heads/release") && !t.is_trusted_ref("refs/heads/main"));
        assert!(t.requires_protected());
        let lib = c.trust_for(&c.verify.allowed()[1]).unwrap();
        assert_eq!(lib.default_branch(), "refs/heads/main");
        let e = cfg(&[(
            "REPOSITORIES",
            r#"[{"name":"acme/app","default_branch":"master","id":"x"}]"#,
        )])
        .unwrap_err();
        assert!(
            e.0.contains("REPOSITORIES") && e.0.contains("numeric"),
            "{e}"
        );
        let e = cfg(&[("REQUIRE_PROTECTED_REF", "yes")]).unwrap_err();
        assert!(e.0.contains("REQUIRE_PROTECTED_REF"), "{e}");
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
        let e = cfg(&[
            ("ALLOWED_REPOSITORIES", "justaname"),
            ("DEFAULT_BRANCH", "main"),
        ])
        .unwrap_err();
        assert!(e.0.contains("ALLOWED_REPOSITORIES"), "{e}");
        let e = cfg(&[("RETENTION_DAYS", "0")]).unwrap_err();
        assert!(e.0.contains("RETENTION_DAYS"), "{e}");
        let e = cfg(&[("OIDC_TEST_ISSUER", "file:///x")]).unwrap_err();
        assert!(e.0.contains("OIDC_TEST_ISSUER"), "{e}");
        let e = cfg(&[("TRUSTED_REFS", "refs/tags/v1")]).unwrap_err();
        assert!(e.0.contains("TRUSTED_REFS"), "{e}");
    }
}
