//! Reading and changing configuration keys at run time: the engine behind
//! D-Bus `GetConfig`, `SetConfig`, `UnsetConfig` and `Reload`.
//!
//! A key is a dotted path into the config file's tree (`buffer.max_bytes`,
//! `sources.coap.bind`). Reads see the *effective* configuration: every key
//! with its default filled in, adapter sections included. A change is
//! planned in three named steps, and nothing is written unless all pass:
//!
//! 1. **edit**: apply the change to the file's text with `toml_edit`, which
//!    keeps the operator's comments and layout;
//! 2. **validate**: parse the new text exactly as start-up does
//!    ([`Config::parse`]) and build every source from its section
//!    ([`crate::sources::check`]), so a bad value is refused with the key
//!    it concerns;
//! 3. **diff**: compare the effective trees before and after, giving the
//!    keys whose value changed. The caller writes the file atomically and
//!    applies what can be applied live ([`is_live`]).

use serde_json::{Map, Value};
use toml_edit::{DocumentMut, Item};

use crate::config::Config;

/// Keys whose value is never shown.
pub const SECRET_KEYS: &[&str] = &["uplink.password"];
/// What a secret reads as when set.
pub const REDACTED: &str = "********";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The key does not exist; the message names it.
    #[error("{0}")]
    UnknownKey(String),
    /// Validation refused the value; the message starts with the key.
    #[error("{0}")]
    Invalid(String),
    /// An optional key with no value and no default.
    #[error("{0} is not set")]
    NotSet(String),
}

/// Whether a change to `key` takes effect without a restart.
pub fn is_live(key: &str) -> bool {
    key == "log.level" || key == "log" || key.starts_with("sources.") || key == "sources"
}

/// The effective configuration as a JSON tree: every key, defaults
/// included, `null` for an optional key that is not set; each source's
/// section expanded with its adapter's defaults. Secrets are *not*
/// redacted here (see [`redact`]).
pub fn effective(config: &Config) -> Result<Value, EditError> {
    let mut tree = serde_json::to_value(config)
        .map_err(|e| EditError::Invalid(format!("cannot represent the configuration: {e}")))?;
    let mut sources = Map::new();
    for (name, table) in &config.sources {
        let v =
            crate::sources::check(name, table).map_err(|e| EditError::Invalid(e.to_string()))?;
        sources.insert(name.clone(), v);
    }
    if let Value::Object(m) = &mut tree {
        m.insert("sources".into(), Value::Object(sources));
    }
    Ok(tree)
}

/// Replaces set secrets with [`REDACTED`].
pub fn redact(tree: &mut Value) {
    for key in SECRET_KEYS {
        if let Some(v) = lookup_mut(tree, key) {
            if !v.is_null() {
                *v = Value::String(REDACTED.into());
            }
        }
    }
}

fn split(key: &str) -> Vec<&str> {
    key.split('.').collect()
}

/// The value at a dotted key.
pub fn lookup<'a>(tree: &'a Value, key: &str) -> Option<&'a Value> {
    if key.is_empty() {
        return Some(tree);
    }
    split(key)
        .into_iter()
        .try_fold(tree, |v, part| v.as_object()?.get(part))
}

fn lookup_mut<'a>(tree: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    split(key)
        .into_iter()
        .try_fold(tree, |v, part| v.as_object_mut()?.get_mut(part))
}

/// Drops `null`s (unset optional keys) for display.
pub fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// `GetConfig`: the effective value of `key` (`""`: the whole tree),
/// secrets redacted, unset optional keys left out.
pub fn get(config: &Config, key: &str) -> Result<Value, EditError> {
    check_key_syntax(key)?;
    let mut tree = effective(config)?;
    redact(&mut tree);
    match lookup(&tree, key) {
        None => Err(unknown(key)),
        Some(Value::Null) => Err(EditError::NotSet(key.to_owned())),
        Some(v) => Ok(strip_nulls(v.clone())),
    }
}

fn unknown(key: &str) -> EditError {
    EditError::UnknownKey(format!("{key}: unknown configuration key"))
}

fn check_key_syntax(key: &str) -> Result<(), EditError> {
    if key.is_empty() {
        return Ok(());
    }
    if key.len() > 256
        || key.split('.').any(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        })
    {
        return Err(EditError::UnknownKey(format!(
            "{key:?}: not a configuration key (dotted names of A-Z a-z 0-9 _ -)"
        )));
    }
    Ok(())
}

/// A change to the config file.
#[derive(Debug, Clone)]
pub enum Edit {
    Set(String, toml_edit::Value),
    Unset(String),
}

impl Edit {
    pub fn key(&self) -> &str {
        match self {
            Edit::Set(k, _) | Edit::Unset(k) => k,
        }
    }
}

/// A validated change, not yet written.
#[derive(Debug)]
pub struct Planned {
    /// The new file text.
    pub text: String,
    /// The configuration it parses to.
    pub config: Config,
    /// Effective keys whose value differs from the file's current one.
    pub changed: Vec<String>,
}

/// Parses and validates config text as start-up does, sources included.
pub fn validate_text(text: &str) -> Result<Config, EditError> {
    let config = Config::parse(text).map_err(|e| classify(format!("{e:#}")))?;
    for (name, table) in &config.sources {
        crate::sources::check(name, table).map_err(|e| classify(e.to_string()))?;
    }
    Ok(config)
}

fn classify(msg: String) -> EditError {
    if msg.contains("unknown field") {
        EditError::UnknownKey(msg)
    } else {
        EditError::Invalid(msg)
    }
}

/// Steps 1–3 of the module docs: edit, validate, diff.
pub fn plan(current_text: &str, edit: &Edit) -> Result<Planned, EditError> {
    let key = edit.key();
    check_key_syntax(key)?;
    if key.is_empty() {
        return Err(EditError::UnknownKey(
            "\"\": name a key to change".to_owned(),
        ));
    }
    let before = validate_text(current_text)
        .map_err(|e| EditError::Invalid(format!("the config file is invalid already: {e}")))?;
    let before_tree = effective(&before)?;
    // 1. edit
    let mut doc: DocumentMut = current_text
        .parse()
        .map_err(|e| EditError::Invalid(format!("the config file does not parse: {e}")))?;
    let parts = split(key);
    match edit {
        Edit::Set(_, value) => set_in(&mut doc, &parts, value.clone())?,
        Edit::Unset(_) => {
            if lookup(&before_tree, key).is_none() {
                return Err(unknown(key));
            }
            unset_in(&mut doc, &parts);
        }
    }
    let text = doc.to_string();
    // 2. validate
    let config = validate_text(&text).map_err(|e| match e {
        // An unknown field is the key being set (or one of its new table's
        // keys): say which key the caller used.
        EditError::UnknownKey(msg) => EditError::UnknownKey(format!(
            "{key}: unknown configuration key ({})",
            msg.rsplit_once(": ").map(|(_, m)| m).unwrap_or(&msg)
        )),
        other => other,
    })?;
    // 3. diff
    let after_tree = effective(&config)?;
    let changed = diff_keys(&before_tree, &after_tree);
    Ok(Planned {
        text,
        config,
        changed,
    })
}

fn set_in(doc: &mut DocumentMut, parts: &[&str], value: toml_edit::Value) -> Result<(), EditError> {
    let (last, parents) = parts.split_last().expect("key is not empty");
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    // Standard tables can hold standard sub-tables; inline ones only values.
    let mut inline = false;
    let mut path = String::new();
    for p in parents {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(p);
        if table.get(p).is_none() {
            if inline {
                table.insert(p, Item::Value(toml_edit::InlineTable::new().into()));
            } else {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                table.insert(p, Item::Table(t));
            }
        }
        table = match table.get_mut(p).expect("present or just inserted") {
            Item::Table(t) => t,
            Item::Value(toml_edit::Value::InlineTable(t)) => {
                inline = true;
                t
            }
            _ => {
                return Err(EditError::Invalid(format!(
                    "{path}: is a value, not a table, so it has no key {last:?}"
                )))
            }
        };
    }
    let item = match value {
        // A whole section set at once is written as a standard table.
        toml_edit::Value::InlineTable(t) if !inline => Item::Table(t.into_table()),
        v => Item::Value(v),
    };
    table.insert(last, item);
    Ok(())
}

fn unset_in(doc: &mut DocumentMut, parts: &[&str]) {
    let (last, parents) = parts.split_last().expect("key is not empty");
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for p in parents {
        table = match table.get_mut(p) {
            Some(Item::Table(t)) => t,
            Some(Item::Value(toml_edit::Value::InlineTable(t))) => t,
            _ => return,
        };
    }
    table.remove(last);
}

/// Dotted keys whose value differs between two effective trees (leaves,
/// arrays compared whole; an added or removed table is one key).
pub fn diff_keys(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into(a, b, &mut String::new(), &mut out);
    out
}

fn diff_into(a: &Value, b: &Value, prefix: &mut String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_into(va, vb, prefix, out),
                    _ => out.push(prefix.clone()),
                }
                prefix.truncate(len);
            }
        }
        (x, y) if x == y => {}
        _ => out.push(prefix.clone()),
    }
}

/// Keys changed between the configuration gatewayd started with and
/// `current` that only a restart applies.
pub fn pending_restart(boot: &Config, current: &Config) -> Vec<String> {
    match (effective(boot), effective(current)) {
        (Ok(a), Ok(b)) => diff_keys(&a, &b)
            .into_iter()
            .filter(|k| !is_live(k))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# my gateway\n[gateway]\nid = \"gw-1\" # fleet id\n\n[sources.coap]\nkind = \"coap\"\nbind = \"127.0.0.1:5683\"\n";

    fn set(key: &str, v: impl Into<toml_edit::Value>) -> Edit {
        Edit::Set(key.into(), v.into())
    }

    #[test]
    fn get_returns_effective_values_with_defaults() {
        let c = validate_text(FILE).unwrap();
        assert_eq!(get(&c, "gateway.id").unwrap(), "gw-1");
        assert_eq!(get(&c, "buffer.max_bytes").unwrap(), 268435456);
        assert_eq!(get(&c, "sources.coap.path").unwrap(), "telemetry");
        assert!(get(&c, "").unwrap()["uplink"]["broker"].is_string());
    }

    #[test]
    fn get_refuses_unknown_keys_and_reports_unset_optionals() {
        let c = validate_text(FILE).unwrap();
        assert!(
            matches!(get(&c, "buffer.bogus"), Err(EditError::UnknownKey(m)) if m.contains("buffer.bogus"))
        );
        assert!(matches!(get(&c, "nope"), Err(EditError::UnknownKey(_))));
        assert!(matches!(get(&c, "a..b"), Err(EditError::UnknownKey(_))));
        assert_eq!(
            get(&c, "uplink.username"),
            Err(EditError::NotSet("uplink.username".into()))
        );
    }

    #[test]
    fn secrets_are_redacted_on_read() {
        let c = validate_text("[uplink]\nusername = \"gw\"\npassword = \"hunter2\"\n").unwrap();
        assert_eq!(get(&c, "uplink.password").unwrap(), REDACTED);
        assert!(!get(&c, "").unwrap().to_string().contains("hunter2"));
    }

    #[test]
    fn set_keeps_comments_and_reports_the_changed_key() {
        let p = plan(FILE, &set("buffer.max_bytes", 1_000_000i64)).unwrap();
        assert!(p.text.contains("# my gateway") && p.text.contains("# fleet id"));
        assert_eq!(p.config.buffer.max_bytes, 1_000_000);
        assert_eq!(p.changed, vec!["buffer.max_bytes".to_owned()]);
        // Setting the default explicitly changes nothing effective.
        let p = plan(FILE, &set("buffer.max_bytes", 268435456i64)).unwrap();
        assert!(p.changed.is_empty());
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let cases: Vec<(Edit, &str)> = vec![
            (set("buffer.max_bytes", 10i64), "buffer.max_bytes"),
            (set("buffer.max_bytes", "lots"), "buffer.max_bytes"),
            (set("buffer.when_full", "explode"), "buffer.when_full"),
            (set("gateway.id", "a/b"), "gateway.id"),
            (
                set("sources.coap.bind", "not an address"),
                "sources.coap.bind",
            ),
            (set("log.level", 3i64), "log.level"),
        ];
        for (edit, key) in cases {
            match plan(FILE, &edit) {
                Err(EditError::Invalid(m)) => assert!(m.starts_with(key), "{edit:?}: {m}"),
                other => panic!("{edit:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused_as_unknown() {
        for key in [
            "buffer.bogus",
            "bogus",
            "sources.coap.bogus",
            "uplink.tls.bogus",
        ] {
            match plan(FILE, &set(key, 1i64)) {
                Err(EditError::UnknownKey(m)) => assert!(m.starts_with(key), "{key}: {m}"),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(matches!(
            plan(FILE, &Edit::Unset("buffer.bogus".into())),
            Err(EditError::UnknownKey(_))
        ));
        assert!(matches!(
            plan(FILE, &set("gateway.id.x", 1i64)),
            Err(EditError::Invalid(m)) if m.starts_with("gateway.id")
        ));
    }

    #[test]
    fn unset_returns_a_key_to_its_default() {
        let p = plan(FILE, &Edit::Unset("gateway.id".into())).unwrap();
        assert_eq!(p.config.gateway.id, "gateway");
        assert_eq!(p.changed, vec!["gateway.id".to_owned()]);
        assert!(p.text.contains("# my gateway"));
    }

    #[test]
    fn a_whole_source_can_be_added_as_a_table() {
        let mut t = toml_edit::InlineTable::new();
        t.insert("kind", "coap".into());
        t.insert("bind", "127.0.0.1:5999".into());
        let p = plan(FILE, &set("sources.coap2", t)).unwrap();
        assert!(p.text.contains("[sources.coap2]"), "{}", p.text);
        assert_eq!(p.changed, vec!["sources.coap2".to_owned()]);
        assert!(is_live("sources.coap2"));
    }

    #[test]
    fn pending_restart_lists_only_keys_a_restart_applies() {
        let boot = validate_text(FILE).unwrap();
        let now = plan(FILE, &set("buffer.max_bytes", 1_000_000i64)).unwrap();
        let now = plan(&now.text, &set("log.level", "debug")).unwrap().config;
        assert_eq!(pending_restart(&boot, &now), vec!["buffer.max_bytes"]);
    }

    #[test]
    fn an_invalid_file_is_reported_as_such() {
        let e = plan("[buffer]\nmax_bytes = 1\n", &set("log.level", "debug")).unwrap_err();
        assert!(matches!(e, EditError::Invalid(m) if m.contains("invalid already")));
    }

    use proptest::prelude::{any, prop_oneof, Strategy};

    proptest::proptest! {
        /// Whatever key and value a caller sends, planning a change answers
        /// with a result (never a panic), and an accepted change parses back
        /// to the configuration it reports.
        #[test]
        fn any_key_and_value_get_an_answer(
            key in "[a-z_.]{0,24}|buffer\\.[a-z_]{1,20}|sources\\.coap\\.[a-z_]{1,12}",
            v in prop_oneof![
                any::<i64>().prop_map(toml_edit::Value::from),
                "[ -~]{0,12}".prop_map(|s| toml_edit::Value::from(s.as_str())),
                any::<bool>().prop_map(toml_edit::Value::from),
                any::<f64>().prop_map(toml_edit::Value::from),
            ],
            unset in any::<bool>(),
        ) {
            let edit = if unset { Edit::Unset(key.clone()) } else { Edit::Set(key.clone(), v) };
            if let Ok(p) = plan(FILE, &edit) {
                let again = validate_text(&p.text).expect("planned text is valid");
                proptest::prop_assert_eq!(
                    effective(&again).unwrap(),
                    effective(&p.config).unwrap()
                );
            }
            let _ = get(&validate_text(FILE).unwrap(), &key);
        }
    }
}
