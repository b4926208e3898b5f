//! A fake GitHub OIDC issuer for tests: RSA keys generated here from a fixed
//! seed (no key material is checked in) and a token signer that can produce
//! any header and payload, including forged ones.
#![allow(dead_code)]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rsa::PrivateKey;
use rsa::sha2::Sha256;
use serde_json::{Value, json};
use stateful_ci_trust::{GITHUB_ISSUER, Jwks, VerifyConfig};

pub const NOW: i64 = 1_800_000_000;
pub const AUDIENCE: &str = "stateful-ci";
pub const REPO: &str = "octo-org/octo-repo";
pub const KID: &str = "test-key-1";
pub const SMALL_KID: &str = "test-key-small";

pub struct Keys {
    /// The issuer's real signing key (2048 bits), published as `KID`.
    pub main: PrivateKey,
    /// A key the issuer does not publish (2048 bits): an attacker's.
    pub attacker: PrivateKey,
    /// A 1024-bit key, published as `SMALL_KID`: too small to trust.
    pub small: PrivateKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(0x5eed_7e57);
        Keys {
            main: PrivateKey::new(&mut rng, 2048).expect("generate 2048-bit test key"),
            attacker: PrivateKey::new(&mut rng, 2048).expect("generate 2048-bit test key"),
            small: PrivateKey::new(&mut rng, 1024).expect("generate 1024-bit test key"),
        }
    })
}

/// The issuer's JWKS JSON (main and small keys), as served at `/.well-known/jwks`.
pub fn jwks_json() -> String {
    let k = keys();
    Jwks::rsa_keys_to_json([
        (KID, k.main.as_public_key()),
        (SMALL_KID, k.small.as_public_key()),
    ])
}

pub fn jwks() -> Jwks {
    Jwks::from_json(&jwks_json()).expect("test JWKS parses")
}

pub fn config() -> VerifyConfig {
    VerifyConfig::github(AUDIENCE, [REPO]).expect("valid config")
}

pub fn header(kid: &str) -> Value {
    json!({ "typ": "JWT", "alg": "RS256", "x5t": "abc", "kid": kid })
}

/// A push to main, as GitHub issues it (every custom claim a string).
pub fn payload() -> Value {
    json!({
        "jti": "6f4a3c1e-0000-4000-8000-000000000001",
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "aud": AUDIENCE,
        "ref": "refs/heads/main",
        "sha": "c040cae0f0dc81641728557b80f09cfa23b83fe5",
        "repository": REPO,
        "repository_owner": "octo-org",
        "repository_owner_id": "2020",
        "run_id": "22259804324",
        "run_number": "42",
        "run_attempt": "1",
        "repository_visibility": "public",
        "repository_id": "424242",
        "actor_id": "1001",
        "actor": "octocat",
        "workflow": "CI",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_protected": "true",
        "ref_type": "branch",
        "workflow_ref": "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main",
        "workflow_sha": "c040cae0f0dc81641728557b80f09cfa23b83fe5",
        "job_workflow_ref": "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main",
        "job_workflow_sha": "c040cae0f0dc81641728557b80f09cfa23b83fe5",
        "runner_environment": "github-hosted",
        "iss": GITHUB_ISSUER,
        "nbf": NOW - 10,
        "exp": NOW + 290,
        "iat": NOW - 10,
    })
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `base64url(header).base64url(payload)`.
pub fn signing_input(header: &Value, payload: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    )
}

/// An RS256 token signed with `key`.
pub fn sign_with(key: &PrivateKey, header: &Value, payload: &Value) -> String {
    let input = signing_input(header, payload);
    let sig = key.pkcs1v15_sign::<Sha256>(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(&sig))
}

/// A token signed by the issuer's real key.
pub fn sign(header: &Value, payload: &Value) -> String {
    sign_with(&keys().main, header, payload)
}

/// A valid token for `payload`.
pub fn token(payload: &Value) -> String {
    sign(&header(KID), payload)
}

/// Sets `key` in a JSON object.
pub fn with(mut v: Value, key: &str, value: Value) -> Value {
    v.as_object_mut()
        .expect("object")
        .insert(key.to_owned(), value);
    v
}

/// Removes `key` from a JSON object.
pub fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("object").remove(key);
    v
}
