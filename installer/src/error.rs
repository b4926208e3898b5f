//! The installer's error: what went wrong (naming the input and the cause)
//! and, nearly always, a `hint:` saying what to do. Every installer error is
//! the user's to act on (a flag, a token's permissions, an account setting),
//! so there is no kind; the snapshot engine's errors (cache failures that
//! must not break a build) are another type. Converts both ways with the
//! engine's error: its config reader is used here, and the binary prints
//! one type.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with the fix.
    pub fn user(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<stateful_ci_runtime::Error> for Error {
    fn from(e: stateful_ci_runtime::Error) -> Self {
        Error {
            message: e.message,
            hint: e.hint,
        }
    }
}

impl From<Error> for stateful_ci_runtime::Error {
    fn from(e: Error) -> Self {
        let err = stateful_ci_runtime::Error::new(stateful_ci_runtime::ErrorKind::User, e.message);
        match e.hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_survives_both_ways() {
        let e = Error::user("bad --name", "use lowercase");
        assert_eq!(e.to_string(), "bad --name\nhint: use lowercase");
        let r: stateful_ci_runtime::Error = e.clone().into();
        assert!(!r.is_cache_failure());
        assert_eq!(r.hint.as_deref(), Some("use lowercase"));
        assert_eq!(Error::from(r), e);
    }
}
