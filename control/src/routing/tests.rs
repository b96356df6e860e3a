use std::time::Duration;

use super::*;
use crate::config::CidrRegion;

const NOW: i64 = 1_700_000_000_000;

fn node(id: &str, region: &str, load: f64) -> NodeReport {
    NodeReport {
        node_id: id.into(),
        region: region.into(),
        ws_addr: format!("{id}.example:8080"),
        tcp_addr: format!("{id}.example:7070"),
        reported_unix_millis: NOW - 1_000,
        load,
        ..NodeReport::default()
    }
}

fn table(nodes: impl IntoIterator<Item = NodeReport>) -> NodeTable {
    let mut table = NodeTable::new(Duration::from_secs(15));
    for report in nodes {
        table.put(&report.node_id.clone(), report);
    }
    table
}

fn routing(order: &[&str], max_nodes: usize) -> Routing {
    Routing::from_config(&Config {
        regions: order.iter().map(|r| r.to_string()).collect(),
        cidr_regions: vec![CidrRegion {
            cidr: "10.2.0.0/16".parse().unwrap(),
            region: "B".into(),
        }],
        default_region: "A".into(),
        max_nodes,
        ..Config::default()
    })
}

fn client(region: &str) -> Client {
    Client {
        region: region.into(),
        ..Client::default()
    }
}

fn ids(selection: &Selection) -> Vec<&str> {
    selection.nodes.iter().map(|n| n.node_id.as_str()).collect()
}

fn three_regions() -> NodeTable {
    table([
        node("a1", "A", 0.5),
        node("a2", "A", 0.1),
        node("b1", "B", 0.9),
        node("b2", "B", 0.2),
        node("c1", "C", 0.0),
    ])
}

#[test]
fn own_region_least_loaded_first_then_configured_order() {
    let routing = routing(&["A", "B", "C"], 10);
    let got = select_nodes(&three_regions(), &client("A"), &routing, NOW);
    assert_eq!(ids(&got), ["a2", "a1", "b2", "b1", "c1"]);
    let got = select_nodes(&three_regions(), &client("C"), &routing, NOW);
    assert_eq!(ids(&got), ["c1", "a2", "a1", "b2", "b1"]);
    assert_eq!(got.policy, Policy::default());
}

#[test]
fn region_from_hint_or_cidr_picks_the_first_nodes() {
    let routing = routing(&["A", "B", "C"], 10);
    let from_cidr = routing
        .region_map
        .resolve(None, Some("10.2.0.7".parse().unwrap()));
    assert_eq!(from_cidr.0, "B");
    let got = select_nodes(&three_regions(), &client(&from_cidr.0), &routing, NOW);
    assert_eq!(ids(&got), ["b2", "b1", "a2", "a1", "c1"]);

    let from_hint = routing
        .region_map
        .resolve(Some("C"), Some("10.2.0.7".parse().unwrap()));
    let got = select_nodes(&three_regions(), &client(&from_hint.0), &routing, NOW);
    assert_eq!(ids(&got)[0], "c1");
}

#[test]
fn per_region_fallbacks_override_the_global_order() {
    let mut routing = routing(&["A", "B", "C"], 10);
    routing
        .fallbacks
        .insert("B".into(), vec!["C".into(), "A".into()]);
    let got = select_nodes(&three_regions(), &client("B"), &routing, NOW);
    assert_eq!(ids(&got), ["b2", "b1", "c1", "a2", "a1"]);
}

#[test]
fn unlisted_regions_come_last_by_load() {
    let routing = routing(&["B"], 10);
    let got = select_nodes(&three_regions(), &client("A"), &routing, NOW);
    assert_eq!(ids(&got), ["a2", "a1", "b2", "b1", "c1"]);
    // An unknown region (hint nobody serves) still gets a list.
    let got = select_nodes(&three_regions(), &client("Z"), &routing, NOW);
    assert_eq!(ids(&got), ["b2", "b1", "c1", "a2", "a1"]);
}

#[test]
fn stale_future_and_draining_nodes_are_left_out() {
    let stale = NodeReport {
        reported_unix_millis: NOW - 15_001,
        ..node("stale", "A", 0.0)
    };
    let future = NodeReport {
        reported_unix_millis: NOW + 60_000,
        ..node("future", "A", 0.0)
    };
    let draining = NodeReport {
        draining: true,
        ..node("draining", "A", 0.0)
    };
    let just_fresh = NodeReport {
        reported_unix_millis: NOW - 15_000,
        ..node("fresh", "A", 0.3)
    };
    let table = table([stale, future, draining, just_fresh, node("ok", "A", 0.4)]);
    let got = select_nodes(&table, &client("A"), &routing(&[], 10), NOW);
    assert_eq!(ids(&got), ["fresh", "ok"]);
    // The same table a moment later: "fresh" has gone stale.
    let got = select_nodes(&table, &client("A"), &routing(&[], 10), NOW + 1);
    assert_eq!(ids(&got), ["ok"]);
}

#[test]
fn limit_keeps_one_slot_for_another_region() {
    let many_a = (0..8).map(|i| node(&format!("a{i}"), "A", f64::from(i) / 10.0));
    let table = table(many_a.chain([node("b1", "B", 0.5), node("c1", "C", 0.0)]));
    let got = select_nodes(&table, &client("A"), &routing(&["B", "C"], 3), NOW);
    assert_eq!(ids(&got), ["a0", "a1", "b1"]);
    // A one-node list is the best node of the client's own region.
    let got = select_nodes(&table, &client("A"), &routing(&["B", "C"], 1), NOW);
    assert_eq!(ids(&got), ["a0"]);
}

#[test]
fn limit_with_a_single_region() {
    let table = table((0..8).map(|i| node(&format!("a{i}"), "A", f64::from(8 - i))));
    let got = select_nodes(&table, &client("A"), &routing(&[], 5), NOW);
    assert_eq!(ids(&got), ["a7", "a6", "a5", "a4", "a3"]);
}

#[test]
fn ties_break_by_connections_then_id_and_nan_sorts_last() {
    let busy = NodeReport {
        connections: 10,
        ..node("x-busy", "A", 0.2)
    };
    let table = table([
        node("nan", "A", f64::NAN),
        busy,
        node("y", "A", 0.2),
        node("x", "A", 0.2),
    ]);
    let got = select_nodes(&table, &client("A"), &routing(&[], 10), NOW);
    assert_eq!(ids(&got), ["x", "y", "x-busy", "nan"]);
}

#[test]
fn empty_table_gives_an_empty_list() {
    let got = select_nodes(&table([]), &client("A"), &routing(&["A"], 5), NOW);
    assert!(got.nodes.is_empty());
}

#[test]
fn entries_carry_every_transport() {
    let report = NodeReport {
        wss_addr: "g.example:443".into(),
        tls_addr: "g.example:7443".into(),
        quic_addr: "g.example:7444".into(),
        webtransport_addr: "g.example:7444".into(),
        cert_sha256: "ab".repeat(32),
        ..node("g", "A", 0.25)
    };
    let got = select_nodes(&table([report]), &client("A"), &routing(&[], 5), NOW);
    assert_eq!(
        serde_json::to_value(&got.nodes[0]).unwrap(),
        serde_json::json!({
            "node_id": "g", "region": "A", "ws": "g.example:8080", "wss": "g.example:443",
            "tcp": "g.example:7070", "tls": "g.example:7443", "quic": "g.example:7444",
            "webtransport": "g.example:7444", "cert_sha256": "ab".repeat(32), "load": 0.25
        })
    );
}

#[test]
fn rules_set_the_policy_but_keep_the_nodes() {
    let mut routing = routing(&[], 5);
    routing.rules = Rules::new(vec![Rule {
        name: "poll-all".into(),
        mode: Mode::Polling,
        ..Rule::default()
    }]);
    let got = select_nodes(&three_regions(), &client("A"), &routing, NOW);
    assert_eq!(got.policy.mode, Mode::Polling);
    assert_eq!(got.nodes.len(), 5);
}

#[test]
fn configured_regions_are_known() {
    let routing = routing(&["C"], 5);
    assert!(routing.is_configured_region("A")); // default
    assert!(routing.is_configured_region("B")); // CIDR table
    assert!(routing.is_configured_region("C")); // order
    assert!(!routing.is_configured_region("Z"));
}
