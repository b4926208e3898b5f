//! One error type for the engine. Every error carries a message that names
//! the thing and the cause, and, where there is one, a `hint` saying what to
//! do. The [`ErrorKind`] tells the front end how to treat it: a cache
//! failure becomes a warning (the build goes on cold) unless the user asked
//! for strict behaviour; a user error always stops with exit code 1.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad configuration or arguments: the user must fix something.
    User,
    /// The store could not be read or written (I/O, network, permissions).
    Store,
    /// Stored data failed verification (hash mismatch, bad manifest).
    Corrupt,
    /// The workspace on disk could not be read or written.
    Workspace,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn user(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::User,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn store(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Store, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    pub fn workspace(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Workspace, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefix the message with the file it concerns.
    pub fn in_file(mut self, file: &str) -> Self {
        self.message = format!("{file}: {}", self.message);
        self
    }

    /// Whether this is a cache failure (treated as a miss unless strict).
    pub fn is_cache_failure(&self) -> bool {
        matches!(self.kind, ErrorKind::Store | ErrorKind::Corrupt)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Attach a path to an I/O error from the workspace.
pub(crate) fn io_ctx(what: &str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::workspace(format!("cannot {what} {}: {e}", path.display()))
}
