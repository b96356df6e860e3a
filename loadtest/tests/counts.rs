//! The load tool's numbers are honest: against a small real fabric (nats-server, and our
//! distributor and gateway in-process) and against nats-server's own WebSocket listener, it
//! reports exactly the deliveries a known number of published messages calls for. Counts only;
//! timings are never asserted.

use std::time::Duration;

use danmu_loadtest::plan::{Target, TokenSource, Transport};
use danmu_loadtest::procfs::Watched;
use danmu_loadtest::run::{self, Report, RunConfig};
use danmu_tests::fabric::{self, Keys};

const CONNECTIONS: u64 = 50;
const ROOMS: u64 = 5;
/// 100 msg/s for 2 s: 200 messages, 40 per room, each room has 10 members.
const RATE: f64 = 100.0;
const SECONDS: u64 = 2;
const PUBLISHED: u64 = 200;
const SAMPLE_PER_WORKER: u64 = 3;
const WORKERS: usize = 2;

fn config(target: Target, transport: Transport, addr: std::net::SocketAddr) -> RunConfig {
    RunConfig {
        target,
        transport,
        connections: CONNECTIONS,
        rooms: ROOMS,
        rate: RATE,
        size: 120,
        duration: Duration::from_secs(SECONDS),
        workers: WORKERS,
        sample: SAMPLE_PER_WORKER,
        addr,
        nats_url: String::new(),
        token: TokenSource::None,
        first_room: 500,
        first_uid: 7_000,
        protover: 3,
        bulk_interval_ms: 0,
        drain: Duration::from_secs(30),
        connect_concurrency: 20,
        heartbeat_secs: 30,
        watch: vec![Watched {
            name: "gateway".into(),
            pid: std::process::id(),
        }],
        metrics: Vec::new(),
        exe: env!("CARGO_BIN_EXE_danmu-load").into(),
        verbose: true,
    }
}

fn assert_exact(report: &Report) {
    let per_room = PUBLISHED / ROOMS;
    assert_eq!(report.published, PUBLISHED, "{report:#?}");
    assert_eq!(report.expected, CONNECTIONS * per_room, "{report:#?}");
    assert_eq!(report.received, report.expected, "{report:#?}");
    assert_eq!((report.lost, report.extra), (0, 0), "{report:#?}");
    assert_eq!(report.loss_pct, 0.0);
    assert_eq!(report.connections_complete, CONNECTIONS, "{report:#?}");
    assert_eq!((report.connections_short, report.connections_over), (0, 0));
    assert_eq!(report.connections_closed, 0, "{:?}", report.errors);
    assert_eq!(report.error_count, 0, "{:?}", report.errors);
    assert!(report.complete);
    // Every sample connection decoded every message of its room, in order, no gaps.
    let samples = WORKERS as u64 * SAMPLE_PER_WORKER;
    assert_eq!(report.sample.connections, samples);
    assert_eq!(report.sample.messages, samples * per_room, "{report:#?}");
    assert!(report.sample.clean(), "{:?}", report.sample);
    assert_eq!(report.latency.count, samples * per_room);
    assert!(report.bytes_received > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_exact_counts_for_our_fabric_and_for_the_peer() -> anyhow::Result<()> {
    // Without the test fabric's NATS users, as `danmu-load fabric` runs it: the load tool's
    // publisher and the peer's WebSocket clients connect anonymously.
    let server = danmu_tests::nats::single_with(String::new(), false).await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let mut distributor = fabric::distributor_config(&url, "A");
    distributor.nats_nkey_seed = None;
    let _distributor = danmu_distributor::start(distributor).await?;
    let mut gateway = fabric::gateway_config(&url, "A", &keys);
    gateway.nats_nkey_seed = None;
    let gateway = fabric::start_gateway(gateway).await?;
    let token = TokenSource::Key {
        private_pem: keys.private_pem.clone(),
    };

    // Our gateway over WebSocket, brotli batches (protover 3).
    let mut ws = config(Target::Danmu, Transport::Ws, gateway.ws_addr.unwrap());
    ws.nats_url = url.clone();
    ws.token = token.clone();
    let report = run::run(&ws).await?;
    assert_exact(&report);
    assert_eq!(report.target, "danmu");

    // Over TCP, zlib batches (protover 2), in other rooms.
    let mut tcp = config(Target::Danmu, Transport::Tcp, gateway.tcp_addr.unwrap());
    tcp.nats_url = url.clone();
    tcp.token = token;
    tcp.protover = 2;
    tcp.first_room = 600;
    let report = run::run(&tcp).await?;
    assert_exact(&report);

    // The peer: nats-server's own WebSocket listener, one frame per message.
    let mut peer = config(
        Target::NatsWs,
        Transport::Ws,
        ([127, 0, 0, 1], server.ports().websocket).into(),
    );
    peer.nats_url = url.clone();
    peer.watch = vec![Watched {
        name: "nats-server".into(),
        pid: server.pid(),
    }];
    let report = run::run(&peer).await?;
    assert_exact(&report);
    assert_eq!(report.target, "nats-ws");
    assert_eq!(report.edge, "nats-server");
    Ok(())
}
