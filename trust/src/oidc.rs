//! GitHub Actions OIDC token verification (RS256 JWTs against the issuer's
//! JWKS), with no I/O and no clock: the caller passes the key set it fetched
//! and the current Unix time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::traits::PublicKeyParts as _;
use rsa::{BoxedUint, PublicKey, sha2::Sha256};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The issuer of every GitHub Actions OIDC token on github.com.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// Largest token accepted, in bytes. GitHub's tokens are about 1-2 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Deepest JSON nesting accepted in a token header, payload or JWKS. GitHub's
/// tokens are flat objects (an `aud` array makes depth 2); a JWKS is 3 deep.
pub const MAX_JSON_DEPTH: usize = 8;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (bounds the CPU one verification costs).
pub const MAX_RSA_BITS: usize = 8192;
/// Largest JWKS document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys accepted in one JWKS.
pub const MAX_JWKS_KEYS: usize = 32;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: i64 = 60;
/// Largest `aud` array accepted.
const MAX_AUDIENCES: usize = 16;
/// Longest `kid` accepted.
const MAX_KID_LEN: usize = 256;

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// What [`verify`] accepts: issuer, audience, allowed repositories and clock
/// skew. Built once at Worker start-up from deploy-time settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyConfig {
    issuer: String,
    test_mode: bool,
    audience: String,
    allowed: Vec<AllowedRepository>,
    leeway_secs: i64,
}

/// One repository on the allow-list: its name and, once known, GitHub's
/// immutable ids. An entry with a `repository_id` admits tokens by that id
/// (a renamed repository keeps working; a new repository that takes over
/// the name is refused); an entry without one admits tokens by name, and the
/// Worker then pins the first verified token's ids for that name
/// ([`VerifyConfig::match_repository`] says which case applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRepository {
    /// `owner/name`, lower-cased (GitHub treats names case-insensitively).
    pub name: String,
    /// GitHub's numeric repository id, when recorded.
    pub repository_id: Option<String>,
    /// GitHub's numeric owner id, when recorded.
    pub owner_id: Option<String>,
}

impl AllowedRepository {
    /// `name` is `OWNER/NAME`; ids, when given, are GitHub's numeric ids.
    pub fn new(
        name: &str,
        repository_id: Option<&str>,
        owner_id: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let name = name.trim();
        if !is_repository_name(name) {
            return Err(ConfigError::BadRepository(sanitize(name)));
        }
        let id = |v: Option<&str>| -> Result<Option<String>, ConfigError> {
            match v.map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) if is_numeric_id(v) => Ok(Some(v.to_owned())),
                Some(v) => Err(ConfigError::BadRepositoryId {
                    repository: sanitize(name),
                    id: sanitize(v),
                }),
            }
        };
        Ok(Self {
            name: name.to_ascii_lowercase(),
            repository_id: id(repository_id)?,
            owner_id: id(owner_id)?,
        })
    }
}

fn is_numeric_id(v: &str) -> bool {
    (1..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
}

/// A [`VerifyConfig`] that cannot be built; the message says which setting to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the OIDC audience is empty: set the audience the runners request (default `stateful-ci`)"
    )]
    EmptyAudience,
    #[error(
        "allowed repository `{0}` is not of the form OWNER/NAME: list repositories as they appear in GitHub URLs, e.g. `octo-org/octo-repo`"
    )]
    BadRepository(String),
    #[error(
        "repository id `{id}` of `{repository}` is not a number: give GitHub's numeric id (`gh api repos/OWNER/NAME --jq .id`)"
    )]
    BadRepositoryId { repository: String, id: String },
    #[error("repository `{0}` is listed twice: list each repository once")]
    DuplicateRepository(String),
    #[error(
        "test issuer `{0}` is not an http(s) URL without a trailing slash: pass the base URL of the local issuer, e.g. `http://127.0.0.1:8123`"
    )]
    BadTestIssuer(String),
    #[error("clock leeway {0} s is outside 0..=300: use a small skew such as 60")]
    BadLeeway(i64),
}

impl VerifyConfig {
    /// Production configuration: tokens must come from [`GITHUB_ISSUER`].
    pub fn github<I, S>(audience: &str, repositories: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(
            GITHUB_ISSUER.to_owned(),
            false,
            audience,
            names_to_entries(repositories)?,
        )
    }

    /// Production configuration with a full allow-list (names and ids).
    pub fn github_allowing(
        audience: &str,
        allowed: Vec<AllowedRepository>,
    ) -> Result<Self, ConfigError> {
        Self::build(GITHUB_ISSUER.to_owned(), false, audience, allowed)
    }

    /// Local-testing configuration (`stateful-ci dev --oidc-issuer URL` only,
    /// never `deploy`): tokens must come from `issuer`, whose JWKS is at
    /// `issuer/.well-known/jwks`. [`VerifyConfig::is_test_mode`] reports it so
    /// the health route can say so loudly.
    pub fn test_issuer<I, S>(
        issuer: &str,
        audience: &str,
        repositories: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::test_issuer_allowing(issuer, audience, names_to_entries(repositories)?)
    }

    /// [`VerifyConfig::test_issuer`] with a full allow-list (names and ids).
    pub fn test_issuer_allowing(
        issuer: &str,
        audience: &str,
        allowed: Vec<AllowedRepository>,
    ) -> Result<Self, ConfigError> {
        let ok_scheme = issuer.starts_with("http://") || issuer.starts_with("https://");
        let host = issuer.split_once("://").map(|(_, rest)| rest).unwrap_or("");
        if !ok_scheme
            || host.is_empty()
            || issuer.ends_with('/')
            || issuer.len() > 512
            || issuer.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::BadTestIssuer(sanitize(issuer)));
        }
        Self::build(issuer.to_owned(), true, audience, allowed)
    }

    fn build(
        issuer: String,
        test_mode: bool,
        audience: &str,
        allowed: Vec<AllowedRepository>,
    ) -> Result<Self, ConfigError> {
        if audience.trim().is_empty() {
            return Err(ConfigError::EmptyAudience);
        }
        for (i, a) in allowed.iter().enumerate() {
            let dup = allowed[..i].iter().any(|b| {
                b.name == a.name
                    || (a.repository_id.is_some() && b.repository_id == a.repository_id)
            });
            if dup {
                return Err(ConfigError::DuplicateRepository(a.name.clone()));
            }
        }
        Ok(Self {
            issuer,
            test_mode,
            audience: audience.to_owned(),
            allowed,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        })
    }

    /// Tolerated clock skew in seconds (default [`DEFAULT_LEEWAY_SECS`]).
    pub fn with_leeway(mut self, secs: i64) -> Result<Self, ConfigError> {
        if !(0..=300).contains(&secs) {
            return Err(ConfigError::BadLeeway(secs));
        }
        self.leeway_secs = secs;
        Ok(self)
    }

    /// The issuer tokens must name in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the issuer publishes its keys: `ISSUER/.well-known/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks", self.issuer)
    }

    /// True when a non-GitHub issuer is trusted (local testing only).
    pub fn is_test_mode(&self) -> bool {
        self.test_mode
    }

    /// The audience tokens must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The allowed repositories, lower-cased `owner/name`.
    pub fn allowed_repositories(&self) -> Vec<String> {
        self.allowed.iter().map(|a| a.name.clone()).collect()
    }

    /// The allow-list entries.
    pub fn allowed(&self) -> &[AllowedRepository] {
        &self.allowed
    }

    /// Whether `owner/name` is on the allow-list by name (case-insensitive,
    /// as GitHub treats repository names).
    pub fn is_repository_allowed(&self, repository: &str) -> bool {
        let lower = repository.to_ascii_lowercase();
        self.allowed.iter().any(|a| a.name == lower)
    }

    /// The allow-list entry that admits these (signature-verified) claims.
    ///
    /// 1. An entry whose recorded `repository_id` is the token's admits it,
    ///    whatever the name now is (renames keep working), if its recorded
    ///    owner id (when any) matches too.
    /// 2. Otherwise an entry with the token's name: refused with
    ///    [`TokenError::RepositoryIdMismatch`] if it records another id (the
    ///    name now belongs to another repository); admitted if it records no
    ///    id (the caller pins the ids of the first such token it sees).
    /// 3. Otherwise [`TokenError::RepositoryNotAllowed`].
    pub fn match_repository(&self, c: &Claims) -> Result<&AllowedRepository, TokenError> {
        if let Some(a) = self
            .allowed
            .iter()
            .find(|a| a.repository_id.as_deref() == Some(c.repository_id.as_str()))
        {
            return match a.owner_id.as_deref() {
                Some(owner) if owner != c.repository_owner_id => {
                    Err(TokenError::RepositoryIdMismatch {
                        repository: sanitize(&c.repository),
                        expected: format!("owner id {owner}"),
                        got: format!("owner id {}", sanitize(&c.repository_owner_id)),
                    })
                }
                _ => Ok(a),
            };
        }
        let lower = c.repository.to_ascii_lowercase();
        match self.allowed.iter().find(|a| a.name == lower) {
            Some(a) => match a.repository_id.as_deref() {
                Some(id) => Err(TokenError::RepositoryIdMismatch {
                    repository: sanitize(&c.repository),
                    expected: format!("repository id {id}"),
                    got: format!("repository id {}", sanitize(&c.repository_id)),
                }),
                None => Ok(a),
            },
            None => Err(TokenError::RepositoryNotAllowed(sanitize(&c.repository))),
        }
    }
}

fn names_to_entries<I, S>(repositories: I) -> Result<Vec<AllowedRepository>, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out: Vec<AllowedRepository> = Vec::new();
    for repo in repositories {
        let entry = AllowedRepository::new(repo.as_ref(), None, None)?;
        if !out.iter().any(|a| a.name == entry.name) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// `OWNER/NAME` as GitHub allows them: owner 1-39 of `[A-Za-z0-9-]`, name
/// 1-100 of `[A-Za-z0-9._-]`, and the name is not `.` or `..`.
fn is_repository_name(s: &str) -> bool {
    let Some((owner, name)) = s.split_once('/') else {
        return false;
    };
    let owner_ok = (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let name_ok = (1..=100).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    owner_ok && name_ok
}

// ---------------------------------------------------------------------------
// Key set
// ---------------------------------------------------------------------------

/// The issuer's JSON Web Key Set, parsed once and kept by the Worker.
///
/// Keys that cannot be used (not RSA, not for signatures, too small, bad
/// numbers, duplicate `kid`) are kept with the reason, so a token that names
/// them fails with a precise error instead of an endless "unknown kid".
#[derive(Clone)]
pub struct Jwks {
    keys: Vec<(String, Result<PublicKey, KeyProblem>)>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyProblem {
    TooSmall(usize),
    Unusable(String),
}

/// A JWKS document that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error(
        "the issuer's JWKS is {0} bytes, over the {MAX_JWKS_BYTES}-byte limit: check that the JWKS URL points at the OIDC issuer's key set"
    )]
    TooLarge(usize),
    #[error(
        "the issuer's JWKS is not valid JSON ({0}): check that the JWKS URL points at the OIDC issuer's key set"
    )]
    Malformed(String),
    #[error(
        "the issuer's JWKS nests JSON deeper than {MAX_JSON_DEPTH} levels: it is not a key set"
    )]
    TooDeep,
    #[error(
        "the issuer's JWKS has no `keys` array: check that the JWKS URL points at the OIDC issuer's key set"
    )]
    NoKeys,
    #[error(
        "the issuer's JWKS lists {0} keys, over the limit of {MAX_JWKS_KEYS}: it is not GitHub's key set"
    )]
    TooManyKeys(usize),
}

impl JwksError {
    /// Stable snake_case code for logs and JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            JwksError::TooLarge(_) => "jwks_too_large",
            JwksError::Malformed(_) => "jwks_malformed",
            JwksError::TooDeep => "jwks_too_deep",
            JwksError::NoKeys => "jwks_no_keys",
            JwksError::TooManyKeys(_) => "jwks_too_many_keys",
        }
    }
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`) as served at
    /// `ISSUER/.well-known/jwks`.
    pub fn from_json(json: &str) -> Result<Self, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(json.len()));
        }
        if json_depth_exceeds(json.as_bytes(), MAX_JSON_DEPTH) {
            return Err(JwksError::TooDeep);
        }
        let value: Value =
            serde_json::from_str(json).map_err(|e| JwksError::Malformed(e.to_string()))?;
        let Some(keys) = value.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NoKeys);
        };
        if keys.len() > MAX_JWKS_KEYS {
            return Err(JwksError::TooManyKeys(keys.len()));
        }
        let mut out: Vec<(String, Result<PublicKey, KeyProblem>)> = Vec::new();
        for key in keys {
            let Some(obj) = key.as_object() else { continue };
            // A key without a kid can never be selected; skip it.
            let Some(kid) = obj.get("kid").and_then(Value::as_str) else {
                continue;
            };
            if kid.is_empty() || kid.len() > MAX_KID_LEN {
                continue;
            }
            let parsed = parse_jwk(obj);
            if let Some(existing) = out.iter_mut().find(|(k, _)| k == kid) {
                existing.1 = Err(KeyProblem::Unusable(
                    "the JWKS lists this kid more than once".into(),
                ));
                continue;
            }
            out.push((kid.to_owned(), parsed));
        }
        Ok(Self { keys: out })
    }

    /// Builds a key set from RSA public keys; for fake issuers in tests.
    pub fn from_rsa_keys<'a>(keys: impl IntoIterator<Item = (&'a str, &'a PublicKey)>) -> Self {
        let keys = keys
            .into_iter()
            .map(|(kid, key)| (kid.to_owned(), check_size(key.clone())))
            .collect();
        Self { keys }
    }

    /// Renders a key set as JWKS JSON (`kty`, `use`, `alg`, `kid`, `n`, `e`),
    /// the inverse of [`Jwks::from_json`]; for fake issuers in tests.
    pub fn rsa_keys_to_json<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a PublicKey)>,
    ) -> String {
        let keys: Vec<Value> = keys
            .into_iter()
            .map(|(kid, key)| {
                serde_json::json!({
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": kid,
                    "n": URL_SAFE_NO_PAD.encode(trim_zeros(&key.n().to_be_bytes())),
                    "e": URL_SAFE_NO_PAD.encode(trim_zeros(&key.e().to_be_bytes())),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// The key ids in this set (usable or not).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    /// Number of keys (usable or not).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn get(&self, kid: &str) -> Option<&Result<PublicKey, KeyProblem>> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, v)| v)
    }
}

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    &bytes[start..]
}

fn parse_jwk(obj: &Map<String, Value>) -> Result<PublicKey, KeyProblem> {
    let kty = obj.get("kty").and_then(Value::as_str).unwrap_or("");
    if kty != "RSA" {
        return Err(KeyProblem::Unusable(format!(
            "key type `{}` is not RSA",
            sanitize(kty)
        )));
    }
    if let Some(usage) = obj.get("use").and_then(Value::as_str)
        && usage != "sig"
    {
        return Err(KeyProblem::Unusable(format!(
            "key use `{}` is not `sig`",
            sanitize(usage)
        )));
    }
    if let Some(alg) = obj.get("alg").and_then(Value::as_str)
        && alg != "RS256"
    {
        return Err(KeyProblem::Unusable(format!(
            "key algorithm `{}` is not RS256",
            sanitize(alg)
        )));
    }
    let component = |name: &str| -> Result<Vec<u8>, KeyProblem> {
        let text = obj
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| KeyProblem::Unusable(format!("RSA key has no `{name}`")))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| KeyProblem::Unusable(format!("RSA key `{name}` is not base64url")))?;
        Ok(trim_zeros(&bytes).to_vec())
    };
    let n = component("n")?;
    let e = component("e")?;
    let n_bits = bit_length(&n);
    if n_bits < MIN_RSA_BITS {
        return Err(KeyProblem::TooSmall(n_bits));
    }
    if n_bits > MAX_RSA_BITS {
        return Err(KeyProblem::Unusable(format!(
            "RSA modulus of {n_bits} bits is over {MAX_RSA_BITS}"
        )));
    }
    if e.len() > 8 {
        return Err(KeyProblem::Unusable("RSA exponent is too large".into()));
    }
    let n = boxed_uint(&n);
    let e = boxed_uint(&e);
    let key = PublicKey::new_with_size_limits(n, e, MIN_RSA_BITS..=MAX_RSA_BITS)
        .map_err(|err| KeyProblem::Unusable(format!("RSA key rejected: {err}")))?;
    Ok(key)
}

fn check_size(key: PublicKey) -> Result<PublicKey, KeyProblem> {
    let bits = bit_length(trim_zeros(&key.n().to_be_bytes()));
    if bits < MIN_RSA_BITS {
        Err(KeyProblem::TooSmall(bits))
    } else if bits > MAX_RSA_BITS {
        Err(KeyProblem::Unusable(format!(
            "RSA modulus of {bits} bits is over {MAX_RSA_BITS}"
        )))
    } else {
        Ok(key)
    }
}

/// Bit length of a big-endian number without leading zero bytes.
fn bit_length(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(&top) => (be.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

fn boxed_uint(be: &[u8]) -> BoxedUint {
    let precision = (be.len().max(1) * 8).next_multiple_of(64) as u32;
    BoxedUint::from_be_slice(be, precision).expect("precision covers the input length")
}

// ---------------------------------------------------------------------------
// JWKS refresh policy
// ---------------------------------------------------------------------------

/// When the Worker may refetch the issuer's key set: when it has none, when
/// the cached one is older than `max_age_secs`, or when a token names an
/// unknown `kid` (GitHub rotated its keys) and the last fetch is at least
/// `min_interval_secs` old. A token with an unknown kid causes at most one
/// refetch, and no stream of such tokens can make the Worker fetch more often
/// than the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksRefreshPolicy {
    /// Floor between two fetches, in seconds.
    pub min_interval_secs: i64,
    /// Age after which a cached key set is refetched anyway, in seconds.
    pub max_age_secs: i64,
}

impl Default for JwksRefreshPolicy {
    fn default() -> Self {
        Self {
            min_interval_secs: 60,
            max_age_secs: 3600,
        }
    }
}

/// What [`JwksRefreshPolicy::decide`] tells the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Fetch the key set now (none cached, too old, or an unknown kid past the floor).
    Fetch,
    /// The cached key set is fine; use it.
    UseCached,
    /// An unknown kid, but the last fetch was too recent: reject the token with
    /// [`TokenError::UnknownKid`]; a refetch is allowed after `retry_after_secs`.
    TooSoon { retry_after_secs: i64 },
}

impl JwksRefreshPolicy {
    /// `last_fetch_unix`: when the cached key set was fetched (`None`: nothing
    /// cached). `unknown_kid`: the token's kid is not in the cached set. A
    /// clock that went backwards counts as "just fetched".
    pub fn decide(
        &self,
        last_fetch_unix: Option<i64>,
        now_unix: i64,
        unknown_kid: bool,
    ) -> RefreshDecision {
        let Some(last) = last_fetch_unix else {
            return RefreshDecision::Fetch;
        };
        let age = now_unix.saturating_sub(last).max(0);
        if age >= self.max_age_secs {
            return RefreshDecision::Fetch;
        }
        if !unknown_kid {
            return RefreshDecision::UseCached;
        }
        if age >= self.min_interval_secs {
            RefreshDecision::Fetch
        } else {
            RefreshDecision::TooSoon {
                retry_after_secs: self.min_interval_secs - age,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------

/// The verified claims of a GitHub Actions OIDC token that stateful-ci uses.
///
/// GitHub sends every custom claim as a string; empty strings (e.g. `base_ref`
/// on a push) become `None`. Only [`verify`] produces these from a token; the
/// serde derives are for storing them (D1 provenance) and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    /// Audiences (`aud` may be a string or an array in the token).
    pub aud: Vec<String>,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: i64,
    pub jti: Option<String>,
    /// `OWNER/NAME`.
    pub repository: String,
    /// Numeric id as a string; with `repository_owner_id`, the tenant.
    pub repository_id: String,
    pub repository_owner: String,
    pub repository_owner_id: String,
    pub repository_visibility: Option<String>,
    pub event_name: String,
    /// The `ref` claim, e.g. `refs/heads/main`, `refs/pull/7/merge`, `refs/tags/v1`.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// `branch` or `tag`.
    pub ref_type: Option<String>,
    pub ref_protected: Option<bool>,
    pub sha: Option<String>,
    /// Target branch of a pull request.
    pub base_ref: Option<String>,
    /// Source branch of a pull request.
    pub head_ref: Option<String>,
    pub workflow: Option<String>,
    pub workflow_ref: Option<String>,
    pub workflow_sha: Option<String>,
    pub job_workflow_ref: Option<String>,
    pub job_workflow_sha: Option<String>,
    pub actor: Option<String>,
    pub actor_id: Option<String>,
    pub run_id: Option<String>,
    pub run_number: Option<String>,
    pub run_attempt: Option<String>,
    /// `github-hosted` or `self-hosted`.
    pub runner_environment: Option<String>,
    /// The deployment environment of the job, when it has one.
    pub environment: Option<String>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a token was refused. Each variant has a stable [`TokenError::code`];
/// the message says what to do. Messages never contain the token itself, and
/// values copied from an unverified token are truncated and sanitised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the OIDC token is {0} bytes, over the {MAX_TOKEN_BYTES}-byte limit: send the token GitHub Actions issued, unmodified"
    )]
    TooLarge(usize),
    #[error(
        "the OIDC token is not a JWS compact token ({0}): send the `value` GitHub Actions returned from ACTIONS_ID_TOKEN_REQUEST_URL, unmodified"
    )]
    Malformed(String),
    #[error(
        "the OIDC token's {0} nests JSON deeper than {MAX_JSON_DEPTH} levels: it was not issued by GitHub Actions"
    )]
    JsonTooDeep(&'static str),
    #[error(
        "the OIDC token is unsigned (`alg: none`): only RS256 tokens issued by GitHub Actions are accepted"
    )]
    AlgNone,
    #[error(
        "the OIDC token uses algorithm `{0}`: only RS256 tokens issued by GitHub Actions are accepted; request the token from ACTIONS_ID_TOKEN_REQUEST_URL"
    )]
    UnsupportedAlgorithm(String),
    #[error(
        "the OIDC token header has a `{0}` parameter that is not supported: send the token GitHub Actions issued, unmodified"
    )]
    UnsupportedHeader(String),
    #[error(
        "the OIDC token header names no key (`kid`): send the token GitHub Actions issued, unmodified"
    )]
    MissingKid,
    #[error(
        "the OIDC token was signed with key `{0}`, which is not in the issuer's key set: refresh the key set and retry once; if it persists, the token was not issued by the configured issuer"
    )]
    UnknownKid(String),
    #[error(
        "the issuer's key `{kid}` has a {bits}-bit modulus, below the {MIN_RSA_BITS}-bit minimum: tokens signed with it are refused; check the configured issuer"
    )]
    KeyTooSmall { kid: String, bits: usize },
    #[error(
        "the issuer's key `{kid}` cannot verify RS256 signatures ({reason}): check the configured issuer's key set"
    )]
    UnusableKey { kid: String, reason: String },
    #[error(
        "the OIDC token's signature does not verify: the token was altered or not issued by the configured issuer; request a fresh token"
    )]
    BadSignature,
    #[error(
        "the OIDC token's issuer is `{got}`, expected `{expected}`: request the token from GitHub Actions (ACTIONS_ID_TOKEN_REQUEST_URL); a local test issuer is only trusted by `stateful-ci dev --oidc-issuer`"
    )]
    WrongIssuer { got: String, expected: String },
    #[error(
        "the OIDC token's audience is {got:?}, this backend expects `{expected}`: request the token with `audience={expected}` (the `audience` setting must match the deployed backend)"
    )]
    WrongAudience { got: Vec<String>, expected: String },
    #[error(
        "the OIDC token expired at {exp} (now {now}): request a fresh token right before each restore/save (tokens live a few minutes); check the runner's clock"
    )]
    Expired { exp: i64, now: i64 },
    #[error(
        "the OIDC token is not valid before {nbf} (now {now}): check the clocks of the runner and the issuer"
    )]
    NotYetValid { nbf: i64, now: i64 },
    #[error(
        "the OIDC token was issued at {iat}, in the future (now {now}): check the clocks of the runner and the issuer"
    )]
    IssuedInFuture { iat: i64, now: i64 },
    #[error(
        "the OIDC token has no `{0}` claim: only GitHub Actions OIDC tokens are accepted; request it from ACTIONS_ID_TOKEN_REQUEST_URL"
    )]
    MissingClaim(&'static str),
    #[error(
        "the OIDC token's `{claim}` claim is invalid ({reason}): only GitHub Actions OIDC tokens are accepted"
    )]
    InvalidClaim { claim: &'static str, reason: String },
    #[error(
        "the OIDC token's subject `{sub}` does not name repository `{repository}`: use GitHub's default subject format, or a custom subject template that starts with the `repo` claim"
    )]
    SubjectMismatch { sub: String, repository: String },
    #[error(
        "the OIDC token's subject `{sub}` embeds ids that differ from its `repository_owner_id` / `repository_id` claims: only GitHub Actions OIDC tokens are accepted"
    )]
    SubjectIdMismatch { sub: String },
    #[error(
        "repository `{0}` is not allowed to use this backend: add it to the allowed repositories and redeploy (`stateful-ci deploy`)"
    )]
    RepositoryNotAllowed(String),
    #[error(
        "repository `{repository}` is allowed by name, but this backend recorded {expected} for it and the token has {got}: the name now belongs to another repository; if the repository was deleted and recreated on purpose, redeploy with `--repository-id` set to the new id"
    )]
    RepositoryIdMismatch {
        repository: String,
        expected: String,
        got: String,
    },
}

impl TokenError {
    /// Stable snake_case code for JSON errors, logs and the D1 audit table.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::TooLarge(_) => "token_too_large",
            TokenError::Malformed(_) => "malformed_token",
            TokenError::JsonTooDeep(_) => "token_json_too_deep",
            TokenError::AlgNone => "alg_none",
            TokenError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            TokenError::UnsupportedHeader(_) => "unsupported_header",
            TokenError::MissingKid => "missing_kid",
            TokenError::UnknownKid(_) => "unknown_kid",
            TokenError::KeyTooSmall { .. } => "key_too_small",
            TokenError::UnusableKey { .. } => "unusable_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer { .. } => "wrong_issuer",
            TokenError::WrongAudience { .. } => "wrong_audience",
            TokenError::Expired { .. } => "token_expired",
            TokenError::NotYetValid { .. } => "token_not_yet_valid",
            TokenError::IssuedInFuture { .. } => "token_issued_in_future",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::InvalidClaim { .. } => "invalid_claim",
            TokenError::SubjectMismatch { .. } => "subject_mismatch",
            TokenError::SubjectIdMismatch { .. } => "subject_id_mismatch",
            TokenError::RepositoryNotAllowed(_) => "repository_not_allowed",
            TokenError::RepositoryIdMismatch { .. } => "repository_id_mismatch",
        }
    }

    /// True for [`TokenError::UnknownKid`]: the caller should consult
    /// [`JwksRefreshPolicy`], refetch the key set if allowed, and verify once more.
    pub fn wants_jwks_refresh(&self) -> bool {
        matches!(self, TokenError::UnknownKid(_))
    }
}

/// Copies an untrusted string for an error message: at most 64 characters,
/// printable ASCII only.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// Verifies a GitHub Actions OIDC token and returns its claims.
///
/// Checks, in order: size; JWS compact form; header (`alg` must be exactly
/// `RS256`, no `crit`, `typ` absent or `JWT`, a `kid`); the key named by
/// `kid` in `jwks` (RSA, 2048-8192 bits); the RS256 signature; then, on the
/// now-authenticated payload: `iss`, `aud`, `exp`/`nbf`/`iat` against
/// `now_unix` with the configured leeway; the GitHub claims stateful-ci
/// needs; that `sub` names `repository`; and the repository allow-list.
/// HMAC is never used, so an HS256 token "signed" with the public key fails
/// at the algorithm check.
pub fn verify(
    token: &str,
    jwks: &Jwks,
    cfg: &VerifyConfig,
    now_unix: i64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(token.len()));
    }
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(TokenError::Malformed("empty header or payload".into()));
    }

    // Header.
    let header = decode_json_object(header_b64, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.as_str(),
        Some(_) => return Err(TokenError::Malformed("`alg` is not a string".into())),
        None => return Err(TokenError::Malformed("the header has no `alg`".into())),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    if alg != "RS256" {
        return Err(TokenError::UnsupportedAlgorithm(sanitize(alg)));
    }
    if header.contains_key("crit") {
        return Err(TokenError::UnsupportedHeader("crit".into()));
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(TokenError::UnsupportedHeader("typ".into())),
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => kid.as_str(),
        _ => return Err(TokenError::MissingKid),
    };

    // Key.
    let key = match jwks.get(kid) {
        None => return Err(TokenError::UnknownKid(sanitize(kid))),
        Some(Err(KeyProblem::TooSmall(bits))) => {
            return Err(TokenError::KeyTooSmall {
                kid: sanitize(kid),
                bits: *bits,
            });
        }
        Some(Err(KeyProblem::Unusable(reason))) => {
            return Err(TokenError::UnusableKey {
                kid: sanitize(kid),
                reason: reason.clone(),
            });
        }
        Some(Ok(key)) => key,
    };

    // Signature over the ASCII bytes "header.payload".
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed("the signature is not base64url".into()))?;
    if signature.len() != key.size() {
        return Err(TokenError::BadSignature);
    }
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    key.pkcs1v15_verify::<Sha256>(signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;

    // Payload (authenticated from here on).
    let payload = decode_json_object(payload_b64, "payload")?;
    let claims = extract_claims(&payload)?;

    if claims.iss != cfg.issuer {
        return Err(TokenError::WrongIssuer {
            got: sanitize(&claims.iss),
            expected: cfg.issuer.clone(),
        });
    }
    if !claims.aud.iter().any(|a| a == &cfg.audience) {
        return Err(TokenError::WrongAudience {
            got: claims.aud.iter().map(|a| sanitize(a)).collect(),
            expected: cfg.audience.clone(),
        });
    }
    let leeway = cfg.leeway_secs;
    if now_unix > claims.exp.saturating_add(leeway) {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now: now_unix,
        });
    }
    if let Some(nbf) = claims.nbf
        && now_unix.saturating_add(leeway) < nbf
    {
        return Err(TokenError::NotYetValid { nbf, now: now_unix });
    }
    if claims.iat > now_unix.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture {
            iat: claims.iat,
            now: now_unix,
        });
    }

    check_github_claims(&claims)?;
    cfg.match_repository(&claims)?;
    Ok(claims)
}

fn decode_json_object(b64: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| TokenError::Malformed(format!("the {what} is not base64url")))?;
    if json_depth_exceeds(&bytes, MAX_JSON_DEPTH) {
        return Err(TokenError::JsonTooDeep(what));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TokenError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
        Err(_) => Err(TokenError::Malformed(format!(
            "the {what} is not valid JSON"
        ))),
    }
}

/// True when `json` nests arrays/objects deeper than `max` (strings are
/// skipped, escapes honoured). Runs before the parser so that a hostile
/// document cannot make it recurse.
fn json_depth_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn extract_claims(p: &Map<String, Value>) -> Result<Claims, TokenError> {
    let aud = match p.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => {
            if items.is_empty() || items.len() > MAX_AUDIENCES {
                return Err(TokenError::InvalidClaim {
                    claim: "aud",
                    reason: format!("expected 1 to {MAX_AUDIENCES} audiences"),
                });
            }
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or(TokenError::InvalidClaim {
                            claim: "aud",
                            reason: "array items must be strings".into(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None | Some(Value::Null) => return Err(TokenError::MissingClaim("aud")),
        Some(_) => {
            return Err(TokenError::InvalidClaim {
                claim: "aud",
                reason: "expected a string or an array".into(),
            });
        }
    };
    Ok(Claims {
        iss: req_str(p, "iss")?,
        sub: req_str(p, "sub")?,
        aud,
        exp: req_time(p, "exp")?,
        nbf: opt_time(p, "nbf")?,
        iat: req_time(p, "iat")?,
        jti: opt_str(p, "jti")?,
        repository: req_str(p, "repository")?,
        repository_id: req_str(p, "repository_id")?,
        repository_owner: req_str(p, "repository_owner")?,
        repository_owner_id: req_str(p, "repository_owner_id")?,
        repository_visibility: opt_str(p, "repository_visibility")?,
        event_name: req_str(p, "event_name")?,
        git_ref: opt_str(p, "ref")?,
        ref_type: opt_str(p, "ref_type")?,
        ref_protected: opt_bool(p, "ref_protected")?,
        sha: opt_str(p, "sha")?,
        base_ref: opt_str(p, "base_ref")?,
        head_ref: opt_str(p, "head_ref")?,
        workflow: opt_str(p, "workflow")?,
        workflow_ref: opt_str(p, "workflow_ref")?,
        workflow_sha: opt_str(p, "workflow_sha")?,
        job_workflow_ref: opt_str(p, "job_workflow_ref")?,
        job_workflow_sha: opt_str(p, "job_workflow_sha")?,
        actor: opt_str(p, "actor")?,
        actor_id: opt_str(p, "actor_id")?,
        run_id: opt_str(p, "run_id")?,
        run_number: opt_str(p, "run_number")?,
        run_attempt: opt_str(p, "run_attempt")?,
        runner_environment: opt_str(p, "runner_environment")?,
        environment: opt_str(p, "environment")?,
    })
}

/// GitHub-specific consistency: ids are numeric, `repository` is
/// `OWNER/NAME` owned by `repository_owner`, and `sub` names the repository.
fn check_github_claims(c: &Claims) -> Result<(), TokenError> {
    for (claim, value) in [
        ("repository_id", &c.repository_id),
        ("repository_owner_id", &c.repository_owner_id),
    ] {
        if value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::InvalidClaim {
                claim,
                reason: "expected a numeric id".into(),
            });
        }
    }
    if !is_repository_name(&c.repository) {
        return Err(TokenError::InvalidClaim {
            claim: "repository",
            reason: "expected OWNER/NAME".into(),
        });
    }
    let owner = c.repository.split('/').next().unwrap_or("");
    if !owner.eq_ignore_ascii_case(&c.repository_owner) {
        return Err(TokenError::InvalidClaim {
            claim: "repository_owner",
            reason: "does not match the owner in `repository`".into(),
        });
    }
    let mismatch = || TokenError::SubjectMismatch {
        sub: sanitize(&c.sub),
        repository: sanitize(&c.repository),
    };
    let subject = parse_subject(&c.sub).ok_or_else(mismatch)?;
    if !subject.repository.eq_ignore_ascii_case(&c.repository) {
        return Err(mismatch());
    }
    if let Some((owner_id, repository_id)) = subject.ids
        && (owner_id != c.repository_owner_id || repository_id != c.repository_id)
    {
        return Err(TokenError::SubjectIdMismatch {
            sub: sanitize(&c.sub),
        });
    }
    Ok(())
}

/// The repository a `sub` claim names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject<'a> {
    /// `OWNER/NAME` as written in the subject.
    pub repository: String,
    /// `(owner id, repository id)` of the immutable form.
    pub ids: Option<(&'a str, &'a str)>,
}

/// Parses the repository part of GitHub's subject, in either form:
///
/// - legacy: `repo:OWNER/NAME:<context>` (`ref:...`, `pull_request`,
///   `environment:...`; custom templates that start with `repo` keep it);
/// - immutable: `repo:OWNER@OWNER_ID/NAME@REPO_ID:<context>`, e.g.
///   `repo:octocat@123456/my-repo@456789:ref:refs/heads/main`. GitHub issues
///   it by default for repositories created, renamed or transferred from
///   July 2026 ("Immutable subject claims", GitHub changelog 2026-04-23,
///   github.blog/changelog/2026-04-23-immutable-subject-claims-for-github-actions-oidc-tokens;
///   docs: content/actions/concepts/security/openid-connect.md, section
///   "Immutable subject claims": "The immutable ID is appended to each name
///   with an `@` delimiter"). Owner and repository names cannot contain
///   `@`, so the split is unambiguous.
///
/// `None` when the subject does not start with a repository of either form.
pub(crate) fn parse_subject(sub: &str) -> Option<Subject<'_>> {
    let (repo, _context) = sub.strip_prefix("repo:")?.split_once(':')?;
    let (owner, name) = repo.split_once('/')?;
    match (owner.split_once('@'), name.split_once('@')) {
        (None, None) => Some(Subject {
            repository: repo.to_owned(),
            ids: None,
        }),
        (Some((owner, owner_id)), Some((name, repository_id)))
            if is_numeric_id(owner_id) && is_numeric_id(repository_id) =>
        {
            Some(Subject {
                repository: format!("{owner}/{name}"),
                ids: Some((owner_id, repository_id)),
            })
        }
        _ => None,
    }
}

fn req_str(p: &Map<String, Value>, claim: &'static str) -> Result<String, TokenError> {
    opt_str(p, claim)?.ok_or(TokenError::MissingClaim(claim))
}

/// A string claim; numbers are accepted as their decimal text (ids), empty
/// strings and `null` count as absent.
fn opt_str(p: &Map<String, Value>, claim: &'static str) -> Result<Option<String>, TokenError> {
    match p.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(TokenError::InvalidClaim {
            claim,
            reason: "expected a string".into(),
        }),
    }
}

fn opt_bool(p: &Map<String, Value>, claim: &'static str) -> Result<Option<bool>, TokenError> {
    match p.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(_) => Err(TokenError::InvalidClaim {
            claim,
            reason: "expected `true` or `false`".into(),
        }),
    }
}

fn req_time(p: &Map<String, Value>, claim: &'static str) -> Result<i64, TokenError> {
    opt_time(p, claim)?.ok_or(TokenError::MissingClaim(claim))
}

/// A NumericDate: seconds since the epoch, integral or not.
fn opt_time(p: &Map<String, Value>, claim: &'static str) -> Result<Option<i64>, TokenError> {
    match p.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15) {
                Ok(Some(f.floor() as i64))
            } else {
                Err(TokenError::InvalidClaim {
                    claim,
                    reason: "expected seconds since the epoch".into(),
                })
            }
        }
        Some(_) => Err(TokenError::InvalidClaim {
            claim,
            reason: "expected a number".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scanner_ignores_brackets_in_strings() {
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[[[[[[[[[[["}"#, 2));
        assert!(!json_depth_exceeds(br#"{"a":"\"[[[[[[[[[[["}"#, 2));
        assert!(json_depth_exceeds(br#"{"a":[[[]]]}"#, 3));
        assert!(!json_depth_exceeds(br#"{"a":[[]]}"#, 3));
    }

    #[test]
    fn subjects_in_both_forms() {
        let legacy = parse_subject("repo:octo-org/octo-repo:ref:refs/heads/main").unwrap();
        assert_eq!(
            (legacy.repository.as_str(), legacy.ids),
            ("octo-org/octo-repo", None)
        );
        let new = parse_subject("repo:octocat@123456/my-repo@456789:ref:refs/heads/main").unwrap();
        assert_eq!(new.repository, "octocat/my-repo");
        assert_eq!(new.ids, Some(("123456", "456789")));
        let env = parse_subject("repo:o@1/n@2:environment:prod").unwrap();
        assert_eq!(env.ids, Some(("1", "2")));
        for bad in [
            "repo:octocat@123456/my-repo:ref:x",
            "repo:octocat/my-repo@1:ref:x",
            "repo:octocat@x/my-repo@1:ref:x",
            "repo:octocat@/my-repo@1:ref:x",
            "repo:octocat@1@2/my-repo@3:ref:x",
            "repo:octocat",
            "job:x",
        ] {
            assert_eq!(parse_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn repository_names() {
        assert!(is_repository_name("octo-org/octo.repo_1"));
        assert!(!is_repository_name("octo-org"));
        assert!(!is_repository_name("octo-org/.."));
        assert!(!is_repository_name("octo org/x"));
        assert!(!is_repository_name("/x"));
        assert!(!is_repository_name("a/b/c"));
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f, 0]), 15);
    }

    #[test]
    fn refresh_policy() {
        let p = JwksRefreshPolicy::default();
        assert_eq!(p.decide(None, 1000, false), RefreshDecision::Fetch);
        assert_eq!(
            p.decide(Some(1000), 1010, false),
            RefreshDecision::UseCached
        );
        assert_eq!(
            p.decide(Some(1000), 1010, true),
            RefreshDecision::TooSoon {
                retry_after_secs: 50
            }
        );
        assert_eq!(p.decide(Some(1000), 1060, true), RefreshDecision::Fetch);
        assert_eq!(
            p.decide(Some(1000), 1000 + 3599, false),
            RefreshDecision::UseCached
        );
        assert_eq!(
            p.decide(Some(1000), 1000 + 3600, false),
            RefreshDecision::Fetch
        );
        // A clock that went backwards never forces fetches.
        assert_eq!(
            p.decide(Some(1000), 900, true),
            RefreshDecision::TooSoon {
                retry_after_secs: 60
            }
        );
        assert_eq!(p.decide(Some(1000), 900, false), RefreshDecision::UseCached);
    }

    #[test]
    fn sanitize_truncates_and_masks() {
        assert_eq!(sanitize("ab\ncd"), "ab?cd");
        let long = "x".repeat(100);
        assert_eq!(sanitize(&long), format!("{}...", "x".repeat(64)));
    }
}
