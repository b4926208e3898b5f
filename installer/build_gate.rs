// The decisions of build.rs that a test can check without running a build:
// whether a build may go on without the Worker bundle, and which `uses:` pin
// of this project's action `init` writes. Included by build.rs and by the
// unit tests of src/bundle.rs (`#[path]`), so both run this very code.

/// `STATEFUL_CI_RELEASE`: `1` marks a release build (release.yml,
/// scripts/npm-pack.sh).
pub const RELEASE_ENV: &str = "STATEFUL_CI_RELEASE";
/// `STATEFUL_CI_ACTION_SHA`: the 40-hex commit a release is built from; its
/// action.yml is the action `init` pins.
pub const ACTION_SHA_ENV: &str = "STATEFUL_CI_ACTION_SHA";
/// `STATEFUL_CI_WORKER_DIST`: where the Worker bundle is read from
/// (default: worker-template/dist).
pub const WORKER_DIST_ENV: &str = "STATEFUL_CI_WORKER_DIST";

/// What the build embeds besides the bundle itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Gate {
    pub action_sha: Option<String>,
    /// The `uses:` value, with a version comment when pinned by commit.
    pub action_uses: String,
    /// Build without the bundle (with a warning).
    pub bundle_optional: bool,
}

/// `release` and `sha` are the raw environment values (None when unset).
pub fn decide(
    release: Option<&str>,
    sha: Option<&str>,
    bundle_present: bool,
    version: &str,
) -> Result<Gate, String> {
    let release = match release.unwrap_or("") {
        "1" => true,
        "" | "0" => false,
        other => {
            return Err(format!(
                "{RELEASE_ENV}={other:?} is neither 1 nor 0; set {RELEASE_ENV}=1 for a release build, or unset it"
            ));
        }
    };
    let sha = sha.unwrap_or("");
    if !sha.is_empty()
        && !(sha.len() == 40
            && sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(format!(
            "{ACTION_SHA_ENV}={sha:?} is not a full commit SHA (40 lowercase hex digits); \
             set it to the commit being built (release.yml: github.sha; locally: git rev-parse HEAD)"
        ));
    }
    if release && !bundle_present {
        return Err(format!(
            "{RELEASE_ENV}=1 but the Worker bundle (index.js and index_bg.wasm) is missing: a release binary \
             must carry the Worker; run scripts/setup-wasm.sh and scripts/build-worker.sh, then build again"
        ));
    }
    if release && sha.is_empty() {
        return Err(format!(
            "{RELEASE_ENV}=1 but {ACTION_SHA_ENV} is not set: a release binary pins its action by commit; \
             set {ACTION_SHA_ENV} to the commit being released (git rev-parse HEAD)"
        ));
    }
    Ok(if sha.is_empty() {
        // A development build: the action by its version tag (documented in
        // docs/RELEASING.md); release builds always pin the commit.
        Gate {
            action_sha: None,
            action_uses: format!("stateful-ci/stateful-ci@v{version}"),
            bundle_optional: true,
        }
    } else {
        Gate {
            action_sha: Some(sha.to_string()),
            action_uses: format!("stateful-ci/stateful-ci@{sha} # v{version}"),
            bundle_optional: !release,
        }
    })
}
