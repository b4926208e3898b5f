//! `docs/TRUST.md` must show what the code decides: its policy table is the
//! output of `stateful_ci_trust::table::render()`.

use std::path::PathBuf;

const BEGIN: &str = "<!-- BEGIN GENERATED POLICY TABLE: do not edit by hand -->\n";
const END: &str = "<!-- END GENERATED POLICY TABLE -->";

#[test]
fn trust_doc_table_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/TRUST.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; it is part of the repository",
            path.display()
        )
    });
    let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!(
            "{} lost its generated-table markers `{}` / `{END}`: restore them",
            path.display(),
            BEGIN.trim()
        );
    };
    let start = start + BEGIN.len();
    assert!(start <= end, "markers out of order in {}", path.display());
    let expected = format!("\n{}\n", stateful_ci_trust::table::render());
    if doc[start..end] == expected {
        return;
    }
    if std::env::var_os("UPDATE_TRUST_DOC").is_some() {
        let updated = format!("{}{expected}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, updated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        eprintln!("updated {}", path.display());
        return;
    }
    panic!(
        "the policy table in {} differs from what the code decides; if the policy change is intended, \
         regenerate it with `UPDATE_TRUST_DOC=1 cargo test -p stateful-ci-trust --test trust_doc` and review the diff",
        path.display()
    );
}

/// Every refusal code of `verify` is documented in `docs/TRUST.md`. The
/// exhaustive `match` makes a new variant fail to compile here until it is
/// listed (and documented).
#[test]
fn every_token_error_code_is_documented() {
    use stateful_ci_trust::TokenError as E;
    fn listed(e: &E) -> bool {
        match e {
            E::TooLarge(_)
            | E::Malformed(_)
            | E::JsonTooDeep(_)
            | E::AlgNone
            | E::UnsupportedAlgorithm(_)
            | E::UnsupportedHeader(_)
            | E::MissingKid
            | E::UnknownKid(_)
            | E::KeyTooSmall { .. }
            | E::UnusableKey { .. }
            | E::BadSignature
            | E::WrongIssuer { .. }
            | E::WrongAudience { .. }
            | E::Expired { .. }
            | E::NotYetValid { .. }
            | E::IssuedInFuture { .. }
            | E::MissingClaim(_)
            | E::InvalidClaim { .. }
            | E::SubjectMismatch { .. }
            | E::SubjectIdMismatch { .. }
            | E::RepositoryNotAllowed(_)
            | E::RepositoryIdMismatch { .. } => true,
        }
    }
    let all = [
        E::TooLarge(0),
        E::Malformed(String::new()),
        E::JsonTooDeep("header"),
        E::AlgNone,
        E::UnsupportedAlgorithm(String::new()),
        E::UnsupportedHeader(String::new()),
        E::MissingKid,
        E::UnknownKid(String::new()),
        E::KeyTooSmall {
            kid: String::new(),
            bits: 0,
        },
        E::UnusableKey {
            kid: String::new(),
            reason: String::new(),
        },
        E::BadSignature,
        E::WrongIssuer {
            got: String::new(),
            expected: String::new(),
        },
        E::WrongAudience {
            got: vec![],
            expected: String::new(),
        },
        E::Expired { exp: 0, now: 0 },
        E::NotYetValid { nbf: 0, now: 0 },
        E::IssuedInFuture { iat: 0, now: 0 },
        E::MissingClaim("x"),
        E::InvalidClaim {
            claim: "x",
            reason: String::new(),
        },
        E::SubjectMismatch {
            sub: String::new(),
            repository: String::new(),
        },
        E::SubjectIdMismatch { sub: String::new() },
        E::RepositoryNotAllowed(String::new()),
        E::RepositoryIdMismatch {
            repository: String::new(),
            expected: String::new(),
            got: String::new(),
        },
    ];
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/TRUST.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut codes = std::collections::BTreeSet::new();
    for e in &all {
        assert!(listed(e));
        assert!(codes.insert(e.code()), "code `{}` used twice", e.code());
        assert!(
            doc.contains(&format!("`{}`", e.code())),
            "`{}` is not documented in {}",
            e.code(),
            path.display()
        );
        assert!(
            e.code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'),
            "not snake_case: {}",
            e.code()
        );
    }
}
