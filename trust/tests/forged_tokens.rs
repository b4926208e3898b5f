//! The forged-token suite: every way a token can be wrong is refused with its
//! own code, and a genuine token is accepted.

mod common;

use std::collections::BTreeSet;

use common::*;
use hmac::{Hmac, KeyInit, Mac};
use rsa::sha2::Sha256;
use serde_json::json;
use stateful_ci_trust::{
    Jwks, JwksRefreshPolicy, MAX_TOKEN_BYTES, RefreshDecision, TokenError, VerifyConfig, verify,
};

fn check(token: &str) -> Result<stateful_ci_trust::Claims, TokenError> {
    verify(token, &jwks(), &config(), NOW)
}

fn code(token: &str) -> &'static str {
    match check(token) {
        Ok(c) => panic!("forged token accepted: {c:?}"),
        Err(e) => e.code(),
    }
}

#[test]
fn genuine_token_is_accepted_with_its_claims() {
    let claims = check(&token(&payload())).expect("genuine token");
    assert_eq!(claims.repository, REPO);
    assert_eq!(claims.repository_id, "424242");
    assert_eq!(claims.repository_owner_id, "2020");
    assert_eq!(claims.event_name, "push");
    assert_eq!(claims.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(claims.ref_protected, Some(true));
    assert_eq!(claims.base_ref, None, "empty strings become None");
    assert_eq!(claims.aud, vec![AUDIENCE.to_owned()]);
    assert_eq!(claims.run_id.as_deref(), Some("22259804324"));
    assert_eq!(claims.runner_environment.as_deref(), Some("github-hosted"));
    assert_eq!(claims.exp, NOW + 290);
}

#[test]
fn audience_array_and_numeric_ids_are_accepted() {
    let p = with(
        payload(),
        "aud",
        json!(["https://github.com/octo-org", AUDIENCE]),
    );
    let p = with(p, "repository_id", json!(424242));
    let claims = check(&token(&p)).expect("aud array");
    assert_eq!(claims.aud.len(), 2);
    assert_eq!(claims.repository_id, "424242");
}

#[test]
fn allow_list_is_case_insensitive() {
    let cfg = VerifyConfig::github(AUDIENCE, ["Octo-Org/Octo-Repo"]).unwrap();
    verify(&token(&payload()), &jwks(), &cfg, NOW).expect("case-insensitive allow-list");
    let p = with(payload(), "repository", json!("OCTO-ORG/octo-repo"));
    let p = with(
        p,
        "sub",
        json!("repo:OCTO-ORG/octo-repo:ref:refs/heads/main"),
    );
    verify(&token(&p), &jwks(), &cfg, NOW).expect("case-insensitive repository claim");
}

#[test]
fn clock_skew_is_tolerated_up_to_the_leeway() {
    // Expired 60 s ago: inside the default 60 s leeway.
    let p = with(payload(), "exp", json!(NOW - 60));
    check(&token(&p)).expect("within leeway");
    let p = with(payload(), "nbf", json!(NOW + 60));
    check(&token(&p)).expect("within leeway");
    let strict = config().with_leeway(0).unwrap();
    let p = with(payload(), "exp", json!(NOW - 1));
    assert_eq!(
        verify(&token(&p), &jwks(), &strict, NOW)
            .unwrap_err()
            .code(),
        "token_expired"
    );
}

/// One case per forgery; every code must differ.
#[test]
fn every_forgery_is_refused_with_a_distinct_code() {
    let keys = keys();
    let mut cases: Vec<(&str, String, &str)> = Vec::new();

    // alg: none, no signature.
    let h = json!({ "typ": "JWT", "alg": "none", "kid": KID });
    cases.push((
        "alg none",
        format!("{}.", signing_input(&h, &payload())),
        "alg_none",
    ));

    // HS256 "signed" with the issuer's public key (the JWKS bytes an attacker can read).
    let h = json!({ "typ": "JWT", "alg": "HS256", "kid": KID });
    let input = signing_input(&h, &payload());
    let mut mac = Hmac::<Sha256>::new_from_slice(jwks_json().as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let hs = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
    cases.push(("HS256 with the public key", hs, "unsupported_algorithm"));

    // Wrong issuer, wrong audience, time window.
    let p = with(
        payload(),
        "iss",
        json!("https://token.actions.example.invalid"),
    );
    cases.push(("wrong issuer", token(&p), "wrong_issuer"));
    let p = with(payload(), "aud", json!("https://github.com/octo-org"));
    cases.push(("wrong audience", token(&p), "wrong_audience"));
    let p = with(payload(), "exp", json!(NOW - 61));
    cases.push(("expired", token(&p), "token_expired"));
    let p = with(payload(), "nbf", json!(NOW + 61));
    cases.push(("not yet valid", token(&p), "token_not_yet_valid"));
    let p = without(with(payload(), "iat", json!(NOW + 120)), "nbf");
    cases.push(("issued in the future", token(&p), "token_issued_in_future"));

    // Key selection.
    cases.push((
        "unknown kid",
        sign(&header("rotated-away"), &payload()),
        "unknown_kid",
    ));
    cases.push((
        "too-small key",
        sign_with(&keys.small, &header(SMALL_KID), &payload()),
        "key_too_small",
    ));

    // Tampered payload: a genuine token for a pull request, payload swapped
    // for a push to main, signature kept.
    let pr = with(payload(), "event_name", json!("pull_request"));
    let pr = with(pr, "ref", json!("refs/pull/7/merge"));
    let genuine = token(&pr);
    let sig = genuine.rsplit('.').next().unwrap();
    let tampered = format!("{}.{sig}", signing_input(&header(KID), &payload()));
    cases.push(("tampered payload", tampered, "bad_signature"));

    // Claims GitHub would never issue together.
    let p = with(
        payload(),
        "sub",
        json!("repo:evil-org/octo-repo:ref:refs/heads/main"),
    );
    cases.push(("sub/repository mismatch", token(&p), "subject_mismatch"));
    let p = with(payload(), "repository", json!("octo-org/other-repo"));
    let p = with(
        p,
        "sub",
        json!("repo:octo-org/other-repo:ref:refs/heads/main"),
    );
    cases.push((
        "repository not allowed",
        token(&p),
        "repository_not_allowed",
    ));

    // Structure.
    cases.push(("two parts", "abc.def".to_owned(), "malformed_token"));
    cases.push((
        "too large",
        "a".repeat(MAX_TOKEN_BYTES + 1),
        "token_too_large",
    ));
    let deep = json!({ "alg": "RS256", "kid": KID, "x": [[[[[[[[[1]]]]]]]]] });
    cases.push((
        "deep header",
        sign(&deep, &payload()),
        "token_json_too_deep",
    ));
    let h = json!({ "alg": "RS256", "kid": KID, "crit": ["b64"] });
    cases.push(("crit header", sign(&h, &payload()), "unsupported_header"));
    let h = json!({ "alg": "RS256" });
    cases.push(("no kid", sign(&h, &payload()), "missing_kid"));
    cases.push((
        "no repository_id",
        token(&without(payload(), "repository_id")),
        "missing_claim",
    ));
    let p = with(payload(), "repository_id", json!("42a"));
    cases.push(("non-numeric repository_id", token(&p), "invalid_claim"));

    let mut seen = BTreeSet::new();
    for (name, tok, expected) in &cases {
        let got = code(tok);
        assert_eq!(got, *expected, "case `{name}`");
        assert!(
            seen.insert(got),
            "case `{name}` shares code `{got}` with another case"
        );
    }
}

#[test]
fn hs256_shaped_signature_under_rs256_header_fails_signature() {
    // Same confusion, but claiming RS256: the HMAC bytes are not an RSA signature.
    let input = signing_input(&header(KID), &payload());
    let mut mac = Hmac::<Sha256>::new_from_slice(jwks_json().as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let tok = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
    assert_eq!(code(&tok), "bad_signature");
}

#[test]
fn other_algorithms_are_refused() {
    for alg in [
        "HS384", "HS512", "ES256", "PS256", "RS384", "RS512", "EdDSA", "rs256", "NONE", "None",
    ] {
        let h = json!({ "typ": "JWT", "alg": alg, "kid": KID });
        let tok = sign(&h, &payload());
        let err = check(&tok).unwrap_err();
        let expected = if alg.eq_ignore_ascii_case("none") {
            "alg_none"
        } else {
            "unsupported_algorithm"
        };
        assert_eq!(err.code(), expected, "alg {alg}");
    }
}

#[test]
fn signature_by_an_unpublished_key_under_a_published_kid_fails() {
    let tok = sign_with(&keys().attacker, &header(KID), &payload());
    assert_eq!(code(&tok), "bad_signature");
}

#[test]
fn every_claim_change_breaks_the_signature() {
    let genuine = token(&payload());
    let (input, sig) = genuine.rsplit_once('.').unwrap();
    let (h, _) = input.split_once('.').unwrap();
    for (key, value) in [
        ("event_name", json!("pull_request")),
        ("ref", json!("refs/heads/release/1.x")),
        ("repository_id", json!("1")),
        ("exp", json!(NOW + 100_000)),
        ("environment", json!("production")),
    ] {
        let forged = with(payload(), key, value);
        let tok = format!("{h}.{}.{sig}", b64(forged.to_string().as_bytes()));
        assert_eq!(code(&tok), "bad_signature", "changed {key}");
    }
    // Flipping one bit of the signature.
    let mut raw =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
    raw[10] ^= 1;
    assert_eq!(code(&format!("{input}.{}", b64(&raw))), "bad_signature");
    // Truncated signature.
    assert_eq!(
        code(&format!("{input}.{}", b64(&raw[1..]))),
        "bad_signature"
    );
}

#[test]
fn unknown_kid_asks_for_one_refresh() {
    let err = check(&sign(&header("new-key"), &payload())).unwrap_err();
    assert!(err.wants_jwks_refresh());
    assert!(
        !check(&token(&with(payload(), "aud", json!("x"))))
            .unwrap_err()
            .wants_jwks_refresh()
    );

    // The caller's loop: verify, refresh if the policy allows, verify once more.
    let policy = JwksRefreshPolicy::default();
    let fetched_at = NOW - 30;
    assert_eq!(
        policy.decide(Some(fetched_at), NOW, true),
        RefreshDecision::TooSoon {
            retry_after_secs: 30
        }
    );
    assert_eq!(
        policy.decide(Some(fetched_at), NOW + 30, true),
        RefreshDecision::Fetch
    );
    // After the refresh the rotated key is known, and the token verifies.
    let rotated = Jwks::rsa_keys_to_json([("new-key", keys().main.as_public_key())]);
    let jwks = Jwks::from_json(&rotated).unwrap();
    verify(&sign(&header("new-key"), &payload()), &jwks, &config(), NOW).expect("after refresh");
}

#[test]
fn test_issuer_mode_is_separate_from_github_mode() {
    let local = "http://127.0.0.1:8123";
    let cfg = VerifyConfig::test_issuer(local, AUDIENCE, [REPO]).unwrap();
    assert!(cfg.is_test_mode());
    assert!(!config().is_test_mode());
    assert_eq!(cfg.jwks_url(), "http://127.0.0.1:8123/.well-known/jwks");
    assert_eq!(
        config().jwks_url(),
        "https://token.actions.githubusercontent.com/.well-known/jwks"
    );

    let local_token = token(&with(payload(), "iss", json!(local)));
    verify(&local_token, &jwks(), &cfg, NOW).expect("test issuer accepted in test mode");
    assert_eq!(
        check(&local_token).unwrap_err().code(),
        "wrong_issuer",
        "never in GitHub mode"
    );
    let github_token = token(&payload());
    assert_eq!(
        verify(&github_token, &jwks(), &cfg, NOW)
            .unwrap_err()
            .code(),
        "wrong_issuer"
    );

    for bad in [
        "127.0.0.1:8123",
        "http://",
        "http://x/",
        "ftp://x",
        "http://a b",
    ] {
        assert!(
            VerifyConfig::test_issuer(bad, AUDIENCE, [REPO]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn config_rejects_bad_settings() {
    assert!(VerifyConfig::github("", [REPO]).is_err());
    assert!(VerifyConfig::github(AUDIENCE, ["octo-org"]).is_err());
    assert!(VerifyConfig::github(AUDIENCE, ["octo-org/x/y"]).is_err());
    assert!(config().with_leeway(-1).is_err());
    assert!(config().with_leeway(301).is_err());
    // An empty allow-list allows nobody.
    let none = VerifyConfig::github(AUDIENCE, Vec::<String>::new()).unwrap();
    assert_eq!(
        verify(&token(&payload()), &jwks(), &none, NOW)
            .unwrap_err()
            .code(),
        "repository_not_allowed"
    );
}

#[test]
fn error_messages_say_what_to_do_and_never_echo_the_token() {
    let tok = token(&with(payload(), "aud", json!("wrong")));
    let msg = check(&tok).unwrap_err().to_string();
    assert!(msg.contains("audience=stateful-ci"), "{msg}");
    assert!(!msg.contains(&tok[..40]), "message echoes the token");
    let msg = check(&sign(
        &json!({"alg": "HS256\u{1b}[31m", "kid": KID}),
        &payload(),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        !msg.contains('\u{1b}'),
        "control characters are masked: {msg}"
    );
}

#[test]
fn jwks_keeps_unusable_keys_with_their_reason() {
    let k = keys();
    let good: serde_json::Value = serde_json::from_str(&jwks_json()).unwrap();
    let mut list = good["keys"].as_array().unwrap().clone();
    list.push(json!({ "kty": "EC", "kid": "ec-key", "crv": "P-256", "x": "AA", "y": "AA" }));
    list.push(json!({ "kty": "RSA", "kid": "enc-key", "use": "enc", "n": "AQAB", "e": "AQAB" }));
    let mut dup = list[0].clone();
    dup["kid"] = json!("dup");
    list.push(dup.clone());
    list.push(dup);
    let jwks = Jwks::from_json(&json!({ "keys": list }).to_string()).unwrap();
    assert_eq!(jwks.len(), 5);
    for kid in ["ec-key", "enc-key", "dup"] {
        let err = verify(
            &sign_with(&k.main, &header(kid), &payload()),
            &jwks,
            &config(),
            NOW,
        )
        .unwrap_err();
        assert_eq!(err.code(), "unusable_key", "{kid}: {err}");
    }
    verify(&token(&payload()), &jwks, &config(), NOW).expect("the good key still works");
}

#[test]
fn jwks_documents_that_are_not_key_sets_are_refused() {
    assert_eq!(
        Jwks::from_json("not json").unwrap_err().code(),
        "jwks_malformed"
    );
    assert_eq!(Jwks::from_json("{}").unwrap_err().code(), "jwks_no_keys");
    let big = format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(70_000));
    assert_eq!(Jwks::from_json(&big).unwrap_err().code(), "jwks_too_large");
    let deep = format!("{{\"keys\": {}{}}}", "[".repeat(20), "]".repeat(20));
    assert_eq!(Jwks::from_json(&deep).unwrap_err().code(), "jwks_too_deep");
    let many = json!({ "keys": vec![json!({"kty": "RSA", "kid": "x"}); 33] });
    assert_eq!(
        Jwks::from_json(&many.to_string()).unwrap_err().code(),
        "jwks_too_many_keys"
    );
}

#[test]
fn jwks_accepts_a_modulus_with_a_leading_zero_byte() {
    let good: serde_json::Value = serde_json::from_str(&jwks_json()).unwrap();
    let mut key = good["keys"][0].clone();
    let n = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key["n"].as_str().unwrap(),
    )
    .unwrap();
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    key["n"] = json!(b64(&padded));
    let jwks = Jwks::from_json(&json!({ "keys": [key] }).to_string()).unwrap();
    verify(&token(&payload()), &jwks, &config(), NOW).expect("leading zero byte in n");
}

/// GitHub's immutable subject, `repo:OWNER@OWNER_ID/NAME@REPO_ID:...` (the
/// default for repositories created, renamed or transferred since July 2026),
/// is accepted when its ids are the token's own, refused otherwise.
#[test]
fn immutable_subject_form_is_accepted_and_its_ids_checked() {
    let immutable = |sub: &str| token(&with(payload(), "sub", json!(sub)));
    let claims = check(&immutable(
        "repo:octo-org@2020/octo-repo@424242:ref:refs/heads/main",
    ))
    .expect("immutable subject");
    assert_eq!(claims.repository_id, "424242");
    check(&immutable(
        "repo:Octo-Org@2020/Octo-Repo@424242:pull_request",
    ))
    .expect("names compare case-insensitively");
    check(&immutable(
        "repo:octo-org@2020/octo-repo@424242:environment:production",
    ))
    .expect("environment subject");
    for (sub, want) in [
        (
            "repo:octo-org@2020/octo-repo@999999:ref:refs/heads/main",
            "subject_id_mismatch",
        ),
        (
            "repo:octo-org@2021/octo-repo@424242:ref:refs/heads/main",
            "subject_id_mismatch",
        ),
        (
            "repo:evil-org@2020/octo-repo@424242:ref:refs/heads/main",
            "subject_mismatch",
        ),
        (
            "repo:octo-org@2020/octo-repo:ref:refs/heads/main",
            "subject_mismatch",
        ),
        (
            "repo:octo-org@x/octo-repo@424242:ref:refs/heads/main",
            "subject_mismatch",
        ),
    ] {
        assert_eq!(code(&immutable(sub)), want, "{sub}");
    }
}

/// The allow-list by id: a recorded repository id admits its repository
/// under any name (renames), and refuses another repository that now holds
/// the recorded name (deleted and re-registered).
#[test]
fn allow_list_by_repository_id() {
    use stateful_ci_trust::AllowedRepository;
    let by_id = |id: &str, owner: Option<&str>| {
        VerifyConfig::github_allowing(
            AUDIENCE,
            vec![AllowedRepository::new(REPO, Some(id), owner).unwrap()],
        )
        .unwrap()
    };
    verify(
        &token(&payload()),
        &jwks(),
        &by_id("424242", Some("2020")),
        NOW,
    )
    .expect("recorded ids match");
    // The same name, another repository: refused.
    let e = verify(&token(&payload()), &jwks(), &by_id("111", None), NOW).unwrap_err();
    assert_eq!(e.code(), "repository_id_mismatch", "{e}");
    assert!(e.to_string().contains("--repository-id"), "{e}");
    // The right repository id under another owner id: refused.
    let e = verify(
        &token(&payload()),
        &jwks(),
        &by_id("424242", Some("1")),
        NOW,
    )
    .unwrap_err();
    assert_eq!(e.code(), "repository_id_mismatch", "{e}");
    // The recorded repository, renamed: admitted by id.
    let renamed = with(payload(), "repository", json!("octo-org/renamed"));
    let renamed = with(
        renamed,
        "sub",
        json!("repo:octo-org/renamed:ref:refs/heads/main"),
    );
    let claims = verify(&token(&renamed), &jwks(), &by_id("424242", None), NOW)
        .expect("renamed repository admitted by id");
    assert_eq!(
        by_id("424242", None)
            .match_repository(&claims)
            .unwrap()
            .name,
        REPO
    );
    // No id recorded: admitted by name; the entry says so (the Worker pins).
    let claims = check(&token(&payload())).unwrap();
    assert_eq!(
        config().match_repository(&claims).unwrap().repository_id,
        None
    );
    // Bad settings.
    assert!(AllowedRepository::new(REPO, Some("12a"), None).is_err());
    assert!(
        VerifyConfig::github_allowing(
            AUDIENCE,
            vec![
                AllowedRepository::new(REPO, None, None).unwrap(),
                AllowedRepository::new(&REPO.to_uppercase(), None, None).unwrap(),
            ],
        )
        .is_err()
    );
}
