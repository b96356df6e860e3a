//! The support library against real nats-server processes.

use std::time::{Duration, Instant};

use async_nats::jetstream::stream::{Config, Placement};
use futures::StreamExt as _;

use super::*;
use crate::wait::eventually;

const WAIT: Duration = Duration::from_secs(15);

fn stream(name: &str, subject: &str, cluster: Option<&str>) -> Config {
    Config {
        name: name.into(),
        subjects: vec![subject.into()],
        placement: cluster.map(|c| Placement {
            cluster: Some(c.into()),
            tags: Vec::new(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn single_server_acks_jetstream_publishes_through_the_region_mapping() {
    let server = single().await.unwrap();
    assert_eq!(server.cluster(), "A");
    assert!(server.client_url().starts_with("nats://127.0.0.1:"));
    assert!(server.websocket_url().starts_with("ws://127.0.0.1:"));
    tokio::net::TcpStream::connect(("127.0.0.1", server.ports().websocket))
        .await
        .expect("WebSocket listener is up");

    let js = server.jetstream_admin().await.unwrap();
    let mut lo = js
        .create_stream(stream("PUSH_LO_A", "danmu.in.A.lo.>", None))
        .await
        .unwrap();
    let ack = js
        .publish("danmu.push.lo.room.1", "{\"cmd\":\"DANMU_MSG\"}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "PUSH_LO_A");
    let stored = lo.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(stored.subject.as_str(), "danmu.in.A.lo.room.1");
    assert_eq!(lo.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn drop_kills_the_process_and_removes_the_store() {
    let server = single().await.unwrap();
    let pid = server.pid();
    let dir = server.dir().to_path_buf();
    assert!(dir.join("store").is_dir());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(server);
    assert!(!dir.exists(), "{} still exists", dir.display());
    // Killed and reaped: no zombie keeps the pid.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test]
async fn restart_keeps_ports_and_store() {
    let mut server = single().await.unwrap();
    let js = server.jetstream_admin().await.unwrap();
    js.create_stream(stream("KEEP", "keep.>", None))
        .await
        .unwrap();
    js.publish("keep.1", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let (url, old_pid) = (server.client_url(), server.pid());

    server.kill();
    assert!(!server.is_running());
    server.restart().await.unwrap();
    assert_eq!(server.client_url(), url);
    assert_ne!(server.pid(), old_pid);

    let js = server.jetstream_admin().await.unwrap();
    let mut keep = js.get_stream("KEEP").await.unwrap();
    assert_eq!(keep.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn supercluster_carries_core_and_jetstream_messages_between_regions() {
    let started = Instant::now();
    let mut cluster = supercluster(&["A", "B"]).await.unwrap();
    eprintln!("supercluster ready after {:.1?}", started.elapsed());
    let (a, b) = (cluster.region("A"), cluster.region("B"));
    assert_eq!((a.cluster(), b.cluster()), ("A", "B"));

    // Core NATS: published on A, received on B. Interest crosses the gateway asynchronously,
    // so publish until one arrives.
    let on_a = a.connect_admin().await.unwrap();
    let on_b = b.connect_admin().await.unwrap();
    let mut sub = on_b.subscribe("hello.b").await.unwrap();
    on_b.flush().await.unwrap();
    let got = eventually("a message from A to arrive on B", WAIT, async || {
        on_a.publish("hello.b", "hi".into()).await?;
        on_a.flush().await?;
        let msg = tokio::time::timeout(Duration::from_millis(200), sub.next()).await;
        anyhow::Ok(msg.ok().flatten())
    })
    .await
    .unwrap();
    assert_eq!(&got.payload[..], b"hi");

    // JetStream: a push published via B is mapped to B's ingest subject and stored in a stream
    // placed in cluster B.
    let js = b.jetstream_admin().await.unwrap();
    let mut lo_b = js
        .create_stream(stream("PUSH_LO_B", "danmu.in.B.lo.>", Some("B")))
        .await
        .unwrap();
    let ack = js
        .publish("danmu.push.lo.room.1", "{\"cmd\":\"DANMU_MSG\"}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "PUSH_LO_B");
    let info = lo_b.info().await.unwrap();
    assert_eq!(
        info.cluster.as_ref().and_then(|c| c.name.as_deref()),
        Some("B")
    );
    assert_eq!(info.state.messages, 1);
    let stored = lo_b.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(stored.subject.as_str(), "danmu.in.B.lo.room.1");
    drop((js, on_a, on_b, sub));

    // A region restarts on its ports and store, and rejoins.
    let started = Instant::now();
    cluster.region_mut("B").restart().await.unwrap();
    eprintln!("region B healthy again after {:.1?}", started.elapsed());
    let js = cluster.region("B").jetstream_admin().await.unwrap();
    let mut lo_b = js.get_stream("PUSH_LO_B").await.unwrap();
    assert_eq!(lo_b.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn a_server_that_cannot_bind_fails_fast_with_its_log() {
    let taken = crate::ports::free_tcp_listener();
    let mut ports = ServerPorts::free();
    ports.client = taken.local_addr().unwrap().port();
    let started = Instant::now();
    let err = SuperclusterBuilder::new(&["A", "B"])
        .ports(PortLayout::Fixed(vec![ports, ServerPorts::free()]))
        .start()
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    eprintln!("{text}");
    assert!(text.contains("address already in use"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "{text}");
}
