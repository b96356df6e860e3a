//! Pushes a room's deny rule could not see, and pushes with nothing in them, never reach a
//! client: `danmu.push.lo.room.+7` and `room.07` used to be delivered to room 7 (a NATS
//! permission or mapping written for `room.7` does not match them), and an empty payload
//! reached clients as a bare 16-byte packet. The distributor now terminates both and counts
//! them in `danmu_distributor_messages_rejected_total`.

use std::time::Duration;

use bytes::Bytes;
use danmu_distributor::Stats;
use danmu_tests::assert_eventually;
use danmu_tests::client::Transport;
use danmu_tests::fabric::SingleRegion;
use danmu_tests::room::{self, danmu, receive_sequences};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_targets_and_empty_payloads_are_refused_and_counted() -> anyhow::Result<()> {
    let fabric = SingleRegion::start().await?;
    let room = 7;
    let mut client = fabric.join(Transport::WebSocket, 1, room, 3).await?;
    room::warm_up(&fabric.business, room, &mut [&mut client], WAIT).await?;

    let rejected = || Stats::get(&fabric.distributor.stats.messages_rejected);
    let before = rejected();
    let refused = [
        ("danmu.push.lo.room.+7", danmu(100)),
        ("danmu.push.lo.room.07", danmu(101)),
        ("danmu.push.hi.room.007", danmu(102)),
        ("danmu.push.lo.all.x", danmu(103)),
        ("danmu.push.lo.room.7", Bytes::new()),
        ("danmu.push.hi.room.7", Bytes::new()),
    ];
    for (subject, payload) in &refused {
        fabric.business.publish(*subject, payload.clone()).await?;
    }
    fabric.business.flush().await?;
    // Every refused push has been handled (terminated) before the canonical one is sent, so
    // if any of them were delivered it would arrive before it.
    assert_eventually!(
        WAIT,
        format!("{} pushes rejected", refused.len()),
        rejected() == before + refused.len() as u64
    );

    room::publish(&fabric.business, room, danmu(1)).await?;
    // A delivered empty payload fails here as "payload is not JSON"; a non-canonical one shows
    // its own sequence number.
    assert_eq!(receive_sequences(&mut client, 1, WAIT).await?, [1]);
    client.expect_silence(Duration::from_millis(300)).await?;
    Ok(())
}
