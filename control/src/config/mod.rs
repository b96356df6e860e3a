//! Control's configuration, loaded like every service's ([`danmu_runtime::config`]): a TOML
//! file, then `DANMU_CONTROL__<KEY>` environment overrides, then [`Config::validate`], whose
//! errors name the offending key.

mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use danmu_runtime::config::ConfigError;
use danmu_runtime::config::{Schema, duration};
use ipnet::IpNet;
use serde::Deserialize;

use crate::routing::Rule;

/// Everything control reads at start. Tests build it directly (`Config { .., ..Config::default() }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API address (used by the binary; `run` takes a bound listener). Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Prometheus scrape address (binary only); `None` means `0.0.0.0:9102`.
    pub metrics_listen: Option<SocketAddr>,
    /// NATS server(s), comma-separated; credentials may be in the first URL
    /// (`nats://user:pass@host`). Default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// A file holding an nkey seed (`SU...`) for the NATS connection. Not with `nats_creds`.
    pub nats_nkey_seed: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed, as `nsc` writes it) for the NATS connection.
    pub nats_creds: Option<PathBuf>,
    /// PEM roots to verify the NATS servers with (the system's when unset); requires TLS.
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for NATS, with `nats_tls_key`; requires TLS.
    pub nats_tls_cert: Option<PathBuf>,
    pub nats_tls_key: Option<PathBuf>,
    /// Where control's NATS replies arrive. Default `_DANMU_INBOX.control`, the prefix the
    /// chart's control user may subscribe under.
    pub nats_inbox_prefix: String,
    /// PEM file of the token signing key (from `danmu-control keygen`).
    pub private_key_pem_path: Option<PathBuf>,
    /// The signing key inline, instead of `private_key_pem_path` (e.g. from a Kubernetes Secret).
    pub private_key_pem: Option<Secret>,
    /// Bearer keys business backends present to `POST /v1/tokens`. Empty: issuing is open
    /// (local demo only; a warning is logged at start).
    pub api_keys: Vec<Secret>,
    /// Token lifetime when the request names none. Default 1h.
    #[serde(deserialize_with = "duration::deserialize")]
    pub token_ttl: Duration,
    /// Longest lifetime a request may ask for; longer requests are capped. Default 24h.
    #[serde(deserialize_with = "duration::deserialize")]
    pub token_max_ttl: Duration,
    /// JetStream KV bucket gateways report into. Default `danmu_nodes`.
    pub nodes_bucket: String,
    /// A gateway whose last report is older than this is left out; also the bucket's max age.
    /// Default 15s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub node_ttl: Duration,
    /// Region preference order used after the client's own region.
    pub regions: Vec<String>,
    /// Per-region preference order, overriding `regions` for clients of that region (the
    /// nearest region differs by where the client is).
    pub region_fallbacks: BTreeMap<String, Vec<String>>,
    /// Client IP ranges to regions; the longest matching prefix wins.
    pub cidr_regions: Vec<CidrRegion>,
    /// Region of clients that give no hint and match no CIDR. Default `local`.
    pub default_region: String,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Most nodes returned by `GET /v1/nodes`. Default 5.
    pub max_nodes: usize,
    /// Routing rules, first match wins; none by default.
    pub rules: Vec<Rule>,
    /// Serve the demo page (`web/demo/index.html` and its bundled `demo.js`, built in) at
    /// `GET /demo/` (`/demo` and `/` redirect there), same origin as the API so the page needs
    /// no CORS. For local demos; off by default.
    pub demo_page: bool,
    /// The region this instance serves for presence: it sums every region's online reports for
    /// this region's gateways, answers online queries, and exits the connections of this
    /// region's gateways that die. Unset: none of that (tokens and node lists only).
    pub region: Option<String>,
    /// How often summed online counts are published to the gateways. Default 1s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub online_publish_interval: Duration,
    /// Rooms exported as the `danmu_control_room_online` metric: the most populated ones only,
    /// so the metric's cardinality stays bounded. Also the most a top-rooms query returns.
    /// Default 20.
    pub top_rooms: usize,
    /// How long enter/exit events stay in the region's presence stream. The sweeper rebuilds
    /// which connections are live from it after a restart. Default 24h.
    #[serde(deserialize_with = "duration::deserialize")]
    pub presence_max_age: Duration,
    /// Longest wait for a complete HTTP request head, counted from accept and from each
    /// response on a keep-alive connection (so also the longest idle keep-alive). Default 10s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub http_header_timeout: Duration,
    /// Longest time from a complete request head to the response, the body read included;
    /// past it the answer is 408 and the connection closes. Default 10s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub http_request_timeout: Duration,
    /// Most HTTP connections open at once; past it new clients wait in the listen backlog.
    /// Default 10000.
    pub http_max_connections: usize,
    /// Browser origins (`https://live.example`, or `*` for any) that may call the API from a
    /// page (CORS). Empty (the default): no CORS headers, so only same-origin pages can.
    pub allowed_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: None,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_nkey_seed: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_inbox_prefix: danmu_runtime::nats::inbox_prefix("control"),
            private_key_pem_path: None,
            private_key_pem: None,
            api_keys: Vec::new(),
            token_ttl: Duration::from_secs(3600),
            token_max_ttl: Duration::from_secs(24 * 3600),
            nodes_bucket: "danmu_nodes".into(),
            node_ttl: Duration::from_secs(15),
            regions: Vec::new(),
            region_fallbacks: BTreeMap::new(),
            cidr_regions: Vec::new(),
            default_region: "local".into(),
            trust_forwarded_for: false,
            max_nodes: 5,
            rules: Vec::new(),
            demo_page: false,
            region: None,
            online_publish_interval: Duration::from_secs(1),
            top_rooms: 20,
            presence_max_age: Duration::from_secs(24 * 3600),
            http_header_timeout: Duration::from_secs(10),
            http_request_timeout: Duration::from_secs(10),
            http_max_connections: 10_000,
            allowed_origins: Vec::new(),
        }
    }
}

/// One row of the CIDR table: `{ cidr = "10.1.0.0/16", region = "A" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CidrRegion {
    pub cidr: IpNet,
    pub region: String,
}

/// A string kept out of `Debug` output and logs (API keys, private keys).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// How `DANMU_CONTROL__*` variables are typed: these keys are always strings (an API key of
/// digits stays a string), these hold comma-separated lists.
pub const SCHEMA: Schema = Schema {
    service: "control",
    strings: &[
        "listen",
        "metrics_listen",
        "nats_url",
        "nats_nkey_seed",
        "nats_creds",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "nats_inbox_prefix",
        "private_key_pem_path",
        "private_key_pem",
        "token_ttl",
        "token_max_ttl",
        "nodes_bucket",
        "node_ttl",
        "default_region",
        "region",
        "online_publish_interval",
        "presence_max_age",
        "http_header_timeout",
        "http_request_timeout",
    ],
    lists: &[
        "api_keys",
        "regions",
        "region_fallbacks.*",
        "allowed_origins",
    ],
};

impl Config {
    /// Reads `path` (if any), applies the `DANMU_CONTROL__*` variables of `vars` (pass
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

    /// The bounds on HTTP clients, from the `http_*` keys.
    pub fn http_limits(&self) -> crate::serve::HttpLimits {
        crate::serve::HttpLimits {
            header_read_timeout: self.http_header_timeout,
            request_timeout: self.http_request_timeout,
            max_connections: self.http_max_connections,
        }
    }

    /// Checks what types cannot: ranges, required pairs, names. The error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::validate(self)
    }
}
