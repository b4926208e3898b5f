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
    Claims, ConfigError, DEFAULT_LEEWAY_SECS, GITHUB_ISSUER, Jwks, JwksError, JwksRefreshPolicy,
    MAX_JSON_DEPTH, MAX_JWKS_BYTES, MAX_JWKS_KEYS, MAX_RSA_BITS, MAX_TOKEN_BYTES, MIN_RSA_BITS,
    RefreshDecision, TokenError, VerifyConfig, verify,
};
pub use policy::{
    Decision, SaveDecision, Scope, ScopeError, Workspace, WorkspaceError, coordinator_name, decide,
};
