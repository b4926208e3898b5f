//! Who is asking, and what may it touch: GitHub Actions OIDC verification,
//! run classification and the scope policy of the stateful-ci Worker.
//!
//! The Worker calls three pure functions, in this order, for every restore
//! or save request:
//!
//! 1. [`verify`] checks the run's OIDC token (RS256 only, issuer, audience,
//!    validity window, key by `kid`, `sub`/`repository` agreement, repository
//!    allow-list) and returns the verified [`Claims`]. A
//!    [`TokenError::UnknownKid`] means "refresh the key set once and retry";
//!    [`JwksRefreshPolicy`] says whether a refresh is allowed right now.
//! 2. [`classify`] turns verified claims (never request fields) into a
//!    [`RunIdentity`]: tenant, [`RunClass`] (trusted, internal, external,
//!    privileged) and the refs the policy needs.
//! 3. [`decide`] gives the ordered scopes the run may restore from and the
//!    single scope it may save to (or why it may not), as a [`Decision`] the
//!    Worker records in its audit table.
//!
//! The Worker's side, with its own JWKS cache and fetch (sketch):
//!
//! ```no_run
//! use stateful_ci_trust::*;
//!
//! struct Cache { jwks: Option<Jwks>, fetched_at: Option<i64> }
//!
//! fn authorize(
//!     token: &str,
//!     workspace: &str,
//!     now: i64,
//!     cache: &mut Cache,
//!     fetch_jwks: impl Fn(&str) -> String, // GET cfg.jwks_url(), body as text
//! ) -> Result<Decision, String> {
//!     let cfg = VerifyConfig::github("stateful-ci", ["octo-org/octo-repo"]).map_err(|e| e.to_string())?;
//!     let policy = JwksRefreshPolicy::default();
//!     let mut refreshed = false;
//!     let claims = loop {
//!         if cache.jwks.is_none() || policy.decide(cache.fetched_at, now, false) == RefreshDecision::Fetch {
//!             cache.jwks = Some(Jwks::from_json(&fetch_jwks(&cfg.jwks_url())).map_err(|e| e.to_string())?);
//!             cache.fetched_at = Some(now);
//!             refreshed = true;
//!         }
//!         match verify(token, cache.jwks.as_ref().unwrap(), &cfg, now) {
//!             // Unknown key: refetch once, if the floor allows, then verify again.
//!             Err(e) if e.wants_jwks_refresh()
//!                 && !refreshed
//!                 && policy.decide(cache.fetched_at, now, true) == RefreshDecision::Fetch =>
//!             {
//!                 cache.fetched_at = None; // forces the fetch above
//!             }
//!             Err(e) => return Err(format!("{}: {e}", e.code())),
//!             Ok(claims) => break claims,
//!         }
//!     };
//!     // The configured default branch of that very repository (learned at
//!     // deploy time, never assumed to be `main`).
//!     let run = classify(&claims, &TrustConfig::new("trunk").map_err(|e| e.to_string())?);
//!     let workspace = Workspace::new(workspace).map_err(|e| e.to_string())?;
//!     Ok(decide(&run, &workspace)) // record it in D1, then act on it
//! }
//! ```
//!
//! `docs/TRUST.md` at the repository root holds the table of every event ×
//! ref class; it is generated from this code by a test, so the two cannot
//! disagree.
//!
//! What this crate must not do: I/O of any kind (fetching the JWKS is the
//! Worker's job), reading the clock (time is a parameter), using randomness,
//! or depending on an async runtime or HTTP client. It must keep compiling
//! for `wasm32-unknown-unknown`.

mod classify;
mod oidc;
mod policy;
pub mod table;

pub use classify::{
    RefClass, RunClass, RunIdentity, Tenant, TrustConfig, TrustConfigError, classify,
};
pub use oidc::{
    AllowedRepository, Claims, ConfigError, DEFAULT_LEEWAY_SECS, GITHUB_ISSUER, Jwks, JwksError,
    JwksRefreshPolicy, MAX_JSON_DEPTH, MAX_JWKS_BYTES, MAX_JWKS_KEYS, MAX_RSA_BITS,
    MAX_TOKEN_BYTES, MIN_RSA_BITS, RefreshDecision, TokenError, VerifyConfig, verify,
};
pub use policy::{
    Decision, SaveDecision, Scope, ScopeError, Workspace, WorkspaceError, coordinator_name, decide,
};
