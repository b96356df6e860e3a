//! Room-level helpers shared by the integration tests: join clients, warm the path up, publish.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use danmu_proto::subjects::{self, Priority, Scope};

use crate::client::{Client, Event, Transport};
use crate::fabric::Keys;

/// The `cmd` of messages used only to prove a path is live; tests skip them.
pub const WARMUP: &str = "WARMUP";

/// A danmu-shaped payload carrying a sequence number.
pub fn danmu(n: u64) -> Bytes {
    Bytes::from(
        serde_json::json!({"cmd": "DANMU_MSG", "n": n, "info": [[0, 1, 25, 16777215], "hello", [42, "viewer"]]})
            .to_string(),
    )
}

/// A flood message (`cmd` FLOOD) numbered `n` (read back by [`sequence`]) padded with 320 bytes of
/// pseudo-random hex, so it compresses poorly: floods made of it are many bytes on the wire.
pub fn bulky(n: u64) -> Bytes {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let pad: String = (0..40)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:x}", x & 0xffff_ffff)
        })
        .collect();
    Bytes::from(serde_json::json!({"cmd": "FLOOD", "n": n, "pad": pad}).to_string())
}

/// The `n` of a payload made by [`danmu`], `None` for warm-up messages.
pub fn sequence(payload: &[u8]) -> anyhow::Result<Option<u64>> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).context("payload is not JSON")?;
    if value["cmd"] == WARMUP {
        return Ok(None);
    }
    value["n"]
        .as_u64()
        .map(Some)
        .with_context(|| format!("payload without n: {value}"))
}

/// Connects and authenticates a client into `room`, asserting AUTH_REPLY code 0.
pub async fn join(
    keys: &Keys,
    transport: Transport,
    addr: SocketAddr,
    uid: u64,
    room: u64,
    protover: u16,
) -> anyhow::Result<Client> {
    let mut client = Client::connect(transport, addr).await?;
    let token = keys.token(uid, Some(vec![room]), Duration::from_secs(600));
    let code = client.auth(uid, room, protover, &token).await?;
    anyhow::ensure!(code == 0, "AUTH_REPLY code {code}");
    Ok(client)
}

/// Publishes a low-priority room message with a plain core NATS publish.
pub async fn publish(nats: &async_nats::Client, room: u64, payload: Bytes) -> anyhow::Result<()> {
    publish_to(nats, Priority::Low, &Scope::Room(room), payload).await
}

/// Publishes to any scope and priority with a plain core NATS publish.
pub async fn publish_to(
    nats: &async_nats::Client,
    priority: Priority,
    scope: &Scope,
    payload: Bytes,
) -> anyhow::Result<()> {
    nats.publish(subjects::push(priority, scope), payload)
        .await?;
    Ok(())
}

/// Publishes warm-up messages into `room` until every client has received one, so the room's
/// subscriptions have reached every NATS server (across regions too) before a test starts.
pub async fn warm_up(
    nats: &async_nats::Client,
    room: u64,
    clients: &mut [&mut Client],
    timeout: Duration,
) -> anyhow::Result<()> {
    warm_up_scope(nats, Priority::Low, &Scope::Room(room), clients, timeout).await
}

/// [`warm_up`] for any scope and priority: `clients` are the connections the scope reaches.
pub async fn warm_up_scope(
    nats: &async_nats::Client,
    priority: Priority,
    scope: &Scope,
    clients: &mut [&mut Client],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut warm = vec![false; clients.len()];
    let warmup = Bytes::from(serde_json::json!({ "cmd": WARMUP }).to_string());
    while warm.iter().any(|w| !w) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{scope} ({priority}) did not warm up: {warm:?}"
        );
        publish_to(nats, priority, scope, warmup.clone()).await?;
        for (client, warm) in clients.iter_mut().zip(warm.iter_mut()) {
            while !*warm {
                match client.next(Duration::from_millis(150)).await {
                    Ok(Event::Frame(frame)) if frame.op == danmu_proto::frame::op::MESSAGE => {
                        client.unpack(&frame)?;
                        *warm = true;
                    }
                    Ok(Event::Frame(_)) => {}
                    Ok(Event::Closed(why)) => anyhow::bail!("closed while warming up: {why:?}"),
                    Err(_) => break,
                }
            }
        }
    }
    for client in clients.iter_mut() {
        client.message_frames = 0;
    }
    Ok(())
}

/// Receives until `count` non-warm-up messages arrived; returns their sequence numbers.
pub async fn receive_sequences(
    client: &mut Client,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<u64>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let batch = client
            .messages(1, left)
            .await
            .with_context(|| format!("received {} of {count}", out.len()))?;
        for payload in batch {
            if let Some(n) = sequence(&payload)? {
                out.push(n);
            }
        }
    }
    Ok(out)
}
