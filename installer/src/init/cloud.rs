//! The two places init reaches outside the repository, both optional:
//! listing the Cloudflare accounts an API token can see (so the user can
//! pick one), and keeping the token in the OS keyring
//! ([`crate::secrets`]), where `deploy` looks for it when
//! `CLOUDFLARE_API_TOKEN` is not set. Neither ever prints the token.

use std::time::Duration;

use stateful_ci_net::{RetryPolicy, client, send};

/// The Cloudflare API base: `CLOUDFLARE_API_BASE_URL` or the public one.
pub fn api_base() -> String {
    std::env::var("CLOUDFLARE_API_BASE_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .unwrap_or_else(|| "https://api.cloudflare.com/client/v4".into())
}

/// An account the token can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub name: String,
}

/// `GET {base}/accounts`: the accounts the token can see. The error is a
/// sentence for the user (it never contains the token).
pub fn list_accounts(base: &str, token: &str) -> Result<Vec<Account>, String> {
    let url = format!("{base}/accounts?per_page=50");
    let http = client(Duration::from_secs(15));
    let policy = RetryPolicy {
        max_attempts: 2,
        max_total: Duration::from_secs(20),
        ..RetryPolicy::default()
    };
    let resp =
        send(|| http.get(&url).bearer_auth(token), &policy, |_| {}).map_err(|e| e.to_string())?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .map_err(|e| format!("the answer from {base}/accounts is not JSON ({e})"))?;
    parse_accounts(status.as_u16(), &body).map_err(|e| format!("{base}/accounts: {e}"))
}

/// The v4 envelope of `/accounts`, read.
pub fn parse_accounts(status: u16, body: &serde_json::Value) -> Result<Vec<Account>, String> {
    if body["success"] != serde_json::Value::Bool(true) || !(200..300).contains(&status) {
        let msg = body["errors"]
            .as_array()
            .and_then(|e| e.first())
            .map(|e| {
                format!(
                    "{} (code {})",
                    e["message"].as_str().unwrap_or("error"),
                    e["code"]
                )
            })
            .unwrap_or_else(|| format!("HTTP {status}"));
        return Err(format!(
            "{msg}; the token may lack Account Settings Read, or be for another account"
        ));
    }
    Ok(body["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    Some(Account {
                        id: x["id"].as_str()?.to_string(),
                        name: x["name"].as_str().unwrap_or("").to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Store `token` for `account_id`; returns what happened, as a sentence.
pub fn store_token(account_id: &str, token: &str) -> String {
    use crate::secrets::{self, Entry};
    match secrets::set(&Entry::api_token(account_id), token) {
        Ok(place) => format!(
            "stored the API token in {place}; deploy uses it when CLOUDFLARE_API_TOKEN is not set"
        ),
        Err(e) => format!(
            "the token was NOT stored: {e}; set CLOUDFLARE_API_TOKEN in the environment when you run `stateful-ci deploy`"
        ),
    }
}

/// A plausible Cloudflare account id (hex, as the dashboard shows it; other
/// word characters are accepted for test accounts).
pub fn check_account_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{id:?} is not an account id: copy the 32-character id from the Cloudflare dashboard (Account home, right-hand column)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accounts_are_read_from_the_envelope() {
        let body = json!({"success": true, "errors": [], "result": [
            {"id": "a1", "name": "Personal"}, {"id": "b2", "name": "Work"}, {"name": "no id"}]});
        assert_eq!(
            parse_accounts(200, &body).unwrap(),
            vec![
                Account {
                    id: "a1".into(),
                    name: "Personal".into()
                },
                Account {
                    id: "b2".into(),
                    name: "Work".into()
                }
            ]
        );
        let body = json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}]});
        let err = parse_accounts(403, &body).unwrap_err();
        assert!(err.contains("Authentication error (code 10000)"), "{err}");
        assert!(err.contains("Account Settings Read"));
    }

    #[test]
    fn account_ids_are_checked() {
        assert!(check_account_id("0123456789abcdef0123456789abcdef").is_ok());
        assert!(check_account_id("").is_err());
        assert!(check_account_id("a b").is_err());
    }
}
