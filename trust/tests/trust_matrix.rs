//! The trust matrix: every event × ref class (× environment × base branch),
//! then many generated identities, against the invariants that make cache
//! poisoning impossible:
//!
//! - no scope an external run saves to is ever a restore candidate of a
//!   trusted, internal or privileged run;
//! - trusted and privileged runs read only trusted branches, which only
//!   trusted runs write;
//! - internal runs read only branch scopes; nobody reads a privileged scope;
//! - state flows only trusted → anyone, internal → internal/external,
//!   external → external.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use stateful_ci_trust::table::{sample_case, sample_claims, sample_config};
use stateful_ci_trust::{
    Decision, RunClass, RunIdentity, SaveDecision, Scope, TrustConfig, Workspace, classify,
    coordinator_name, decide,
};

const EVENTS: &[&str] = &[
    "push",
    "schedule",
    "workflow_dispatch",
    "merge_group",
    "pull_request",
    "pull_request_target",
    "pull_request_review",
    "pull_request_review_comment",
    "issue_comment",
    "workflow_run",
    "release",
    "deployment",
    "deployment_status",
    "repository_dispatch",
    "create",
    "issues",
    "Push",
    "",
];

const REFS: &[Option<&str>] = &[
    Some("refs/heads/main"),
    Some("refs/heads/master"),
    Some("refs/heads/gh-readonly-queue/master/pr-9-0123abcd"),
    Some("refs/heads/release/1.x"),
    Some("refs/heads/feature/x"),
    Some("refs/heads/Main"),
    Some("refs/heads/gh-readonly-queue/main/pr-7-0123abcd"),
    Some("refs/heads/gh-readonly-queue/feature/x/pr-8-0123abcd"),
    Some("refs/tags/v1.2.0"),
    Some("refs/tags/main"),
    Some("refs/pull/7/merge"),
    Some("refs/pull/8/head"),
    Some("refs/remotes/origin/main"),
    Some("main"),
    None,
];

const BASES: &[Option<&str>] = &[
    None,
    Some("main"),
    Some("refs/heads/main"),
    Some("feature/x"),
    Some("release/1.x"),
];
const ENVIRONMENTS: &[Option<&str>] = &[None, Some("production")];

fn allowed_flow(writer: RunClass, reader: RunClass) -> bool {
    use RunClass::*;
    matches!(
        (writer, reader),
        (Trusted, _) | (Internal, Internal | External) | (External, External)
    )
}

/// Asserts every per-run invariant and records who writes and reads which scope.
struct Flows {
    writers: BTreeMap<String, BTreeSet<RunClass>>,
    readers: BTreeMap<String, BTreeSet<RunClass>>,
    external_saves: BTreeSet<Scope>,
    non_external_reads: BTreeSet<Scope>,
}

impl Flows {
    fn new() -> Self {
        Self {
            writers: BTreeMap::new(),
            readers: BTreeMap::new(),
            external_saves: BTreeSet::new(),
            non_external_reads: BTreeSet::new(),
        }
    }

    fn add(&mut self, cfg: &TrustConfig, run: &RunIdentity, d: &Decision, what: &str) {
        check_run(cfg, run, d, what);
        if let Some(s) = d.save_scope() {
            self.writers
                .entry(s.to_string())
                .or_default()
                .insert(d.class);
            if d.class == RunClass::External {
                self.external_saves.insert(s.clone());
            }
        }
        for s in &d.restore {
            self.readers
                .entry(s.to_string())
                .or_default()
                .insert(d.class);
            if d.class != RunClass::External {
                self.non_external_reads.insert(s.clone());
            }
        }
    }

    fn check(&self) {
        let poisoned: Vec<_> = self
            .external_saves
            .intersection(&self.non_external_reads)
            .collect();
        assert!(
            poisoned.is_empty(),
            "external saves read by non-external runs: {poisoned:?}"
        );
        for (scope, writers) in &self.writers {
            for reader in self.readers.get(scope).into_iter().flatten() {
                for writer in writers {
                    assert!(
                        allowed_flow(*writer, *reader),
                        "`{scope}` flows from a {writer} run into a {reader} run"
                    );
                }
            }
        }
    }
}

fn check_run(cfg: &TrustConfig, run: &RunIdentity, d: &Decision, what: &str) {
    let trusted_branch = |s: &Scope| matches!(s, Scope::Branch(r) if cfg.is_trusted_ref(r));
    assert_eq!(d.class, run.class, "{what}");
    assert!(
        !d.restore.is_empty(),
        "{what}: always at least the default branch"
    );
    assert_eq!(
        d.restore.last(),
        Some(&Scope::Branch(cfg.default_branch().to_owned())),
        "{what}: the default branch is the last fallback"
    );
    let unique: BTreeSet<_> = d.restore.iter().collect();
    assert_eq!(
        unique.len(),
        d.restore.len(),
        "{what}: duplicate restore candidates {:?}",
        d.restore
    );
    assert!(
        !d.restore.iter().any(|s| matches!(s, Scope::Privileged(_))),
        "{what}: nobody reads privileged scopes"
    );
    for s in &d.restore {
        assert!(d.may_restore_from(s));
        assert_eq!(
            s.to_string().parse::<Scope>().as_ref(),
            Ok(s),
            "{what}: scope string round-trips"
        );
    }
    match d.class {
        RunClass::Trusted | RunClass::Privileged => {
            assert!(
                d.restore.iter().all(trusted_branch),
                "{what}: {} run reads only trusted branches, got {:?}",
                d.class,
                d.restore
            );
        }
        RunClass::Internal => {
            assert!(
                d.restore.iter().all(|s| matches!(s, Scope::Branch(_))),
                "{what}: internal reads only branches, got {:?}",
                d.restore
            );
        }
        RunClass::External => {
            // Its own PR scope at most: never another PR's.
            for s in &d.restore {
                if let Scope::PullRequest(n) = s {
                    assert_eq!(Some(*n), run.pr_number, "{what}: reads another PR's scope");
                    assert_eq!(
                        run.event, "pull_request",
                        "{what}: only pull_request runs read PR scopes"
                    );
                }
            }
        }
    }
    match (&d.save, d.class) {
        (
            SaveDecision::Allowed {
                scope: Scope::PullRequest(n),
            },
            RunClass::External,
        ) => {
            assert_eq!(Some(*n), run.pr_number, "{what}");
            assert_eq!(
                run.event, "pull_request",
                "{what}: only pull_request runs write PR scopes"
            );
        }
        (SaveDecision::Denied { code, .. }, RunClass::External) => {
            assert_eq!(code, "no_pull_request_scope", "{what}");
            assert!(
                run.pr_number.is_none() || run.event != "pull_request",
                "{what}: a pull_request run on a PR ref may save to its scope"
            );
        }
        (
            SaveDecision::Allowed {
                scope: Scope::Privileged(_),
            },
            RunClass::Privileged,
        ) => {}
        (
            SaveDecision::Allowed {
                scope: Scope::Branch(b),
            },
            RunClass::Trusted | RunClass::Internal,
        ) => {
            assert_eq!(
                Some(b),
                run.branch.as_ref(),
                "{what}: saves to its own branch"
            );
            if cfg.is_trusted_ref(b) {
                assert_eq!(
                    d.class,
                    RunClass::Trusted,
                    "{what}: only trusted runs write trusted branches"
                );
            }
        }
        (SaveDecision::Denied { code, .. }, RunClass::Internal) => {
            // Only when the configuration requires protected refs: a branch
            // event on a trusted but unprotected ref is internal and may not
            // write the trusted branch.
            assert_eq!(code, "trusted_branch", "{what}");
            assert!(cfg.requires_protected(), "{what}");
            assert!(run.branch.as_deref().is_some_and(|b| cfg.is_trusted_ref(b)));
        }
        (save, class) => panic!("{what}: {class} run may not save as {save:?}"),
    }
    // Environment never upgrades an external run.
    if run.environment.is_some() {
        assert_ne!(
            d.class,
            RunClass::Trusted,
            "{what}: environment jobs are privileged"
        );
        assert_ne!(
            d.class,
            RunClass::Internal,
            "{what}: environment jobs are privileged"
        );
    }
}

/// The configurations every matrix runs under: the sample (`main` plus
/// `release/1.x`), a repository whose default branch is `master`, and the
/// sample with protected refs required.
fn matrix_configs() -> Vec<(&'static str, TrustConfig)> {
    vec![
        ("default branch main", sample_config()),
        ("default branch master", TrustConfig::new("master").unwrap()),
        (
            "protected refs required",
            sample_config().require_protected(true),
        ),
    ]
}

#[test]
fn exhaustive_matrix_keeps_every_invariant() {
    for (label, cfg) in matrix_configs() {
        for protected in [Some(true), Some(false), None] {
            exhaustive_matrix(label, &cfg, protected);
        }
    }
}

fn exhaustive_matrix(label: &str, cfg: &TrustConfig, protected: Option<bool>) {
    let cfg = cfg.clone();
    let ws = Workspace::new("default").unwrap();
    let mut flows = Flows::new();
    let mut count = 0;
    let mut classes = BTreeMap::new();
    for event in EVENTS {
        for git_ref in REFS {
            for base in BASES {
                for env in ENVIRONMENTS {
                    for tag_type in [false, true] {
                        let mut claims = sample_claims(event, *git_ref, *env);
                        claims.base_ref = base.map(str::to_owned);
                        claims.ref_protected = protected;
                        if tag_type {
                            claims.ref_type = Some("tag".to_owned());
                        }
                        let run = classify(&claims, &cfg);
                        let d = decide(&run, &ws);
                        let what = format!(
                            "{label}, ref_protected {protected:?}: {event} {git_ref:?} base {base:?} env {env:?} tag_type {tag_type}"
                        );
                        flows.add(&cfg, &run, &d, &what);
                        *classes.entry(d.class).or_insert(0) += 1;
                        count += 1;
                    }
                }
            }
        }
    }
    flows.check();
    assert_eq!(
        count,
        EVENTS.len() * REFS.len() * BASES.len() * ENVIRONMENTS.len() * 2
    );
    assert_eq!(
        classes.len(),
        4,
        "{label}, ref_protected {protected:?}: every class occurs: {classes:?}"
    );
    if cfg.requires_protected() && protected != Some(true) {
        // Only merge groups (created by GitHub's merge queue, not pushed)
        // stay trusted without `ref_protected: true`.
        for event in EVENTS.iter().filter(|e| **e != "merge_group") {
            for git_ref in REFS {
                let mut claims = sample_claims(event, *git_ref, None);
                claims.ref_protected = protected;
                assert_ne!(
                    classify(&claims, &cfg).class,
                    RunClass::Trusted,
                    "{label}: {event} {git_ref:?} with ref_protected {protected:?}"
                );
            }
        }
    }
}

/// Issue 10, item 1: in a repository whose default branch is `master`, a
/// writer pushes a branch named `main`. It is an ordinary branch there:
/// internal, and nothing a release, tag push, deployment or push to master
/// restores.
#[test]
fn a_branch_named_main_is_not_trusted_where_the_default_branch_is_master() {
    let cfg = TrustConfig::new("master").unwrap();
    let ws = Workspace::new("default").unwrap();
    let run = |event: &str, git_ref: Option<&str>, env: Option<&str>| {
        let r = classify(&sample_claims(event, git_ref, env), &cfg);
        let d = decide(&r, &ws);
        (r, d)
    };
    let (fake, fake_d) = run("push", Some("refs/heads/main"), None);
    assert_eq!(fake.class, RunClass::Internal, "{}", fake.reason);
    let poisoned = fake_d.save_scope().unwrap().clone();
    assert_eq!(poisoned, Scope::Branch("refs/heads/main".into()));
    for (event, git_ref, env) in [
        ("release", Some("refs/tags/v1.2.0"), None),
        ("push", Some("refs/tags/v1.2.0"), None),
        ("deployment", Some("refs/heads/master"), Some("production")),
        ("push", Some("refs/heads/master"), None),
        ("schedule", Some("refs/heads/master"), None),
    ] {
        let (r, d) = run(event, git_ref, env);
        assert!(
            !d.may_restore_from(&poisoned),
            "{event} {git_ref:?} reads `main`"
        );
        assert_eq!(
            d.restore.last(),
            Some(&Scope::Branch("refs/heads/master".into())),
            "{event}"
        );
        assert_eq!(r.default_branch, "refs/heads/master");
    }
    let (master, _) = run("push", Some("refs/heads/master"), None);
    assert_eq!(master.class, RunClass::Trusted);
}

/// The same decisions whether GitHub issued the legacy or the immutable
/// `sub` form: tokens of both forms are signed, verified and classified.
#[test]
fn the_immutable_subject_form_gets_the_same_decisions() {
    use stateful_ci_trust::table::{EVENTS as DOC_EVENTS, REFS as DOC_REFS};
    let ws = Workspace::new("default").unwrap();
    let (jwks, cfg) = (common::jwks(), common::config());
    for (label, trust) in matrix_configs() {
        for event in DOC_EVENTS {
            for (_, git_ref) in DOC_REFS {
                let claims = sample_claims(event, *git_ref, None);
                let immutable = claims.sub.replacen(
                    "repo:octo-org/octo-repo:",
                    "repo:octo-org@2020/octo-repo@424242:",
                    1,
                );
                assert_ne!(immutable, claims.sub);
                let mut decisions = Vec::new();
                for sub in [claims.sub.clone(), immutable] {
                    let mut payload = serde_json::to_value(&claims).unwrap();
                    payload["sub"] = serde_json::json!(sub);
                    let verified = stateful_ci_trust::verify(
                        &common::token(&payload),
                        &jwks,
                        &cfg,
                        claims.iat,
                    )
                    .unwrap_or_else(|e| panic!("{label} {event} {git_ref:?} {sub}: {e}"));
                    let run = classify(&verified, &trust);
                    decisions.push(decide(&run, &ws));
                }
                assert_eq!(decisions[0], decisions[1], "{label} {event} {git_ref:?}");
            }
        }
    }
}

/// The 2026 TanStack path: a `pull_request_target` run (fork code, base
/// branch context) saving state that a push to main, a release or a
/// deployment then restores. Here it cannot save at all, and nothing any
/// external run saves is readable by those runs.
#[test]
fn pull_request_target_cannot_poison_main_release_or_deployment() {
    let (_, prt) = sample_case("pull_request_target", Some("refs/heads/main"), None);
    assert_eq!(prt.class, RunClass::External);
    assert_eq!(
        prt.save_scope(),
        None,
        "pull_request_target has no PR scope: it saves nothing"
    );
    let (_, fork_pr) = sample_case("pull_request", Some("refs/pull/7/merge"), None);
    assert_eq!(fork_pr.save_scope(), Some(&Scope::PullRequest(7)));
    // Even on a pull request ref, pull_request_target (secrets, write token)
    // neither reads nor writes the pull request's scope.
    let (_, prt_on_pr) = sample_case("pull_request_target", Some("refs/pull/7/merge"), None);
    assert_eq!(prt_on_pr.save_scope(), None);
    assert!(!prt_on_pr.may_restore_from(&Scope::PullRequest(7)));

    for (event, git_ref) in [
        ("push", Some("refs/heads/main")),
        ("schedule", Some("refs/heads/main")),
        ("release", Some("refs/tags/v1.2.0")),
        ("push", Some("refs/tags/v1.2.0")),
        ("deployment", Some("refs/heads/main")),
        ("deployment_status", Some("refs/heads/main")),
        (
            "merge_group",
            Some("refs/heads/gh-readonly-queue/main/pr-7-0123abcd"),
        ),
    ] {
        let (_, d) = sample_case(event, git_ref, None);
        for (ext_event, ext_ref) in [
            ("pull_request", Some("refs/pull/7/merge")),
            ("pull_request", Some("refs/pull/7/head")),
            ("pull_request_target", Some("refs/heads/main")),
            ("pull_request_target", Some("refs/pull/7/merge")),
            ("issue_comment", Some("refs/heads/main")),
            ("workflow_run", Some("refs/heads/main")),
        ] {
            let (_, ext) = sample_case(ext_event, ext_ref, None);
            if let Some(s) = ext.save_scope() {
                assert!(
                    !d.may_restore_from(s),
                    "{ext_event} saves {s}, which {event} restores"
                );
            }
        }
    }
}

#[test]
fn documented_cases() {
    let case = |event, git_ref, env| {
        let (_, d) = sample_case(event, git_ref, env);
        let restore: Vec<String> = d.restore.iter().map(ToString::to_string).collect();
        let save = d.save_scope().map(ToString::to_string);
        (d.class, restore, save)
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let some = |x: &str| Some(x.to_owned());

    assert_eq!(
        case("push", Some("refs/heads/main"), None),
        (
            RunClass::Trusted,
            s(&["branch:refs/heads/main"]),
            some("branch:refs/heads/main")
        )
    );
    assert_eq!(
        case("push", Some("refs/heads/release/1.x"), None),
        (
            RunClass::Trusted,
            s(&["branch:refs/heads/release/1.x", "branch:refs/heads/main"]),
            some("branch:refs/heads/release/1.x")
        )
    );
    assert_eq!(
        case("push", Some("refs/heads/feature/x"), None),
        (
            RunClass::Internal,
            s(&["branch:refs/heads/feature/x", "branch:refs/heads/main"]),
            some("branch:refs/heads/feature/x")
        )
    );
    assert_eq!(
        case(
            "merge_group",
            Some("refs/heads/gh-readonly-queue/main/pr-7-0123abcd"),
            None
        ),
        (
            RunClass::Trusted,
            s(&["branch:refs/heads/main"]),
            some("branch:refs/heads/gh-readonly-queue/main/pr-7-0123abcd")
        )
    );
    assert_eq!(
        case("pull_request", Some("refs/pull/7/merge"), None),
        (
            RunClass::External,
            s(&["pr:7", "branch:refs/heads/main"]),
            some("pr:7")
        )
    );
    assert_eq!(
        case("pull_request_target", Some("refs/heads/main"), None),
        (RunClass::External, s(&["branch:refs/heads/main"]), None)
    );
    assert_eq!(
        case("release", Some("refs/tags/v1.2.0"), None),
        (
            RunClass::Privileged,
            s(&["branch:refs/heads/main"]),
            some("privileged:refs/tags/v1.2.0")
        )
    );
    assert_eq!(
        case("push", Some("refs/tags/v1.2.0"), None),
        (
            RunClass::Privileged,
            s(&["branch:refs/heads/main"]),
            some("privileged:refs/tags/v1.2.0")
        )
    );
    assert_eq!(
        case("deployment", None, None),
        (
            RunClass::Privileged,
            s(&["branch:refs/heads/main"]),
            some("privileged:event:deployment")
        )
    );
    assert_eq!(
        case("push", Some("refs/heads/feature/x"), Some("staging")),
        (
            RunClass::Privileged,
            s(&["branch:refs/heads/main"]),
            some("privileged:refs/heads/feature/x")
        )
    );
    assert_eq!(
        case("pull_request", Some("refs/pull/7/merge"), Some("preview")),
        (
            RunClass::External,
            s(&["pr:7", "branch:refs/heads/main"]),
            some("pr:7")
        )
    );
    assert_eq!(
        case("repository_dispatch", Some("refs/heads/main"), None),
        (RunClass::External, s(&["branch:refs/heads/main"]), None)
    );
}

#[test]
fn tenants_and_workspaces_get_distinct_coordinators() {
    let (run, d) = sample_case("push", Some("refs/heads/main"), None);
    let scope = d.save_scope().unwrap().clone();
    let name = d.coordinator_name(&scope);
    assert_eq!(name, "v1/2020/424242/default/branch:refs/heads/main");
    let mut other_tenant = run.tenant.clone();
    other_tenant.repository_id = "424243".into();
    assert_ne!(coordinator_name(&other_tenant, &d.workspace, &scope), name);
    let other_ws = Workspace::new("cache").unwrap();
    assert_ne!(coordinator_name(&run.tenant, &other_ws, &scope), name);
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
}

const NAMES: &[&str] = &[
    "main",
    "master",
    "Main",
    "release/1.x",
    "release/2.x",
    "feature/x",
    "gh-readonly-queue/main/pr-1-ab",
    "gh-readonly-queue/master/pr-22-cd",
    "gh-readonly-queue/feature/x/pr-3-ef",
    "gh-readonly-queue/main/oops",
    "refs/heads/main",
    "refs/pull/1/merge",
    "pr:1",
    "privileged:x",
    "a..b",
    "x y",
    "",
    "v1.0.0",
];

fn gen_ref(g: &mut Gen) -> Option<String> {
    let name = g.pick(NAMES);
    let n = g.next() % 1000;
    match g.next() % 9 {
        0 => None,
        1..=3 => Some(format!("refs/heads/{name}")),
        4 => Some(format!("refs/tags/{name}")),
        5 => Some(format!("refs/pull/{n}/merge")),
        6 => Some(format!(
            "refs/pull/{n}/{}",
            g.pick(&["head", "merge", "other", ""])
        )),
        7 => Some(name.to_owned()),
        _ => Some(format!(
            "refs/{}/{name}",
            g.pick(&["remotes", "notes", "pull", "tags", "heads"])
        )),
    }
}

#[test]
fn generated_identities_keep_every_invariant() {
    let configs = [
        sample_config(),
        TrustConfig::new("master").unwrap(),
        TrustConfig::new("main")
            .unwrap()
            .with_trusted_ref("release/1.x")
            .unwrap()
            .with_trusted_ref("release/2.x")
            .unwrap(),
        TrustConfig::new("master").unwrap().require_protected(true),
    ];
    let events: Vec<&str> = EVENTS.to_vec();
    let ws = Workspace::new("default").unwrap();
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for cfg in &configs {
        let mut flows = Flows::new();
        for i in 0..20_000 {
            let event = if g.chance(20) {
                "x_unknown_event"
            } else {
                g.pick(&events)
            };
            let git_ref = gen_ref(&mut g);
            let env = if g.chance(5) {
                Some(g.pick(&["production", "staging"]))
            } else {
                None
            };
            let mut claims = sample_claims(event, git_ref.as_deref(), env);
            claims.ref_type = match g.next() % 4 {
                0 => None,
                1 => Some("branch".into()),
                2 => Some("tag".into()),
                _ => claims.ref_type,
            };
            claims.ref_protected = match g.next() % 3 {
                0 => None,
                1 => Some(false),
                _ => Some(true),
            };
            claims.base_ref = if g.chance(2) {
                None
            } else {
                Some(g.pick(NAMES).to_owned())
            };
            let run = classify(&claims, cfg);
            let d = decide(&run, &ws);
            let what = format!(
                "case {i}: {event} {git_ref:?} base {:?} env {env:?}",
                claims.base_ref
            );
            flows.add(cfg, &run, &d, &what);
        }
        flows.check();
    }
}
