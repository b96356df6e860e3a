//! [`Config::validate`](super::Config::validate): one check per key, each error naming it.

use std::collections::BTreeSet;
use std::time::Duration;

use danmu_runtime::config::duration::display;

use super::{Config, ConfigError};
use crate::routing::check_region_name;

/// Upper bound of `max_nodes`: a node list is a handful of candidates, not a directory.
const MAX_NODES_LIMIT: usize = 100;

pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    config.nats().check().map_err(|error| match error {
        danmu_runtime::nats::NatsConfigError::NoServer => {
            ConfigError::invalid("nats_url", "must name at least one NATS server")
        }
        other => ConfigError::invalid(other.key(), other.to_string()),
    })?;
    match (&config.private_key_pem_path, &config.private_key_pem) {
        (None, None) => {
            return Err(ConfigError::invalid(
                "private_key_pem_path",
                "set it (or private_key_pem) to the token signing key; `danmu-control keygen` makes one",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "private_key_pem",
                "set either private_key_pem_path or private_key_pem, not both",
            ));
        }
        _ => {}
    }
    for (i, key) in config.api_keys.iter().enumerate() {
        if key.expose().trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("api_keys[{i}]"),
                "must not be empty",
            ));
        }
    }
    check_ttls(config.token_ttl, config.token_max_ttl)?;
    check_bucket(&config.nodes_bucket)?;
    if config.node_ttl < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "node_ttl",
            format!("{} is shorter than 1s", display(config.node_ttl)),
        ));
    }
    check_regions(config)?;
    if config.max_nodes == 0 || config.max_nodes > MAX_NODES_LIMIT {
        return Err(ConfigError::invalid(
            "max_nodes",
            format!("{} is outside 1..={MAX_NODES_LIMIT}", config.max_nodes),
        ));
    }
    if let Some(region) = &config.region {
        check_region_name(region).map_err(|reason| ConfigError::invalid("region", reason))?;
    }
    if config.online_publish_interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "online_publish_interval",
            format!(
                "{} is shorter than 100ms",
                display(config.online_publish_interval)
            ),
        ));
    }
    if config.top_rooms > 1000 {
        return Err(ConfigError::invalid(
            "top_rooms",
            format!(
                "{} is more than 1000 (the metric's cardinality)",
                config.top_rooms
            ),
        ));
    }
    for (key, value) in [
        ("http_header_timeout", config.http_header_timeout),
        ("http_request_timeout", config.http_request_timeout),
    ] {
        if value < Duration::from_millis(100) || value > Duration::from_secs(600) {
            return Err(ConfigError::invalid(
                key,
                format!("{} is outside 100ms..=10m", display(value)),
            ));
        }
    }
    if config.http_max_connections == 0 {
        return Err(ConfigError::invalid(
            "http_max_connections",
            "must be at least 1",
        ));
    }
    danmu_runtime::origins::AllowedOrigins::new(&config.allowed_origins).map_err(|error| {
        ConfigError::invalid(
            "allowed_origins",
            format!("entry {:?} {}", error.entry, error.reason),
        )
    })?;
    for (i, rule) in config.rules.iter().enumerate() {
        rule.check()
            .map_err(|reason| ConfigError::invalid(format!("rules[{i}]"), reason))?;
    }
    Ok(())
}

fn check_ttls(ttl: Duration, max: Duration) -> Result<(), ConfigError> {
    if ttl < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "token_ttl",
            format!("{} is shorter than 1s", display(ttl)),
        ));
    }
    if ttl > max {
        return Err(ConfigError::invalid(
            "token_ttl",
            format!("{} exceeds token_max_ttl ({})", display(ttl), display(max)),
        ));
    }
    Ok(())
}

fn check_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok = !bucket.is_empty()
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "nodes_bucket",
            format!("`{bucket}` is not a KV bucket name (letters, digits, `_`, `-`)"),
        ))
    }
}

fn check_regions(config: &Config) -> Result<(), ConfigError> {
    let region = |key: String, name: &str| {
        check_region_name(name).map_err(|reason| ConfigError::invalid(key, reason))
    };
    region("default_region".into(), &config.default_region)?;
    let mut seen = BTreeSet::new();
    for (i, name) in config.regions.iter().enumerate() {
        region(format!("regions[{i}]"), name)?;
        if !seen.insert(name) {
            return Err(ConfigError::invalid(
                format!("regions[{i}]"),
                format!("`{name}` is listed twice"),
            ));
        }
    }
    for (from, order) in &config.region_fallbacks {
        region(format!("region_fallbacks.{from}"), from)?;
        for (i, name) in order.iter().enumerate() {
            region(format!("region_fallbacks.{from}[{i}]"), name)?;
        }
    }
    for (i, row) in config.cidr_regions.iter().enumerate() {
        region(format!("cidr_regions[{i}].region"), &row.region)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CidrRegion;
    use crate::routing::{Mode, Rule};

    fn good() -> Config {
        Config {
            private_key_pem: Some("pem".into()),
            ..Config::default()
        }
    }

    fn message(config: Config) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_with_a_key_are_valid() {
        good().validate().unwrap();
    }

    #[test]
    fn missing_or_doubled_signing_key() {
        let msg = message(Config::default());
        assert!(
            msg.starts_with("config key `private_key_pem_path`"),
            "{msg}"
        );
        let msg = message(Config {
            private_key_pem_path: Some("k.pem".into()),
            ..good()
        });
        assert!(msg.starts_with("config key `private_key_pem`:"), "{msg}");
    }

    #[test]
    fn token_ttls() {
        let msg = message(Config {
            token_ttl: Duration::from_secs(2 * 86_400),
            ..good()
        });
        assert_eq!(msg, "config key `token_ttl`: 2d exceeds token_max_ttl (1d)");
        let msg = message(Config {
            token_ttl: Duration::ZERO,
            ..good()
        });
        assert!(msg.starts_with("config key `token_ttl`"), "{msg}");
    }

    #[test]
    fn names_the_bad_key() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    nats_url: " ".into(),
                    ..good()
                },
                "nats_url",
            ),
            (
                Config {
                    api_keys: vec!["ok".into(), "".into()],
                    ..good()
                },
                "api_keys[1]",
            ),
            (
                Config {
                    nodes_bucket: "danmu.nodes".into(),
                    ..good()
                },
                "nodes_bucket",
            ),
            (
                Config {
                    node_ttl: Duration::from_millis(200),
                    ..good()
                },
                "node_ttl",
            ),
            (
                Config {
                    max_nodes: 0,
                    ..good()
                },
                "max_nodes",
            ),
            (
                Config {
                    default_region: String::new(),
                    ..good()
                },
                "default_region",
            ),
            (
                Config {
                    regions: vec!["A".into(), "B".into(), "A".into()],
                    ..good()
                },
                "regions[2]",
            ),
            (
                Config {
                    region_fallbacks: [("A".to_owned(), vec!["B".to_owned(), "b c".to_owned()])]
                        .into(),
                    ..good()
                },
                "region_fallbacks.A[1]",
            ),
            (
                Config {
                    cidr_regions: vec![CidrRegion {
                        cidr: "10.0.0.0/8".parse().unwrap(),
                        region: String::new(),
                    }],
                    ..good()
                },
                "cidr_regions[0].region",
            ),
            (
                Config {
                    rules: vec![Rule {
                        name: "rollout".into(),
                        percent: Some(101),
                        mode: Mode::Polling,
                        ..Rule::default()
                    }],
                    ..good()
                },
                "rules[0]",
            ),
        ];
        for (config, key) in cases {
            let msg = message(config);
            assert!(
                msg.starts_with(&format!("config key `{key}`: ")),
                "expected key {key}: {msg}"
            );
        }
    }

    #[test]
    fn load_reports_type_errors_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        std::fs::write(&path, "private_key_pem = \"x\"\nmax_nodes = \"many\"\n").unwrap();
        let msg = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(msg.contains("max_nodes"), "{msg}");

        let msg = Config::load(
            Some(&path),
            [("DANMU_CONTROL__MAX_NODES".into(), "3".into())],
        )
        .map(|c| c.max_nodes);
        assert_eq!(msg.unwrap(), 3);

        std::fs::write(&path, "private_key_pem = \"x\"\n").unwrap();
        let msg = Config::load(
            Some(&path),
            [("DANMU_CONTROL__NODE_TTL".into(), "soon".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.starts_with("environment variable DANMU_CONTROL__NODE_TTL: ")
                && msg.contains("soon"),
            "{msg}"
        );

        std::fs::write(&path, "private_key_pem = \"x\"\nlisten_addr = \"a\"\n").unwrap();
        let msg = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(msg.contains("listen_addr"), "{msg}");
    }

    #[test]
    fn load_reads_a_full_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.toml");
        std::fs::write(
            &path,
            r#"
                listen = "127.0.0.1:8081"
                nats_url = "nats://n1:4222,nats://n2:4222"
                private_key_pem_path = "/etc/danmu/control.key.pem"
                api_keys = ["k1"]
                token_ttl = "10m"
                token_max_ttl = "2h"
                node_ttl = "20s"
                regions = ["A", "B"]
                cidr_regions = [{ cidr = "10.1.0.0/16", region = "A" }]
                default_region = "A"
                trust_forwarded_for = true
                max_nodes = 3
                [region_fallbacks]
                B = ["A"]
                [[rules]]
                name = "poll-old-clients"
                versions = ["1.0.*"]
                mode = "polling"
            "#,
        )
        .unwrap();
        let config = Config::load(Some(&path), []).unwrap();
        assert_eq!(config.token_ttl, Duration::from_secs(600));
        assert_eq!(config.token_max_ttl, Duration::from_secs(7200));
        assert_eq!(config.node_ttl, Duration::from_secs(20));
        assert_eq!(config.cidr_regions[0].region, "A");
        assert_eq!(config.region_fallbacks["B"], vec!["A".to_owned()]);
        assert_eq!(config.rules[0].mode, Mode::Polling);
        assert_eq!(format!("{:?}", config.api_keys), "[\"<redacted>\"]");
    }

    #[test]
    fn the_dev_configs_load() {
        for name in ["control", "control-b"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../dev")
                .join(format!("{name}.toml"));
            if let Err(error) = Config::load(Some(&path), []) {
                panic!("dev/{name}.toml: {error}");
            }
        }
    }
}
