//! With the low-priority path saturated (a flood into a room whose member stops reading), high
//! priority to the same connection still arrives, in order, none shed; and every low-priority
//! message not delivered is accounted for by the shed counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use danmu_proto::frame::op;
use danmu_proto::subjects::{Priority, Scope};
use danmu_tests::client::{Client, Event, Transport};
use danmu_tests::eventually;
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room::{self, danmu};

const ROOM: u64 = 50;
const FLOOD: u64 = 20_000;
const HIGH: u64 = 100;
const WAIT: Duration = Duration::from_secs(20);

/// Reads until told to stop, counting flood messages and recording high-priority sequences.
async fn drain(
    mut client: Client,
    flood: Arc<AtomicU64>,
    high: Arc<std::sync::Mutex<Vec<u64>>>,
) -> anyhow::Result<()> {
    loop {
        let frame = match client.next(Duration::from_secs(3600)).await? {
            Event::Frame(frame) if frame.op == op::MESSAGE => frame,
            Event::Frame(_) => continue,
            Event::Closed(why) => anyhow::bail!("closed: {why:?}"),
        };
        for payload in client.unpack(&frame)? {
            let value: serde_json::Value = serde_json::from_slice(&payload)?;
            match value["cmd"].as_str() {
                Some("FLOOD") => {
                    flood.fetch_add(1, Ordering::Relaxed);
                }
                Some("DANMU_MSG") => high
                    .lock()
                    .unwrap()
                    .push(value["n"].as_u64().unwrap_or(u64::MAX)),
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_gets_through_a_low_priority_flood_and_shedding_is_counted()
-> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let distributor = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;
    let mut config = fabric::gateway_config(&url, "A", &keys);
    config.outbound_queue_bytes = 64 * 1024;
    config.socket_send_buffer_bytes = Some(8 * 1024);
    // The slow reader pauses for the whole flood on purpose: not a stall to cut off.
    config.write_stall_timeout = Duration::from_secs(600);
    let gateway = fabric::start_gateway(config).await?;

    let mut slow = Client::connect_slow(Transport::Tcp, gateway.tcp_addr.unwrap(), 4096).await?;
    let token = keys.token(1, Some(vec![ROOM]), Duration::from_secs(600));
    assert_eq!(slow.auth(1, ROOM, 3, &token).await?, 0);
    let mut fast = room::join(
        &keys,
        Transport::WebSocket,
        gateway.ws_addr.unwrap(),
        2,
        ROOM,
        3,
    )
    .await?;
    let business = danmu_tests::nats::connect_publisher(&url).await?;
    room::warm_up(&business, ROOM, &mut [&mut slow, &mut fast], WAIT).await?;
    room::warm_up_scope(
        &business,
        Priority::High,
        &Scope::User(1),
        &mut [&mut slow],
        WAIT,
    )
    .await?;

    // The fast member reads throughout; the slow one reads nothing until the flood is over.
    let fast_flood = Arc::new(AtomicU64::new(0));
    let fast_high = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fast_reader = tokio::spawn(drain(fast, fast_flood.clone(), fast_high.clone()));

    let publisher = business.clone();
    let flood = tokio::spawn(async move {
        for n in 0..FLOOD {
            room::publish(&publisher, ROOM, room::bulky(n)).await?;
        }
        publisher.flush().await?;
        anyhow::Ok(())
    });
    for n in 0..HIGH {
        room::publish_to(&business, Priority::High, &Scope::User(1), danmu(n)).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    flood.await??;
    let shed_so_far = || danmu_gateway::stats::get(&gateway.stats.shed_messages);
    eventually("low priority shed for the slow reader", WAIT, async || {
        (shed_so_far() > 0).then_some(())
    })
    .await?;

    let slow_flood = Arc::new(AtomicU64::new(0));
    let slow_high = Arc::new(std::sync::Mutex::new(Vec::new()));
    let slow_reader = tokio::spawn(drain(slow, slow_flood.clone(), slow_high.clone()));

    // Every flood message is either delivered to a member or counted as shed.
    let accounted =
        || fast_flood.load(Ordering::Relaxed) + slow_flood.load(Ordering::Relaxed) + shed_so_far();
    eventually(
        "every flood message delivered or counted as shed",
        Duration::from_secs(60),
        async || (accounted() == 2 * FLOOD).then_some(()),
    )
    .await
    .map_err(|e| e.context(format!("accounted {} of {}", accounted(), 2 * FLOOD)))?;
    eventually("all high priority at the slow reader", WAIT, async || {
        (slow_high.lock().unwrap().len() as u64 >= HIGH).then_some(())
    })
    .await?;
    assert_eq!(
        *slow_high.lock().unwrap(),
        (0..HIGH).collect::<Vec<_>>(),
        "in order, none shed"
    );
    assert!(
        fast_high.lock().unwrap().is_empty(),
        "user-scope pushes reach only that user"
    );
    fast_reader.abort();
    slow_reader.abort();
    assert_eq!(
        danmu_gateway::stats::get(&gateway.stats.slow_consumers),
        0,
        "nobody was cut off"
    );
    distributor.shutdown().await?;
    Ok(())
}
