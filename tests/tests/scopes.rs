//! Each push scope reaches exactly the connections it should, across two regions: one user (all
//! of that user's connections, in every region), one device, one room, one region, everyone.

use std::collections::BTreeSet;
use std::time::Duration;

use danmu_proto::subjects::{Priority, Scope};
use danmu_tests::client::{Client, Transport};
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room::{self, danmu, receive_sequences};
use danmu_tests::supercluster;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_reaches_exactly_its_connections_across_regions() -> anyhow::Result<()> {
    let cluster = supercluster(&["A", "B"]).await?;
    let keys = Keys::generate();
    let mut gateways = Vec::new();
    let mut distributors = Vec::new();
    for region in ["A", "B"] {
        let url = cluster.region(region).client_url();
        distributors
            .push(danmu_distributor::start(fabric::distributor_config(&url, region)).await?);
        gateways.push(fabric::start_gateway(fabric::gateway_config(&url, region, &keys)).await?);
    }
    let (a, b) = (&gateways[0], &gateways[1]);
    // uid 1 is connected twice, once per region; tokens carry device "device-<uid>".
    let mut clients: Vec<Client> = vec![
        room::join(&keys, Transport::WebSocket, a.ws_addr.unwrap(), 1, 10, 3).await?,
        room::join(&keys, Transport::Tcp, b.tcp_addr.unwrap(), 1, 20, 2).await?,
        room::join(&keys, Transport::WebSocket, a.ws_addr.unwrap(), 2, 10, 0).await?,
        room::join(&keys, Transport::Tcp, b.tcp_addr.unwrap(), 3, 20, 3).await?,
    ];
    let cases: Vec<(Priority, Scope, Vec<usize>)> = vec![
        (Priority::High, Scope::User(1), vec![0, 1]),
        (Priority::Low, Scope::Device("device-2".into()), vec![2]),
        (Priority::Low, Scope::Room(20), vec![1, 3]),
        (Priority::High, Scope::Region("B".into()), vec![1, 3]),
        (Priority::Low, Scope::All, vec![0, 1, 2, 3]),
    ];

    // The business publishes from region A; region B's targets are reached through NATS
    // gateways. Each scope is warmed up first so its interest has reached both clusters.
    let business = cluster.region("A").connect_publisher().await?;
    for (priority, scope, reached) in &cases {
        let mut targets: Vec<&mut Client> = clients
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| reached.contains(i))
            .map(|(_, c)| c)
            .collect();
        room::warm_up_scope(&business, *priority, scope, &mut targets, WAIT).await?;
    }
    for (n, (priority, scope, _)) in cases.iter().enumerate() {
        room::publish_to(&business, *priority, scope, danmu(n as u64)).await?;
    }

    for (i, client) in clients.iter_mut().enumerate() {
        let expected: BTreeSet<u64> = cases
            .iter()
            .enumerate()
            .filter(|(_, (_, _, reached))| reached.contains(&i))
            .map(|(n, _)| n as u64)
            .collect();
        let got = receive_sequences(client, expected.len(), WAIT).await?;
        assert_eq!(
            got.iter().copied().collect::<BTreeSet<_>>(),
            expected,
            "connection {i}"
        );
        assert_eq!(got.len(), expected.len(), "connection {i} got a push twice");
    }
    // Nothing else arrives anywhere (warm-ups are only sent to each scope's own targets).
    for (i, client) in clients.iter_mut().enumerate() {
        loop {
            match client.next(Duration::from_millis(300)).await {
                Err(_) => break,
                Ok(danmu_tests::client::Event::Frame(frame)) => {
                    for payload in client.unpack(&frame)? {
                        let seq = room::sequence(&payload)?;
                        assert_eq!(seq, None, "connection {i} got an extra push {seq:?}");
                    }
                }
                Ok(other) => panic!("connection {i}: {other:?}"),
            }
        }
    }
    for distributor in distributors {
        distributor.shutdown().await?;
    }
    Ok(())
}
