//! The policy table in `docs/TRUST.md`, rendered from [`classify`] and
//! [`decide`] over sample claims, so the documentation is the code's output.
//! The test `trust_doc` compares it with the file.

use crate::classify::{RunIdentity, TrustConfig, classify};
use crate::oidc::{Claims, GITHUB_ISSUER};
use crate::policy::{Decision, SaveDecision, Workspace, decide};

/// The default branch of the sample configuration.
pub const SAMPLE_DEFAULT_BRANCH: &str = "main";
/// The extra trusted branch of the sample configuration.
pub const SAMPLE_TRUSTED_BRANCH: &str = "release/1.x";

/// Events in the table: every event the classifier names, plus one it does
/// not (`repository_dispatch`), which stands for all others.
pub const EVENTS: &[&str] = &[
    "push",
    "schedule",
    "workflow_dispatch",
    "merge_group",
    "pull_request",
    "pull_request_target",
    "issue_comment",
    "workflow_run",
    "release",
    "deployment",
    "deployment_status",
    "repository_dispatch",
];

/// Sample refs, one per ref class: (label, `ref` claim).
pub const REFS: &[(&str, Option<&str>)] = &[
    ("default branch", Some("refs/heads/main")),
    ("trusted branch", Some("refs/heads/release/1.x")),
    (
        "merge queue into main",
        Some("refs/heads/gh-readonly-queue/main/pr-7-0123abcd"),
    ),
    ("other branch", Some("refs/heads/feature/x")),
    ("tag", Some("refs/tags/v1.2.0")),
    ("pull request merge ref", Some("refs/pull/7/merge")),
    ("no ref", None),
];

/// The sample trust configuration: default branch `main`, extra trusted
/// branch `release/1.x`.
pub fn sample_config() -> TrustConfig {
    TrustConfig::new(SAMPLE_DEFAULT_BRANCH)
        .and_then(|c| c.with_trusted_ref(SAMPLE_TRUSTED_BRANCH))
        .expect("sample branches are valid")
}

/// Verified-looking claims for the table and tests: repository
/// `octo-org/octo-repo`, the given event, ref and environment. Pull request
/// events get `base_ref: main` and `head_ref: feature/x`, as GitHub sends.
pub fn sample_claims(event: &str, git_ref: Option<&str>, environment: Option<&str>) -> Claims {
    let is_pr = matches!(event, "pull_request" | "pull_request_target");
    let ref_type = git_ref.map(|r| {
        if r.starts_with("refs/tags/") {
            "tag"
        } else {
            "branch"
        }
    });
    let sub_context = match (environment, git_ref) {
        (Some(env), _) => format!("environment:{env}"),
        (None, _) if event == "pull_request" => "pull_request".to_owned(),
        (None, Some(r)) => format!("ref:{r}"),
        (None, None) => "job".to_owned(),
    };
    Claims {
        iss: GITHUB_ISSUER.to_owned(),
        sub: format!("repo:octo-org/octo-repo:{sub_context}"),
        aud: vec!["stateful-ci".to_owned()],
        exp: 1_800_000_300,
        nbf: Some(1_800_000_000),
        iat: 1_800_000_000,
        jti: Some("sample".to_owned()),
        repository: "octo-org/octo-repo".to_owned(),
        repository_id: "424242".to_owned(),
        repository_owner: "octo-org".to_owned(),
        repository_owner_id: "2020".to_owned(),
        repository_visibility: Some("public".to_owned()),
        event_name: event.to_owned(),
        git_ref: git_ref.map(str::to_owned),
        ref_type: ref_type.map(str::to_owned),
        ref_protected: Some(false),
        sha: Some("c040cae0f0dc81641728557b80f09cfa23b83fe5".to_owned()),
        base_ref: is_pr.then(|| "main".to_owned()),
        head_ref: is_pr.then(|| "feature/x".to_owned()),
        workflow: Some("CI".to_owned()),
        workflow_ref: Some(
            "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main".to_owned(),
        ),
        workflow_sha: None,
        job_workflow_ref: Some(
            "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main".to_owned(),
        ),
        job_workflow_sha: None,
        actor: Some("octocat".to_owned()),
        actor_id: Some("1".to_owned()),
        run_id: Some("1".to_owned()),
        run_number: Some("1".to_owned()),
        run_attempt: Some("1".to_owned()),
        runner_environment: Some("github-hosted".to_owned()),
        environment: environment.map(str::to_owned),
    }
}

/// Classifies and decides one sample case (workspace `default`).
pub fn sample_case(
    event: &str,
    git_ref: Option<&str>,
    environment: Option<&str>,
) -> (RunIdentity, Decision) {
    let run = classify(
        &sample_claims(event, git_ref, environment),
        &sample_config(),
    );
    let ws = Workspace::new("default").expect("valid workspace");
    let decision = decide(&run, &ws);
    (run, decision)
}

fn row(
    out: &mut String,
    event: &str,
    label: &str,
    git_ref: Option<&str>,
    environment: Option<&str>,
) {
    row_for(out, &sample_claims(event, git_ref, environment), label);
}

fn row_for(out: &mut String, claims: &Claims, label: &str) {
    row_with(out, claims, &sample_config(), label);
}

fn row_with(out: &mut String, claims: &Claims, cfg: &TrustConfig, label: &str) {
    let run = classify(claims, cfg);
    let d = decide(&run, &Workspace::new("default").expect("valid workspace"));
    let (event, git_ref, environment) = (
        claims.event_name.as_str(),
        claims.git_ref.as_deref(),
        claims.environment.as_deref(),
    );
    let restore = d
        .restore
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(" → ");
    let save = match &d.save {
        SaveDecision::Allowed { scope } => format!("`{scope}`"),
        SaveDecision::Denied { code, .. } => format!("none (`{code}`)"),
    };
    let git_ref = git_ref
        .map(|r| format!("`{r}`"))
        .unwrap_or_else(|| "—".to_owned());
    let event = match environment {
        Some(env) => format!("`{event}` + environment `{env}`"),
        None => format!("`{event}`"),
    };
    out.push_str(&format!(
        "| {event} | {label}: {git_ref} | {} | {restore} | {save} |\n",
        d.class
    ));
}

/// The generated part of `docs/TRUST.md`: every event × ref class, then the
/// same with a deployment `environment` for the events where it matters.
pub fn render() -> String {
    let mut out = String::new();
    out.push_str(
        "Sample configuration: default branch `main`, extra trusted branch `release/1.x`. \
         Pull request events carry `base_ref: main`.\n\n",
    );
    out.push_str("| event | ref | class | restore candidates, in order | save scope |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for event in EVENTS {
        for (label, r) in REFS {
            row(&mut out, event, label, *r, None);
        }
    }
    out.push_str("\nPull requests into other base branches (`base_ref` as shown):\n\n");
    out.push_str("| event | ref | class | restore candidates, in order | save scope |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for base in ["release/1.x", "feature/x"] {
        for event in ["pull_request", "pull_request_target"] {
            let r = if event == "pull_request" {
                "refs/pull/7/merge".to_owned()
            } else {
                format!("refs/heads/{base}")
            };
            let mut claims = sample_claims(event, Some(&r), None);
            claims.base_ref = Some(base.to_owned());
            row_for(&mut out, &claims, &format!("base `{base}`"));
        }
    }
    out.push_str("\nWith a deployment `environment` claim (`production`):\n\n");
    out.push_str("| event | ref | class | restore candidates, in order | save scope |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for event in [
        "push",
        "workflow_dispatch",
        "pull_request",
        "pull_request_target",
        "deployment",
    ] {
        for (label, r) in REFS.iter().filter(|(_, r)| {
            matches!(
                *r,
                Some("refs/heads/main") | Some("refs/heads/feature/x") | Some("refs/pull/7/merge")
            )
        }) {
            row(&mut out, event, label, *r, Some("production"));
        }
    }
    out.push_str(
        "\nA repository whose default branch is `master` (learned per repository at deploy time; \
         a branch that happens to be named `main` is an ordinary branch there). \
         Pull request events carry `base_ref: master`:\n\n",
    );
    out.push_str("| event | ref | class | restore candidates, in order | save scope |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    let master = TrustConfig::new("master").expect("valid branch");
    for (event, label, r) in [
        ("push", "default branch", Some("refs/heads/master")),
        ("push", "branch named main", Some("refs/heads/main")),
        (
            "workflow_dispatch",
            "branch named main",
            Some("refs/heads/main"),
        ),
        (
            "pull_request",
            "pull request merge ref",
            Some("refs/pull/7/merge"),
        ),
        ("release", "tag", Some("refs/tags/v1.2.0")),
    ] {
        let mut claims = sample_claims(event, r, None);
        if claims.base_ref.is_some() {
            claims.base_ref = Some("master".to_owned());
        }
        row_with(&mut out, &claims, &master, label);
    }
    out.push_str(
        "\nWith protected refs required (`REQUIRE_PROTECTED_REF=true`; sample configuration otherwise), \
         by the token's `ref_protected` claim:\n\n",
    );
    out.push_str("| event | ref | class | restore candidates, in order | save scope |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    let protected = sample_config().require_protected(true);
    for (event, r) in [
        ("push", "refs/heads/main"),
        ("schedule", "refs/heads/main"),
        ("push", "refs/heads/release/1.x"),
    ] {
        for flag in [Some(true), Some(false), None] {
            let mut claims = sample_claims(event, Some(r), None);
            claims.ref_protected = flag;
            let label = match flag {
                Some(b) => format!("`ref_protected: {b}`"),
                None => "no `ref_protected`".to_owned(),
            };
            row_with(&mut out, &claims, &protected, &label);
        }
    }
    out
}
