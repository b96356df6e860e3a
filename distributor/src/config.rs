//! Distributor configuration, loaded like every service's ([`danmu_runtime::config`]): a TOML
//! file, then `DANMU_DISTRIBUTOR__<KEY>` environment overrides, then [`Config::validate`], whose
//! errors name the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use danmu_runtime::config::ConfigError;
use danmu_runtime::config::{Schema, duration};
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
    /// `/healthz` and `/readyz` for probes (`danmu_runtime::health`): ready once NATS is
    /// connected and the consumers exist. None disables them.
    pub health_listen: Option<SocketAddr>,
    /// A file holding an nkey seed (`SU...`) for the NATS connections. Not with `nats_creds`.
    pub nats_nkey_seed: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed, as `nsc` writes it) for the NATS connections.
    pub nats_creds: Option<PathBuf>,
    /// PEM roots to verify the NATS servers with (the system's when unset); requires TLS.
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS, with `nats_tls_key`; requires TLS.
    pub nats_tls_cert: Option<PathBuf>,
    pub nats_tls_key: Option<PathBuf>,
    /// Where this distributor's NATS replies arrive. Default `_DANMU_INBOX.distributor`, the
    /// prefix the chart's distributor user may subscribe under.
    pub nats_inbox_prefix: String,
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
                window: Duration::ZERO,
                max_window: Duration::ZERO,
                ..WorkerConfig::default()
            },
            offline: OfflineConfig::default(),
            brotli_quality: danmu_proto::batch::DEFAULT_BROTLI_QUALITY,
            metrics_listen: None,
            health_listen: None,
            nats_nkey_seed: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_inbox_prefix: danmu_runtime::nats::inbox_prefix("distributor"),
        }
    }
}

/// Limits of each push stream. A push stream is a buffer, not an archive: what the distributor
/// has not consumed within these bounds is dropped by JetStream and shows as consumer lag.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamLimits {
    /// What the distributor has not consumed after this long is dropped. Default 1h.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_age: Duration,
    pub max_bytes: i64,
    pub max_messages: i64,
    /// Largest payload a business may publish.
    pub max_message_bytes: i32,
    /// `Nats-Msg-Id` de-duplication window. Default 2m.
    #[serde(deserialize_with = "duration::deserialize")]
    pub duplicate_window: Duration,
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 30,
            max_messages: 10_000_000,
            max_message_bytes: 64 * 1024,
            duplicate_window: Duration::from_secs(120),
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
    /// A stored push older than this is dropped. Default 1d.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_age: Duration,
    /// Older pushes of a user are dropped beyond this many.
    pub max_per_user: i64,
    /// How long to wait for a gateway to confirm a live delivery before storing the push.
    /// Default 1s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub live_timeout: Duration,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            enabled: true,
            max_age: Duration::from_secs(24 * 3600),
            max_per_user: 100,
            live_timeout: Duration::from_secs(1),
        }
    }
}

/// One priority's consumer and aggregation settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Aggregation window of a hot target up to `knee_rate`; `"0s"` sends every message on its
    /// own. Default 20ms (low), 0s (high).
    #[serde(deserialize_with = "duration::deserialize")]
    pub window: Duration,
    /// The widest window, reached as a target's rate grows past `knee_rate`
    /// (`distributor/src/window.rs`). Default 100ms (low), 0s (high: never grows).
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_window: Duration,
    /// Messages per second above which a target's window grows with its rate. Default 10: a room
    /// at 50 msg/s (the efficiency preset) already waits the full `max_window`, so each member
    /// gets one frame per five messages instead of one per one or two.
    pub knee_rate: f64,
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
    /// The big-room degrade (seed 002), low priority only: messages per second one target (a
    /// room, mostly) may pass; past it, its messages are sampled down to this rate, evenly, and
    /// the rest acknowledged without delivery and counted
    /// (`danmu_distributor_sampled_out_total`; `distributor/src/window.rs`). Unset by default:
    /// everything on the lane may be sampled, gifts included, so a platform that turns it on
    /// publishes what must not be dropped on high priority. A value near `max_batch_messages`
    /// per `max_window` (2,000 with the defaults) keeps a hot room at 10 frames a second per
    /// viewer. High priority is never sampled and refuses a value.
    pub max_rate: Option<f64>,
    /// Messages requested per pull.
    pub pull_batch: usize,
    /// Unacknowledged messages the consumer hands out before waiting for acks.
    pub max_ack_pending: i64,
    /// Redelivery after this long without an ack. Far above the window, so redelivery only
    /// happens after a distributor died. Default 4s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub ack_wait: Duration,
    /// A standby instance takes over after the active one has not pulled for this long.
    ///
    /// Must exceed `ack_wait` plus the pull expiry (a third of this): then everything the
    /// dead instance left unacked is already due for redelivery when the standby gets the pin,
    /// and JetStream hands redeliveries out before new messages, so the room's order holds.
    /// Default 8s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub failover: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            window: Duration::from_millis(20),
            max_window: Duration::from_millis(100),
            knee_rate: 10.0,
            max_batch_messages: 200,
            max_batch_bytes: 32 * 1024,
            max_rate: None,
            pull_batch: 500,
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(4),
            failover: Duration::from_secs(8),
        }
    }
}

impl WorkerConfig {
    fn validate(&self, section: &'static str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| {
            Err(ConfigError::invalid(format!("{section}.{key}"), reason))
        };
        if self.max_batch_messages == 0 {
            return invalid("max_batch_messages", "must be at least 1");
        }
        if self.pull_batch == 0 {
            return invalid("pull_batch", "must be at least 1");
        }
        if self.knee_rate.is_nan() || self.knee_rate <= 0.0 {
            return invalid("knee_rate", "must be above 0 messages per second");
        }
        match self.max_rate {
            Some(_) if section == "high" => {
                return invalid("max_rate", "high priority is never sampled: remove the key");
            }
            Some(rate) if rate.is_nan() || rate <= 0.0 => {
                return invalid("max_rate", "must be above 0 messages per second");
            }
            _ => {}
        }
        if self.ack_wait < Duration::from_millis(500)
            || self.ack_wait <= self.window * 10
            || self.ack_wait <= self.max_window * 5
        {
            return invalid(
                "ack_wait",
                "must be at least 500ms and far above the window, or messages are redelivered while still batched",
            );
        }
        if self.failover * 2 / 3 <= self.ack_wait + Duration::from_millis(100) {
            return invalid(
                "failover",
                "must exceed 1.5 x ack_wait (+150ms), or a standby could take over before the dead instance's messages are due again, breaking room order",
            );
        }
        Ok(())
    }

    pub fn window(&self) -> WindowConfig {
        WindowConfig {
            window: self.window,
            max_window: self.max_window,
            knee_rate: self.knee_rate,
            max_messages: self.max_batch_messages,
            max_bytes: self.max_batch_bytes,
            max_rate: self.max_rate.unwrap_or(f64::INFINITY),
        }
    }
}

/// How `DANMU_DISTRIBUTOR__*` variables are typed: these keys are always strings.
pub const SCHEMA: Schema = Schema {
    service: "distributor",
    strings: &[
        "nats_url",
        "region",
        "instance",
        "metrics_listen",
        "health_listen",
        "nats_nkey_seed",
        "nats_creds",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "nats_inbox_prefix",
    ],
    lists: &[],
};

impl Config {
    /// Reads `path` (if any), applies the `DANMU_DISTRIBUTOR__*` variables of `vars` (pass
    /// `std::env::vars()`), and validates.
    pub fn load(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config: Config = SCHEMA.load(path, vars)?;
        config.validate()?;
        Ok(config)
    }

    /// The NATS connection settings (`nats_*` keys).
    pub fn nats(&self) -> danmu_runtime::nats::NatsSettings {
        danmu_runtime::nats::NatsSettings {
            url: self.nats_url.clone(),
            nkey_seed: self.nats_nkey_seed.clone(),
            creds: self.nats_creds.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
            inbox_prefix: self.nats_inbox_prefix.clone(),
        }
    }

    /// Checks what types cannot: names, ranges, and the worker timings' order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| Err(ConfigError::invalid(key, reason));
        if !danmu_proto::subjects::is_valid_token(&self.region) {
            return invalid("region", "must be one NATS subject token, e.g. `A`");
        }
        self.nats()
            .check()
            .map_err(|error| ConfigError::invalid(error.key(), error.to_string()))?;
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
            toml::from_str("region = \"B\"\n[low]\nwindow = \"50ms\"\nmax_batch_messages = 10\n")
                .unwrap();
        assert_eq!(config.region, "B");
        assert_eq!(config.low.window, Duration::from_millis(50));
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
        config.low.ack_wait = Duration::ZERO;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`low.ack_wait`"), "{err}");
        config.low.ack_wait = Duration::from_secs(6);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`low.failover`"), "{err}");
        config.low.ack_wait = Duration::from_secs(4);
        config.high.max_rate = Some(100.0);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("`high.max_rate`") && err.contains("never sampled"),
            "{err}"
        );
        config.high.max_rate = None;
        config.low.max_rate = Some(0.0);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`low.max_rate`"), "{err}");
    }

    #[test]
    fn the_dev_configs_load() {
        for name in ["distributor-a", "distributor-b"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../dev")
                .join(format!("{name}.toml"));
            if let Err(error) = Config::load(Some(&path), []) {
                panic!("dev/{name}.toml: {error}");
            }
        }
    }
}
