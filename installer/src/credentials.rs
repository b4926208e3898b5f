//! Where the Cloudflare API token comes from: `CLOUDFLARE_API_TOKEN`, else
//! the OS keyring entry [`Entry::ApiToken`] ([`crate::secrets`]), which
//! `init` writes. Where no keyring is reachable (headless Linux, CI) the
//! error says so and names the environment variable.
//!
//! Must not: print, log or return the token inside an error.

use crate::Error;

use crate::cloudflare::{ACCOUNT_ENV, ApiToken, TOKEN_ENV};
use crate::secrets::{self, Entry, SecretError};

/// The account id from `--account` / `CLOUDFLARE_ACCOUNT_ID`.
pub fn account_id(flag: Option<&str>) -> Result<String, Error> {
    let v = flag
        .map(str::to_string)
        .or_else(|| std::env::var(ACCOUNT_ENV).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let Some(id) = v else {
        return Err(Error::user(
            format!("no Cloudflare account id: {ACCOUNT_ENV} is not set"),
            format!(
                "set {ACCOUNT_ENV} to the 32-digit id shown on the dashboard's Workers & Pages overview"
            ),
        ));
    };
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::user(
            format!("Cloudflare account id {id:?} is not 32 hexadecimal digits"),
            format!(
                "set {ACCOUNT_ENV} to the id shown on the dashboard's Workers & Pages overview"
            ),
        ));
    }
    Ok(id.to_ascii_lowercase())
}

/// The token: environment first, then the keyring.
pub fn api_token(account: &str) -> Result<ApiToken, Error> {
    if let Ok(v) = std::env::var(TOKEN_ENV) {
        if !v.trim().is_empty() {
            return Ok(ApiToken::new(v.trim().to_string()));
        }
    }
    match secrets::get(&Entry::api_token(account)) {
        Ok(v) => Ok(ApiToken::new(v)),
        Err(SecretError::NoEntry(why) | SecretError::Unavailable(why)) => Err(no_token(&why)),
        Err(SecretError::Failed(why)) => {
            Err(no_token(&format!("the keyring could not be read: {why}")))
        }
    }
}

fn no_token(why: &str) -> Error {
    Error::user(
        format!("no Cloudflare API token: {TOKEN_ENV} is not set and {why}"),
        format!(
            "create a token with Workers Scripts Edit, D1 Edit and Workers R2 Storage Edit, then set {TOKEN_ENV} (or run `stateful-ci init` on a machine with a keyring to store it)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_checked() {
        assert_eq!(
            account_id(Some("0123456789ABCDEF0123456789abcdef")).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        let e = account_id(Some("nope")).unwrap_err();
        assert!(e.message.contains("\"nope\"") && e.hint.unwrap().contains(ACCOUNT_ENV));
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = ApiToken::new("very-secret-value");
        assert!(!format!("{t:?}").contains("very-secret"));
    }
}
