//! `stateful-ci.toml` as init writes it: a commented template for a new
//! file, and key-by-key edits with toml_edit for an existing one, so that a
//! rerun keeps the user's comments, order and other keys, and changes only
//! what was asked. Pure: text in, text out.

use crate::Error;
use stateful_ci_runtime::config::{
    CONFIG_FILE, LEGACY_CONFIG_FILE, PRESETS, parse_json, parse_toml,
};
use stateful_ci_runtime::deployment::key;
use toml_edit::{Array, DocumentMut, Item, Table, Value};

/// What to set. `None` everywhere leaves the file as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// `Some(Some(name))` sets `preset`, `Some(None)` removes it.
    pub preset: Option<Option<String>>,
    /// Paths kept besides the preset's (`paths`); an empty list removes the key.
    pub paths: Option<Vec<String>>,
    /// Globs left out (`exclude`); an empty list removes the key.
    pub exclude: Option<Vec<String>>,
    /// `[deployment] account_id`, read by `deploy`.
    pub account_id: Option<String>,
}

/// The values a file holds now, as init's defaults for a rerun.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentConfig {
    pub preset: Option<String>,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub account_id: Option<String>,
}

/// The text of a new `stateful-ci.toml` before any key is set.
pub fn template() -> String {
    let presets: Vec<String> = PRESETS
        .iter()
        .map(|(name, _, what)| format!("#   {name}: {what}"))
        .collect();
    format!(
        "# stateful-ci: what a CI job keeps between runs. Written by `stateful-ci init`;\n\
         # edit freely: a rerun of init keeps your edits and comments.\n\
         # Paths are relative to the repository root. Presets:\n\
         {}\n\
         # Extra paths besides the preset's go in `paths`, globs to leave out in\n\
         # `exclude`, e.g. paths = [\"dist\"] and exclude = [\"**/*.log\"].\n",
        presets.join("\n")
    )
}

/// Read the values init cares about from existing text. Text that is not
/// valid TOML is an error naming the file (init will not rewrite it).
pub fn current(text: &str) -> Result<CurrentConfig, Error> {
    let doc = parse_doc(text)?;
    let strings = |item: Option<&Item>| -> Vec<String> {
        item.and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(CurrentConfig {
        preset: doc.get("preset").and_then(Item::as_str).map(String::from),
        paths: strings(doc.get("paths")),
        exclude: strings(doc.get("exclude")),
        account_id: doc
            .get(key::TABLE)
            .and_then(|d| d.get(key::ACCOUNT_ID))
            .and_then(Item::as_str)
            .map(String::from),
    })
}

/// Apply `changes` to `existing` (or to the template when there is no file)
/// and check the result with the runtime's own parser.
pub fn apply(existing: Option<&str>, changes: &ConfigChanges) -> Result<String, Error> {
    // A new file: the keys below the template's comments (a document of
    // comments only would keep them after any key inserted).
    let mut doc = parse_doc(existing.unwrap_or(""))?;
    if let Some(preset) = &changes.preset {
        match preset {
            Some(name) => set_value(doc.as_table_mut(), "preset", Value::from(name.as_str())),
            None => {
                doc.remove("preset");
            }
        }
    }
    if let Some(paths) = &changes.paths {
        set_list(doc.as_table_mut(), "paths", paths);
    }
    if let Some(exclude) = &changes.exclude {
        set_list(doc.as_table_mut(), "exclude", exclude);
    }
    if let Some(id) = &changes.account_id {
        if !doc.contains_key(key::TABLE) {
            let mut t = Table::new();
            t.decor_mut()
                .set_prefix("\n# Written by `stateful-ci init` and `stateful-ci deploy`.\n");
            doc.insert(key::TABLE, Item::Table(t));
        }
        let table = doc[key::TABLE].as_table_mut().ok_or_else(|| {
            Error::user(
                format!("{CONFIG_FILE}: `deployment` is not a table"),
                "write it as a [deployment] section, or remove it and rerun init",
            )
        })?;
        set_value(table, key::ACCOUNT_ID, Value::from(id.as_str()));
    }
    let text = match existing {
        Some(_) => doc.to_string(),
        None => format!("{}\n{}", template(), doc.to_string().trim_start()),
    };
    parse_toml(&text).map_err(|e| {
        let hint = e.hint.clone().unwrap_or_default();
        Error::user(
            format!("{CONFIG_FILE} would not be valid: {}", e.message),
            format!("{hint} (change the answer or the flag that set it)"),
        )
    })?;
    Ok(text)
}

/// The keys of the original project's `stateful-ci.json`, all of which the
/// conversion carries over.
pub const JSON_KEYS: &[&str] = &["preset", "paths", "exclude", "workspace"];

/// Convert the original project's `stateful-ci.json` into the text of a
/// `stateful-ci.toml` with every key kept as written (the runtime's own
/// parser checks it first, so a key it does not know, or a value of the
/// wrong type, is an error naming the file, never a silent loss). Returns
/// the text and the keys carried over.
pub fn from_json(json: &str) -> Result<(String, Vec<&'static str>), Error> {
    parse_json(json).map_err(|e| {
        let hint = e.hint.clone().unwrap_or_default();
        Error::user(
            format!(
                "{LEGACY_CONFIG_FILE} cannot be converted into {CONFIG_FILE}: {}",
                e.message
            ),
            format!("{hint}; then run init again (nothing was written)"),
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(json).expect("parse_json accepted it");
    let obj = v.as_object().expect("parse_json checked the top level");
    let mut doc = DocumentMut::new();
    let mut kept = Vec::new();
    for key in JSON_KEYS {
        let Some(val) = obj.get(*key) else { continue };
        let value = match val {
            serde_json::Value::String(s) => Value::from(s.as_str()),
            serde_json::Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| x.as_str().expect("parse_json checked the lists"))
                    .collect(),
            ),
            _ => unreachable!("parse_json checked the types"),
        };
        doc.insert(key, Item::Value(value));
        kept.push(*key);
    }
    let text = format!(
        "{}# Converted from {LEGACY_CONFIG_FILE} by `stateful-ci init`.\n{}",
        template(),
        doc
    );
    parse_toml(&text).map_err(|e| {
        Error::user(
            format!("{LEGACY_CONFIG_FILE} converted into TOML does not parse: {e}"),
            "this is a bug in stateful-ci; write stateful-ci.toml by hand meanwhile",
        )
    })?;
    Ok((text, kept))
}

fn parse_doc(text: &str) -> Result<DocumentMut, Error> {
    text.parse().map_err(|e: toml_edit::TomlError| {
        Error::user(
            format!("{CONFIG_FILE} is not valid TOML: {}", e.message()),
            "fix the syntax (init edits the file in place and will not replace it)",
        )
    })
}

/// Set `key` unless it already holds an equal value; keep the comments
/// around the old value.
fn set_value(table: &mut Table, key: &str, mut value: Value) {
    if let Some(old) = table.get(key).and_then(Item::as_value) {
        if same(old, &value) {
            return;
        }
        let decor = old.decor().clone();
        *value.decor_mut() = decor;
    }
    // Replace the value in place: the key, and the comments above it, stay.
    match table.get_mut(key) {
        Some(item) => *item = Item::Value(value),
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

fn set_list(table: &mut Table, key: &str, list: &[String]) {
    if list.is_empty() {
        table.remove(key);
        return;
    }
    let array: Array = list.iter().map(String::as_str).collect();
    set_value(table, key, Value::Array(array));
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.value() == y.value(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same(p, q))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> ConfigChanges {
        ConfigChanges {
            preset: Some(Some("node".into())),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_file_is_commented_and_parses() {
        let text = apply(
            None,
            &ConfigChanges {
                exclude: Some(vec!["**/*.log".into()]),
                account_id: Some("abc123".into()),
                ..node()
            },
        )
        .unwrap();
        assert!(text.starts_with("# stateful-ci: what a CI job keeps"));
        assert!(text.contains("\npreset = \"node\"\n"), "{text}");
        assert!(text.contains("exclude = [\"**/*.log\"]"), "{text}");
        assert!(
            text.contains("[deployment]\naccount_id = \"abc123\""),
            "{text}"
        );
        let cfg = parse_toml(&text).unwrap();
        assert_eq!(cfg.preset.as_deref(), Some("node"));
        assert_eq!(cfg.exclude, ["**/*.log"]);
        assert_eq!(
            current(&text).unwrap().account_id.as_deref(),
            Some("abc123")
        );
    }

    #[test]
    fn a_rerun_keeps_comments_and_other_keys_and_changes_only_what_was_asked() {
        let user = "# my own note\npreset = \"node\" # keep this\n\n# extra output\npaths = [\"dist\"]\nworkspace = \"web\"\n\n[backend]\nurl = \"https://x.example\" # from deploy\n";
        // Nothing asked: byte for byte the same.
        assert_eq!(apply(Some(user), &node()).unwrap(), user);
        assert_eq!(apply(Some(user), &ConfigChanges::default()).unwrap(), user);
        // A new preset: only that value changes, its trailing comment stays.
        let out = apply(
            Some(user),
            &ConfigChanges {
                preset: Some(Some("rust".into())),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            out,
            user.replace("preset = \"node\"", "preset = \"rust\""),
            "{out}"
        );
        // Paths replaced, excludes added, account recorded.
        let out = apply(
            Some(user),
            &ConfigChanges {
                paths: Some(vec!["dist".into(), "out".into()]),
                exclude: Some(vec!["dist/tmp".into()]),
                account_id: Some("acc".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(
            out.contains("# extra output\npaths = [\"dist\", \"out\"]\n"),
            "{out}"
        );
        assert!(out.contains("# my own note\npreset = \"node\" # keep this\n"));
        assert!(out.contains("url = \"https://x.example\" # from deploy"));
        assert!(out.contains("exclude = [\"dist/tmp\"]"));
        let cfg = parse_toml(&out).unwrap();
        assert_eq!(cfg.workspace, "web");
        assert!(cfg.paths.contains(&"out".to_string()));
    }

    #[test]
    fn an_existing_deployment_table_gains_the_account_and_keeps_its_keys() {
        let user = "preset = \"go\"\n\n[deployment]\nworker = \"stateful-ci\"\n";
        let out = apply(
            Some(user),
            &ConfigChanges {
                account_id: Some("a1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            out,
            "preset = \"go\"\n\n[deployment]\nworker = \"stateful-ci\"\naccount_id = \"a1\"\n"
        );
    }

    #[test]
    fn json_converts_with_every_key_kept() {
        let json = r#"{"preset": "node", "paths": ["dist", "./out/"], "exclude": ["**/*.log", "dist/tmp"], "workspace": "web"}"#;
        let (text, kept) = from_json(json).unwrap();
        assert_eq!(kept, JSON_KEYS);
        let old = parse_json(json).unwrap();
        let new = parse_toml(&text).unwrap();
        assert_eq!(new, old, "{text}");
        // Written as the user wrote them, not normalised.
        assert!(text.contains("paths = [\"dist\", \"./out/\"]"), "{text}");
        assert!(text.contains("workspace = \"web\""), "{text}");
        // A file init then edits keeps them all.
        let edited = apply(
            Some(&text),
            &ConfigChanges {
                account_id: Some("a".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(parse_toml(&edited).unwrap(), old);
        // Only some keys: only those.
        let (text, kept) = from_json(r#"{"paths": ["build"]}"#).unwrap();
        assert_eq!(kept, ["paths"]);
        assert!(!text.contains("\npreset ="), "{text}");
    }

    #[test]
    fn json_that_cannot_be_converted_is_an_error_naming_it() {
        for (json, want) in [
            (
                r#"{"preset": "node", "cache": true}"#,
                "unknown key `cache`",
            ),
            (r#"{"paths": "dist"}"#, "must be a list of strings"),
            ("{not json", "not valid JSON"),
        ] {
            let err = from_json(json).unwrap_err();
            assert!(err.message.contains(LEGACY_CONFIG_FILE), "{err}");
            assert!(err.message.contains(want), "{json}: {err}");
            assert!(err.hint.unwrap().contains("nothing was written"));
        }
    }

    #[test]
    fn bad_answers_and_bad_files_are_named() {
        let err = apply(
            None,
            &ConfigChanges {
                preset: Some(Some("nod".into())),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.message.contains("unknown preset"), "{err}");
        assert!(err.hint.unwrap().contains("did you mean \"node\""));
        let err = apply(
            None,
            &ConfigChanges {
                paths: Some(vec!["../up".into()]),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.message.contains("`..`"), "{err}");
        let err = apply(Some("preset = [\n"), &node()).unwrap_err();
        assert!(err.message.contains("not valid TOML"), "{err}");
        // Removing everything leaves nothing to keep: refused.
        let err = apply(
            Some("preset = \"node\"\n"),
            &ConfigChanges {
                preset: Some(None),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            err.message.contains("neither `preset` nor `paths`"),
            "{err}"
        );
    }
}
