//! Environment overrides, one scheme for every service: `DANMU_<SERVICE>__<KEY>`, a double
//! underscore between nested keys. `DANMU_GATEWAY__NATS_URL=nats://n1:4222` sets the gateway's
//! `nats_url`; `DANMU_DISTRIBUTOR__LOW__WINDOW=50ms` sets `window` in the distributor's `[low]`;
//! `DANMU_CONTROL__REGION_FALLBACKS__eu=us,ap` sets `region_fallbacks.eu`.
//!
//! Key names are matched in lower case, except map keys (a `*` in [`Schema`]'s patterns), which
//! keep the case written. A value is read as a TOML literal (`true`, `5`, `["a", "b"]`,
//! `{ rate_per_sec = 1.0, burst = 5 }`) when it parses as one, else as a string, except for keys
//! the schema lists as strings (always strings: an API key of digits stays a string) or lists
//! (comma-separated strings, unless the value starts with `[`).
//!
//! The variables are passed in rather than read here, so tests never touch the process
//! environment.

use toml::{Table, Value};

use super::{ConfigError, Schema};

/// One override: the variable, its key path and its typed value.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Override {
    pub var: String,
    pub path: Vec<String>,
    pub value: Value,
}

/// The `DANMU_<SERVICE>__*` variables among `vars`, typed; other variables are ignored.
pub(super) fn overrides(
    schema: &Schema,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let prefix = schema.env_prefix();
    let mut found = Vec::new();
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(&prefix) else {
            continue;
        };
        let written: Vec<&str> = rest.split("__").collect();
        if written.iter().any(|segment| segment.is_empty()) {
            return Err(ConfigError::Env {
                var,
                reason: "empty key segment".into(),
            });
        }
        let lower: Vec<String> = written.iter().map(|s| s.to_ascii_lowercase()).collect();
        let pattern = |patterns: &[&'static str]| {
            patterns
                .iter()
                .copied()
                .find(|pattern| matches(pattern, &lower))
        };
        let string = pattern(schema.strings);
        let list = pattern(schema.lists);
        // Map keys (the `*` of the matching pattern) keep the case users wrote.
        let path = match string.or(list) {
            Some(pattern) => pattern
                .split('.')
                .zip(written.iter().zip(&lower))
                .map(|(part, (written, lower))| {
                    if part == "*" {
                        (*written).to_owned()
                    } else {
                        lower.clone()
                    }
                })
                .collect(),
            None => lower,
        };
        let value = if string.is_some() {
            Value::String(raw)
        } else if list.is_some() && !raw.trim_start().starts_with('[') {
            Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            )
        } else {
            literal(&raw)
        };
        found.push(Override { var, path, value });
    }
    // The environment's order is arbitrary: apply in a fixed one.
    found.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(found)
}

/// Whether dotted `pattern` (`*` matching any one key) matches `path`.
fn matches(pattern: &str, path: &[String]) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() == path.len()
        && parts
            .iter()
            .zip(path)
            .all(|(part, key)| *part == "*" || part == key)
}

/// A TOML literal, or the raw text as a string when it is not one; a value of the wrong type
/// is then refused by the typed parse, naming the variable.
fn literal(raw: &str) -> Value {
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut parsed) => parsed
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_owned())),
        Err(_) => Value::String(raw.to_owned()),
    }
}

/// Sets `value` at `path` in `table`, creating tables on the way.
pub(super) fn apply(table: &mut Table, over: &Override) -> Result<(), ConfigError> {
    let (last, parents) = over.path.split_last().expect("paths are never empty");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: over.var.clone(),
            reason: format!("`{key}` is not a table in the config file"),
        })?;
    }
    current.insert(last.clone(), over.value.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        service: "control",
        strings: &["nats_url", "default_region", "node_id"],
        lists: &["api_keys", "region_fallbacks.*"],
    };

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn table(pairs: &[(&str, &str)]) -> Result<Table, ConfigError> {
        let mut table = Table::new();
        for over in overrides(&SCHEMA, vars(pairs))? {
            apply(&mut table, &over)?;
        }
        Ok(table)
    }

    #[test]
    fn strings_lists_literals_and_nested_keys() {
        let table = table(&[
            ("DANMU_CONTROL__NATS_URL", "nats://n1:4222"),
            ("DANMU_CONTROL__API_KEYS", "123, abc"),
            ("DANMU_CONTROL__MAX_NODES", "3"),
            ("DANMU_CONTROL__TRUST_FORWARDED_FOR", "true"),
            ("DANMU_CONTROL__DEFAULT_REGION", "true"),
            ("DANMU_CONTROL__NODE_ID", "123"),
            ("DANMU_CONTROL__REGION_FALLBACKS__eu", "us,ap"),
            ("DANMU_CONTROL__LOW__WINDOW", "50ms"),
            ("DANMU_GATEWAY__NATS_URL", "another service's"),
            ("UNRELATED", "x"),
        ])
        .unwrap();
        assert_eq!(table["nats_url"].as_str(), Some("nats://n1:4222"));
        assert_eq!(
            table["api_keys"],
            Value::Array(vec!["123".into(), "abc".into()])
        );
        assert_eq!(table["max_nodes"].as_integer(), Some(3));
        assert_eq!(table["trust_forwarded_for"].as_bool(), Some(true));
        assert_eq!(table["default_region"].as_str(), Some("true"));
        assert_eq!(table["node_id"].as_str(), Some("123"));
        assert_eq!(
            table["region_fallbacks"]["eu"],
            Value::Array(vec!["us".into(), "ap".into()])
        );
        assert_eq!(table["low"]["window"].as_str(), Some("50ms"));
        assert_eq!(table.len(), 8, "{table:?}");
    }

    #[test]
    fn a_list_may_be_a_toml_array() {
        let table = table(&[("DANMU_CONTROL__API_KEYS", r#"["a,b", "c"]"#)]).unwrap();
        assert_eq!(
            table["api_keys"],
            Value::Array(vec!["a,b".into(), "c".into()])
        );
    }

    #[test]
    fn empty_segments_are_refused_naming_the_variable() {
        let err = table(&[("DANMU_CONTROL__A____B", "1")]).unwrap_err();
        assert!(err.to_string().contains("DANMU_CONTROL__A____B"), "{err}");
    }

    #[test]
    fn a_key_under_a_value_is_refused_naming_the_variable() {
        let err = table(&[
            ("DANMU_CONTROL__MAX_NODES", "3"),
            ("DANMU_CONTROL__MAX_NODES__X", "1"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("DANMU_CONTROL__MAX_NODES__X"),
            "{err}"
        );
    }
}
