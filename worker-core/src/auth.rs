//! The one boundary between a bearer token and what the run may do, built on
//! the shared `stateful-ci-trust` crate (verification, classification and
//! the scope policy, documented in `docs/TRUST.md`):
//!
//! 1. [`authenticate`]: [`stateful_ci_trust::verify`] then
//!    [`stateful_ci_trust::classify`], giving a [`Verified`] run (tenant,
//!    claims for the audit record, class);
//! 2. [`Verified::decide`]: [`stateful_ci_trust::decide`] for a workspace,
//!    giving a [`RunContext`]: the claims and trust's [`Decision`] (restore
//!    scopes in order, the save scope or why not, the Durable Object name).
//!
//! Nothing here reads request fields: only the verified token. The JWKS cache
//! and fetch are the Worker's; [`should_fetch_jwks`] applies the refresh
//! policy (refresh once on an unknown `kid`, never more often than a floor).

use stateful_ci_trust as trust;
use trust::{JwksRefreshPolicy, RefreshDecision, SaveDecision};

use crate::config::Config;

/// The trust crate's own types, used as they are (not mirrored): the tenant
/// (`Tenant::key()` is `<owner_id>/<repository_id>`), the run's class, its
/// verified claims, scopes and the policy's decision.
pub use trust::{Claims, Decision, Jwks, RunClass, RunIdentity, Scope, Tenant};

/// A claim as the Worker records it: empty when the token had none.
pub fn claim(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

/// A run whose token verified, classified from its claims.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The verified claims (provenance for the audit record).
    pub claims: Claims,
    /// Tenant, class and why (from [`trust::classify`]).
    pub identity: RunIdentity,
    /// Set when the repository is allowed by name only (no id recorded at
    /// deploy time): the Worker must check it against the ids it pinned for
    /// that name (trust on first use, [`check_pin`]) before acting.
    pub pin: Option<Pin>,
}

/// The ids a token presents for an allow-list name without recorded ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Lower-cased `owner/name` of the allow-list entry.
    pub name: String,
    pub repository_id: String,
    pub owner_id: String,
}

/// Compares a token's ids with the ids pinned for its name (`pinned`:
/// `(repository_id, owner_id)` from the first verified token, stored by the
/// Worker). Only the repository id decides (it is never reused); a changed
/// owner id with the same repository id is a transfer and keeps working.
pub fn check_pin(pin: &Pin, pinned: (&str, &str)) -> Result<(), AuthError> {
    if pin.repository_id == pinned.0 {
        return Ok(());
    }
    Err(AuthError {
        reason: "repository_id_mismatch",
        message: trust::TokenError::RepositoryIdMismatch {
            repository: pin.name.clone(),
            expected: format!("repository id {} (pinned from its first run)", pinned.0),
            got: format!("repository id {}", pin.repository_id),
        }
        .to_string(),
        unknown_kid: false,
        not_allowed: true,
    })
}

/// Who is asking and what policy lets them do in one workspace: the
/// verified claims and the trust crate's [`Decision`], nothing copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    pub claims: Claims,
    pub decision: Decision,
}

impl RunContext {
    pub fn tenant(&self) -> &Tenant {
        &self.decision.tenant
    }

    pub fn class(&self) -> RunClass {
        self.decision.class
    }

    pub fn workspace(&self) -> &str {
        self.decision.workspace.as_str()
    }

    /// In the order a restore tries them.
    pub fn restore_scopes(&self) -> &[Scope] {
        &self.decision.restore
    }

    /// The one scope this run may save to, if any.
    pub fn save_scope(&self) -> Option<&Scope> {
        self.decision.save_scope()
    }

    /// Why this run may not save (`None` when it may).
    pub fn save_denied_reason(&self) -> Option<String> {
        match &self.decision.save {
            SaveDecision::Allowed { .. } => None,
            SaveDecision::Denied { code, reason } => Some(format!("{reason} ({code})")),
        }
    }

    /// The Durable Object name of `scope` in this run's tenant and workspace
    /// (computed by the trust crate, the one place that names it).
    pub fn coordinator_name(&self, scope: &Scope) -> String {
        self.decision.coordinator_name(scope)
    }
}

/// Why a token was refused. `reason` is the trust crate's stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub reason: &'static str,
    pub message: String,
    unknown_kid: bool,
    not_allowed: bool,
}

impl AuthError {
    /// The issuer's keys may have rotated: refetch the JWKS (if
    /// [`should_fetch_jwks`] allows) and try once more.
    pub fn is_unknown_kid(&self) -> bool {
        self.unknown_kid
    }

    /// True for an allow-list refusal (a 403, not a 401).
    pub fn is_repository_not_allowed(&self) -> bool {
        self.not_allowed
    }
}

impl From<trust::TokenError> for AuthError {
    fn from(e: trust::TokenError) -> Self {
        AuthError {
            reason: e.code(),
            message: e.to_string(),
            unknown_kid: e.wants_jwks_refresh(),
            not_allowed: matches!(
                e,
                trust::TokenError::RepositoryNotAllowed(_)
                    | trust::TokenError::RepositoryIdMismatch { .. }
            ),
        }
    }
}

/// Whether the Worker should (re)fetch the issuer's JWKS now. `fetched_at`:
/// when the cached set was fetched (None: nothing cached).
pub fn should_fetch_jwks(fetched_at: Option<i64>, now: i64, unknown_kid: bool) -> bool {
    JwksRefreshPolicy::default().decide(fetched_at, now, unknown_kid) == RefreshDecision::Fetch
}

/// Parses the issuer's JWKS document.
pub fn parse_jwks(json: &str) -> Result<Jwks, String> {
    Jwks::from_json(json).map_err(|e| format!("{} ({})", e, e.code()))
}

/// Verifies `token` against `jwks` at `now` (Unix seconds) and classifies the run.
pub fn authenticate(
    token: &str,
    jwks: &Jwks,
    cfg: &Config,
    now: i64,
) -> Result<Verified, AuthError> {
    let claims = trust::verify(token, jwks, &cfg.verify, now)?;
    // The allow-list entry that admitted the token, and that very
    // repository's own trust settings (its default branch).
    let entry = cfg.verify.match_repository(&claims)?;
    let trust_cfg = cfg
        .trust_for(entry)
        .expect("every allow-list entry has trust settings");
    let identity = trust::classify(&claims, trust_cfg);
    let pin = entry.repository_id.is_none().then(|| Pin {
        name: entry.name.clone(),
        repository_id: claims.repository_id.clone(),
        owner_id: claims.repository_owner_id.clone(),
    });
    Ok(Verified {
        claims,
        identity,
        pin,
    })
}

impl Verified {
    pub fn tenant(&self) -> &Tenant {
        &self.identity.tenant
    }

    pub fn class(&self) -> RunClass {
        self.identity.class
    }

    /// The policy for `workspace` (already checked with
    /// `stateful_ci_protocol::wire::valid_workspace`).
    pub fn decide(&self, workspace: &str) -> Result<RunContext, String> {
        let ws = trust::Workspace::new(workspace).map_err(|e| e.to_string())?;
        Ok(RunContext {
            claims: self.claims.clone(),
            decision: trust::decide(&self.identity, &ws),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rsa::pkcs1v15::Pkcs1v15Sign;
    use rsa::traits::PublicKeyParts;
    use rsa::{RsaPrivateKey, RsaPublicKey};
    use serde_json::json;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::OnceLock;

    const ISSUER: &str = "http://127.0.0.1:9";
    const NOW: i64 = 1_800_000_000;

    fn cfg() -> Config {
        let vars: HashMap<&str, &str> = [
            ("OIDC_TEST_ISSUER", ISSUER),
            ("ALLOWED_REPOSITORIES", "acme/app"),
            ("DEFAULT_BRANCH", "main"),
            ("TRUSTED_REFS", "release"),
        ]
        .into();
        Config::from_vars(|k| vars.get(k).map(|v| v.to_string())).unwrap()
    }

    fn cfg_with(repositories: &str) -> Config {
        let vars: HashMap<&str, &str> =
            [("OIDC_TEST_ISSUER", ISSUER), ("REPOSITORIES", repositories)].into();
        Config::from_vars(|k| vars.get(k).map(|v| v.to_string())).unwrap()
    }

    fn key() -> &'static RsaPrivateKey {
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap())
    }

    fn jwks() -> Jwks {
        let p: RsaPublicKey = key().to_public_key();
        let doc = json!({"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig",
            "n": URL_SAFE_NO_PAD.encode(p.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(p.e().to_bytes_be())}]});
        parse_jwks(&doc.to_string()).unwrap()
    }

    fn token(overrides: serde_json::Value) -> String {
        let mut c = json!({"iss": ISSUER, "aud": "stateful-ci", "exp": NOW + 300, "nbf": NOW - 10, "iat": NOW - 10,
            "sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app", "repository_id": "42",
            "repository_owner": "acme", "repository_owner_id": "7", "ref": "refs/heads/main", "ref_type": "branch",
            "event_name": "push", "sha": "abc", "actor": "dev", "run_id": "100", "run_attempt": "1",
            "workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/main", "runner_environment": "github-hosted"});
        for (k, v) in overrides.as_object().unwrap() {
            c[k] = v.clone();
        }
        let h = URL_SAFE_NO_PAD.encode(json!({"alg":"RS256","kid":"k1","typ":"JWT"}).to_string());
        let p = URL_SAFE_NO_PAD.encode(c.to_string());
        let digest = Sha256::digest(format!("{h}.{p}").as_bytes());
        let sig = key().sign(Pkcs1v15Sign::new::<Sha256>(), &digest).unwrap();
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    #[test]
    fn a_valid_push_to_main_is_trusted_and_saves_to_main() {
        let v = authenticate(&token(json!({})), &jwks(), &cfg(), NOW).unwrap();
        assert_eq!(v.tenant().key(), "7/42");
        assert_eq!(v.class(), RunClass::Trusted);
        assert_eq!(
            (claim(&v.claims.run_id), claim(&v.claims.git_ref)),
            ("100", "refs/heads/main")
        );
        let ctx = v.decide("default").unwrap();
        let main: Scope = "branch:refs/heads/main".parse().unwrap();
        assert_eq!(ctx.save_scope(), Some(&main));
        assert_eq!(ctx.restore_scopes(), std::slice::from_ref(&main));
        assert_eq!(
            ctx.coordinator_name(&main),
            "v1/7/42/default/branch:refs/heads/main"
        );
    }

    #[test]
    fn refusals_map_to_reasons_and_flags() {
        let e = authenticate(&token(json!({"exp": NOW - 3600})), &jwks(), &cfg(), NOW).unwrap_err();
        assert_eq!(e.reason, "token_expired");
        assert!(!e.is_unknown_kid() && !e.is_repository_not_allowed());
        let other = json!({"repository": "evil/x", "repository_owner": "evil", "sub": "repo:evil/x:ref:refs/heads/main"});
        let e = authenticate(&token(other), &jwks(), &cfg(), NOW).unwrap_err();
        assert!(e.is_repository_not_allowed(), "{e:?}");
        let empty = parse_jwks(r#"{"keys":[]}"#).unwrap();
        let e = authenticate(&token(json!({})), &empty, &cfg(), NOW).unwrap_err();
        assert!(e.is_unknown_kid(), "{e:?}");
    }

    #[test]
    fn pull_requests_save_only_to_their_own_scope() {
        let pr = json!({"event_name": "pull_request", "ref": "refs/pull/5/merge", "base_ref": "main", "sub": "repo:acme/app:pull_request"});
        let ctx = authenticate(&token(pr), &jwks(), &cfg(), NOW)
            .unwrap()
            .decide("default")
            .unwrap();
        assert_eq!(ctx.class(), RunClass::External);
        assert_eq!(ctx.save_scope(), Some(&Scope::PullRequest(5)));
        assert_eq!(ctx.restore_scopes().first(), Some(&Scope::PullRequest(5)));
        let prt = json!({"event_name": "pull_request_target", "ref": "refs/heads/main", "base_ref": "main"});
        let ctx = authenticate(&token(prt), &jwks(), &cfg(), NOW)
            .unwrap()
            .decide("default")
            .unwrap();
        assert_eq!(ctx.save_scope(), None);
        assert!(ctx.save_denied_reason().is_some());
        assert!(ctx.restore_scopes().iter().all(|s| s.kind() != "pr"));
    }

    /// Issue 10, item 1: each repository is classified against its own
    /// default branch; a branch named `main` in a `master` repository is an
    /// ordinary branch.
    #[test]
    fn each_repository_is_classified_with_its_own_default_branch() {
        let c = cfg_with(
            r#"[{"name":"acme/app","default_branch":"master"},{"name":"acme/lib","default_branch":"main"}]"#,
        );
        let v = authenticate(&token(json!({})), &jwks(), &c, NOW).unwrap();
        assert_eq!(v.class(), RunClass::Internal, "{}", v.identity.reason);
        let ctx = v.decide("default").unwrap();
        let scopes: Vec<String> = ctx.restore_scopes().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            scopes,
            vec!["branch:refs/heads/main", "branch:refs/heads/master"]
        );
        let master =
            json!({"ref": "refs/heads/master", "sub": "repo:acme/app:ref:refs/heads/master"});
        let v = authenticate(&token(master), &jwks(), &c, NOW).unwrap();
        assert_eq!(v.class(), RunClass::Trusted);
        let lib = json!({"repository": "acme/lib", "repository_id": "43", "sub": "repo:acme/lib:ref:refs/heads/main"});
        let v = authenticate(&token(lib), &jwks(), &c, NOW).unwrap();
        assert_eq!(
            v.class(),
            RunClass::Trusted,
            "acme/lib's default branch is main"
        );
    }

    /// Issue 10, item 6: an id recorded at deploy time refuses another
    /// repository holding the name; without one, the first token's ids are
    /// pinned and later ones compared with them.
    #[test]
    fn repositories_are_allowed_by_id() {
        let c = cfg_with(r#"[{"name":"acme/app","default_branch":"main","id":"42"}]"#);
        let v = authenticate(&token(json!({})), &jwks(), &c, NOW).unwrap();
        assert_eq!(v.pin, None, "ids recorded: nothing to pin");
        let e = authenticate(&token(json!({"repository_id": "99"})), &jwks(), &c, NOW).unwrap_err();
        assert_eq!(e.reason, "repository_id_mismatch");
        assert!(e.is_repository_not_allowed());

        let c = cfg_with(r#"[{"name":"acme/app","default_branch":"main"}]"#);
        let v = authenticate(&token(json!({})), &jwks(), &c, NOW).unwrap();
        let pin = v.pin.clone().expect("allowed by name: pin the ids");
        assert_eq!(
            (pin.name.as_str(), pin.repository_id.as_str()),
            ("acme/app", "42")
        );
        assert!(check_pin(&pin, ("42", "7")).is_ok());
        assert!(
            check_pin(&pin, ("42", "8")).is_ok(),
            "a transfer keeps the repository id"
        );
        let e = check_pin(&pin, ("41", "7")).unwrap_err();
        assert_eq!(e.reason, "repository_id_mismatch");
        assert!(
            e.is_repository_not_allowed() && e.message.contains("41"),
            "{e:?}"
        );
    }

    #[test]
    fn the_immutable_subject_form_is_accepted() {
        let v = authenticate(
            &token(json!({"sub": "repo:acme@7/app@42:ref:refs/heads/main"})),
            &jwks(),
            &cfg(),
            NOW,
        )
        .unwrap();
        assert_eq!(v.class(), RunClass::Trusted);
        let e = authenticate(
            &token(json!({"sub": "repo:acme@7/app@43:ref:refs/heads/main"})),
            &jwks(),
            &cfg(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(e.reason, "subject_id_mismatch");
    }

    #[test]
    fn jwks_refresh_is_rate_limited() {
        assert!(should_fetch_jwks(None, NOW, false));
        assert!(!should_fetch_jwks(Some(NOW - 10), NOW, false));
        assert!(
            !should_fetch_jwks(Some(NOW - 10), NOW, true),
            "under the floor"
        );
        assert!(should_fetch_jwks(Some(NOW - 120), NOW, true));
        assert!(should_fetch_jwks(Some(NOW - 7200), NOW, false), "too old");
    }
}
