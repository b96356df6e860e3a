//! Distributor configuration: a TOML file, environment overrides, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::window::WindowConfig;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// NATS server(s) of this distributor's region, comma separated.
    pub nats_url: String,
    /// Region this distributor serves: it consumes `PUSH_LO_<region>` and `PUSH_HI_<region>`.
    pub region: String,
    /// Name used in logs and the consumer's client name.
    pub instance: String,
    /// Create or update the push streams at start (off when operators manage them).
    pub ensure_streams: bool,
    /// Place the push streams in the NATS cluster named after the region.
    pub place_in_region_cluster: bool,
    pub streams: StreamLimits,
    /// Low priority: danmu, gifts. Aggregated; shed first under congestion.
    pub low: WorkerConfig,
    /// High priority: invitations, notices. No aggregation window by default; never shed.
    pub high: WorkerConfig,
    pub offline: OfflineConfig,
    /// Brotli quality for batch compression (0-11).
    pub brotli_quality: u32,
    /// Prometheus exporter address; none disables it.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats_url: "nats://127.0.0.1:4222".into(),
            region: "A".into(),
            instance: "distributor".into(),
            ensure_streams: true,
            place_in_region_cluster: true,
            streams: StreamLimits::default(),
            low: WorkerConfig::default(),
            high: WorkerConfig {
                window_ms: 0,
                ..WorkerConfig::default()
            },
            offline: OfflineConfig::default(),
            brotli_quality: danmu_proto::batch::DEFAULT_BROTLI_QUALITY,
            metrics_listen: None,
        }
    }
}

/// Limits of each push stream. A push stream is a buffer, not an archive: what the distributor
/// has not consumed within these bounds is dropped by JetStream and shows as consumer lag.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamLimits {
    pub max_age_secs: u64,
    pub max_bytes: i64,
    pub max_messages: i64,
    /// Largest payload a business may publish.
    pub max_message_bytes: i32,
    /// `Nats-Msg-Id` de-duplication window.
    pub duplicate_window_secs: u64,
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_age_secs: 3600,
            max_bytes: 1 << 30,
            max_messages: 10_000_000,
            max_message_bytes: 64 * 1024,
            duplicate_window_secs: 120,
            replicas: 1,
        }
    }
}

/// Offline messages: a user-scope high-priority push that reaches no gateway waits in the
/// `DANMU_OFFLINE` stream, bounded per user and in age, for the user's next connect.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    pub enabled: bool,
    pub max_age_secs: u64,
    /// Older pushes of a user are dropped beyond this many.
    pub max_per_user: i64,
    /// How long to wait for a gateway to confirm a live delivery before storing the push.
    pub live_timeout_ms: u64,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            enabled: true,
            max_age_secs: 24 * 3600,
            max_per_user: 100,
            live_timeout_ms: 1_000,
        }
    }
}

/// One priority's consumer and aggregation settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Aggregation window; 0 sends every message on its own.
    pub window_ms: u64,
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    /// Messages requested per pull.
    pub pull_batch: usize,
    /// Unacknowledged messages the consumer hands out before waiting for acks.
    pub max_ack_pending: i64,
    /// Redelivery after this long without an ack. Far above the window, so redelivery only
    /// happens after a distributor died.
    pub ack_wait_ms: u64,
    /// A standby instance takes over after the active one has not pulled for this long.
    ///
    /// Must exceed `ack_wait_ms` plus the pull expiry (a third of this): then everything the
    /// dead instance left unacked is already due for redelivery when the standby gets the pin,
    /// and JetStream hands redeliveries out before new messages, so the room's order holds.
    pub failover_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            window_ms: 20,
            max_batch_messages: 200,
            max_batch_bytes: 32 * 1024,
            pull_batch: 500,
            max_ack_pending: 20_000,
            ack_wait_ms: 4_000,
            failover_ms: 8_000,
        }
    }
}

impl WorkerConfig {
    fn validate(&self, section: &'static str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                key: format!("{section}.{key}"),
                reason: reason.into(),
            })
        };
        if self.max_batch_messages == 0 {
            return invalid("max_batch_messages", "must be at least 1");
        }
        if self.pull_batch == 0 {
            return invalid("pull_batch", "must be at least 1");
        }
        if self.ack_wait_ms < 500 || self.ack_wait_ms <= self.window_ms * 10 {
            return invalid(
                "ack_wait_ms",
                "must be at least 500 and far above the window, or messages are redelivered while still batched",
            );
        }
        if self.failover_ms * 2 / 3 <= self.ack_wait_ms + 100 {
            return invalid(
                "failover_ms",
                "must exceed 1.5 x ack_wait_ms (+150 ms), or a standby could take over before the dead instance's messages are due again, breaking room order",
            );
        }
        Ok(())
    }

    pub fn window(&self) -> WindowConfig {
        WindowConfig {
            window: Duration::from_millis(self.window_ms),
            max_messages: self.max_batch_messages,
            max_bytes: self.max_batch_bytes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    #[error("invalid `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

/// Environment variables that override the file, for container deployments.
const ENV_OVERRIDES: &[&str] = &[
    "DANMU_NATS_URL",
    "DANMU_REGION",
    "DANMU_INSTANCE",
    "DANMU_METRICS_LISTEN",
];

impl Config {
    /// Reads the file (if any), applies `DANMU_*` environment overrides, validates.
    pub fn load(path: Option<&str>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.into(),
                    source,
                })?
            }
            None => Config::default(),
        };
        for var in ENV_OVERRIDES {
            if let Ok(value) = std::env::var(var) {
                config.apply_override(var, value)?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_override(&mut self, var: &str, value: String) -> Result<(), ConfigError> {
        match var {
            "DANMU_NATS_URL" => self.nats_url = value,
            "DANMU_REGION" => self.region = value,
            "DANMU_INSTANCE" => self.instance = value,
            "DANMU_METRICS_LISTEN" => {
                self.metrics_listen = Some(value.parse().map_err(|e| ConfigError::Env {
                    var: var.into(),
                    reason: format!("{e}"),
                })?)
            }
            _ => unreachable!("only listed variables are read"),
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if !danmu_proto::subjects::is_valid_token(&self.region) {
            return invalid("region", "must be one NATS subject token, e.g. `A`");
        }
        if self.nats_url.trim().is_empty() {
            return invalid("nats_url", "must not be empty");
        }
        if self.brotli_quality > 11 {
            return invalid("brotli_quality", "must be 0..=11");
        }
        for (name, worker) in [("low", &self.low), ("high", &self.high)] {
            worker.validate(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_file_sets_nested_keys_and_unknown_keys_are_rejected() {
        let config: Config =
            toml::from_str("region = \"B\"\n[low]\nwindow_ms = 50\nmax_batch_messages = 10\n")
                .unwrap();
        assert_eq!(config.region, "B");
        assert_eq!(config.low.window_ms, 50);
        assert_eq!(config.low.pull_batch, WorkerConfig::default().pull_batch);
        let err = toml::from_str::<Config>("regoin = \"B\"").unwrap_err();
        assert!(err.to_string().contains("regoin"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut config = Config {
            region: "a.b".into(),
            ..Config::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("`region`")
        );
        config.region = "A".into();
        config.low.ack_wait_ms = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("low.ack_wait_ms"), "{err}");
        config.low.ack_wait_ms = 6_000;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("low.failover_ms"), "{err}");
    }
}
