//! Publish a bullet comment into a room from Rust, with nothing but `async-nats`.
//!
//! ```text
//! cargo run -p danmu-tests --example publish -- nats://127.0.0.1:4222 1001 "hello from Rust"
//! ```
//!
//! It uses a JetStream publish: the ack means the message is stored and survives a distributor
//! crash, and the `Nats-Msg-Id` header makes a retried publish count once. A plain
//! `client.publish(subject, payload)` works too, without the ack.

use async_nats::HeaderMap;

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let room: u64 = args.next().map_or(Ok(1001), |r| r.parse())?;
    let text = args.next().unwrap_or_else(|| "hello from Rust".into());

    // A publisher reads its replies (the JetStream ack) only under its own inbox prefix,
    // `_INBOX.<its NATS user>`: `business` on scripts/up's fabric (docs/deploy.md).
    let inbox = args.next().unwrap_or_else(|| "_INBOX.business".into());
    let client = async_nats::ConnectOptions::new()
        .custom_inbox_prefix(inbox)
        .connect(url)
        .await?;
    let jetstream = async_nats::jetstream::new(client);

    // danmu.push.<lo|hi>.<scope>.<target>: low priority, room scope.
    let subject = format!("danmu.push.lo.room.{room}");
    let payload = serde_json::json!({
        "cmd": "DANMU_MSG",
        "info": [[0, 1, 25, 16777215], text, [42, "rust-example"]],
    });
    let mut headers = HeaderMap::new();
    let id = format!("rust-example-{}", std::process::id());
    headers.insert("Nats-Msg-Id", id.as_str());
    let ack = jetstream
        .publish_with_headers(subject.clone(), headers, payload.to_string().into())
        .await?
        .await?;
    println!("stored in {} as #{} ({subject})", ack.stream, ack.sequence);
    Ok(())
}
