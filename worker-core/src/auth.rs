//! The one boundary between a bearer token and what the run may do:
//! [`authenticate`] verifies a GitHub Actions OIDC token against the issuer's
//! JWKS and turns its verified claims into a [`RunContext`] (tenant, trust
//! class, restore scopes in order, save scope). Nothing here reads request
//! fields: only the verified token.
//!
//! This is an interim implementation inside the Worker. The shared crate
//! `stateful-ci-trust` (verification, classification and policy, with the
//! documented table) replaces the body of [`authenticate`] once it lands;
//! callers only see this module's types.
//!
//! Classification (from verified claims only):
//! - privileged: `release`, `deployment`, `deployment_status`, or any run on a
//!   tag (`refs/tags/*` or `ref_type: tag`);
//! - trusted: `push`, `schedule`, `workflow_dispatch`, `merge_group` on a
//!   trusted ref (the default branch or a configured trusted ref; a merge
//!   queue ref `refs/heads/gh-readonly-queue/<base>/...` counts when `<base>`
//!   is trusted);
//! - internal: those events on any other branch;
//! - external: `pull_request`, `pull_request_target`, `issue_comment`,
//!   `workflow_run` and every other event.
//!
//! Scopes: `branch:<ref>`, `pr:<N>`, `privileged:<ref>`.
//! - trusted and internal: restore own branch, then the default branch; save
//!   to own branch.
//! - external: restore own PR (`pr:N` from `refs/pull/N/merge|head`), then the
//!   base branch, then the default branch; save only to `pr:N` (no PR number:
//!   no save; so `pull_request_target`, `issue_comment` and `workflow_run`,
//!   whose ref is a branch, never save).
//! - privileged: restore own privileged scope, then the default branch and
//!   the trusted refs; save to `privileged:<ref>`, which only privileged runs
//!   of that ref read.
//!
//! No trusted, internal or privileged run ever has a `pr:` scope among its
//! restore scopes, and branch scopes are written only by trusted or internal
//! runs of that branch.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::{BigUint, RsaPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Allowed clock skew for exp/nbf/iat, seconds.
pub const CLOCK_SKEW_SECS: i64 = 60;
/// Longest token accepted, bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Smallest RSA modulus accepted, bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The repository a run belongs to, by immutable ids (names can change).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    pub owner_id: String,
    pub repository_id: String,
}

impl Tenant {
    /// Stable string form: `<owner_id>/<repository_id>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.owner_id, self.repository_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustClass {
    Trusted,
    Internal,
    External,
    Privileged,
}

impl TrustClass {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustClass::Trusted => "trusted",
            TrustClass::Internal => "internal",
            TrustClass::External => "external",
            TrustClass::Privileged => "privileged",
        }
    }
}

/// The verified claims the Worker records and decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub repository_id: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub repository_owner_id: String,
    #[serde(default, rename = "ref")]
    pub git_ref: String,
    #[serde(default)]
    pub ref_type: String,
    #[serde(default)]
    pub sha: String,
    #[serde(default)]
    pub event_name: String,
    #[serde(default)]
    pub base_ref: String,
    #[serde(default)]
    pub workflow_ref: String,
    #[serde(default)]
    pub job_workflow_ref: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub run_id: String,
    #[serde(default, deserialize_with = "string_or_number")]
    pub run_attempt: String,
    #[serde(default)]
    pub runner_environment: String,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

/// Who is asking and what policy lets them do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    pub tenant: Tenant,
    pub claims: Claims,
    pub class: TrustClass,
    /// In the order a restore tries them.
    pub restore_scopes: Vec<String>,
    pub save_scope: Option<String>,
    pub save_denied_reason: Option<String>,
}

/// Why a token was refused. `reason` is a stable snake_case string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub reason: &'static str,
    pub message: String,
}

impl AuthError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        AuthError {
            reason,
            message: message.into(),
        }
    }

    /// The issuer's keys may have rotated: refetch the JWKS (rate-limited)
    /// and try once more.
    pub fn is_unknown_kid(&self) -> bool {
        self.reason == "unknown_kid"
    }

    /// True for an allow-list refusal (a 403, not a 401).
    pub fn is_repository_not_allowed(&self) -> bool {
        self.reason == "repository_not_allowed"
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Registered {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

/// Verifies `token` (a compact JWS) against `jwks_json` (the issuer's
/// `/.well-known/jwks` document) at time `now` (Unix seconds), then classifies
/// the run and applies the scope policy.
pub fn authenticate(
    token: &str,
    jwks_json: &str,
    cfg: &Config,
    now: i64,
) -> Result<RunContext, AuthError> {
    let claims = verify(token, jwks_json, cfg, now)?;
    Ok(decide(claims, cfg))
}

/// Signature and registered-claim checks; returns the verified claims.
pub fn verify(token: &str, jwks_json: &str, cfg: &Config, now: i64) -> Result<Claims, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::new(
            "malformed",
            "the token is longer than any GitHub OIDC token; send the runner's token unchanged",
        ));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::new(
            "malformed",
            "the bearer token is not a JWT (three dot-separated parts); send the OIDC token from ACTIONS_ID_TOKEN_REQUEST_URL",
        ));
    };
    let header: Header = decode_json(h64)
        .ok_or_else(|| AuthError::new("malformed", "the token's header is not base64url JSON"))?;
    match header.alg.as_str() {
        "RS256" => {}
        a if a.eq_ignore_ascii_case("none") => {
            return Err(AuthError::new(
                "alg_none",
                "unsigned tokens (alg none) are refused; only RS256 tokens from the issuer are accepted",
            ));
        }
        a => {
            return Err(AuthError::new(
                "alg_not_allowed",
                format!(
                    "token algorithm {a:?} is refused; only RS256 tokens from the issuer are accepted"
                ),
            ));
        }
    }
    let jwks: Jwks = serde_json::from_str(jwks_json).map_err(|e| {
        AuthError::new(
            "jwks_invalid",
            format!("the issuer's JWKS is not valid JSON ({e}); check the issuer URL"),
        )
    })?;
    let kid = header.kid.unwrap_or_default();
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kty == "RSA" && k.kid.as_deref() == Some(kid.as_str()))
        .ok_or_else(|| AuthError::new("unknown_kid", format!("the token's key id {:?} is not among the issuer's keys; the token was not signed by the issuer", truncate(&kid, 80))))?;
    let key = rsa_key(jwk)?;
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| AuthError::new("malformed", "the token's signature is not base64url"))?;
    let digest = Sha256::digest(&token.as_bytes()[..h64.len() + 1 + p64.len()]);
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .map_err(|_| AuthError::new("bad_signature", "the token's signature does not verify with the issuer's key; the token was altered or forged"))?;

    let reg: Registered = decode_json(p64)
        .ok_or_else(|| AuthError::new("malformed", "the token's payload is not base64url JSON"))?;
    if reg.iss.as_deref() != Some(cfg.issuer.as_str()) {
        return Err(AuthError::new(
            "wrong_issuer",
            format!(
                "the token's issuer {:?} is not {:?}",
                truncate(reg.iss.as_deref().unwrap_or(""), 120),
                cfg.issuer
            ),
        ));
    }
    let aud_ok = match &reg.aud {
        Some(serde_json::Value::String(a)) => a == &cfg.audience,
        Some(serde_json::Value::Array(v)) => {
            v.iter().any(|a| a.as_str() == Some(cfg.audience.as_str()))
        }
        _ => false,
    };
    if !aud_ok {
        return Err(AuthError::new(
            "wrong_audience",
            format!(
                "the token's audience is not {:?}; request the token with audience={}",
                cfg.audience, cfg.audience
            ),
        ));
    }
    let exp = reg
        .exp
        .ok_or_else(|| AuthError::new("missing_claim", "the token has no exp claim"))?;
    if now > exp + CLOCK_SKEW_SECS {
        return Err(AuthError::new(
            "expired",
            "the token has expired; request a fresh OIDC token",
        ));
    }
    if let Some(nbf) = reg.nbf {
        if now + CLOCK_SKEW_SECS < nbf {
            return Err(AuthError::new(
                "not_yet_valid",
                "the token is not valid yet (nbf is in the future); check the runner's clock",
            ));
        }
    }
    if let Some(iat) = reg.iat {
        if now + CLOCK_SKEW_SECS < iat {
            return Err(AuthError::new(
                "issued_in_future",
                "the token claims to be issued in the future; check the runner's clock",
            ));
        }
    }
    let claims: Claims = decode_json(p64)
        .ok_or_else(|| AuthError::new("malformed", "the token's claims have unexpected types"))?;
    if claims.repository.is_empty()
        || claims.repository_id.is_empty()
        || claims.repository_owner_id.is_empty()
    {
        return Err(AuthError::new(
            "missing_claim",
            "the token lacks repository, repository_id or repository_owner_id; it is not a GitHub Actions token",
        ));
    }
    let prefix = format!("repo:{}:", claims.repository.to_ascii_lowercase());
    if !claims.sub.to_ascii_lowercase().starts_with(&prefix) {
        return Err(AuthError::new(
            "subject_mismatch",
            "the token's sub does not name its repository claim",
        ));
    }
    if !cfg
        .allowed_repositories
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&claims.repository))
    {
        return Err(AuthError::new(
            "repository_not_allowed",
            format!(
                "repository {} is not allowed to use this backend; add it to the allowed repositories and redeploy",
                truncate(&claims.repository, 200)
            ),
        ));
    }
    Ok(claims)
}

fn rsa_key(jwk: &Jwk) -> Result<RsaPublicKey, AuthError> {
    let bad = || AuthError::new("jwks_invalid", "the issuer's RSA key is malformed");
    let n = URL_SAFE_NO_PAD
        .decode(jwk.n.as_deref().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    let e = URL_SAFE_NO_PAD
        .decode(jwk.e.as_deref().ok_or_else(bad)?)
        .map_err(|_| bad())?;
    let n = BigUint::from_bytes_be(&n);
    if n.bits() < MIN_RSA_BITS {
        return Err(AuthError::new(
            "weak_key",
            format!("the issuer's key has fewer than {MIN_RSA_BITS} bits"),
        ));
    }
    RsaPublicKey::new(n, BigUint::from_bytes_be(&e)).map_err(|_| bad())
}

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Classifies a run and applies the scope policy (module doc).
pub fn decide(claims: Claims, cfg: &Config) -> RunContext {
    let default_ref = format!("refs/heads/{}", cfg.default_branch);
    let is_trusted_ref = |r: &str| r == default_ref || cfg.trusted_refs.iter().any(|t| t == r);
    let r = claims.git_ref.as_str();
    let event = claims.event_name.as_str();
    let is_tag = r.starts_with("refs/tags/") || claims.ref_type == "tag";
    let class = if matches!(event, "release" | "deployment" | "deployment_status") || is_tag {
        TrustClass::Privileged
    } else if matches!(
        event,
        "push" | "schedule" | "workflow_dispatch" | "merge_group"
    ) {
        let queue_base = r
            .strip_prefix("refs/heads/gh-readonly-queue/")
            .and_then(|rest| rest.split('/').next())
            .map(|b| format!("refs/heads/{b}"));
        let trusted = if event == "merge_group" {
            queue_base.as_deref().is_some_and(is_trusted_ref)
        } else {
            is_trusted_ref(r)
        };
        if trusted {
            TrustClass::Trusted
        } else {
            TrustClass::Internal
        }
    } else {
        TrustClass::External
    };
    let default_scope = format!("branch:{default_ref}");
    let mut restore = Vec::new();
    let mut push = |s: String| {
        if !restore.contains(&s) {
            restore.push(s);
        }
    };
    let (save_scope, save_denied_reason) = match class {
        TrustClass::Trusted | TrustClass::Internal => {
            if r.starts_with("refs/heads/") {
                push(format!("branch:{r}"));
                push(default_scope.clone());
                (Some(format!("branch:{r}")), None)
            } else {
                push(default_scope.clone());
                (
                    None,
                    Some(format!("ref {r:?} is not a branch; only branch runs save")),
                )
            }
        }
        TrustClass::External => {
            let pr = pr_number(r);
            if let Some(n) = pr {
                push(format!("pr:{n}"));
            }
            if !claims.base_ref.is_empty() {
                let base = if claims.base_ref.starts_with("refs/") {
                    claims.base_ref.clone()
                } else {
                    format!("refs/heads/{}", claims.base_ref)
                };
                if base.starts_with("refs/heads/") {
                    push(format!("branch:{base}"));
                }
            }
            push(default_scope.clone());
            match pr {
                Some(n) => (Some(format!("pr:{n}")), None),
                None => (
                    None,
                    Some(format!(
                        "a {event} run has no pull request of its own to save to; external runs save only to their pull request's scope"
                    )),
                ),
            }
        }
        TrustClass::Privileged => {
            push(format!("privileged:{r}"));
            push(default_scope.clone());
            for t in &cfg.trusted_refs {
                if t.starts_with("refs/heads/") {
                    push(format!("branch:{t}"));
                }
            }
            (Some(format!("privileged:{r}")), None)
        }
    };
    RunContext {
        tenant: Tenant {
            owner_id: claims.repository_owner_id.clone(),
            repository_id: claims.repository_id.clone(),
        },
        claims,
        class,
        restore_scopes: restore,
        save_scope,
        save_denied_reason,
    }
}

/// `N` of `refs/pull/N/merge` or `refs/pull/N/head`.
fn pr_number(r: &str) -> Option<u64> {
    let rest = r.strip_prefix("refs/pull/")?;
    let (n, tail) = rest.split_once('/')?;
    if !matches!(tail, "merge" | "head") {
        return None;
    }
    n.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    use serde_json::json;
    use std::sync::OnceLock;

    fn cfg() -> Config {
        Config {
            issuer: "https://issuer.test".into(),
            test_mode: true,
            audience: "stateful-ci".into(),
            allowed_repositories: vec!["acme/app".into()],
            default_branch: "main".into(),
            trusted_refs: vec!["refs/heads/release".into()],
            retention_days: 14,
        }
    }

    fn key() -> &'static RsaPrivateKey {
        static K: OnceLock<RsaPrivateKey> = OnceLock::new();
        K.get_or_init(|| RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap())
    }

    fn jwks() -> String {
        let p = key().to_public_key();
        json!({"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig",
            "n": URL_SAFE_NO_PAD.encode(p.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(p.e().to_bytes_be())}]})
        .to_string()
    }

    const NOW: i64 = 1_800_000_000;

    fn claims() -> serde_json::Value {
        json!({"iss":"https://issuer.test","aud":"stateful-ci","exp":NOW+300,"nbf":NOW-10,"iat":NOW-10,
            "sub":"repo:acme/app:ref:refs/heads/main","repository":"acme/app","repository_id":"42",
            "repository_owner_id":"7","ref":"refs/heads/main","ref_type":"branch","event_name":"push",
            "sha":"abc","actor":"dev","run_id":"100","run_attempt":"1","workflow_ref":"acme/app/.github/workflows/ci.yml@refs/heads/main",
            "runner_environment":"github-hosted"})
    }

    fn sign(header: serde_json::Value, payload: &serde_json::Value) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let p = URL_SAFE_NO_PAD.encode(payload.to_string());
        let digest = Sha256::digest(format!("{h}.{p}").as_bytes());
        let sig = key().sign(Pkcs1v15Sign::new::<Sha256>(), &digest).unwrap();
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn token(payload: &serde_json::Value) -> String {
        sign(json!({"alg":"RS256","kid":"k1","typ":"JWT"}), payload)
    }

    fn reason(t: &str) -> &'static str {
        verify(t, &jwks(), &cfg(), NOW).unwrap_err().reason
    }

    fn with(f: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
        let mut c = claims();
        f(&mut c);
        c
    }

    #[test]
    fn a_valid_token_is_accepted() {
        let ctx = authenticate(&token(&claims()), &jwks(), &cfg(), NOW).unwrap();
        assert_eq!(ctx.tenant.id(), "7/42");
        assert_eq!(ctx.class, TrustClass::Trusted);
        assert_eq!(ctx.save_scope.as_deref(), Some("branch:refs/heads/main"));
    }

    #[test]
    fn forged_tokens_are_denied_with_distinct_reasons() {
        let p64 = URL_SAFE_NO_PAD.encode(claims().to_string());
        let none = format!(
            "{}.{p64}.",
            URL_SAFE_NO_PAD.encode(json!({"alg":"none"}).to_string())
        );
        assert_eq!(reason(&none), "alg_none");

        // HS256 keyed with the public key's bytes (alg confusion).
        let h = URL_SAFE_NO_PAD.encode(json!({"alg":"HS256","kid":"k1"}).to_string());
        use hmac::Mac;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(jwks().as_bytes()).unwrap();
        mac.update(format!("{h}.{p64}").as_bytes());
        let hs = format!(
            "{h}.{p64}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(reason(&hs), "alg_not_allowed");

        assert_eq!(
            reason(&token(&with(|c| c["iss"] = json!("https://evil.test")))),
            "wrong_issuer"
        );
        assert_eq!(
            reason(&token(&with(|c| c["aud"] = json!("other")))),
            "wrong_audience"
        );
        assert!(
            verify(
                &token(&with(|c| c["aud"] = json!(["x", "stateful-ci"]))),
                &jwks(),
                &cfg(),
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            reason(&token(&with(|c| c["exp"] = json!(NOW - 61)))),
            "expired"
        );
        assert_eq!(
            reason(&token(&with(|c| c["nbf"] = json!(NOW + 120)))),
            "not_yet_valid"
        );
        assert_eq!(
            reason(&token(&with(|c| c["iat"] = json!(NOW + 120)))),
            "issued_in_future"
        );
        assert_eq!(
            reason(&sign(json!({"alg":"RS256","kid":"k2"}), &claims())),
            "unknown_kid"
        );

        let good = token(&claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let tampered =
            URL_SAFE_NO_PAD.encode(with(|c| c["ref"] = json!("refs/heads/evil")).to_string());
        parts[1] = &tampered;
        assert_eq!(reason(&parts.join(".")), "bad_signature");

        assert_eq!(
            reason(&token(&with(
                |c| c["sub"] = json!("repo:other/x:ref:refs/heads/main")
            ))),
            "subject_mismatch"
        );
        let other = with(|c| {
            c["repository"] = json!("other/x");
            c["sub"] = json!("repo:other/x:ref:refs/heads/main");
        });
        assert_eq!(reason(&token(&other)), "repository_not_allowed");
        assert_eq!(reason("not-a-jwt"), "malformed");
    }

    fn ctx(event: &str, r: &str, base: &str) -> RunContext {
        let c: Claims = serde_json::from_value(with(|c| {
            c["event_name"] = json!(event);
            c["ref"] = json!(r);
            c["base_ref"] = json!(base);
            c["ref_type"] = json!(if r.starts_with("refs/tags/") {
                "tag"
            } else {
                "branch"
            });
        }))
        .unwrap();
        decide(c, &cfg())
    }

    #[test]
    fn policy_examples() {
        let c = ctx("push", "refs/heads/main", "");
        assert_eq!(
            (c.class, c.restore_scopes.clone()),
            (
                TrustClass::Trusted,
                vec!["branch:refs/heads/main".to_string()]
            )
        );
        let c = ctx("push", "refs/heads/feature", "");
        assert_eq!(c.class, TrustClass::Internal);
        assert_eq!(
            c.restore_scopes,
            vec!["branch:refs/heads/feature", "branch:refs/heads/main"]
        );
        let c = ctx("pull_request", "refs/pull/5/merge", "main");
        assert_eq!(c.class, TrustClass::External);
        assert_eq!(c.restore_scopes, vec!["pr:5", "branch:refs/heads/main"]);
        assert_eq!(c.save_scope.as_deref(), Some("pr:5"));
        let c = ctx("pull_request_target", "refs/heads/main", "main");
        assert_eq!(c.class, TrustClass::External);
        assert_eq!(
            c.save_scope, None,
            "pull_request_target must not save to the base branch"
        );
        let c = ctx("release", "refs/tags/v1", "");
        assert_eq!(c.class, TrustClass::Privileged);
        assert_eq!(
            c.restore_scopes,
            vec![
                "privileged:refs/tags/v1",
                "branch:refs/heads/main",
                "branch:refs/heads/release"
            ]
        );
        let c = ctx(
            "merge_group",
            "refs/heads/gh-readonly-queue/main/pr-5-abc",
            "",
        );
        assert_eq!(c.class, TrustClass::Trusted);
    }

    /// Every event x ref class: no external save scope is ever read by a
    /// trusted, internal or privileged run, and privileged runs read only
    /// privileged or trusted-ref scopes.
    #[test]
    fn trust_matrix_invariants() {
        let events = [
            "push",
            "schedule",
            "workflow_dispatch",
            "merge_group",
            "pull_request",
            "pull_request_target",
            "issue_comment",
            "workflow_run",
            "release",
            "deployment",
            "deployment_status",
            "something_new",
        ];
        let refs = [
            "refs/heads/main",
            "refs/heads/release",
            "refs/heads/feature",
            "refs/tags/v1",
            "refs/pull/5/merge",
            "refs/pull/6/head",
            "refs/heads/gh-readonly-queue/main/pr-5-x",
            "",
        ];
        let mut all = Vec::new();
        for e in events {
            for r in refs {
                for base in ["", "main", "feature"] {
                    all.push(ctx(e, r, base));
                }
            }
        }
        let external_saves: Vec<String> = all
            .iter()
            .filter(|c| c.class == TrustClass::External)
            .filter_map(|c| c.save_scope.clone())
            .collect();
        assert!(!external_saves.is_empty());
        for c in &all {
            if c.class == TrustClass::External {
                if let Some(s) = &c.save_scope {
                    assert!(s.starts_with("pr:"), "external run saves to {s}");
                }
                continue;
            }
            for s in &c.restore_scopes {
                assert!(
                    !external_saves.contains(s),
                    "{:?} {} reads external scope {s}",
                    c.class,
                    c.claims.event_name
                );
                assert!(!s.starts_with("pr:"));
                if c.class == TrustClass::Privileged {
                    assert!(
                        s.starts_with("privileged:")
                            || s == "branch:refs/heads/main"
                            || s == "branch:refs/heads/release",
                        "privileged reads {s}"
                    );
                }
            }
            if let Some(s) = &c.save_scope {
                if c.class == TrustClass::Privileged {
                    assert!(s.starts_with("privileged:"));
                } else {
                    assert_eq!(s, &format!("branch:{}", c.claims.git_ref));
                }
            }
        }
        // Trusted runs read only trusted-ref branch scopes.
        for c in all.iter().filter(|c| c.class == TrustClass::Trusted) {
            for s in &c.restore_scopes {
                let r = s.strip_prefix("branch:").unwrap();
                assert!(
                    r == "refs/heads/main"
                        || r == "refs/heads/release"
                        || r.starts_with("refs/heads/gh-readonly-queue/main/"),
                    "trusted reads {s}"
                );
            }
        }
    }
}
