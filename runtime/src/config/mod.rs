//! One way to configure every danmu service: a TOML file, then `DANMU_<SERVICE>__<KEY>`
//! environment overrides ([`env`]), parsed into the service's serde struct, whose
//! `deny_unknown_fields` refuses unknown keys. Durations are strings such as `"15s"` ([`duration`]).
//! Each service then validates ranges and pairs, reporting [`ConfigError::Invalid`] with the key.
//!
//! The environment is passed in ([`Schema::load`] takes the variables), so tests pass a list and
//! never set process variables.

pub mod duration;
mod env;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration cannot be used. Every variant names what to fix: the file, the variable
/// or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML, or has an unknown key or a value of the wrong type. The message
    /// quotes the offending line, key included.
    #[error("{origin}: {source}")]
    Parse {
        origin: String,
        source: Box<toml::de::Error>,
    },
    /// An override variable could not be applied, or gives an unknown key or a value of the
    /// wrong type.
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    /// A key has a value that parses but cannot work.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    /// [`ConfigError::Invalid`] for `key`.
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A service's configuration scheme: its name, which gives the variables' prefix, and how to
/// type variables whose text could be read more than one way.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Lower case service name: its variables are `DANMU_<SERVICE>__<KEY>`.
    pub service: &'static str,
    /// Dotted keys (`*` for any map key) whose variables are always strings, even when they
    /// look like a number or a boolean (`node_id = "123"`).
    pub strings: &'static [&'static str],
    /// Dotted keys holding lists of strings: a variable is comma-separated, or a TOML array
    /// when it starts with `[`.
    pub lists: &'static [&'static str],
}

impl Schema {
    /// `DANMU_<SERVICE>__`.
    pub fn env_prefix(&self) -> String {
        format!("DANMU_{}__", self.service.to_ascii_uppercase())
    }

    /// Reads `path` (none: all defaults), applies the `DANMU_<SERVICE>__*` variables among
    /// `vars` (pass `std::env::vars()`), and parses the result into `T`. Does not validate:
    /// that is the service's own [`ConfigError::Invalid`] check.
    pub fn load<T: DeserializeOwned>(
        &self,
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<T, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?,
            None => String::new(),
        };
        let origin = path.map_or("configuration".to_owned(), |p| p.display().to_string());
        let parse_error = |source| ConfigError::Parse {
            origin: origin.clone(),
            source: Box::new(source),
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        let overrides = env::overrides(self, vars)?;
        if overrides.is_empty() {
            // The user's own text, so errors point into their file.
            return toml::from_str(&text).map_err(parse_error);
        }
        for over in &overrides {
            env::apply(&mut table, over)?;
        }
        parse(&table).map_err(|merged| {
            // An override that is wrong by itself (on the defaults) is named; otherwise the
            // message quotes the merged line, key included.
            let defaults_parse = parse::<T>(&toml::Table::new()).is_ok();
            let bad_override = overrides
                .iter()
                .filter(|_| defaults_parse)
                .find_map(|over| {
                    let mut alone = toml::Table::new();
                    env::apply(&mut alone, over).ok()?;
                    parse::<T>(&alone).err().map(|error| ConfigError::Env {
                        var: over.var.clone(),
                        reason: error.message().to_owned(),
                    })
                });
            bad_override.unwrap_or_else(|| ConfigError::Parse {
                origin: format!("{origin} with {}* overrides", self.env_prefix()),
                source: Box::new(merged),
            })
        })
    }
}

/// Parses a table through its TOML text, so a type error still quotes the key.
fn parse<T: DeserializeOwned>(table: &toml::Table) -> Result<T, toml::de::Error> {
    toml::from_str(&toml::to_string(table).expect("a TOML table always renders"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Config {
        nats_url: String,
        node_id: String,
        #[serde(deserialize_with = "duration::deserialize")]
        node_ttl: Duration,
        capacity: u64,
        low: Worker,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Worker {
        #[serde(deserialize_with = "duration::deserialize")]
        window: Duration,
        pull_batch: usize,
    }

    impl Default for Config {
        fn default() -> Self {
            Config {
                nats_url: "nats://127.0.0.1:4222".into(),
                node_id: String::new(),
                node_ttl: Duration::from_secs(15),
                capacity: 100,
                low: Worker::default(),
            }
        }
    }

    impl Default for Worker {
        fn default() -> Self {
            Worker {
                window: Duration::from_millis(20),
                pull_batch: 500,
            }
        }
    }

    const SCHEMA: Schema = Schema {
        service: "gateway",
        strings: &["nats_url", "node_id"],
        lists: &[],
    };

    fn load(file: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, file).unwrap();
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        SCHEMA.load(Some(&path), vars)
    }

    fn message(file: &str, vars: &[(&str, &str)]) -> String {
        load(file, vars).unwrap_err().to_string()
    }

    #[test]
    fn no_file_and_no_variables_is_the_defaults() {
        let config: Config = SCHEMA.load(None, []).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let config = load(
            "nats_url = \"nats://file:4222\"\ncapacity = 5\n[low]\nwindow = \"50ms\"\n",
            &[
                ("DANMU_GATEWAY__NATS_URL", "nats://env:4222"),
                ("DANMU_GATEWAY__NODE_ID", "123"),
                ("DANMU_GATEWAY__NODE_TTL", "1m"),
                ("DANMU_GATEWAY__LOW__PULL_BATCH", "7"),
                ("DANMU_DISTRIBUTOR__CAPACITY", "9"),
            ],
        )
        .unwrap();
        assert_eq!(
            config,
            Config {
                nats_url: "nats://env:4222".into(),
                node_id: "123".into(),
                node_ttl: Duration::from_secs(60),
                capacity: 5,
                low: Worker {
                    window: Duration::from_millis(50),
                    pull_batch: 7,
                },
            }
        );
    }

    #[test]
    fn a_bad_value_in_the_file_names_the_key() {
        let msg = message("capacity = \"many\"\n", &[]);
        assert!(msg.contains("capacity"), "{msg}");
        let msg = message("[low]\nwindow = \"soon\"\n", &[]);
        assert!(
            msg.contains("window") && msg.contains("`soon` is not a duration"),
            "{msg}"
        );
    }

    #[test]
    fn a_bare_number_is_not_a_duration() {
        let msg = message("node_ttl = 15\n", &[]);
        assert!(msg.contains("node_ttl") && msg.contains("\"15s\""), "{msg}");
    }

    #[test]
    fn a_variable_replaces_a_bad_file_value() {
        let config = load("capacity = \"many\"\n", &[("DANMU_GATEWAY__CAPACITY", "7")]).unwrap();
        assert_eq!(config.capacity, 7);
        let msg = message("capacity = \"many\"\n", &[("DANMU_GATEWAY__NODE_ID", "7")]);
        assert!(
            msg.contains("with DANMU_GATEWAY__* overrides") && msg.contains("capacity"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_variable_is_named() {
        let msg = message("", &[("DANMU_GATEWAY__NODE_TTL", "soon")]);
        assert!(
            msg.starts_with("environment variable DANMU_GATEWAY__NODE_TTL: "),
            "{msg}"
        );
        assert!(msg.contains("`soon` is not a duration"), "{msg}");
        let msg = message("", &[("DANMU_GATEWAY__LOW__PULL_BATCH", "many")]);
        assert!(
            msg.starts_with("environment variable DANMU_GATEWAY__LOW__PULL_BATCH: "),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_named() {
        let msg = message("nats_urll = \"x\"\n", &[]);
        assert!(msg.contains("unknown field `nats_urll`"), "{msg}");
        let msg = message("[low]\nwindow_ms = 20\n", &[]);
        assert!(msg.contains("unknown field `window_ms`"), "{msg}");
        let msg = message("", &[("DANMU_GATEWAY__NATS_URLL", "x")]);
        assert!(
            msg.starts_with("environment variable DANMU_GATEWAY__NATS_URLL: "),
            "{msg}"
        );
        assert!(msg.contains("unknown field `nats_urll`"), "{msg}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let msg = SCHEMA
            .load::<Config>(Some(Path::new("/nonexistent/gateway.toml")), [])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/gateway.toml"), "{msg}");
    }
}
