//! A member that stops reading while its room is flooded is cut off as a slow consumer (counted,
//! its stall counted, and its exit event says `slow_consumer`), while a member that reads gets every message, in
//! order. The latency side (members' latency with and without a stalled reader) is a benchmark:
//! `priority-latency --stalled N`, in docs/performance.md.

use std::time::Duration;

use danmu_proto::presence::{EventKind, PresenceEvent};
use danmu_tests::client::{Client, Transport};
use danmu_tests::eventually;
use danmu_tests::fabric::SingleRegion;
use danmu_tests::room::{self, receive_sequences};
use futures::StreamExt;

const ROOM: u64 = 40;
const FLOOD: u64 = 3_000;
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_cut_off_and_the_room_keeps_flowing() -> anyhow::Result<()> {
    let f = SingleRegion::start_with(|_, gateway| {
        // Small kernel buffers, so a stalled reader shows in the gateway at once.
        gateway.socket_send_buffer_bytes = Some(8 * 1024);
        gateway.write_stall_timeout = Duration::from_millis(500);
    })
    .await?;
    let mut exits = f.business.subscribe("danmu.presence.*.exit.>").await?;
    f.business.flush().await?;

    let mut stalled = Client::connect_slow(Transport::Tcp, f.addr(Transport::Tcp), 4096).await?;
    let token = f.keys.token(1, Some(vec![ROOM]), Duration::from_secs(600));
    assert_eq!(stalled.auth(1, ROOM, 3, &token).await?, 0);
    let mut reader = f.join(Transport::WebSocket, 2, ROOM, 3).await?;
    room::warm_up(&f.business, ROOM, &mut [&mut stalled, &mut reader], WAIT).await?;

    // From here on `stalled` reads nothing; `reader` reads everything.
    let reading =
        tokio::spawn(async move { receive_sequences(&mut reader, FLOOD as usize, WAIT).await });
    for n in 0..FLOOD {
        room::publish(&f.business, ROOM, room::bulky(n)).await?;
    }
    f.business.flush().await?;

    let exit: PresenceEvent = eventually("the stalled reader's exit", WAIT, async || {
        let message = exits.next().await?;
        let event: PresenceEvent = serde_json::from_slice(&message.payload).ok()?;
        (event.uid == 1).then_some(event)
    })
    .await?;
    assert_eq!(exit.event, EventKind::Exit);
    assert_eq!(exit.reason.as_deref(), Some("slow_consumer"));
    let stats = &f.gateway.stats;
    assert_eq!(danmu_gateway::stats::get(&stats.slow_consumers), 1);
    assert!(
        danmu_gateway::stats::get(&stats.write_stalls) >= 1,
        "the stalled reader's socket filled before it was cut off"
    );

    let received = reading.await??;
    assert_eq!(
        received,
        (0..FLOOD).collect::<Vec<_>>(),
        "every message, in order"
    );
    // The cut-off connection left the write-blocked gauge (the reader's stalls ended when it
    // caught up).
    danmu_tests::assert_eventually!(
        WAIT,
        "no connection write-blocked",
        danmu_gateway::stats::get(&stats.write_blocked_connections) == 0
    );
    drop(stalled);
    Ok(())
}
