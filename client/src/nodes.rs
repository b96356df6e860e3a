//! Control's node list (`GET /v1/nodes`, `docs/control.md`) and the order this client tries
//! its nodes and transports in. Plain code: [`order_nodes`] is tested without a network.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// The answer of `GET /v1/nodes`. Unknown fields are ignored (newer controls add transports).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NodeList {
    /// The region control placed this client in.
    pub region: String,
    /// What the routing rules decided.
    #[serde(default)]
    pub policy: Policy,
    /// Gateways, best first (control orders by region, then load).
    pub nodes: Vec<Node>,
    /// How long the list may be reused, in seconds.
    #[serde(default)]
    pub ttl_secs: u64,
}

/// `policy` of a node list.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
pub struct Policy {
    /// `long_connection` or `polling`. Polling is not in this client yet (the catch-up issue
    /// adds it): a `polling` answer is logged and the client connects anyway.
    #[serde(default)]
    pub mode: String,
    /// The routing rule that matched, if any.
    #[serde(default)]
    pub rule: Option<String>,
}

/// One gateway of a node list; each address is `host:port`, empty when not offered.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
pub struct Node {
    /// The gateway's node id.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Plain WebSocket.
    #[serde(default)]
    pub ws: String,
    /// WebSocket over TLS.
    #[serde(default)]
    pub wss: String,
    /// Plain TCP.
    #[serde(default)]
    pub tcp: String,
    /// TCP over TLS.
    #[serde(default)]
    pub tls: String,
    /// QUIC (UDP).
    #[serde(default)]
    pub quic: String,
    /// 0 idle .. 1 full, as the gateway reports it.
    #[serde(default)]
    pub load: f64,
}

/// The ways to reach a gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// QUIC (quinn), ALPN `danmu/1`, one bidirectional stream of GOIM packets.
    Quic,
    /// WebSocket over TLS, path `/sub`.
    Wss,
    /// Plain WebSocket, path `/sub`.
    Ws,
    /// TLS over TCP, then GOIM packets.
    Tls,
    /// Plain TCP, GOIM packets.
    Tcp,
}

impl TransportKind {
    /// Every kind, in the default preference order: QUIC first, then WebSocket (TLS before
    /// plain), then TCP (TLS before plain).
    pub const DEFAULT_ORDER: [TransportKind; 5] = [
        TransportKind::Quic,
        TransportKind::Wss,
        TransportKind::Ws,
        TransportKind::Tls,
        TransportKind::Tcp,
    ];

    /// The node-list field name, also used in events and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Quic => "quic",
            TransportKind::Wss => "wss",
            TransportKind::Ws => "ws",
            TransportKind::Tls => "tls",
            TransportKind::Tcp => "tcp",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TransportKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TransportKind::DEFAULT_ORDER
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| format!("unknown transport {s:?} (quic, wss, ws, tls, tcp)"))
    }
}

impl Node {
    /// The `host:port` for `kind`, if the gateway offers it.
    pub fn addr(&self, kind: TransportKind) -> Option<&str> {
        let addr = match kind {
            TransportKind::Quic => &self.quic,
            TransportKind::Wss => &self.wss,
            TransportKind::Ws => &self.ws,
            TransportKind::Tls => &self.tls,
            TransportKind::Tcp => &self.tcp,
        };
        (!addr.is_empty()).then_some(addr.as_str())
    }

    /// The transports of `preference` this node offers, in that order, with their addresses.
    pub fn transports<'a>(
        &'a self,
        preference: &'a [TransportKind],
    ) -> impl Iterator<Item = (TransportKind, &'a str)> + 'a {
        preference
            .iter()
            .filter_map(|kind| self.addr(*kind).map(|addr| (*kind, addr)))
    }
}

/// The nodes in the order to try them: the client's region first, other regions last (each
/// part in control's order), and `avoid` (the node the client just left: dead or draining)
/// after every other one.
pub fn order_nodes(list: &NodeList, avoid: Option<&str>) -> Vec<Node> {
    let mut nodes = list.nodes.clone();
    // A stable sort keeps control's load order within each group.
    nodes.sort_by_key(|node| {
        (
            Some(node.node_id.as_str()) == avoid,
            node.region != list.region,
        )
    });
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str) -> Node {
        Node {
            node_id: id.into(),
            region: region.into(),
            ws: format!("{id}:1"),
            ..Default::default()
        }
    }

    #[test]
    fn parses_control_s_example_and_orders_home_region_first() {
        let list: NodeList = serde_json::from_str(
            r#"{"region": "A", "policy": {"mode": "long_connection"}, "nodes": [
                {"node_id": "gw-b-1", "region": "B", "ws": "b:8080", "wss": "", "tcp": "", "tls": "", "quic": "", "load": 0.4},
                {"node_id": "gw-a-2", "region": "A", "ws": "a:8080", "wss": "a:443", "tcp": "a:7070", "tls": "", "quic": "a:7444", "load": 0.12, "webtransport": "a:7444"}
              ], "ttl_secs": 15}"#,
        )
        .unwrap();
        let order: Vec<_> = order_nodes(&list, None)
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        assert_eq!(order, ["gw-a-2", "gw-b-1"]);
        let a = &list.nodes[1];
        let offered: Vec<_> = a.transports(&TransportKind::DEFAULT_ORDER).collect();
        assert_eq!(
            offered,
            [
                (TransportKind::Quic, "a:7444"),
                (TransportKind::Wss, "a:443"),
                (TransportKind::Ws, "a:8080"),
                (TransportKind::Tcp, "a:7070")
            ]
        );
        let tcp_first = [TransportKind::Tcp, TransportKind::Ws];
        assert_eq!(
            a.transports(&tcp_first).next(),
            Some((TransportKind::Tcp, "a:7070"))
        );
    }

    #[test]
    fn the_node_left_goes_last_and_control_s_order_holds_within_a_region() {
        let list = NodeList {
            region: "A".into(),
            policy: Policy::default(),
            nodes: vec![
                node("a1", "A"),
                node("a2", "A"),
                node("b1", "B"),
                node("a3", "A"),
            ],
            ttl_secs: 15,
        };
        let order: Vec<_> = order_nodes(&list, Some("a1"))
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        assert_eq!(order, ["a2", "a3", "b1", "a1"]);
    }

    #[test]
    fn transport_names_round_trip() {
        for kind in TransportKind::DEFAULT_ORDER {
            assert_eq!(kind.name().parse::<TransportKind>(), Ok(kind));
        }
        assert!("udp".parse::<TransportKind>().is_err());
    }
}
