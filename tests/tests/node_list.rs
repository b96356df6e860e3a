//! Gateways in two regions report into the nodes KV bucket; control answers each region's
//! clients with their own region's gateway first, then the other region's, and a gateway that
//! shuts down leaves the list.

use std::time::Duration;

use danmu_tests::fabric::{self, Keys};
use danmu_tests::http::get_json;
use danmu_tests::nats::permissions::Role;
use danmu_tests::{eventually, supercluster};

fn node_ids(list: &serde_json::Value) -> Vec<String> {
    list["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["node_id"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_lists_healthy_gateways_nearest_region_first() -> anyhow::Result<()> {
    let cluster = supercluster(&["A", "B"]).await?;
    let keys = Keys::generate();
    let gateway_a = fabric::start_gateway(fabric::gateway_config(
        &cluster.region("A").client_url(),
        "A",
        &keys,
    ))
    .await?;
    let gateway_b = fabric::start_gateway(fabric::gateway_config(
        &cluster.region("B").client_url(),
        "B",
        &keys,
    ))
    .await?;

    let control = fabric::start_control(danmu_control::Config {
        nats_url: cluster.region("B").client_url(),
        nats_nkey_seed: Some(fabric::seed_path(Role::Control, "B").into()),
        private_key_pem: Some(keys.private_pem.clone().into()),
        regions: vec!["A".into(), "B".into()],
        node_ttl: Duration::from_secs(5),
        ..Default::default()
    })
    .await?;
    let control_addr = control.addr;

    let (a, b) = (gateway_a.node_id.clone(), gateway_b.node_id.clone());
    let from_a = eventually(
        "both gateways listed for region A",
        Duration::from_secs(20),
        async || {
            let list = get_json(control_addr, "/v1/nodes?region=A").await.ok()?;
            (node_ids(&list).len() == 2).then_some(list)
        },
    )
    .await?;
    assert_eq!(node_ids(&from_a), [a.clone(), b.clone()]);
    let ws = from_a["nodes"][0]["ws"].as_str().unwrap_or_default();
    assert_eq!(
        ws,
        format!("127.0.0.1:{}", gateway_a.ws_addr.unwrap().port())
    );
    let from_b = get_json(control_addr, "/v1/nodes?region=B").await?;
    assert_eq!(node_ids(&from_b), [b.clone(), a.clone()]);

    // A gateway that shuts down removes its report at once.
    gateway_b.shutdown(Duration::from_secs(2)).await;
    eventually(
        "gateway B gone from the list",
        Duration::from_secs(10),
        async || {
            let list = get_json(control_addr, "/v1/nodes?region=B").await.ok()?;
            (node_ids(&list) == [a.clone()]).then_some(())
        },
    )
    .await?;

    control.stop().await
}
