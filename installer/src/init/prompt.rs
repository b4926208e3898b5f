//! The questions interactive init asks, in order, through a [`Ui`]: the
//! preset (detected one first), extra paths, excludes, the Cloudflare
//! account (listed when a token is at hand) and whether to keep the token
//! in the OS keyring. Flags answer their question in advance. [`Terminal`]
//! asks with dialoguer on stderr; tests drive [`ask`] with a scripted `Ui`.

use crate::Error;
use stateful_ci_runtime::config::{PRESETS, normalise_paths, preset_paths};

use super::cloud::{self, Account};
use super::config::{ConfigChanges, current};
use super::detect::detect;
use super::{Inputs, Request};

/// The prompts init needs.
pub trait Ui {
    /// A line of information.
    fn note(&mut self, line: &str);
    fn select(&mut self, prompt: &str, items: &[String], default: usize) -> Result<usize, Error>;
    /// Free text; `check` explains a bad answer, which is asked again.
    fn input(
        &mut self,
        prompt: &str,
        default: &str,
        check: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<String, Error>;
    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, Error>;
    /// Hidden input; empty allowed.
    fn password(&mut self, prompt: &str) -> Result<String, Error>;

    /// Show the diff of a changed workflow and ask whether to replace it.
    fn confirm_overwrite(&mut self, path: &str, diff: &str) -> Result<bool, Error> {
        self.note(&format!(
            "{path} was changed since init wrote it. Replacing it would do this:"
        ));
        self.note(diff.trim_end());
        self.confirm(&format!("Replace {path}? (no keeps your file)"), false)
    }
}

/// A token to put in the keyring once the files are written.
#[derive(Debug, Clone)]
pub struct TokenToStore {
    pub account_id: String,
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Answers {
    pub changes: ConfigChanges,
    pub store_token: Option<TokenToStore>,
}

/// A comma- or space-separated list.
fn split_list(s: &str) -> Vec<String> {
    s.split([',', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn check_paths(s: &str, required: bool) -> Result<(), String> {
    let list = split_list(s);
    if required && list.is_empty() {
        return Err("list at least one directory to keep, e.g. build".into());
    }
    normalise_paths(&list, "path")
        .map(|_| ())
        .map_err(|e| format!("{} ({})", e.message, e.hint.unwrap_or_default()))
}

fn check_globs(s: &str) -> Result<(), String> {
    for g in split_list(s) {
        if g.starts_with('/') || g.split('/').any(|c| c == "..") {
            return Err(format!(
                "{g:?}: patterns are relative to the repository root"
            ));
        }
        if let Err(e) = globset::Glob::new(&g) {
            return Err(format!("{g:?} is not a valid glob: {e}"));
        }
    }
    Ok(())
}

/// Ask every question the flags left open. The token from
/// `CLOUDFLARE_API_TOKEN` (if set) lists the accounts.
pub fn ask(inputs: &Inputs, req: &Request, ui: &mut dyn Ui) -> Result<Answers, Error> {
    let env_token = std::env::var("CLOUDFLARE_API_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    ask_with(inputs, req, ui, env_token.as_deref(), &|token| {
        cloud::list_accounts(&cloud::api_base(), token)
    })
}

/// [`ask`] with the token and the account lister given.
pub fn ask_with(
    inputs: &Inputs,
    req: &Request,
    ui: &mut dyn Ui,
    env_token: Option<&str>,
    list: &dyn Fn(&str) -> Result<Vec<Account>, String>,
) -> Result<Answers, Error> {
    let existing = match &inputs.config {
        Some(t) => Some(current(t)?),
        None => None,
    };
    let detected = detect(&inputs.files);
    match detected.as_slice() {
        [] => ui.note("No known project kind found at the repository root."),
        found => {
            let kinds: Vec<String> = found.iter().map(|d| d.describe()).collect();
            ui.note(&format!("Found {}.", kinds.join("; ")));
        }
    }
    if existing.is_some() {
        ui.note("stateful-ci.toml exists: its values are the defaults, and only what you change is rewritten.");
    }
    let mut changes = ConfigChanges::default();

    // The preset.
    let preset: Option<String> = match &req.preset {
        Some(p) => {
            preset_paths(p).map_err(|e| e.in_file("--preset"))?;
            Some(p.clone())
        }
        None => {
            let current_preset = existing.as_ref().and_then(|c| c.preset.clone());
            let proposed = current_preset
                .clone()
                .or_else(|| detected.first().map(|d| d.preset().to_string()));
            let mut items: Vec<String> = PRESETS
                .iter()
                .map(|(n, _, what)| format!("{n}: {what}"))
                .collect();
            items.push("none: I will list the paths myself".into());
            let default = proposed
                .as_deref()
                .and_then(|p| PRESETS.iter().position(|(n, _, _)| *n == p))
                .unwrap_or(PRESETS.len());
            let i = ui.select("Preset (what to keep)", &items, default)?;
            PRESETS.get(i).map(|(n, _, _)| n.to_string())
        }
    };
    let had_preset = existing.as_ref().and_then(|c| c.preset.clone());
    if existing.is_none() || preset != had_preset {
        changes.preset = Some(preset.clone());
    }

    // Paths besides the preset's.
    if !req.paths.is_empty() {
        changes.paths = Some(req.paths.clone());
    } else {
        let current_paths = existing
            .as_ref()
            .map(|c| c.paths.join(", "))
            .unwrap_or_default();
        let answer = match &preset {
            Some(p) => {
                let kept = preset_paths(p).map(|ps| ps.join(", ")).unwrap_or_default();
                ui.input(
                    &format!("The {p} preset keeps {kept}. Extra paths to keep (comma-separated, empty for none)"),
                    &current_paths,
                    &|s| check_paths(s, false),
                )?
            }
            None => ui.input(
                "Paths to keep, relative to the repository root (comma-separated)",
                &current_paths,
                &|s| check_paths(s, true),
            )?,
        };
        let list = split_list(&answer);
        if existing.as_ref().map(|c| &c.paths) != Some(&list) {
            changes.paths = Some(list);
        }
    }

    // Excludes.
    if !req.excludes.is_empty() {
        changes.exclude = Some(req.excludes.clone());
    } else {
        let current_ex = existing
            .as_ref()
            .map(|c| c.exclude.join(", "))
            .unwrap_or_default();
        let answer = ui.input(
            "Globs to leave out, e.g. **/*.log (comma-separated, empty for none)",
            &current_ex,
            &check_globs,
        )?;
        let list = split_list(&answer);
        if existing.as_ref().map(|c| &c.exclude) != Some(&list) {
            changes.exclude = Some(list);
        }
    }

    // The Cloudflare account.
    let current_account = existing.as_ref().and_then(|c| c.account_id.clone());
    let account = match &req.account_id {
        Some(id) => Some(id.clone()),
        None => ask_account(ui, env_token, current_account.as_deref(), list)?,
    };
    if let Some(id) = &account {
        cloud::check_account_id(id).map_err(|e| Error::user(e, "pass --account-id with the id"))?;
        if current_account.as_deref() != Some(id) {
            changes.account_id = Some(id.clone());
        }
    }

    // The token, into the keyring.
    let store_token = match &account {
        None => {
            ui.note("No account chosen: `stateful-ci deploy` reads CLOUDFLARE_ACCOUNT_ID and CLOUDFLARE_API_TOKEN.");
            None
        }
        Some(id) => match env_token {
            Some(t) => ui
                .confirm(
                    &format!("Store the token from CLOUDFLARE_API_TOKEN in the OS keyring for account {id}?"),
                    false,
                )?
                .then(|| TokenToStore {
                    account_id: id.clone(),
                    token: t.to_string(),
                }),
            None => {
                let t = ui.password(&format!(
                    "Cloudflare API token to keep in the OS keyring for account {id} (empty to skip; deploy also reads CLOUDFLARE_API_TOKEN)"
                ))?;
                let t = t.trim().to_string();
                (!t.is_empty()).then(|| TokenToStore {
                    account_id: id.clone(),
                    token: t,
                })
            }
        },
    };
    Ok(Answers {
        changes,
        store_token,
    })
}

fn ask_account(
    ui: &mut dyn Ui,
    token: Option<&str>,
    current: Option<&str>,
    list: &dyn Fn(&str) -> Result<Vec<Account>, String>,
) -> Result<Option<String>, Error> {
    if let Some(token) = token {
        ui.note("Listing the Cloudflare accounts CLOUDFLARE_API_TOKEN can see...");
        match list(token) {
            Ok(accounts) if !accounts.is_empty() => {
                let mut items: Vec<String> = accounts
                    .iter()
                    .map(|a| format!("{} ({})", a.name, a.id))
                    .collect();
                items.push("another account: type its id".into());
                items.push("skip: choose at deploy time".into());
                let default = current
                    .and_then(|c| accounts.iter().position(|a| a.id == c))
                    .unwrap_or(0);
                let i = ui.select("Cloudflare account", &items, default)?;
                if i < accounts.len() {
                    return Ok(Some(accounts[i].id.clone()));
                }
                if i == accounts.len() + 1 {
                    return Ok(None);
                }
            }
            Ok(_) => ui.note("The token sees no account."),
            Err(e) => ui.note(&format!(
                "Could not list the accounts ({e}); type the id instead."
            )),
        }
    }
    let id = ui.input(
        "Cloudflare account id (empty to skip; deploy also reads CLOUDFLARE_ACCOUNT_ID)",
        current.unwrap_or(""),
        &|s| {
            let s = s.trim();
            if s.is_empty() {
                Ok(())
            } else {
                cloud::check_account_id(s)
            }
        },
    )?;
    let id = id.trim().to_string();
    Ok((!id.is_empty()).then_some(id))
}

/// The real terminal: dialoguer prompts on stderr.
pub struct Terminal {
    term: console::Term,
    theme: Box<dyn dialoguer::theme::Theme>,
}

impl Terminal {
    pub fn new(color: bool) -> Self {
        let theme: Box<dyn dialoguer::theme::Theme> = if color {
            Box::new(dialoguer::theme::ColorfulTheme::default())
        } else {
            Box::new(dialoguer::theme::SimpleTheme)
        };
        Terminal {
            term: console::Term::stderr(),
            theme,
        }
    }
}

fn prompt_err(e: dialoguer::Error) -> Error {
    Error::user(
        format!("the terminal prompt failed: {e}"),
        "run init on an interactive terminal, or pass --yes (with --preset/--path) to take the defaults",
    )
}

impl Ui for Terminal {
    fn note(&mut self, line: &str) {
        let _ = self.term.write_line(line);
    }

    fn select(&mut self, prompt: &str, items: &[String], default: usize) -> Result<usize, Error> {
        dialoguer::Select::with_theme(self.theme.as_ref())
            .with_prompt(prompt)
            .items(items)
            .default(default.min(items.len().saturating_sub(1)))
            .interact_on(&self.term)
            .map_err(prompt_err)
    }

    fn input(
        &mut self,
        prompt: &str,
        default: &str,
        check: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<String, Error> {
        dialoguer::Input::<String>::with_theme(self.theme.as_ref())
            .with_prompt(prompt)
            .with_initial_text(default)
            .allow_empty(true)
            .validate_with(|s: &String| check(s))
            .interact_text_on(&self.term)
            .map_err(prompt_err)
    }

    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, Error> {
        dialoguer::Confirm::with_theme(self.theme.as_ref())
            .with_prompt(prompt)
            .default(default)
            .interact_on(&self.term)
            .map_err(prompt_err)
    }

    fn password(&mut self, prompt: &str) -> Result<String, Error> {
        dialoguer::Password::with_theme(self.theme.as_ref())
            .with_prompt(prompt)
            .allow_empty_password(true)
            .interact_on(&self.term)
            .map_err(prompt_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::detect::ProjectFiles;
    use std::collections::VecDeque;

    /// Answers in order; records the prompts and notes.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<String>,
        seen: Vec<String>,
    }

    impl Script {
        fn new(answers: &[&str]) -> Self {
            Script {
                answers: answers.iter().map(|s| s.to_string()).collect(),
                seen: Vec::new(),
            }
        }
        fn next(&mut self, prompt: &str) -> String {
            self.seen.push(prompt.to_string());
            self.answers
                .pop_front()
                .unwrap_or_else(|| panic!("no answer left for {prompt:?}"))
        }
    }

    impl Ui for Script {
        fn note(&mut self, line: &str) {
            self.seen.push(format!("note: {line}"));
        }
        fn select(
            &mut self,
            prompt: &str,
            items: &[String],
            default: usize,
        ) -> Result<usize, Error> {
            let a = self.next(&format!("{prompt} [default {}]", items[default]));
            Ok(if a.is_empty() {
                default
            } else {
                items.iter().position(|i| i.starts_with(&a)).expect("item")
            })
        }
        fn input(
            &mut self,
            prompt: &str,
            default: &str,
            check: &dyn Fn(&str) -> Result<(), String>,
        ) -> Result<String, Error> {
            let a = self.next(prompt);
            let a = if a == "=" { default.to_string() } else { a };
            check(&a).map_err(|e| Error::user(e, "scripted"))?;
            Ok(a)
        }
        fn confirm(&mut self, prompt: &str, _default: bool) -> Result<bool, Error> {
            Ok(self.next(prompt) == "y")
        }
        fn password(&mut self, prompt: &str) -> Result<String, Error> {
            Ok(self.next(prompt))
        }
    }

    fn node_inputs(config: Option<&str>) -> Inputs {
        Inputs {
            files: ProjectFiles::from_names(&["package.json", "pnpm-lock.yaml"]),
            config: config.map(String::from),
            workflow: None,
            branch: "main".into(),
            converted_from_json: None,
        }
    }

    fn no_list(_: &str) -> Result<Vec<Account>, String> {
        panic!("no token, no listing")
    }

    #[test]
    fn detected_preset_is_proposed_and_answers_become_changes() {
        let mut ui = Script::new(&["", "dist", "**/*.log, tmp/**", "acc1", "sekrit"]);
        let a = ask_with(
            &node_inputs(None),
            &Request::default(),
            &mut ui,
            None,
            &no_list,
        )
        .unwrap();
        assert!(ui.seen[0].contains("pnpm project"), "{:?}", ui.seen);
        assert!(ui.seen[1].contains("[default node:"), "{:?}", ui.seen);
        assert_eq!(a.changes.preset, Some(Some("node".into())));
        assert_eq!(a.changes.paths, Some(vec!["dist".into()]));
        assert_eq!(
            a.changes.exclude,
            Some(vec!["**/*.log".into(), "tmp/**".into()])
        );
        assert_eq!(a.changes.account_id.as_deref(), Some("acc1"));
        let t = a.store_token.unwrap();
        assert_eq!(
            (t.account_id.as_str(), t.token.as_str()),
            ("acc1", "sekrit")
        );
    }

    #[test]
    fn a_rerun_with_the_same_answers_changes_nothing() {
        let existing =
            "preset = \"node\"\npaths = [\"dist\"]\n[deployment]\naccount_id = \"acc1\"\n";
        let mut ui = Script::new(&["", "=", "=", "=", ""]);
        let a = ask_with(
            &node_inputs(Some(existing)),
            &Request::default(),
            &mut ui,
            None,
            &no_list,
        )
        .unwrap();
        assert_eq!(a.changes, ConfigChanges::default());
        assert!(a.store_token.is_none());
    }

    #[test]
    fn flags_answer_their_questions() {
        let req = Request {
            preset: Some("rust".into()),
            paths: vec!["out".into()],
            excludes: vec!["out/tmp".into()],
            account_id: Some("acc9".into()),
        };
        let mut ui = Script::new(&[""]);
        let a = ask_with(&node_inputs(None), &req, &mut ui, None, &no_list).unwrap();
        assert_eq!(a.changes.preset, Some(Some("rust".into())));
        assert_eq!(a.changes.account_id.as_deref(), Some("acc9"));
        // Only the token question was asked.
        let asked: Vec<_> = ui.seen.iter().filter(|s| !s.starts_with("note:")).collect();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(asked[0].contains("API token"));
    }

    #[test]
    fn accounts_are_listed_with_a_token_and_a_failed_listing_falls_back() {
        let list = |t: &str| -> Result<Vec<Account>, String> {
            assert_eq!(t, "tok");
            Ok(vec![
                Account {
                    id: "id-a".into(),
                    name: "A".into(),
                },
                Account {
                    id: "id-b".into(),
                    name: "B".into(),
                },
            ])
        };
        let mut ui = Script::new(&["", "", "", "B (id-b)", "y"]);
        let a = ask_with(
            &node_inputs(None),
            &Request::default(),
            &mut ui,
            Some("tok"),
            &list,
        )
        .unwrap();
        assert_eq!(a.changes.account_id.as_deref(), Some("id-b"));
        assert_eq!(a.store_token.unwrap().token, "tok");

        let failing = |_: &str| -> Result<Vec<Account>, String> { Err("HTTP 403".into()) };
        let mut ui = Script::new(&["", "", "", "typed-id", "n"]);
        let a = ask_with(
            &node_inputs(None),
            &Request::default(),
            &mut ui,
            Some("tok"),
            &failing,
        )
        .unwrap();
        assert_eq!(a.changes.account_id.as_deref(), Some("typed-id"));
        assert!(a.store_token.is_none());
        assert!(
            ui.seen
                .iter()
                .any(|s| s.contains("Could not list the accounts (HTTP 403)"))
        );
    }

    #[test]
    fn no_preset_requires_paths_and_bad_answers_are_refused() {
        let mut ui = Script::new(&["none", ""]);
        let err = ask_with(
            &node_inputs(None),
            &Request::default(),
            &mut ui,
            None,
            &no_list,
        )
        .unwrap_err();
        assert!(err.message.contains("at least one directory"), "{err}");
        let mut ui = Script::new(&["", "/abs"]);
        let err = ask_with(
            &node_inputs(None),
            &Request::default(),
            &mut ui,
            None,
            &no_list,
        )
        .unwrap_err();
        assert!(err.message.contains("absolute"), "{err}");
        let mut ui = Script::new(&["", "", "a["]);
        let err = ask_with(
            &node_inputs(None),
            &Request::default(),
            &mut ui,
            None,
            &no_list,
        )
        .unwrap_err();
        assert!(err.message.contains("not a valid glob"), "{err}");
    }
}
