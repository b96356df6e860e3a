//! Node selection: which gateways a client is told to connect to. Pure: the node table, the
//! client and `now` go in, the list comes out; no NATS, no clock, no HTTP.

mod region;
mod rules;
mod table;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use danmu_proto::internal::NodeReport;
use serde::{Deserialize, Serialize};

pub use region::{RegionMap, RegionSource, check_region_name, client_ip};
pub use rules::{Mode, Policy, Rule, Rules, rollout_bucket};
pub use table::{NodeTable, ReportError};

use crate::config::Config;

/// What is known about the client asking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// Already resolved (hint, CIDR or default).
    pub region: String,
    pub uid: Option<u64>,
    pub device: Option<String>,
    pub version: Option<String>,
}

/// One gateway in a node list; addresses are `host:port`, empty when the transport is off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub node_id: String,
    pub region: String,
    pub ws: String,
    pub wss: String,
    pub tcp: String,
    pub tls: String,
    pub quic: String,
    /// WebTransport over HTTP/3 (`host:port`, the QUIC port).
    #[serde(default)]
    pub webtransport: String,
    /// SHA-256 of the certificate's DER, lowercase hex, for the browser's
    /// `serverCertificateHashes`; empty when the gateway has no QUIC port.
    #[serde(default)]
    pub cert_sha256: String,
    pub load: f64,
}

impl From<&NodeReport> for NodeEntry {
    fn from(report: &NodeReport) -> Self {
        NodeEntry {
            node_id: report.node_id.clone(),
            region: report.region.clone(),
            ws: report.ws_addr.clone(),
            wss: report.wss_addr.clone(),
            tcp: report.tcp_addr.clone(),
            tls: report.tls_addr.clone(),
            quic: report.quic_addr.clone(),
            webtransport: report.webtransport_addr.clone(),
            cert_sha256: report.cert_sha256.clone(),
            load: report.load,
        }
    }
}

/// The answer for one client.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub policy: Policy,
    pub nodes: Vec<NodeEntry>,
}

/// The routing configuration: region order, CIDR table, rules and list length.
#[derive(Debug, Clone)]
pub struct Routing {
    pub region_map: RegionMap,
    /// Preference after the client's own region, for regions without their own fallbacks.
    pub order: Vec<String>,
    /// Per-client-region preference.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub rules: Rules,
    /// Most nodes in a list (at least 1).
    pub max_nodes: usize,
}

impl Routing {
    pub fn from_config(config: &Config) -> Self {
        Routing {
            region_map: RegionMap::new(&config.cidr_regions, &config.default_region),
            order: config.regions.clone(),
            fallbacks: config.region_fallbacks.clone(),
            rules: Rules::new(config.rules.clone()),
            max_nodes: config.max_nodes.max(1),
        }
    }

    /// Regions to try after `client_region`, nearest first.
    pub fn preference(&self, client_region: &str) -> &[String] {
        self.fallbacks
            .get(client_region)
            .map_or(self.order.as_slice(), Vec::as_slice)
    }

    /// Whether configuration mentions `region` (bounds metric label values).
    pub fn is_configured_region(&self, region: &str) -> bool {
        self.order.iter().any(|r| r == region)
            || self.fallbacks.contains_key(region)
            || self.region_map.regions().any(|r| r == region)
    }
}

/// The node list for `client` at `now_millis`.
///
/// Healthy gateways only (fresh, not draining); the client's region first, least loaded
/// first; then the other regions in preference order, regions not in it last. When other
/// regions have nodes, the last slot goes to the nearest of them even if the client's region
/// could fill the list: a client whose whole region goes dark still holds somewhere to go.
/// Then the routing rules decide the policy.
pub fn select_nodes(
    table: &NodeTable,
    client: &Client,
    routing: &Routing,
    now_millis: i64,
) -> Selection {
    let preference = routing.preference(&client.region);
    let rank = |region: &str| -> usize {
        if region == client.region {
            0
        } else {
            preference
                .iter()
                .filter(|r| **r != client.region)
                .position(|r| r == region)
                .map_or(usize::MAX, |i| i + 1)
        }
    };
    let mut candidates: Vec<(usize, &NodeReport)> = table
        .healthy(now_millis)
        .map(|report| (rank(&report.region), report))
        .collect();
    candidates.sort_by(|(rank_a, a), (rank_b, b)| rank_a.cmp(rank_b).then_with(|| by_load(a, b)));

    let limit = routing.max_nodes;
    let own = candidates.iter().take_while(|(rank, _)| *rank == 0).count();
    let others = candidates.len() - own;
    let reserve = usize::from(others > 0 && limit > 1);
    let own_taken = own.min(limit - reserve);
    let nodes = candidates[..own_taken]
        .iter()
        .chain(candidates[own..].iter().take(limit - own_taken))
        .map(|(_, report)| NodeEntry::from(*report))
        .collect();

    Selection {
        policy: routing.rules.policy(client),
        nodes,
    }
}

/// Least loaded first; then fewer connections; then node id, so equal nodes list stably.
/// A NaN load sorts last.
fn by_load(a: &NodeReport, b: &NodeReport) -> Ordering {
    let load = |r: &NodeReport| {
        if r.load.is_nan() {
            f64::INFINITY
        } else {
            r.load
        }
    };
    load(a)
        .total_cmp(&load(b))
        .then(a.connections.cmp(&b.connections))
        .then_with(|| a.node_id.cmp(&b.node_id))
}

#[cfg(test)]
mod tests;
