//! SIGTERM on a gateway process with connected clients: it leaves node lists, every client that
//! opted in receives DRAIN (op 1001) before its socket closes, the others are closed with 1012
//! (WebSocket) or EOF (TCP), departures spread over the drain period, and the process exits
//! within it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use danmu_proto::frame::op;
use danmu_tests::client::{Client, Event, Transport};
use danmu_tests::eventually;
use danmu_tests::fabric::Keys;
use danmu_tests::ports::free_port;

/// The gateway binary next to this test's binary; `scripts/test` builds every bin before testing.
fn gateway_binary() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("danmu-gateway"))
        .filter(|path| path.exists())
        .ok_or_else(|| {
            anyhow::anyhow!("build it first: cargo build -p danmu-gateway (scripts/test does)")
        })
}

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
    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("control.pub.pem");
    std::fs::write(&key_path, &keys.public_pem)?;
    let (ws, tcp) = (free_port(), free_port());
    let config = format!(
        "node_id = \"drain-test\"\nnats_url = \"{}\"\ntoken_public_key_path = \"{}\"\n\
         ws_listen = \"127.0.0.1:{ws}\"\ntcp_listen = \"127.0.0.1:{tcp}\"\n\
         drain_period_ms = 1500\nclose_linger_ms = 500\n",
        server.client_url(),
        key_path.display()
    );
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, config)?;
    let mut gateway = Command::new(gateway_binary()?)
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;

    let ws_addr = format!("127.0.0.1:{ws}").parse()?;
    let tcp_addr = format!("127.0.0.1:{tcp}").parse()?;
    eventually(
        "the gateway accepts connections",
        Duration::from_secs(20),
        async || std::net::TcpStream::connect(ws_addr).ok().map(|_| ()),
    )
    .await?;

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
    // SAFETY: kill(2) on the pid of a child this test spawned and still owns.
    assert_eq!(unsafe { libc::kill(gateway.id() as i32, libc::SIGTERM) }, 0);
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
        gateway.try_wait().ok().flatten()
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
