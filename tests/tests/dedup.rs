//! Publishing the same `Nats-Msg-Id` twice inside the push stream's duplicate window delivers
//! once; a different id with the same payload is a different message.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use danmu_proto::subjects::{self, Priority, Scope};
use danmu_tests::client::Transport;
use danmu_tests::fabric::SingleRegion;
use danmu_tests::room::{self, danmu, receive_sequences};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_msg_id_is_delivered_once() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let mut member = f.join(Transport::WebSocket, 3, 80, 3).await?;
    room::warm_up(&f.business, 80, &mut [&mut member], Duration::from_secs(20)).await?;

    let js = jetstream::new(f.business.clone());
    let subject = subjects::push(Priority::Low, &Scope::Room(80));
    let mut duplicates = Vec::new();
    for (id, n) in [
        ("order-1", 1),
        ("order-1", 1),
        ("order-2", 2),
        ("order-1", 1),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let ack = js
            .publish_with_headers(subject.clone(), headers, danmu(n))
            .await?
            .await?;
        duplicates.push(ack.duplicate);
    }
    assert_eq!(
        duplicates,
        [false, true, false, true],
        "JetStream saw the repeats"
    );
    assert_eq!(
        receive_sequences(&mut member, 2, Duration::from_secs(20)).await?,
        [1, 2]
    );
    member.expect_silence(Duration::from_millis(500)).await?;
    Ok(())
}

/// The one documented message limit (64 KiB) holds where the publisher can see it: a JetStream
/// publish of 100 KiB on a push subject is refused with an error, one of 64 KiB is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_64_kib_is_refused_to_a_jetstream_publisher() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let js = jetstream::new(f.business.clone());
    let subject = subjects::push(Priority::Low, &Scope::Room(81));
    let refused = js
        .publish(subject.clone(), vec![b'x'; 100 * 1024].into())
        .await?
        .await;
    let error = refused.expect_err("100 KiB must be refused").to_string();
    assert!(error.contains("message size exceeds maximum"), "{error}");
    // The limit counts the payload and the subject; 64 KiB less a little is stored.
    js.publish(subject, vec![b'x'; 64 * 1024 - 256].into())
        .await?
        .await?;
    Ok(())
}
