//! Killing the active distributor mid-stream loses nothing JetStream acknowledged, and the
//! room's order holds: the standby takes over the pinned consumer, JetStream redelivers what
//! was not acked, and the gateway writes once what the dead instance had already published.

use std::time::Duration;

use async_nats::jetstream;
use danmu_proto::subjects::{self, Priority, Scope};
use danmu_tests::client::{Client, Transport};
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room::{self, danmu, receive_sequences};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_distributor_loses_nothing_acknowledged_and_keeps_order()
-> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let gateway = fabric::start_gateway(fabric::gateway_config(&url, "A", &keys)).await?;
    let active = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;

    let room_id = 31;
    let mut ws = room::join(
        &keys,
        Transport::WebSocket,
        gateway.ws_addr.unwrap(),
        1,
        room_id,
        3,
    )
    .await?;
    let mut tcp = room::join(
        &keys,
        Transport::Tcp,
        gateway.tcp_addr.unwrap(),
        2,
        room_id,
        2,
    )
    .await?;
    let business = danmu_tests::nats::connect_publisher(&url).await?;
    {
        let mut clients: Vec<&mut Client> = vec![&mut ws, &mut tcp];
        room::warm_up(&business, room_id, &mut clients, Duration::from_secs(20)).await?;
    }
    // Started after the warm-up, so the first instance holds the pin and this one waits.
    let standby = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;

    const COUNT: u64 = 2000;
    const KILL_AT: u64 = 700;
    let js = jetstream::new(business.clone());
    let subject = subjects::push(Priority::Low, &Scope::Room(room_id));
    let mut active = Some(active);
    for n in 0..COUNT {
        // Each publish waits for JetStream's ack: everything published here must arrive.
        js.publish(subject.clone(), danmu(n)).await?.await?;
        if n == KILL_AT {
            active.take().expect("killed once").kill();
        }
    }

    let expected: Vec<u64> = (0..COUNT).collect();
    for client in [&mut ws, &mut tcp] {
        let got = receive_sequences(client, COUNT as usize, Duration::from_secs(60)).await?;
        assert_eq!(got.len(), expected.len());
        let first_wrong = got.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(
            first_wrong,
            None,
            "order broke: {:?}",
            first_wrong.map(|i| &got[i.saturating_sub(3)..(i + 8).min(got.len())])
        );
        // Nothing trails: duplicates from the redelivery were dropped by the gateway.
        client.expect_silence(Duration::from_millis(500)).await?;
    }
    assert!(
        danmu_distributor::Stats::get(&standby.stats.messages_in) > 0,
        "the standby took over"
    );
    standby.shutdown().await?;
    Ok(())
}
