//! Control against a real nats-server: gateways' reports put into the KV bucket show up in
//! `GET /v1/nodes` in load order, and a deleted key drops out.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use danmu_control::nodes::NodesResponse;
use danmu_proto::internal::NodeReport;
use danmu_tests::fabric::{self, Keys};
use danmu_tests::nats::permissions::Role;
use danmu_tests::{eventually, http};
use prost::Message;

const DEADLINE: Duration = Duration::from_secs(15);

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn report(id: &str, load: f64, reported_unix_millis: i64) -> bytes::Bytes {
    NodeReport {
        node_id: id.into(),
        region: "A".into(),
        ws_addr: format!("{id}.local:8080"),
        tcp_addr: format!("{id}.local:7070"),
        connections: 10,
        load,
        reported_unix_millis,
        ..NodeReport::default()
    }
    .encode_to_vec()
    .into()
}

/// The node ids `GET /v1/nodes` lists for region A, best first.
async fn node_ids(addr: SocketAddr) -> anyhow::Result<Vec<String>> {
    let list: NodesResponse =
        serde_json::from_value(http::get_json(addr, "/v1/nodes?region=A&uid=42").await?)?;
    anyhow::ensure!(list.region == "A", "placed in {}", list.region);
    Ok(list.nodes.into_iter().map(|n| n.node_id).collect())
}

/// Polls the node list until it has `count` entries.
async fn wait_for(addr: SocketAddr, what: &str, count: usize) -> anyhow::Result<Vec<String>> {
    eventually(what, DEADLINE, async || {
        let ids = node_ids(addr).await?;
        Ok((ids.len() == count).then_some(ids))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_list_follows_the_kv_bucket() -> anyhow::Result<()> {
    let nats = danmu_tests::single().await?;
    // As a gateway's user: a gateway got there first, with a longer max age than control's node_ttl: control must
    // use the bucket as it is.
    let gateway_user = danmu_tests::nats::users::test_user_of(Role::Gateway, "A");
    let js = async_nats::jetstream::new(gateway_user.connect(&nats.client_url()).await?);
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "danmu_nodes".into(),
            history: 1,
            max_age: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;
    let now = now_millis();
    bucket.put("g-busy", report("g-busy", 0.7, now)).await?;
    bucket.put("g-idle", report("g-idle", 0.1, now)).await?;
    // Neither of these may be listed, nor stop the others being listed.
    bucket
        .put("g-stale", report("g-stale", 0.0, now - 60_000))
        .await?;
    bucket
        .put("junk", b"\xff\xff\xff".as_slice().into())
        .await?;

    let control = fabric::start_control(danmu_control::Config {
        nats_url: nats.client_url(),
        nats_nkey_seed: Some(fabric::seed_path(Role::Control, "A").into()),
        private_key_pem: Some(Keys::generate().private_pem.into()),
        default_region: "A".into(),
        ..Default::default()
    })
    .await?;
    let addr = control.addr;

    eventually("readiness", DEADLINE, async || {
        let (status, _) = http::get(addr, "/readyz").await?;
        Ok((status == 200).then_some(()))
    })
    .await?;
    let ids = wait_for(addr, "both gateways listed", 2).await?;
    assert_eq!(ids, ["g-idle", "g-busy"]);

    bucket.delete("g-idle").await?;
    let ids = wait_for(addr, "the deleted gateway gone", 1).await?;
    assert_eq!(ids, ["g-busy"]);

    // A draining gateway is left out as soon as it says so.
    let draining = NodeReport {
        draining: true,
        ..NodeReport::decode(report("g-busy", 0.7, now_millis()))?
    };
    bucket
        .put("g-busy", draining.encode_to_vec().into())
        .await?;
    wait_for(addr, "the draining gateway gone", 0).await?;

    control.stop().await
}
