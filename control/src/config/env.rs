//! Environment overrides: `DANMU_CONTROL__NATS_URL=nats://n1:4222` sets `nats_url`;
//! a double underscore nests (`DANMU_CONTROL__REGION_FALLBACKS__A=B,C` sets `region_fallbacks.A`).
//!
//! The variables are passed in rather than read here, so tests never touch the process
//! environment.

use toml::{Table, Value};

use super::ConfigError;

/// Prefix of every override variable.
pub const PREFIX: &str = "DANMU_CONTROL__";

/// Keys whose values are always strings, even when they look like a number or a boolean
/// (an API key of digits stays a string).
const STRING_KEYS: &[&str] = &[
    "listen",
    "metrics_listen",
    "nats_url",
    "private_key_pem_path",
    "private_key_pem",
    "token_ttl",
    "token_max_ttl",
    "nodes_bucket",
    "node_ttl",
    "default_region",
];

/// Keys holding lists of strings: a comma-separated value, or a TOML array when it starts
/// with `[`.
const LIST_KEYS: &[&str] = &["api_keys", "regions"];

/// Applies every `DANMU_CONTROL__*` variable of `vars` to `table`; returns how many applied.
pub fn apply(
    table: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<usize, ConfigError> {
    let mut applied = 0;
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var,
                reason: "empty key segment".into(),
            });
        }
        // Nested keys under `region_fallbacks` are region names: keep the case users wrote.
        let path = restore_region_case(rest, path);
        let value = typed_value(&path, &raw).map_err(|reason| ConfigError::Env {
            var: var.clone(),
            reason,
        })?;
        insert(table, &path, value).map_err(|reason| ConfigError::Env { var, reason })?;
        applied += 1;
    }
    Ok(applied)
}

fn restore_region_case(rest: &str, mut path: Vec<String>) -> Vec<String> {
    if path.len() == 2 && path[0] == "region_fallbacks" {
        path[1] = rest.split("__").nth(1).unwrap_or_default().to_owned();
    }
    path
}

fn typed_value(path: &[String], raw: &str) -> Result<Value, String> {
    let top = path[0].as_str();
    let is_list = LIST_KEYS.contains(&top) || (top == "region_fallbacks" && path.len() == 2);
    if STRING_KEYS.contains(&top) && path.len() == 1 {
        return Ok(Value::String(raw.to_owned()));
    }
    if is_list && !raw.trim_start().starts_with('[') {
        let items = raw
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Value::String(item.to_owned()))
            .collect();
        return Ok(Value::Array(items));
    }
    // Anything else is a TOML literal (`true`, `5`, `[{cidr = "10.0.0.0/8", region = "A"}]`);
    // what does not parse as one is taken as a string, and the typed parse names the key.
    match toml::from_str::<Table>(&format!("v = {raw}")) {
        Ok(mut parsed) => Ok(parsed.remove("v").unwrap_or(Value::String(raw.to_owned()))),
        Err(_) => Ok(Value::String(raw.to_owned())),
    }
}

fn insert(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("path is never empty");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` is not a table in the config file"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_strings_lists_literals_and_nested_keys() {
        let mut table = Table::new();
        let applied = apply(
            &mut table,
            vars(&[
                ("DANMU_CONTROL__NATS_URL", "nats://n1:4222"),
                ("DANMU_CONTROL__API_KEYS", "123, abc"),
                ("DANMU_CONTROL__MAX_NODES", "3"),
                ("DANMU_CONTROL__TRUST_FORWARDED_FOR", "true"),
                ("DANMU_CONTROL__DEFAULT_REGION", "true"),
                ("DANMU_CONTROL__REGION_FALLBACKS__eu", "us,ap"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(applied, 6);
        assert_eq!(table["nats_url"].as_str(), Some("nats://n1:4222"));
        assert_eq!(
            table["api_keys"],
            Value::Array(vec!["123".into(), "abc".into()])
        );
        assert_eq!(table["max_nodes"].as_integer(), Some(3));
        assert_eq!(table["trust_forwarded_for"].as_bool(), Some(true));
        assert_eq!(table["default_region"].as_str(), Some("true"));
        assert_eq!(
            table["region_fallbacks"]["eu"],
            Value::Array(vec!["us".into(), "ap".into()])
        );
    }

    #[test]
    fn rejects_empty_segments() {
        let err = apply(&mut Table::new(), vars(&[("DANMU_CONTROL__A____B", "1")])).unwrap_err();
        assert!(err.to_string().contains("DANMU_CONTROL__A____B"), "{err}");
    }
}
