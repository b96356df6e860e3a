//! SIGTERM on a gateway process with connected clients: it leaves node lists, every client that
//! opted in receives DRAIN (op 1001) before its socket closes, the others are closed with 1012
//! (WebSocket) or EOF (TCP), departures spread over the drain period, and the process exits
//! within it.

use std::time::{Duration, Instant};

use danmu_proto::frame::op;
use danmu_tests::client::{Client, Event, Transport};
use danmu_tests::eventually;
use danmu_tests::fabric::{GatewayProcess, Keys};

/// Reads until the close; returns whether DRAIN came first, and the close code.
async fn until_closed(client: &mut Client) -> anyhow::Result<(bool, Option<u16>)> {
    let mut drained = false;
    loop {
        match client.next(Duration::from_secs(20)).await? {
            Event::Frame(frame) if frame.op == op::DRAIN => {
                let body: serde_json::Value = serde_json::from_slice(&frame.body)?;
                anyhow::ensure!(body["reason"] == "shutdown", "{body}");
                drained = true;
            }
            Event::Frame(_) => {}
            Event::Closed(why) => return Ok((drained, why.map(|(code, _)| code))),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_client_then_exits() -> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let keys = Keys::generate();
    let mut gateway = GatewayProcess::start(
        &server.client_url(),
        "drain-test",
        &keys,
        "drain_period = \"1500ms\"\nclose_linger = \"500ms\"",
    )
    .await?;
    let (ws_addr, tcp_addr) = (gateway.ws_addr, gateway.tcp_addr);

    let mut clients = Vec::new();
    for i in 0..8u64 {
        let (transport, addr) = if i % 2 == 0 {
            (Transport::WebSocket, ws_addr)
        } else {
            (Transport::Tcp, tcp_addr)
        };
        let opted_in = i < 4;
        let mut client = Client::connect(transport, addr).await?;
        let token = keys.token(i + 1, Some(vec![9]), Duration::from_secs(600));
        let extra = serde_json::json!({ "drain": opted_in });
        assert_eq!(client.auth_with(i + 1, 9, 3, &token, extra).await?, 0);
        clients.push((transport, opted_in, client));
    }

    let started = Instant::now();
    gateway.signal(libc::SIGTERM)?;
    // Every client reads on its own, so each close is timed when it happens.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(transport, opted_in, mut client)| {
            tokio::spawn(async move {
                let closed = until_closed(&mut client).await;
                (transport, opted_in, closed, started.elapsed())
            })
        })
        .collect();
    let mut departures = Vec::new();
    for reader in readers {
        let (transport, opted_in, closed, at) = reader.await?;
        let (drained, code) = closed?;
        departures.push(at);
        assert_eq!(
            drained, opted_in,
            "DRAIN only to clients that opted in, before the close"
        );
        if transport == Transport::WebSocket {
            assert_eq!(code, Some(1012), "service restart");
        }
    }
    let status = eventually("the gateway exits", Duration::from_secs(10), async || {
        gateway.child.try_wait().ok().flatten()
    })
    .await?;
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exits within the drain period + linger"
    );
    let (first, last) = (
        departures.iter().min().unwrap(),
        departures.iter().max().unwrap(),
    );
    assert!(
        *last - *first > Duration::from_millis(100),
        "departures are spread: {departures:?}"
    );
    Ok(())
}
