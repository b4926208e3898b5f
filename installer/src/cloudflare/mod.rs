//! A typed client for the Cloudflare API v4 operations stateful-ci needs
//! (the subset in `tests/cloudflare-emulator/contract/`, whose emulator
//! documents each behaviour with its source in `BEHAVIOURS.md`).
//!
//! Owns: the v4 envelope, typed errors carrying Cloudflare's codes, page and
//! cursor pagination, the mapping from a refused operation to the token
//! permission it needs. HTTP clients and retries come from `stateful-ci-net`.
//! Must not: print, log, or put the API token into any error or `Debug`
//! output ([`ApiToken`] redacts itself).

mod api;

pub use api::*;

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use stateful_ci_net::reqwest::blocking::{Client as Http, RequestBuilder};
use stateful_ci_net::reqwest::{Method, StatusCode};
use stateful_ci_net::{RetryEvent, RetryPolicy};

pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";
pub const BASE_URL_ENV: &str = "CLOUDFLARE_API_BASE_URL";
pub const TOKEN_ENV: &str = "CLOUDFLARE_API_TOKEN";
pub const ACCOUNT_ENV: &str = "CLOUDFLARE_ACCOUNT_ID";

/// The bearer token. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct ApiToken(String);

impl ApiToken {
    pub fn new(value: impl Into<String>) -> Self {
        ApiToken(value.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// One Cloudflare operation: what it is called in messages and the token
/// permission it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub what: &'static str,
    pub permission: &'static str,
}

pub const SCRIPTS: &str = "Workers Scripts Edit";
pub const D1: &str = "D1 Edit";
pub const R2: &str = "Workers R2 Storage Edit";
/// Only `init` needs it (to list accounts when no account id is given);
/// `deploy`, `upgrade` and `destroy` never do.
pub const ACCOUNT: &str = "Account Settings Read";
/// Token verification needs no permission of its own.
pub const NONE: &str = "(any valid token)";
/// The permissions `deploy`, `upgrade` and `destroy` use, and no more.
pub const MINIMAL_PERMISSIONS: &str = "Workers Scripts Edit, D1 Edit and Workers R2 Storage Edit";

/// Cloudflare's account-wide limit: 1,200 requests per 5 minutes; going
/// over blocks every call for 5 minutes. A retry budget shorter than that
/// block gives up while Cloudflare is still refusing, so the Cloudflare
/// client waits out a `retry-after` of up to 5.5 minutes, twice.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(330),
        max_total: Duration::from_secs(12 * 60),
    }
}

/// An error message entry of the envelope.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ApiMessage {
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CfError {
    /// Cloudflare answered with `success: false` or an error status.
    #[error("{}", api_message(.op, *.status, .errors))]
    Api {
        op: Op,
        status: u16,
        errors: Vec<ApiMessage>,
    },
    /// No usable answer (connection, timeout), after retries.
    #[error("Cloudflare API: {} failed: {reason}", .op.what)]
    Unreachable { op: Op, reason: String },
    /// An answer that is not the documented envelope.
    #[error("Cloudflare API: {} returned an unexpected answer (HTTP {status}): {detail}", .op.what)]
    Decode { op: Op, status: u16, detail: String },
}

fn api_message(op: &Op, status: u16, errors: &[ApiMessage]) -> String {
    let detail = if errors.is_empty() {
        "no error details".to_string()
    } else {
        errors
            .iter()
            .map(|e| format!("code {}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!(
        "Cloudflare API: {} failed (HTTP {status}, {detail})",
        op.what
    )
}

impl CfError {
    /// Whether Cloudflare answered with this error code.
    pub fn has_code(&self, code: i64) -> bool {
        matches!(self, CfError::Api { errors, .. } if errors.iter().any(|e| e.code == code))
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CfError::Api { status, .. } | CfError::Decode { status, .. } => Some(*status),
            CfError::Unreachable { .. } => None,
        }
    }

    /// What the user should do about it.
    pub fn hint(&self) -> String {
        match self {
            CfError::Api { .. } if self.has_code(10042) => {
                "R2 is not enabled on this Cloudflare account: in the dashboard open R2 Object Storage (left sidebar, under Storage & Databases), choose Purchase R2 / enable it (the Free plan includes 10 GB-month; a payment method is asked for), then run the command again".into()
            }
            CfError::Api { op, status, .. } if *status == 403 && self.has_code(10000) => format!(
                "the API token is not allowed to {}: give it the permission `{}` (the minimal set is {MINIMAL_PERMISSIONS}) and make sure it covers this account",
                op.what, op.permission
            ),
            CfError::Api { status, .. }
                if (*status == 401 || *status == 403)
                    && (self.has_code(9109) || self.has_code(1000) || self.has_code(9106)) =>
            {
                format!(
                    "the API token is invalid, expired or disabled: create one with {MINIMAL_PERMISSIONS} and set {TOKEN_ENV}"
                )
            }
            CfError::Api { status: 429, .. } => {
                "Cloudflare's account rate limit (1,200 requests per 5 minutes; going over blocks the account's API calls for 5 minutes) outlasted the retries: wait 5 minutes and run the command again (it picks up where it stopped)".into()
            }
            CfError::Api { status, .. } if *status >= 500 => {
                "Cloudflare had a server error: run the command again (it picks up where it stopped)".into()
            }
            CfError::Unreachable { .. } => format!(
                "check the network connection (and {BASE_URL_ENV} if set), then run the command again: it picks up where it stopped"
            ),
            _ => "run the command again; if it keeps failing, check the resource in the Cloudflare dashboard".into(),
        }
    }
}

impl From<CfError> for crate::Error {
    fn from(e: CfError) -> Self {
        let hint = e.hint();
        crate::Error::user(e.to_string(), hint)
    }
}

pub type CfResult<T> = Result<T, CfError>;

/// The envelope every v4 answer uses.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Json,
    #[serde(default)]
    result_info: Option<ResultInfo>,
}

#[derive(Debug, Deserialize, Default, Clone)]
pub struct ResultInfo {
    #[serde(default)]
    pub page: Option<u64>,
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub cursor: Option<String>,
    /// A string (`"true"`/`"false"`) on Cloudflare's wire, as its SDK
    /// types it; a JSON boolean is accepted too.
    #[serde(default, deserialize_with = "string_or_bool")]
    pub is_truncated: Option<bool>,
}

fn string_or_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Option::<Flag>::deserialize(d)? {
        None => Ok(None),
        Some(Flag::Bool(b)) => Ok(Some(b)),
        Some(Flag::Text(t)) => match t.trim() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            // Unknown text: treat as absent (the cursor decides).
            _ => Ok(None),
        },
    }
}

/// A multipart part, kept as bytes so a retry can rebuild the form.
#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

type RetryHook = Box<dyn Fn(&RetryEvent) + Send + Sync>;

pub struct Client {
    http: Http,
    upload: Http,
    base: String,
    token: ApiToken,
    policy: RetryPolicy,
    on_retry: Option<RetryHook>,
    /// Items per list page (`None`: each list's default).
    page_size: Option<u64>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

impl Client {
    pub fn new(base: &str, token: ApiToken) -> Self {
        Client {
            http: stateful_ci_net::client(Duration::from_secs(60)),
            upload: stateful_ci_net::client(Duration::from_secs(300)),
            base: base.trim_end_matches('/').to_string(),
            token,
            policy: retry_policy(),
            on_retry: None,
            page_size: None,
        }
    }

    /// The base URL from `CLOUDFLARE_API_BASE_URL`, else Cloudflare's.
    pub fn base_from_env() -> String {
        std::env::var(BASE_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Called before each retry sleep (e.g. to tell the user about a 429).
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Box::new(hook));
        self
    }

    /// Ask for this many items per list page (tests use small pages).
    pub fn with_page_size(mut self, n: u64) -> Self {
        self.page_size = Some(n);
        self
    }

    pub(crate) fn page_size(&self, default: u64) -> u64 {
        self.page_size.unwrap_or(default)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the base URL is not Cloudflare's (an emulator or a proxy).
    pub fn is_overridden(&self) -> bool {
        self.base != DEFAULT_BASE_URL
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn run(
        &self,
        op: Op,
        build: impl Fn() -> RequestBuilder,
    ) -> CfResult<(Json, Option<ResultInfo>)> {
        let resp = stateful_ci_net::send(
            || build().bearer_auth(self.token.expose()),
            &self.policy,
            |e| {
                if let Some(h) = &self.on_retry {
                    h(e)
                }
            },
        )
        .map_err(|e| CfError::Unreachable {
            op,
            reason: e.to_string(),
        })?;
        let status = resp.status();
        let body = resp.bytes().map_err(|e| CfError::Unreachable {
            op,
            reason: format!(
                "reading the answer failed: {}",
                stateful_ci_net::cause_chain(&e)
            ),
        })?;
        let env: Envelope = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return Err(CfError::Decode {
                    op,
                    status: status.as_u16(),
                    detail: format!("not a JSON envelope ({e})"),
                });
            }
        };
        if !env.success || !status.is_success() {
            return Err(CfError::Api {
                op,
                status: status.as_u16(),
                errors: env.errors,
            });
        }
        Ok((env.result, env.result_info))
    }

    fn decode<T: DeserializeOwned>(op: Op, v: Json) -> CfResult<T> {
        serde_json::from_value(v).map_err(|e| CfError::Decode {
            op,
            status: StatusCode::OK.as_u16(),
            detail: format!("result does not match ({e})"),
        })
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        op: Op,
        path: &str,
        query: &[(&str, String)],
    ) -> CfResult<T> {
        let url = self.url(path);
        let (v, _) = self.run(op, || self.http.get(&url).query(query))?;
        Self::decode(op, v)
    }

    pub fn json<T: DeserializeOwned>(
        &self,
        op: Op,
        method: Method,
        path: &str,
        body: &Json,
    ) -> CfResult<T> {
        let url = self.url(path);
        let (v, _) = self.run(op, || self.http.request(method.clone(), &url).json(body))?;
        Self::decode(op, v)
    }

    pub fn delete(&self, op: Op, path: &str, query: &[(&str, String)]) -> CfResult<()> {
        let url = self.url(path);
        self.run(op, || self.http.delete(&url).query(query))?;
        Ok(())
    }

    /// PUT raw bytes (R2 object upload; used by tests and tools).
    pub fn put_bytes(&self, op: Op, path: &str, bytes: &[u8]) -> CfResult<()> {
        let url = self.url(path);
        self.run(op, || {
            self.http
                .put(&url)
                .header("content-type", "application/octet-stream")
                .body(bytes.to_vec())
        })?;
        Ok(())
    }

    pub fn put_multipart<T: DeserializeOwned>(
        &self,
        op: Op,
        path: &str,
        parts: &[Part],
    ) -> CfResult<T> {
        use stateful_ci_net::reqwest::blocking::multipart;
        let url = self.url(path);
        let (v, _) = self.run(op, || {
            let mut form = multipart::Form::new();
            for p in parts {
                let mut part = multipart::Part::bytes(p.bytes.clone())
                    .mime_str(&p.content_type)
                    .expect("valid content type");
                if let Some(f) = &p.filename {
                    part = part.file_name(f.clone());
                }
                form = form.part(p.name.clone(), part);
            }
            self.upload.put(&url).multipart(form)
        })?;
        Self::decode(op, v)
    }

    /// Every item of a `page`/`per_page` list.
    pub fn list_pages<T: DeserializeOwned>(
        &self,
        op: Op,
        path: &str,
        query: &[(&str, String)],
    ) -> CfResult<Vec<T>> {
        let url = self.url(path);
        let mut out = Vec::new();
        let per_page = self.page_size(50);
        for page in 1u64.. {
            let (v, info) = self.run(op, || {
                self.http.get(&url).query(query).query(&[
                    ("page", page.to_string()),
                    ("per_page", per_page.to_string()),
                ])
            })?;
            let items: Vec<T> = Self::decode(op, v)?;
            let n = items.len() as u64;
            out.extend(items);
            let total = info.and_then(|i| i.total_count);
            let done = match total {
                Some(t) => out.len() as u64 >= t,
                None => n < per_page,
            };
            if done || n == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Every item of a cursor list; `pick` takes the items out of a result.
    pub fn list_cursor<T: DeserializeOwned>(
        &self,
        op: Op,
        path: &str,
        query: &[(&str, String)],
        pick: impl Fn(Json) -> Json,
    ) -> CfResult<Vec<T>> {
        let url = self.url(path);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (v, info) = self.run(op, || {
                let mut q: Vec<(&str, String)> = query.to_vec();
                if let Some(c) = &cursor {
                    q.push(("cursor", c.clone()));
                }
                self.http.get(&url).query(&q)
            })?;
            let items: Vec<T> = Self::decode(op, pick(v))?;
            let n = items.len();
            out.extend(items);
            let info = info.unwrap_or_default();
            let next = info.cursor.filter(|c| !c.is_empty());
            // A page that says it is the last, or brings nothing new, ends
            // the loop: a cursor that does not move would loop forever.
            match next {
                Some(c)
                    if n > 0 && info.is_truncated != Some(false) && cursor.as_ref() != Some(&c) =>
                {
                    cursor = Some(c)
                }
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_truncated_decodes_from_a_string_or_a_bool() {
        let r: ResultInfo =
            serde_json::from_str(r#"{"cursor":"c","is_truncated":"true","per_page":1000}"#)
                .unwrap();
        assert_eq!(r.is_truncated, Some(true));
        let r: ResultInfo = serde_json::from_str(r#"{"is_truncated":"false"}"#).unwrap();
        assert_eq!(r.is_truncated, Some(false));
        let r: ResultInfo = serde_json::from_str(r#"{"is_truncated":true}"#).unwrap();
        assert_eq!(r.is_truncated, Some(true));
        let r: ResultInfo = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(r.is_truncated, None);
        let e: Envelope = serde_json::from_str(
            r#"{"success":true,"errors":[],"result":[],"result_info":{"is_truncated":"false","cursor":""}}"#,
        )
        .unwrap();
        assert_eq!(e.result_info.unwrap().is_truncated, Some(false));
    }

    #[test]
    fn hints_name_the_fix() {
        let op = Op {
            what: "create the R2 bucket",
            permission: R2,
        };
        let api = |status, code| CfError::Api {
            op,
            status,
            errors: vec![ApiMessage {
                code,
                message: String::new(),
            }],
        };
        assert!(api(403, 10042).hint().contains("R2 Object Storage"));
        let h = api(403, 10000).hint();
        assert!(h.contains(R2) && !h.contains(ACCOUNT), "{h}");
        assert!(api(429, 971).hint().contains("5 minutes"));
    }
}
