//! A room message published by a plain NATS client reaches every member of that room, on
//! WebSocket and TCP, in both regions, in the encoding each asked for; nobody else gets it.

use std::time::Duration;

use danmu_gateway::stats::get;
use danmu_tests::client::{Client, Transport};
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room::{self, danmu, receive_sequences};
use danmu_tests::supercluster;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_message_reaches_every_member_in_both_regions_and_no_one_else() -> anyhow::Result<()>
{
    let cluster = supercluster(&["A", "B"]).await?;
    let keys = Keys::generate();
    let mut distributors = Vec::new();
    let mut gateways = Vec::new();
    for region in ["A", "B"] {
        let url = cluster.region(region).client_url();
        distributors
            .push(danmu_distributor::start(fabric::distributor_config(&url, region)).await?);
        gateways.push(fabric::start_gateway(fabric::gateway_config(&url, region, &keys)).await?);
    }

    let room = 1001;
    let mut members = Vec::new();
    let mut uid = 1;
    for gateway in &gateways {
        for (transport, addr) in [
            (Transport::WebSocket, gateway.ws_addr.unwrap()),
            (Transport::Tcp, gateway.tcp_addr.unwrap()),
        ] {
            for protover in [0, 2, 3] {
                members.push((
                    protover,
                    room::join(&keys, transport, addr, uid, room, protover).await?,
                ));
                uid += 1;
            }
        }
    }
    let mut outsider = room::join(
        &keys,
        Transport::WebSocket,
        gateways[1].ws_addr.unwrap(),
        999,
        2002,
        3,
    )
    .await?;

    // A business publishes from region A with a plain core NATS client.
    let business = cluster.region("A").connect_publisher().await?;
    {
        let mut clients: Vec<&mut Client> = members.iter_mut().map(|(_, c)| c).collect();
        room::warm_up(&business, room, &mut clients, WAIT).await?;
    }
    for n in 0..3 {
        room::publish(&business, room, danmu(n)).await?;
    }
    for (protover, client) in &mut members {
        let got = receive_sequences(client, 3, WAIT).await?;
        assert_eq!(got, [0, 1, 2], "protover {protover}");
        // Batches come in the client's protover; a lone message leaves the distributor as a
        // plain version-0 packet, which every protover reads.
        assert!(
            client
                .versions_seen
                .iter()
                .all(|&version| version == *protover || version == 0),
            "a protover-{protover} client gets version-{protover} batches or plain packets: {:?}",
            client.versions_seen
        );
    }
    outsider.expect_silence(Duration::from_millis(500)).await?;

    // Online counts are per room (each gateway holds six members of the room).
    for (_, client) in members.iter_mut().take(1) {
        assert_eq!(client.heartbeat().await?, 6);
    }
    for gateway in &gateways {
        assert_eq!(gateway.online(room), 6);
    }
    for distributor in distributors {
        distributor.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_arrives_complete_in_order_aggregated_and_compressed_once()
-> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let keys = Keys::generate();
    let url = server.client_url();
    let distributor = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;
    let gateway = fabric::start_gateway(fabric::gateway_config(&url, "A", &keys)).await?;
    let room = 7;
    let mut members = Vec::new();
    for (i, protover) in [0u16, 2, 3, 3, 2, 0].into_iter().enumerate() {
        let (transport, addr) = if i % 2 == 0 {
            (Transport::WebSocket, gateway.ws_addr.unwrap())
        } else {
            (Transport::Tcp, gateway.tcp_addr.unwrap())
        };
        members.push((
            protover,
            room::join(&keys, transport, addr, i as u64 + 1, room, protover).await?,
        ));
    }
    let business = danmu_tests::nats::connect_publisher(&url).await?;
    {
        let mut clients: Vec<&mut Client> = members.iter_mut().map(|(_, c)| c).collect();
        room::warm_up(&business, room, &mut clients, WAIT).await?;
    }
    let batches_before = danmu_distributor::Stats::get(&distributor.stats.batches_out);
    let compressions_before = danmu_distributor::Stats::get(&distributor.stats.compressions);
    let received_before = get(&gateway.stats.batches_received);
    let zlib_before = get(&gateway.stats.zlib_encodes);
    let raw_before = get(&gateway.stats.brotli_decodes);

    const COUNT: u64 = 1000;
    for n in 0..COUNT {
        room::publish(&business, room, danmu(n)).await?;
    }
    business.flush().await?;
    for (protover, client) in &mut members {
        let got = receive_sequences(client, COUNT as usize, WAIT).await?;
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "complete and in order");
        // A raw (protover 0) batch is a run of plain packets, one per message, written together;
        // compressed batches arrive as one packet per batch.
        assert!(
            *protover == 0 || client.message_frames < COUNT / 2,
            "aggregated: {} frames for {COUNT} messages; the distributor published {} batches",
            client.message_frames,
            danmu_distributor::Stats::get(&distributor.stats.batches_out) - batches_before
        );
    }
    let batches = danmu_distributor::Stats::get(&distributor.stats.batches_out) - batches_before;
    let compressions =
        danmu_distributor::Stats::get(&distributor.stats.compressions) - compressions_before;
    let received = get(&gateway.stats.batches_received) - received_before;
    // Each batch is compressed once by the distributor, except a lone short message, which
    // leaves as a plain packet (the first message into the quiet room is one).
    let lone = batches - compressions;
    assert!(
        compressions <= batches && lone < batches / 2,
        "{compressions} compressions for {batches} batches"
    );
    assert!(
        batches < COUNT / 2,
        "{batches} batches for {COUNT} messages"
    );
    // Six members, but the gateway derives the raw and zlib encodings once per batch.
    assert!(
        received >= batches,
        "the gateway got every batch ({received} of {batches})"
    );
    // Every compressed batch is decoded once and re-encoded for zlib once; plain packets are
    // what every protover gets as they are.
    assert_eq!(
        get(&gateway.stats.zlib_encodes) - zlib_before,
        received - lone
    );
    assert_eq!(
        get(&gateway.stats.brotli_decodes) - raw_before,
        received - lone
    );
    distributor.shutdown().await?;
    Ok(())
}
