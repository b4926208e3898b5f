//! The built-in deny list: credential files that are never captured (and
//! never restored), whatever the configuration says. Matching is by file
//! name (and for some entries by the last two path components), at any
//! depth, and ignores ASCII case: `.NPMRC` on a case-insensitive file system
//! (macOS, Windows runners) is the same file as `.npmrc`.
//!
//! [`RULES`] is the one list: `README.md` and `docs/TRUST.md` show it as
//! [`doc_list`] renders it, and a test fails when they differ
//! (`UPDATE_DENY_DOC=1 cargo test -p stateful-ci-runtime deny` rewrites them).

use std::borrow::Cow;

/// One kind of entry in the deny list. Every string is lower-case ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A file or directory with exactly this name.
    Name(&'static str),
    /// A name that starts with this prefix (and is longer than it).
    Prefix(&'static str),
    /// A name that ends with this suffix (and is longer than it).
    Suffix(&'static str),
    /// `parent/name`: this name directly inside a directory of that name.
    Pair(&'static str, &'static str),
}

impl Rule {
    /// How the docs show the entry: `.npmrc`, `.env.*`, `*.pem`, `.git/config`.
    pub fn pattern(self) -> String {
        match self {
            Rule::Name(n) => n.to_string(),
            Rule::Prefix(p) => format!("{p}*"),
            Rule::Suffix(s) => format!("*{s}"),
            Rule::Pair(p, n) => format!("{p}/{n}"),
        }
    }

    fn matches(self, parent: Option<&str>, name: &str) -> bool {
        match self {
            Rule::Name(n) => name == n,
            Rule::Prefix(p) => name.len() > p.len() && name.starts_with(p),
            Rule::Suffix(s) => name.len() > s.len() && name.ends_with(s),
            Rule::Pair(p, n) => parent == Some(p) && name == n,
        }
    }
}

/// Every entry, with what it holds (for the docs' reader).
pub const RULES: &[(Rule, &str)] = &[
    (Rule::Name(".env"), "dotenv secrets"),
    (Rule::Prefix(".env."), "dotenv secrets (`.env.local`, ...)"),
    (Rule::Name(".ssh"), "SSH keys and config"),
    (Rule::Name(".gnupg"), "GnuPG keys"),
    (Rule::Name(".aws"), "AWS CLI credentials"),
    (Rule::Name(".azure"), "Azure CLI tokens"),
    (
        Rule::Pair(".config", "gcloud"),
        "Google Cloud SDK credentials",
    ),
    (Rule::Name(".kube"), "Kubernetes contexts and tokens"),
    (Rule::Pair(".docker", "config.json"), "registry logins"),
    (Rule::Name(".netrc"), "HTTP logins"),
    (Rule::Name("_netrc"), "HTTP logins (Windows name)"),
    (Rule::Name(".git-credentials"), "git's credential store"),
    (
        Rule::Pair(".git", "config"),
        "a checkout's config, where `actions/checkout` persists its token (also nested checkouts)",
    ),
    (
        Rule::Pair("gh", "hosts.yml"),
        "GitHub CLI tokens (`.config/gh/hosts.yml`)",
    ),
    (Rule::Name(".npmrc"), "npm/pnpm registry tokens"),
    (Rule::Name(".yarnrc.yml"), "Yarn 2+ `npmAuthToken`"),
    (Rule::Name(".yarnrc"), "Yarn 1 registry tokens"),
    (Rule::Name(".pypirc"), "PyPI upload tokens"),
    (
        Rule::Pair("pip", "pip.conf"),
        "pip index URLs with credentials",
    ),
    (
        Rule::Name("credentials.toml"),
        "Cargo registry tokens (any `CARGO_HOME`)",
    ),
    (
        Rule::Pair(".cargo", "credentials"),
        "Cargo registry tokens (old name)",
    ),
    (
        Rule::Pair(".cargo-home", "credentials"),
        "Cargo registry tokens with `CARGO_HOME=.cargo-home`",
    ),
    (Rule::Pair(".gem", "credentials"), "RubyGems API keys"),
    (
        Rule::Pair(".bundle", "config"),
        "Bundler source credentials",
    ),
    (Rule::Pair(".m2", "settings.xml"), "Maven server passwords"),
    (
        Rule::Pair(".m2", "settings-security.xml"),
        "Maven master password",
    ),
    (
        Rule::Pair(".gradle", "gradle.properties"),
        "Gradle publishing/signing secrets",
    ),
    (
        Rule::Pair(".gradle-home", "gradle.properties"),
        "Gradle secrets with `GRADLE_USER_HOME=.gradle-home`",
    ),
    (Rule::Pair(".composer", "auth.json"), "Composer tokens"),
    (Rule::Name(".terraformrc"), "Terraform Cloud tokens"),
    (
        Rule::Name("terraform.rc"),
        "Terraform Cloud tokens (Windows name)",
    ),
    (Rule::Name(".vault-token"), "HashiCorp Vault token"),
    (Rule::Name(".pgpass"), "PostgreSQL passwords"),
    (Rule::Name(".my.cnf"), "MySQL passwords"),
    (Rule::Name(".s3cfg"), "s3cmd keys"),
    (Rule::Name(".boto"), "boto/gsutil keys"),
    (Rule::Name("id_rsa"), "SSH private key"),
    (Rule::Name("id_dsa"), "SSH private key"),
    (Rule::Name("id_ecdsa"), "SSH private key"),
    (Rule::Name("id_ed25519"), "SSH private key"),
    (Rule::Suffix(".pem"), "PEM keys and certificates"),
    (Rule::Suffix(".key"), "private keys"),
    (Rule::Suffix(".p12"), "PKCS#12 key stores"),
    (Rule::Suffix(".pfx"), "PKCS#12 key stores"),
    (Rule::Suffix(".jks"), "Java key stores"),
    (Rule::Name(".keystore"), "Java's default key store"),
    (Rule::Suffix(".keystore"), "Java/Android key stores"),
    (Rule::Suffix(".ppk"), "PuTTY private keys"),
];

/// Whether the entry at `rel` (a `/`-separated relative path) is a
/// credential that must not be captured. A denied directory is skipped with
/// everything below it. ASCII case is ignored.
pub fn is_denied(rel: &str) -> bool {
    // Called for every entry of every save and restore: no allocation for
    // the usual all-lowercase name, and the package check only when a
    // suffix rule matches.
    fn lower(s: &str) -> Cow<'_, str> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    }
    let mut comps = rel.rsplit('/');
    let name = lower(comps.next().unwrap_or(""));
    let parent = comps.next().map(lower);
    RULES.iter().any(|(rule, _)| {
        rule.matches(parent.as_deref(), &name)
            && !(matches!(rule, Rule::Suffix(_)) && in_installed_package(rel))
    })
}

/// Directories that hold Python packages pip/uv/poetry installed from a
/// registry. File-type rules (`*.pem`, `*.key`, ...) do not apply below them:
/// packages ship public CA bundles and test fixtures under those names
/// (certifi's `cacert.pem`, pip's vendored copy of it), and a venv restored
/// without them is broken (`requests` fails to import). Name and pair rules
/// (`.npmrc`, `.git/config`, ...) still apply there.
pub const PACKAGE_DIRS: &[&str] = &["site-packages", "dist-packages"];

fn in_installed_package(rel: &str) -> bool {
    let mut dirs = rel.split('/');
    dirs.next_back();
    dirs.any(|c| PACKAGE_DIRS.iter().any(|d| c.eq_ignore_ascii_case(d)))
}

/// The list as the docs show it: one Markdown bullet per entry.
pub fn doc_list() -> String {
    RULES
        .iter()
        .map(|(rule, what)| format!("- `{}`: {what}\n", rule.pattern()))
        .chain(std::iter::once(format!(
            "\nThe `*.suffix` entries do not apply below {}: installed packages ship public CA bundles and fixtures under those names (certifi's `cacert.pem`); the other entries apply everywhere.\n",
            PACKAGE_DIRS
                .iter()
                .map(|d| format!("`{d}/`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_type_rules_spare_installed_packages_but_name_rules_do_not() {
        for p in [
            ".venv/lib/python3.12/site-packages/certifi/cacert.pem",
            ".venv/lib/python3.12/site-packages/pip/_vendor/certifi/cacert.pem",
            "usr/lib/python3/dist-packages/certifi/cacert.pem",
        ] {
            assert!(!is_denied(p), "{p} is package content");
        }
        for p in [
            "node_modules/pkg/.npmrc",
            "node_modules/pkg/server.pem",
            ".venv/lib/python3.12/site-packages/x/.git/config",
            "site-packages.pem",
            "certs/server.pem",
            "node_modules.key",
        ] {
            assert!(is_denied(p), "{p} must stay denied");
        }
    }

    #[test]
    fn credentials_are_denied_at_any_depth() {
        for p in [
            ".env",
            "a/.env.local",
            "x/.ssh",
            "node_modules/pkg/.npmrc",
            "a/server.pem",
            "tls.key",
            "c.p12",
            "c.pfx",
            "home/id_rsa",
            "id_ed25519",
            ".cargo-home/credentials.toml",
            ".cargo-home/credentials",
            ".cargo/credentials",
            "h/.config/gcloud",
            "h/.docker/config.json",
            ".aws",
            ".azure",
            ".kube",
            ".netrc",
            ".pypirc",
            ".config/gh/hosts.yml",
            "home/.gem/credentials",
            ".vault-token",
            "x/.pgpass",
            "android/release.jks",
            "app/upload.keystore",
            ".yarnrc.yml",
            "packages/web/.yarnrc.yml",
            ".git/config",
            "vendor/lib/.git/config",
            ".m2/settings.xml",
            ".gradle-home/gradle.properties",
        ] {
            assert!(is_denied(p), "{p}");
        }
    }

    #[test]
    fn matching_ignores_ascii_case() {
        for p in [
            ".NPMRC",
            "a/.Env",
            ".ENV.production",
            "x/SERVER.PEM",
            "Id_Rsa",
            ".Git/Config",
            ".config/GH/Hosts.yml",
            "release.JKS",
            ".Cargo-Home/Credentials.toml",
            ".Docker/Config.JSON",
        ] {
            assert!(is_denied(p), "{p}");
        }
    }

    #[test]
    fn ordinary_files_pass() {
        for p in [
            "node_modules/env/index.js",
            ".environment",
            "keys.json",
            "a/.key",
            "id_rsa.pub",
            "docker/config.json",
            "src/config",
            ".git/HEAD",
            "node_modules/gh/index.js",
            "a.jks.txt",
        ] {
            assert!(!is_denied(p), "{p}");
        }
    }

    #[test]
    fn every_rule_is_lower_case_and_denies_its_own_example() {
        for (rule, _) in RULES {
            let example = match *rule {
                Rule::Name(n) => n.to_string(),
                Rule::Prefix(p) => format!("{p}x"),
                Rule::Suffix(s) => format!("x{s}"),
                Rule::Pair(p, n) => format!("{p}/{n}"),
            };
            assert_eq!(example, example.to_ascii_lowercase(), "{rule:?}");
            assert!(is_denied(&example), "{rule:?}");
            assert!(is_denied(&format!("deep/er/{}", example.to_uppercase())));
        }
    }

    const BEGIN: &str = "<!-- BEGIN GENERATED DENY LIST: runtime/src/deny.rs -->\n";
    const END: &str = "<!-- END GENERATED DENY LIST -->";

    /// README.md and docs/TRUST.md name every entry, exactly as the code has them.
    #[test]
    fn the_docs_list_every_entry() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let expected = format!("\n{}", doc_list());
        for file in ["README.md", "docs/TRUST.md"] {
            let path = root.join(file);
            let doc = std::fs::read_to_string(&path).unwrap();
            let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
                panic!(
                    "{file} lacks the generated deny list markers `{}` / `{END}`",
                    BEGIN.trim()
                );
            };
            let start = start + BEGIN.len();
            if doc[start..end] == expected {
                continue;
            }
            if std::env::var_os("UPDATE_DENY_DOC").is_some() {
                let updated = format!("{}{expected}{}", &doc[..start], &doc[end..]);
                std::fs::write(&path, updated).unwrap();
                continue;
            }
            panic!(
                "the deny list in {file} differs from runtime/src/deny.rs; regenerate it with \
                 `UPDATE_DENY_DOC=1 cargo test -p stateful-ci-runtime deny` and review the diff"
            );
        }
    }
}
