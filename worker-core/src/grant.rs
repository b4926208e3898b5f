//! Read grants: short-lived, HMAC-SHA256-signed bearer credentials that let
//! their holder `GET` the objects of exactly one snapshot of one repository.
//! Form: `scg1.<base64url JSON claims>.<base64url MAC>`. The Worker checks
//! the MAC and expiry here, then that the object belongs to the snapshot.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "scg1.";

/// What a grant allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    /// Tenant id (`owner_id/repository_id`).
    pub t: String,
    /// Snapshot row id in D1.
    pub s: i64,
    /// The snapshot's manifest key.
    pub m: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    Malformed,
    BadSignature,
    Expired,
}

impl GrantError {
    pub fn message(self) -> &'static str {
        match self {
            GrantError::Malformed => {
                "the grant is not a stateful-ci read grant; use the grant from POST /v1/restore"
            }
            GrantError::BadSignature => {
                "the grant's signature does not verify; it was altered or issued by another deployment"
            }
            GrantError::Expired => {
                "the grant has expired; call POST /v1/restore again for a fresh one"
            }
        }
    }
}

/// Whether a bearer credential looks like a grant (rather than a JWT).
pub fn is_grant(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

pub fn sign(key: &[u8], claims: &GrantClaims) -> String {
    let body = format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("serialises"))
    );
    let mut m = mac(key);
    m.update(body.as_bytes());
    format!(
        "{body}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

pub fn verify(key: &[u8], token: &str, now: i64) -> Result<GrantClaims, GrantError> {
    if !is_grant(token) || token.len() > 2048 {
        return Err(GrantError::Malformed);
    }
    let (body, sig) = token.rsplit_once('.').ok_or(GrantError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| GrantError::Malformed)?;
    let mut m = mac(key);
    m.update(body.as_bytes());
    m.verify_slice(&sig).map_err(|_| GrantError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(&body[PREFIX.len()..])
        .map_err(|_| GrantError::Malformed)?;
    let claims: GrantClaims = serde_json::from_slice(&json).map_err(|_| GrantError::Malformed)?;
    if now >= claims.exp {
        return Err(GrantError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> GrantClaims {
        GrantClaims {
            t: "7/42".into(),
            s: 3,
            m: "manifests/ab".into(),
            exp: 1000,
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let g = sign(b"k".repeat(32).as_slice(), &claims());
        assert!(is_grant(&g));
        assert_eq!(verify(&b"k".repeat(32), &g, 999).unwrap(), claims());
        assert_eq!(verify(&b"k".repeat(32), &g, 1000), Err(GrantError::Expired));
    }

    #[test]
    fn forged_or_altered_grants_fail() {
        let key = b"k".repeat(32);
        let g = sign(&key, &claims());
        assert_eq!(
            verify(b"other-key-other-key-other-key-xx", &g, 0),
            Err(GrantError::BadSignature)
        );
        let mut other = claims();
        other.s = 4;
        let forged_body = sign(&key, &other);
        let (body, _) = forged_body.rsplit_once('.').unwrap();
        let (_, sig) = g.rsplit_once('.').unwrap();
        assert_eq!(
            verify(&key, &format!("{body}.{sig}"), 0),
            Err(GrantError::BadSignature)
        );
        assert_eq!(
            verify(&key, "eyJhbGciOi.x.y", 0),
            Err(GrantError::Malformed)
        );
    }
}
