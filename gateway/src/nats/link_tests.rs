//! The link against a scripted server on a real socket: what counts as a lost link.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::fanout::groups::DeliveryLimits;
use crate::nats::{NatsEdge, NatsOptions};
use crate::stats::{Stats, get};

const INFO: &[u8] = b"INFO {\"server_id\":\"S\",\"max_payload\":1048576}\r\n";
const DEADLINE: Duration = Duration::from_secs(20);

/// Sends INFO and reads until the client's first PING (after its CONNECT); answers PONG.
async fn handshake(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(INFO).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"PING\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    stream.write_all(b"PONG\r\n").await
}

/// A server that is still starting (takes the TCP connection, closes it before INFO) costs the
/// links attempts, not losses; a connection closed after its handshake is one loss per link.
/// Both links (high, low) talk to the same scripted server.
#[tokio::test]
async fn only_a_connection_that_completed_its_handshake_counts_as_a_lost_link() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Config {
        nats_url: format!("nats://127.0.0.1:{port}"),
        ..Config::default()
    };
    let options = Arc::new(NatsOptions::from_config(&config).unwrap());
    let stats = Arc::new(Stats::default());
    let limits = DeliveryLimits {
        max_raw_batch: 1 << 20,
        brotli_quality: 5,
    };
    let stop = CancellationToken::new();
    let _edge = NatsEdge::start(options, "test", limits, stats.clone(), stop.clone()).unwrap();

    let accept = async || {
        tokio::time::timeout(DEADLINE, listener.accept())
            .await
            .expect("the links keep trying")
            .unwrap()
            .0
    };
    // Six attempts closed before INFO (three per link, give or take the interleaving).
    for _ in 0..6 {
        drop(accept().await);
    }
    assert_eq!(
        get(&stats.nats_links_down),
        0,
        "failed attempts are not losses"
    );

    // Two links up, then cut: each is a loss.
    for _ in 0..2 {
        let mut stream = accept().await;
        handshake(&mut stream).await.unwrap();
        // The client sent nothing after its PING (no subscriptions): the close is a FIN
        // behind the PONG, so the client reads the PONG (link up) before the end.
        drop(stream);
    }
    // Two more attempts, held open: the links are up again and nothing else is counted.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = accept().await;
        handshake(&mut stream).await.unwrap();
        held.push(stream);
    }
    assert_eq!(get(&stats.nats_links_down), 2);
    stop.cancel();
}
