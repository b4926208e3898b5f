//! Validation of the relative paths stored in manifests and written by
//! restore. A manifest is hostile until proven otherwise: every path must be
//! relative, normalised and free of `..`, so it can never name anything
//! outside the workspace.

use crate::limits::MAX_PATH_LEN;

/// Why a manifest path was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path is absolute")]
    Absolute,
    #[error("path contains a `..` component")]
    ParentDir,
    #[error("path contains an empty or `.` component")]
    NotNormal,
    #[error("path contains a backslash, NUL or control character")]
    BadChar,
}

/// Check that `path` is a normalised, relative, `/`-separated path that stays
/// inside the directory it is joined to.
pub fn validate_relative(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.starts_with('/') || has_windows_prefix(path) {
        return Err(PathError::Absolute);
    }
    if path
        .chars()
        .any(|c| c == '\\' || c == '\0' || c.is_control())
    {
        return Err(PathError::BadChar);
    }
    for comp in path.split('/') {
        match comp {
            "" | "." => return Err(PathError::NotNormal),
            ".." => return Err(PathError::ParentDir),
            _ => {}
        }
    }
    Ok(())
}

/// The form under which case-insensitive or Unicode-normalising file
/// systems (APFS, HFS+, NTFS, exFAT) compare names: NFD, then lower case,
/// then NFC. Two paths with the same key may name one file there, so a
/// snapshot never holds two of them (a symlink `X` and a directory `x`
/// would otherwise let restore write through the link).
pub fn fold_key(path: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    if path.is_ascii() {
        return path.to_ascii_lowercase();
    }
    let lower: String = path.nfd().collect::<String>().to_lowercase();
    lower.nfc().collect()
}

fn has_windows_prefix(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_relative_paths() {
        for p in [
            "a",
            "node_modules/.bin/x",
            "dir with space/ü.txt",
            ".next/cache",
        ] {
            assert_eq!(validate_relative(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn fold_key_merges_case_and_normal_forms() {
        assert_eq!(fold_key("Node_Modules/X"), fold_key("node_modules/x"));
        assert_eq!(fold_key("caf\u{e9}"), fold_key("CAFE\u{301}"));
        assert_ne!(fold_key("a/b"), fold_key("a/c"));
    }

    #[test]
    fn rejects_escapes_and_odd_forms() {
        let cases = [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("C:/x", PathError::Absolute),
            ("../x", PathError::ParentDir),
            ("a/../../x", PathError::ParentDir),
            ("a//b", PathError::NotNormal),
            ("./a", PathError::NotNormal),
            ("a/", PathError::NotNormal),
            ("a\\..\\b", PathError::BadChar),
            ("a\0b", PathError::BadChar),
        ];
        for (p, want) in cases {
            assert_eq!(validate_relative(p), Err(want), "{p:?}");
        }
        assert_eq!(
            validate_relative(&"a".repeat(MAX_PATH_LEN + 1)),
            Err(PathError::TooLong)
        );
    }
}
