//! Gateways in two regions report into the nodes KV bucket; control answers each region's
//! clients with their own region's gateway first, then the other region's, and a gateway that
//! shuts down leaves the list.

use std::time::Duration;

use danmu_tests::fabric::{self, Keys};
use danmu_tests::{eventually, supercluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET over a plain TCP connection (HTTP/1.0, so the body ends at close).
async fn get_json(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: control\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    Ok(serde_json::from_str(body)?)
}

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

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let control_addr = listener.local_addr()?;
    let config = danmu_control::Config {
        nats_url: cluster.region("B").client_url(),
        private_key_pem: Some(keys.private_pem.clone().into()),
        regions: vec!["A".into(), "B".into()],
        node_ttl: Duration::from_secs(5),
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let control = tokio::spawn(danmu_control::run(listener, config, async move {
        let _ = stopped.await;
    }));

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

    let _ = stop.send(());
    control.await??;
    Ok(())
}
