//! Gateway configuration, loaded like every service's ([`danmu_runtime::config`]): a TOML
//! file, then `DANMU_GATEWAY__<KEY>` environment overrides, then [`Config::validate`], whose
//! errors name the offending key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use danmu_runtime::config::{Schema, duration};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unique id of this gateway in node lists (defaults to `<region>-<hostname>-<pid>`).
    pub node_id: String,
    pub region: String,
    /// NATS servers, comma-separated: `[nats|tls]://[user:pass@|token@]host[:port]`.
    pub nats_url: String,
    /// A `.creds` file (user JWT and nkey seed, as `nsc` writes it) for every NATS connection
    /// of the gateway; the seed signs the server's nonce. Not with `nats_nkey_seed`.
    pub nats_creds: Option<String>,
    /// A file holding an nkey seed (`SU...`) for every NATS connection of the gateway.
    pub nats_nkey_seed: Option<String>,
    /// PEM file of the CAs that sign the NATS servers' certificates (the system's roots when
    /// unset). Setting it requires TLS on every NATS server.
    pub nats_tls_ca: Option<String>,
    /// Client certificate (PEM) and its key for NATS servers that verify clients; both or
    /// neither. Setting them requires TLS.
    pub nats_tls_cert: Option<String>,
    pub nats_tls_key: Option<String>,
    /// Where the gateway's NATS replies arrive (JetStream and KV answers, offline fetches).
    /// Default `_DANMU_INBOX.gateway`, the prefix the chart's gateway user may subscribe under.
    pub nats_inbox_prefix: String,
    /// Control's public key (PEM) for verifying tokens locally; or a path to it.
    pub token_public_key_pem: Option<String>,
    pub token_public_key_path: Option<String>,
    pub ws_listen: Option<SocketAddr>,
    pub tcp_listen: Option<SocketAddr>,
    /// WebSocket on TLS (`wss://host:port/sub`); needs `[[tls.certificates]]`.
    pub wss_listen: Option<SocketAddr>,
    /// GOIM packets on TLS over TCP; needs `[[tls.certificates]]`.
    pub tls_listen: Option<SocketAddr>,
    /// QUIC (UDP): ALPN `danmu/1` for GOIM packets on one bidirectional stream; needs
    /// `[[tls.certificates]]`.
    pub quic_listen: Option<SocketAddr>,
    /// Certificates for the TLS and QUIC listeners (`[tls]`).
    pub tls: crate::transport::tls::TlsConfig,
    /// QUIC settings (`[quic]`).
    pub quic: crate::transport::quic::QuicConfig,
    /// Host clients use to reach this gateway, as published in node lists.
    pub advertise_host: String,
    /// A connection that has not authenticated within this is closed. Default 10s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub auth_timeout: Duration,
    /// A connection silent for this long is closed. Default 90s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub heartbeat_timeout: Duration,
    /// Largest client frame accepted (clients send only small control frames).
    pub max_packet_bytes: usize,
    pub max_ws_message_bytes: usize,
    pub max_handshake_bytes: usize,
    /// Per-connection outbound bound; a reader that falls this far behind is cut off.
    pub outbound_queue_bytes: usize,
    /// A client whose socket accepts nothing for this long while data waits is cut off
    /// (`slow_consumer`), even while shedding low priority keeps its queue within bounds.
    /// Default 10s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub write_stall_timeout: Duration,
    /// One connection in this many has its queue timed for
    /// `danmu_gateway_queue_wait_seconds` (the others never read the clock on a push; 1 times
    /// every connection). Default 64.
    pub queue_wait_sample: u64,
    /// Kernel send buffer per client socket (SO_SNDBUF, bytes; Linux doubles it for its own
    /// bookkeeping); 0 leaves the kernel's autotuning, which grows to megabytes per slow reader.
    /// Bounding it bounds kernel memory per connection and makes a slow reader show in the
    /// outbound queue (where low priority is shed first) instead of in megabytes of kernel buffer.
    pub socket_send_buffer_bytes: Option<usize>,
    /// High reach: wait this long for an ACK before sending a high-priority batch again.
    /// Default 1s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub reach_retry: Duration,
    /// High reach: sends after the first before a batch expires.
    pub reach_max_retries: u32,
    /// High reach: unacknowledged batches kept per connection.
    pub reach_max_pending: usize,
    /// Largest decompressed batch accepted from NATS.
    pub max_batch_bytes: usize,
    /// How long a closing connection waits for its last frames to leave. Default 1s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub close_linger: Duration,
    /// On SIGTERM, connections leave over this period (each at its own moment), so their
    /// reconnects do not all hit the other gateways at once. Default 10s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub drain_period: Duration,
    /// Connections this gateway is sized for: load = connections / capacity in node lists.
    pub capacity: u64,
    pub nodes_bucket: String,
    /// Max age of the nodes bucket when this gateway creates it: a gateway that stops
    /// reporting drops out of node lists after this. Default 15s (control's `node_ttl` too).
    #[serde(deserialize_with = "duration::deserialize")]
    pub node_ttl: Duration,
    /// How often the health report goes into the nodes bucket. Default 3s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub report_interval: Duration,
    pub brotli_quality: u32,
    /// Publish enter/exit events on `danmu.presence.<region>.<enter|exit>.<room>`.
    pub presence_events: bool,
    /// How often this gateway's per-room counts go to control for summing; HEARTBEAT_REPLY
    /// shows sums at most about two of these old (docs/architecture.md, "Presence"). Default 1s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub online_report_interval: Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// `/healthz` and `/readyz` for probes (`danmu_runtime::health`): ready once the listeners
    /// are up and NATS is connected, not ready from the start of a drain. None disables them.
    pub health_listen: Option<SocketAddr>,
    /// Upstream danmu: limits, deny lists, word filter, demo echo (`[upstream]`).
    pub upstream: crate::upstream::UpstreamConfig,
    /// Replies queued for one connection and not yet written (pongs, heartbeat, room-change
    /// and upstream replies), in bytes; past it the connection closes (`reply_backlog`).
    pub reply_queue_bytes: usize,
    /// Most client connections held at once; past it new ones get close 1013 (WebSocket) or a
    /// plain close (TCP), counted in `danmu_gateway_connections_refused_total`. Unset: no cap.
    pub max_connections: Option<usize>,
    /// Load balancers (addresses or CIDR networks) whose `X-Forwarded-For` names the client:
    /// deny lists, upstream `Danmu-Ip` and logs then see the client, not the balancer.
    pub trusted_proxies: Vec<String>,
    /// TCP clients arrive through a load balancer that starts each connection with a PROXY
    /// protocol header (v1 or v2); its source address is believed from `trusted_proxies` only.
    pub proxy_protocol: bool,
    /// Browser origins (`https://live.example`, or `*` for any) whose pages may open a WebSocket
    /// here, checked against the upgrade's `Origin` (answered 403 otherwise). A request without
    /// `Origin` (not from a browser) is not checked. Empty (the default): no check.
    pub allowed_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: String::new(),
            region: "A".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_nkey_seed: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_inbox_prefix: danmu_runtime::nats::inbox_prefix("gateway"),
            token_public_key_pem: None,
            token_public_key_path: None,
            ws_listen: Some(([0, 0, 0, 0], 7000).into()),
            tcp_listen: Some(([0, 0, 0, 0], 7100).into()),
            wss_listen: None,
            tls_listen: None,
            quic_listen: None,
            tls: Default::default(),
            quic: Default::default(),
            advertise_host: "127.0.0.1".into(),
            auth_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(90),
            max_packet_bytes: danmu_proto::frame::DEFAULT_MAX_PACKET_LEN,
            max_ws_message_bytes: danmu_proto::frame::DEFAULT_MAX_PACKET_LEN,
            max_handshake_bytes: 8 * 1024,
            outbound_queue_bytes: 1024 * 1024,
            write_stall_timeout: Duration::from_secs(10),
            queue_wait_sample: 64,
            socket_send_buffer_bytes: Some(64 * 1024),
            reach_retry: Duration::from_secs(1),
            reach_max_retries: 3,
            reach_max_pending: 256,
            max_batch_bytes: 4 * 1024 * 1024,
            close_linger: Duration::from_secs(1),
            drain_period: Duration::from_secs(10),
            capacity: 100_000,
            nodes_bucket: danmu_proto::subjects::NODES_BUCKET.into(),
            node_ttl: Duration::from_secs(15),
            report_interval: Duration::from_secs(3),
            brotli_quality: danmu_proto::batch::DEFAULT_BROTLI_QUALITY,
            presence_events: true,
            online_report_interval: Duration::from_secs(1),
            metrics_listen: None,
            health_listen: None,
            upstream: Default::default(),
            reply_queue_bytes: 64 * 1024,
            max_connections: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            allowed_origins: Vec::new(),
        }
    }
}

pub use crate::error::ConfigError;

use crate::connection::Limits;
use crate::connection::reach::ReachConfig;
use crate::connection::session::SessionConfig;

/// How `DANMU_GATEWAY__*` variables are typed: these keys are always strings.
pub const SCHEMA: Schema = Schema {
    service: "gateway",
    strings: &[
        "node_id",
        "region",
        "nats_url",
        "token_public_key_pem",
        "token_public_key_path",
        "ws_listen",
        "tcp_listen",
        "advertise_host",
        "nodes_bucket",
        "metrics_listen",
        "health_listen",
        "upstream.words.path",
        "nats_creds",
        "nats_nkey_seed",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "nats_inbox_prefix",
    ],
    lists: &[
        "upstream.deny_ips",
        "upstream.words.list",
        "trusted_proxies",
        "allowed_origins",
    ],
};

impl Config {
    /// Reads `path` (if any), applies the `DANMU_GATEWAY__*` variables of `vars` (pass
    /// `std::env::vars()`), and validates.
    pub fn load(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config: Config = SCHEMA.load(path, vars)?;
        config.validate()?;
        Ok(config)
    }

    /// The NATS connection settings (`nats_*` keys), shared with every service.
    pub fn nats(&self) -> danmu_runtime::nats::NatsSettings {
        let path = |value: &Option<String>| value.as_ref().map(std::path::PathBuf::from);
        danmu_runtime::nats::NatsSettings {
            url: self.nats_url.clone(),
            nkey_seed: path(&self.nats_nkey_seed),
            creds: path(&self.nats_creds),
            tls_ca: path(&self.nats_tls_ca),
            tls_cert: path(&self.nats_tls_cert),
            tls_key: path(&self.nats_tls_key),
            inbox_prefix: self.nats_inbox_prefix.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        if !danmu_proto::subjects::is_valid_token(&self.region) {
            return invalid("region", "must be one NATS subject token, e.g. `A`");
        }
        if self.token_public_key_pem.is_none() && self.token_public_key_path.is_none() {
            return invalid(
                "token_public_key_path",
                "set it (or token_public_key_pem) to control's public key",
            );
        }
        let encrypted = [self.wss_listen, self.tls_listen, self.quic_listen];
        if self.ws_listen.is_none()
            && self.tcp_listen.is_none()
            && encrypted.iter().all(Option::is_none)
        {
            return invalid(
                "ws_listen",
                "enable at least one of ws_listen, tcp_listen, wss_listen, tls_listen and quic_listen",
            );
        }
        if encrypted.iter().any(Option::is_some) && self.tls.certificates.is_empty() {
            return invalid(
                "tls.certificates",
                "wss_listen, tls_listen and quic_listen need at least one [[tls.certificates]] (cert_file, key_file)",
            );
        }
        if self.tls.reload_interval.is_zero() {
            return invalid("tls.reload_interval", "must be more than zero");
        }
        if self.max_packet_bytes < danmu_proto::frame::HEADER_LEN {
            return invalid("max_packet_bytes", "must hold at least a header (16)");
        }
        if self.outbound_queue_bytes < 64 * 1024 {
            return invalid(
                "outbound_queue_bytes",
                "must be at least 65536 to hold a batch",
            );
        }
        if self.heartbeat_timeout < Duration::from_secs(1) {
            return invalid("heartbeat_timeout", "must be at least 1s");
        }
        if self.auth_timeout < Duration::from_millis(100) {
            return invalid("auth_timeout", "must be at least 100ms");
        }
        if self.report_interval.is_zero() || self.report_interval >= self.node_ttl {
            return invalid(
                "report_interval",
                "must be shorter than node_ttl, or the gateway drops out of node lists",
            );
        }
        if self.reach_retry < Duration::from_millis(10) {
            return invalid("reach_retry", "must be at least 10ms");
        }
        if self.reach_max_pending == 0 {
            return invalid("reach_max_pending", "must be at least 1");
        }
        if self.queue_wait_sample == 0 {
            return invalid(
                "queue_wait_sample",
                "must be at least 1 (1: every connection)",
            );
        }
        if self.write_stall_timeout < Duration::from_millis(100) {
            return invalid("write_stall_timeout", "must be at least 100ms");
        }
        if self.online_report_interval < Duration::from_millis(100) {
            return invalid("online_report_interval", "must be at least 100ms");
        }
        if self.reply_queue_bytes < 1024 {
            return invalid("reply_queue_bytes", "must be at least 1024");
        }
        if self.max_connections == Some(0) {
            return invalid(
                "max_connections",
                "must be at least 1 (unset it for no cap)",
            );
        }
        if let Err(reason) = crate::upstream::moderation::parse_nets(&self.trusted_proxies) {
            return invalid("trusted_proxies", &reason);
        }
        if let Err(error) = danmu_runtime::origins::AllowedOrigins::new(&self.allowed_origins) {
            return invalid(
                "allowed_origins",
                &format!("entry {:?} {}", error.entry, error.reason),
            );
        }
        if self.capacity == 0 {
            return invalid("capacity", "must be at least 1");
        }
        if let Err(error) = self.nats().check() {
            return invalid(error.key(), &error.to_string());
        }
        self.upstream.validate()
    }

    /// The public key, read from the file if given by path.
    pub fn public_key_pem(&self) -> Result<String, ConfigError> {
        match (&self.token_public_key_pem, &self.token_public_key_path) {
            (Some(pem), _) => Ok(pem.clone()),
            (None, Some(path)) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })
            }
            (None, None) => Err(ConfigError::Invalid {
                key: "token_public_key_path",
                reason: "missing".into(),
            }),
        }
    }

    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "gateway".into());
        format!("{}-{}-{}", self.region, host.trim(), std::process::id())
    }

    pub fn auth_timeout(&self) -> Duration {
        self.auth_timeout
    }

    pub fn online_report_interval(&self) -> Duration {
        self.online_report_interval
    }

    /// Control's totals older than this are ignored: a few missed aggregation rounds.
    pub fn online_totals_max_age(&self) -> Duration {
        self.online_report_interval * 5
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }
}

impl Config {
    /// The per-connection limits and periods this configuration sets.
    pub fn limits(&self) -> Limits {
        let config = self;
        Limits {
            session: SessionConfig {
                auth_timeout: config.auth_timeout(),
                heartbeat_timeout: config.heartbeat_timeout(),
            },
            max_packet_len: config.max_packet_bytes,
            max_ws_message_len: config.max_ws_message_bytes,
            max_handshake_len: config.max_handshake_bytes,
            outbound_queue_bytes: config.outbound_queue_bytes,
            reply_queue_bytes: config.reply_queue_bytes,
            socket_send_buffer: config.socket_send_buffer_bytes.filter(|&bytes| bytes > 0),
            reach: ReachConfig {
                retry_after: config.reach_retry,
                max_retries: config.reach_max_retries,
                max_pending: config.reach_max_pending,
            },
            close_linger: config.close_linger,
            drain_period: config.drain_period,
            write_stall: config.write_stall_timeout,
            queue_wait_sample: config.queue_wait_sample.max(1),
            low_priority_budget: 64 * 1024,
            proxy_protocol: config.proxy_protocol,
            // `Config::validate` refuses a bad list at start.
            allowed_origins: danmu_runtime::origins::AllowedOrigins::new(&config.allowed_origins)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            token_public_key_pem: Some("pem".into()),
            ..Config::default()
        }
    }

    #[test]
    fn defaults_with_a_key_are_valid() {
        valid().validate().unwrap();
    }

    #[test]
    fn validation_names_the_bad_key() {
        let err = Config::default().validate().unwrap_err().to_string();
        assert!(err.contains("token_public_key_path"), "{err}");
        let err = Config {
            report_interval: Duration::from_secs(20),
            ..valid()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("`report_interval`"), "{err}");
        let err = Config {
            nats_creds: Some("gw.creds".into()),
            nats_nkey_seed: Some("gw.nk".into()),
            ..valid()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("nats_creds"), "{err}");
        let err = Config {
            nats_tls_cert: Some("cert.pem".into()),
            ..valid()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("nats_tls_cert"), "{err}");
        let err = Config {
            queue_wait_sample: 0,
            ..valid()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("`queue_wait_sample`"), "{err}");
    }

    #[test]
    fn load_reads_durations_and_overrides_naming_bad_keys() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            [("DANMU_GATEWAY__TOKEN_PUBLIC_KEY_PEM", "pem")]
                .iter()
                .chain(pairs)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let config = Config::load(
            None,
            vars(&[
                ("DANMU_GATEWAY__NODE_TTL", "20s"),
                ("DANMU_GATEWAY__REPORT_INTERVAL", "500ms"),
                ("DANMU_GATEWAY__NODE_ID", "7"),
                ("DANMU_GATEWAY__UPSTREAM__DENY_IPS", "10.0.0.0/8, 10.1.0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(config.node_ttl, Duration::from_secs(20));
        assert_eq!(config.report_interval, Duration::from_millis(500));
        assert_eq!(config.node_id, "7");
        assert_eq!(config.upstream.deny_ips, ["10.0.0.0/8", "10.1.0.1"]);

        let err = Config::load(None, vars(&[("DANMU_GATEWAY__REPORT_INTERVAL", "1m")]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("config key `report_interval`"), "{err}");

        let err = toml::from_str::<Config>("node_ttl_secs = 15").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `node_ttl_secs`"),
            "{err}"
        );
    }

    #[test]
    fn the_dev_configs_load() {
        for name in ["gateway-a", "gateway-b"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../dev")
                .join(format!("{name}.toml"));
            if let Err(error) = Config::load(Some(&path), []) {
                panic!("dev/{name}.toml: {error}");
            }
        }
    }
}
