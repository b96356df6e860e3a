//! The probes Kubernetes uses (`health_listen`, `danmu_runtime::health`):
//!
//! - a gateway process is ready once started, and stops being ready as soon as SIGTERM starts
//!   its drain, while it still serves its clients and stays live;
//! - a distributor is not ready while NATS is unreachable, and ready once it is connected.

use std::net::SocketAddr;
use std::time::Duration;

use danmu_tests::client::Transport;
use danmu_tests::eventually;
use danmu_tests::fabric::{self, GatewayProcess, Keys};
use danmu_tests::http::get;
use danmu_tests::ports::free_port;

async fn status(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let (status, body) = get(addr, path).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_is_not_ready_from_the_start_of_its_drain() -> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let keys = Keys::generate();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let mut gateway = GatewayProcess::start(
        &server.client_url(),
        "health-test",
        &keys,
        &format!("health_listen = \"{health}\"\ndrain_period = \"4s\"\nclose_linger = \"200ms\""),
    )
    .await?;
    eventually(
        "the gateway is ready",
        Duration::from_secs(20),
        async || Ok::<_, anyhow::Error>((status(health, "/readyz").await?.0 == 200).then_some(())),
    )
    .await?;
    assert_eq!(status(health, "/healthz").await?.0, 200);
    // Clients keep the drain going: each leaves at its own moment within the 4 s period, so
    // with 20 of them the last is near its end (a gateway with none exits at once).
    let mut clients = Vec::new();
    for uid in 1..=20 {
        let client =
            danmu_tests::room::join(&keys, Transport::Tcp, gateway.tcp_addr, uid, 1, 3).await?;
        clients.push(client);
    }

    gateway.signal(libc::SIGTERM)?;
    let during = eventually(
        "readiness drops once the drain starts",
        Duration::from_secs(3),
        async || {
            let answer = status(health, "/readyz").await?;
            Ok::<_, anyhow::Error>((answer.0 == 503).then_some(answer))
        },
    )
    .await?;
    assert_eq!(during.1, "not ready: draining\n");
    // Draining, not dead: liveness still answers, so Kubernetes does not restart it mid-drain.
    assert_eq!(status(health, "/healthz").await?.0, 200);
    let exited = eventually("the gateway exits", Duration::from_secs(15), async || {
        gateway.child.try_wait().map_err(anyhow::Error::from)
    })
    .await?;
    assert!(exited.success(), "{exited}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributor_is_ready_once_connected_to_nats() -> anyhow::Result<()> {
    // Nothing listens on this port yet: the distributor keeps retrying, not ready.
    let ports = danmu_tests::nats::ServerPorts::free();
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let mut config = fabric::distributor_config(&format!("nats://127.0.0.1:{}", ports.client), "A");
    config.health_listen = Some(health);
    let running = tokio::spawn(danmu_distributor::run(config, std::future::pending()));
    let before = eventually(
        "the health listener answers",
        Duration::from_secs(10),
        async || status(health, "/readyz").await.map(Some),
    )
    .await?;
    assert_eq!(before, (503, "not ready: connecting to NATS\n".to_owned()));
    assert_eq!(status(health, "/healthz").await?.0, 200);
    running.abort();

    // With a server: ready.
    let server = danmu_tests::single().await?;
    let mut config = fabric::distributor_config(&server.client_url(), "A");
    let health: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    config.health_listen = Some(health);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(danmu_distributor::run(config, async move {
        let _ = stopped.await;
    }));
    eventually(
        "the distributor is ready",
        Duration::from_secs(20),
        async || Ok::<_, anyhow::Error>((status(health, "/readyz").await?.0 == 200).then_some(())),
    )
    .await?;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), running).await???;
    Ok(())
}
