//! The one owner of stateful-ci's secrets at rest: the OS keyring service
//! name ([`KEYRING_SERVICE`]), the name of each entry ([`Entry`]), and
//! get / set / delete. `init` stores the Cloudflare API token here and
//! `deploy` reads it; `deploy` stores the Worker's admin token here and
//! `status`/the dashboard read it; `destroy` deletes it.
//!
//! Where: the OS keyring (macOS Keychain, Windows Credential Manager, the
//! Secret Service on Linux), service `stateful-ci`, entry `<account id>` for
//! the API token and `admin:<worker url>` for the admin token. Where no OS
//! keyring is reachable (headless Linux, CI, or `STATEFUL_CI_NO_KEYRING=1`)
//! the admin token, and only it, goes to a file readable only by the user:
//! `$XDG_CONFIG_HOME/stateful-ci/secrets.json` (else
//! `~/.config/stateful-ci/secrets.json`, `%APPDATA%\stateful-ci\secrets.json`
//! on Windows), as `gh` does for its token. The Cloudflare API token, which
//! can do far more, is never written to a file: without a keyring it comes
//! from `CLOUDFLARE_API_TOKEN`.
//!
//! Must not: print, log or put a secret into an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The OS keyring service of every entry.
pub const KEYRING_SERVICE: &str = "stateful-ci";

/// Set to `1` to skip the OS keyring (tests, CI): the API token then comes
/// only from the environment, the admin token from the file.
pub const NO_KEYRING_ENV: &str = "STATEFUL_CI_NO_KEYRING";

/// The file of the fallback, inside the user's config directory.
pub const SECRETS_FILE: &str = "secrets.json";

/// One secret, by what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The Cloudflare API token of an account (written by `init`).
    ApiToken { account_id: String },
    /// The admin token of the Worker at this URL (written by `deploy`).
    AdminToken { worker_url: String },
}

impl Entry {
    pub fn api_token(account_id: &str) -> Entry {
        Entry::ApiToken {
            account_id: account_id.to_string(),
        }
    }

    pub fn admin_token(worker_url: &str) -> Entry {
        Entry::AdminToken {
            worker_url: worker_url.trim().trim_end_matches('/').to_string(),
        }
    }

    /// The keyring's user (account) name of this entry.
    pub fn name(&self) -> String {
        match self {
            Entry::ApiToken { account_id } => account_id.clone(),
            Entry::AdminToken { worker_url } => format!("admin:{worker_url}"),
        }
    }

    /// Whether this entry may live in the file when no keyring is reachable.
    fn file_fallback(&self) -> bool {
        matches!(self, Entry::AdminToken { .. })
    }
}

/// Where a secret was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Keyring { entry: String },
    File(PathBuf),
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Keyring { entry } => {
                write!(
                    f,
                    "the OS keyring (service {KEYRING_SERVICE}, entry {entry})"
                )
            }
            Place::File(p) => write!(
                f,
                "{} (readable only by you; no OS keyring is reachable here)",
                p.display()
            ),
        }
    }
}

/// Why a secret could not be read or stored (never contains the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// Nothing is stored under this entry.
    NoEntry(String),
    /// No OS keyring is reachable (and the entry has no file fallback).
    Unavailable(String),
    /// The keyring or the file refused (a sentence).
    Failed(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::NoEntry(s) | SecretError::Unavailable(s) | SecretError::Failed(s) => {
                f.write_str(s)
            }
        }
    }
}

fn keyring_off() -> bool {
    std::env::var(NO_KEYRING_ENV).is_ok_and(|v| v == "1")
}

/// The OS keyring's answer, with "not reachable" told apart.
enum Os {
    Value(String),
    Done,
    NoEntry,
    Unavailable(String),
    Failed(String),
}

fn os(entry: &Entry, op: impl FnOnce(&keyring::Entry) -> keyring::Result<Option<String>>) -> Os {
    if keyring_off() {
        return Os::Unavailable(format!("the OS keyring is turned off ({NO_KEYRING_ENV}=1)"));
    }
    let result = keyring::Entry::new(KEYRING_SERVICE, &entry.name()).and_then(|e| op(&e));
    match result {
        Ok(Some(v)) => Os::Value(v),
        Ok(None) => Os::Done,
        Err(keyring::Error::NoEntry) => Os::NoEntry,
        Err(e @ (keyring::Error::NoStorageAccess(_) | keyring::Error::PlatformFailure(_))) => {
            Os::Unavailable(format!(
                "no OS keyring (secret service) is reachable here ({})",
                short(&e)
            ))
        }
        Err(e) => Os::Failed(format!("the OS keyring refused ({})", short(&e))),
    }
}

/// The secret stored for `entry`.
pub fn get(entry: &Entry) -> Result<String, SecretError> {
    let why = match os(entry, |e| e.get_password().map(Some)) {
        Os::Value(v) => return Ok(v),
        Os::Done => unreachable!("get returns a value"),
        Os::NoEntry => format!(
            "the OS keyring has no entry {} (service {KEYRING_SERVICE})",
            entry.name()
        ),
        Os::Unavailable(why) => why,
        Os::Failed(why) => return Err(SecretError::Failed(why)),
    };
    if entry.file_fallback() {
        let path = file_path()?;
        if let Some(v) = read_file(&path)?.remove(&entry.name()) {
            return Ok(v);
        }
        return Err(SecretError::NoEntry(format!(
            "{why}, and {} has no entry {}",
            path.display(),
            entry.name()
        )));
    }
    Err(if why.starts_with("the OS keyring has no entry") {
        SecretError::NoEntry(why)
    } else {
        SecretError::Unavailable(why)
    })
}

/// Store `value` for `entry`; says where.
pub fn set(entry: &Entry, value: &str) -> Result<Place, SecretError> {
    match os(entry, |e| e.set_password(value).map(|_| None)) {
        Os::Value(_) | Os::Done => Ok(Place::Keyring {
            entry: entry.name(),
        }),
        Os::Unavailable(_) if entry.file_fallback() => {
            let path = file_path()?;
            let mut all = read_file(&path)?;
            all.insert(entry.name(), value.to_string());
            write_file(&path, &all)?;
            Ok(Place::File(path))
        }
        Os::Unavailable(why) => Err(SecretError::Unavailable(why)),
        Os::NoEntry => Err(SecretError::Failed(
            "the OS keyring refused the entry".into(),
        )),
        Os::Failed(why) => Err(SecretError::Failed(why)),
    }
}

/// Delete `entry` wherever it is; deleting nothing is not an error.
pub fn delete(entry: &Entry) -> Result<(), SecretError> {
    match os(entry, |e| e.delete_credential().map(|_| None)) {
        Os::Failed(why) => return Err(SecretError::Failed(why)),
        Os::Value(_) | Os::Done | Os::NoEntry | Os::Unavailable(_) => {}
    }
    if entry.file_fallback() {
        let path = file_path()?;
        let mut all = read_file(&path)?;
        if all.remove(&entry.name()).is_some() {
            write_file(&path, &all)?;
        }
    }
    Ok(())
}

/// The fallback file (see the module's doc).
pub fn file_path() -> Result<PathBuf, SecretError> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = if cfg!(windows) {
        env("APPDATA")
    } else {
        env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|h| h.join(".config")))
    };
    dir.map(|d| d.join("stateful-ci").join(SECRETS_FILE))
        .ok_or_else(|| {
            SecretError::Unavailable(
                "no OS keyring is reachable and neither XDG_CONFIG_HOME nor HOME is set".into(),
            )
        })
}

fn read_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, SecretError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            SecretError::Failed(format!(
                "{} is not a JSON object of strings ({e}); delete it and run `stateful-ci deploy` again",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(SecretError::Failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn write_file(path: &std::path::Path, all: &BTreeMap<String, String>) -> Result<(), SecretError> {
    let fail =
        |e: std::io::Error| SecretError::Failed(format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().expect("the file is inside a directory");
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(fail)?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let text = serde_json::to_vec_pretty(all).expect("strings serialise");
    std::io::Write::write_all(&mut o.open(&tmp).map_err(fail)?, &text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The keyring's error on one line, without a long platform chain.
fn short(e: &keyring::Error) -> String {
    let s = e.to_string().replace('\n', " ");
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_fixed() {
        assert_eq!(Entry::api_token("abc").name(), "abc");
        assert_eq!(
            Entry::admin_token("https://w.example/").name(),
            "admin:https://w.example"
        );
        assert!(Entry::admin_token("u").file_fallback());
        assert!(!Entry::api_token("a").file_fallback());
    }

    #[test]
    fn the_file_is_private_and_holds_no_secret_in_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub").join(SECRETS_FILE);
        let mut all = BTreeMap::new();
        all.insert("admin:https://w".to_string(), "tok-secret".to_string());
        write_file(&p, &all).unwrap();
        assert_eq!(read_file(&p).unwrap(), all);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        std::fs::write(&p, "tok-secret [").unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("not a JSON object") && !e.contains("tok-secret"),
            "{e}"
        );
    }
}
