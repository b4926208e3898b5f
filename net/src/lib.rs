//! The one place stateful-ci builds HTTP clients, and the retry loop every
//! caller shares. See README.md.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};

pub use reqwest;

/// `stateful-ci/X.Y.Z`, sent on every request.
pub const USER_AGENT: &str = concat!("stateful-ci/", env!("CARGO_PKG_VERSION"));

/// A blocking client with sane timeouts. `timeout` bounds a whole request
/// (a large object upload needs more than an API call).
pub fn client(timeout: Duration) -> Client {
    Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("the HTTP client configuration is valid")
}

/// How hard to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            max_total: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The request could not be sent or the connection failed, after retries.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// What a retry hook is told before it sleeps.
#[derive(Debug, Clone)]
pub struct RetryEvent {
    pub attempt: u32,
    pub delay: Duration,
    pub reason: String,
}

/// Send the request that `build` makes, retrying on 429, 5xx and
/// connection errors. Any other answer, success or not, is returned as is;
/// after the last attempt the last answer (or error) is returned.
/// `build` is called once per attempt, so bodies must be cheap to rebuild.
pub fn send(
    build: impl Fn() -> RequestBuilder,
    policy: &RetryPolicy,
    mut on_retry: impl FnMut(&RetryEvent),
) -> Result<Response, NetError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let req = build();
        let url = req
            .try_clone()
            .and_then(|r| r.build().ok())
            .map(|r| redact_url(r.url()))
            .unwrap_or_default();
        let outcome = req.send();
        let (retry_after, reason) = match &outcome {
            Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                (retry_after(resp), "rate limited (429)".to_string())
            }
            Ok(resp) if resp.status().is_server_error() => {
                (None, format!("server error ({})", resp.status()))
            }
            Ok(_) => return Ok(outcome.unwrap()),
            Err(e) => (None, describe(e)),
        };
        let delay = retry_after
            .unwrap_or_else(|| backoff(policy, attempt))
            .min(policy.max_delay);
        let out_of_time = started.elapsed() + delay > policy.max_total;
        if attempt >= policy.max_attempts || out_of_time {
            return match outcome {
                Ok(resp) => Ok(resp),
                Err(_) => Err(NetError::Unreachable { url, reason }),
            };
        }
        on_retry(&RetryEvent {
            attempt,
            delay,
            reason,
        });
        std::thread::sleep(delay);
    }
}

/// Exponential backoff with jitter, without an RNG dependency.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy.base_delay.saturating_mul(1 << (attempt - 1).min(10));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Up to +50% jitter.
    exp + exp.mul_f64((nanos % 1000) as f64 / 2000.0)
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        cause_chain(e)
    }
}

/// A reqwest error's causes without the URL (reqwest's Display includes the
/// URL, which may carry a query string), safe to print.
pub fn cause_chain(e: &reqwest::Error) -> String {
    let mut s = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if s.is_empty() {
        "request failed".into()
    } else {
        s
    }
}

/// A URL without query string or credentials, safe to print.
pub fn redact_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-thread HTTP server answering with `responses` in order.
    fn serve(responses: Vec<&'static str>) -> (String, std::thread::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x?token=secret", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let mut n = 0;
            for r in responses {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                if r == "RESET" {
                    drop(s);
                } else {
                    s.write_all(r.as_bytes()).unwrap();
                }
                n += 1;
            }
            n
        });
        (url, h)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    const BUSY: &str = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    const FAIL: &str =
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    const GONE: &str = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    fn fast() -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn retries_429_500_and_resets_then_succeeds() {
        let (url, h) = serve(vec![BUSY, FAIL, "RESET", OK]);
        let c = client(Duration::from_secs(5));
        let mut events = Vec::new();
        let resp = send(|| c.get(&url), &fast(), |e| events.push(e.reason.clone())).unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(h.join().unwrap(), 4);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[0].contains("429") && events[1].contains("500"));
    }

    #[test]
    fn other_statuses_are_returned_at_once() {
        let (url, h) = serve(vec![GONE]);
        let c = client(Duration::from_secs(5));
        let resp = send(|| c.get(&url), &fast(), |_| panic!("no retry expected")).unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(h.join().unwrap(), 1);
    }

    #[test]
    fn gives_up_after_the_attempt_limit_without_leaking_the_query() {
        let (url, h) = serve(vec!["RESET", "RESET"]);
        let c = client(Duration::from_secs(5));
        let policy = RetryPolicy {
            max_attempts: 2,
            ..fast()
        };
        let err = send(|| c.get(&url), &policy, |_| {}).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cannot reach") && !msg.contains("secret"),
            "{msg}"
        );
        assert_eq!(h.join().unwrap(), 2);
    }
}
