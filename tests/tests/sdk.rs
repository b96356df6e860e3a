//! The Rust client SDK (`danmu-client`) and the `danmu` CLI against the real fabric: a real
//! nats-server, the distributor, gateways (in-process, or a process to kill) and control.
//! Each SDK case runs per transport ([`per_transport!`]): ws, tcp, wss, tls and quic (every test
//! gateway serves all five on a self-signed certificate the client trusts through
//! `config.tls.extra_ca_pem`). The duplicate case loses ACKs in a plain
//! TCP proxy ([`AckDropper`]), which sees the packets of ws and tcp only: on the encrypted
//! transports it would have to terminate TLS (or QUIC) itself.
//!
//! Times the SDK documents (`client/src/client.rs`) and these tests hold it to:
//! - a gateway killed under the client: receiving from the next node within [`MOVE_WITHIN`]
//!   (the close is seen at once; then 0-250 ms of jitter, a node-list request, a connect,
//!   AUTH; well under a second on loopback);
//! - DRAIN: on the next node within [`MOVE_WITHIN`] of the DRAIN, which came before the close.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use danmu_client::connection::Drain;
use danmu_client::control::Control;
use danmu_client::nodes::Node;
use danmu_client::{Client, CloseReason, Config, Event, TlsOptions, TransportKind};
use danmu_gateway::stats::get;
use danmu_proto::frame::{self, op};
use danmu_proto::subjects::{Priority, Scope};
use danmu_proto::websocket;
use danmu_tests::eventually;
use danmu_tests::fabric::{self, GatewayProcess, Keys};
use danmu_tests::room::{self, danmu};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a client may take to receive from another node after losing its own.
const MOVE_WITHIN: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(30);
const ROOM: u64 = 4242;

/// Each case as a test on one transport.
macro_rules! cases {
    ($kind:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() -> anyhow::Result<()> {
            super::$case($kind).await
        }
    )*};
}

/// Runs every case once per transport, each in a module named after the transport.
macro_rules! per_transport {
    ($($name:ident => $kind:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            cases!(
                $kind;
                a_room_message_reaches_the_sdk,
                a_killed_gateway_s_client_receives_from_the_next_node,
                drain_moves_the_client_before_the_close,
            );
        }
    )*};
}

per_transport!(
    ws => TransportKind::Ws,
    tcp => TransportKind::Tcp,
    wss => TransportKind::Wss,
    tls => TransportKind::Tls,
    quic => TransportKind::Quic,
);

/// The duplicate case on the transports its ACK-dropping proxy can read.
mod duplicates_ws {
    use super::*;

    cases!(TransportKind::Ws; a_duplicate_high_priority_delivery_is_shown_once);
}

mod duplicates_tcp {
    use super::*;

    cases!(TransportKind::Tcp; a_duplicate_high_priority_delivery_is_shown_once);
}

/// NATS, a distributor, control, a business publisher; gateways are started by each test.
struct Fabric {
    server: danmu_tests::NatsServer,
    keys: Keys,
    _distributor: danmu_distributor::Distributor,
    control: fabric::Control,
    business: async_nats::Client,
    /// The gateways' certificate (every gateway serves wss, tls and quic too).
    cert: danmu_tests::tls::TestCert,
}

impl Fabric {
    async fn start() -> anyhow::Result<Fabric> {
        // The SDK's logs with `RUST_LOG` (e.g. `danmu_client=debug`), shown for failed tests.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let server = danmu_tests::single().await?;
        let url = server.client_url();
        let keys = Keys::generate();
        Ok(Fabric {
            _distributor: danmu_distributor::start(fabric::distributor_config(&url, "A")).await?,
            control: fabric::start_control(fabric::control_config(&url, "A", &keys)).await?,
            business: danmu_tests::nats::connect_publisher(&url).await?,
            server,
            keys,
            cert: danmu_tests::tls::TestCert::generate(),
        })
    }

    /// The TOML lines of a gateway process's TLS and QUIC listeners on this fabric's
    /// certificate.
    fn tls_toml(&self) -> String {
        format!(
            "wss_listen = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\nquic_listen = \"127.0.0.1:0\"\n\
             [[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
            self.cert.files.cert_file, self.cert.files.key_file
        )
    }

    fn control_url(&self) -> String {
        format!("http://{}", self.control.addr)
    }

    fn gateway_config(&self) -> danmu_gateway::Config {
        let mut config = fabric::gateway_config(&self.server.client_url(), "A", &self.keys);
        danmu_tests::tls::with_tls(&mut config, &self.cert);
        config
    }

    async fn gateway(&self) -> anyhow::Result<danmu_gateway::Gateway> {
        fabric::start_gateway(self.gateway_config()).await
    }

    /// Waits until control lists exactly `nodes`, in any order.
    async fn listed(&self, nodes: &[&str]) -> anyhow::Result<()> {
        let control = Control::new(&self.control_url(), &TlsOptions::default(), WAIT)?;
        let mut want: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        want.sort();
        eventually(format!("control lists {want:?}"), WAIT, async || {
            let list = control.nodes(Some("A"), None).await.ok()?;
            let mut ids: Vec<String> = list.nodes.into_iter().map(|n| n.node_id).collect();
            ids.sort();
            (ids == want).then_some(())
        })
        .await
    }

    /// An SDK client of room [`ROOM`] on `kind` only, with tokens from control.
    fn client(
        &self,
        kind: TransportKind,
        uid: u64,
        nodes: Option<Vec<Node>>,
    ) -> anyhow::Result<Client> {
        let mut config = Config::new(&self.control_url(), ROOM, uid);
        config.region = Some("A".into());
        config.transports = vec![kind];
        config.nodes = nodes;
        config.tls.extra_ca_pem = Some(self.cert.files.cert_file.clone());
        if kind == TransportKind::Quic {
            // A killed gateway's UDP port answers nothing (no FIN, no RST, no stateless reset
            // from a process that is gone): the client learns of it from an unanswered
            // heartbeat. The defaults (30 s + 10 s) are for millions of idle phones; a test
            // that kills gateways asks sooner, as an application that must move fast may.
            config.timing.heartbeat_interval = Duration::from_secs(2);
            config.timing.heartbeat_reply_timeout = Duration::from_secs(2);
        }
        let control = Control::new(&self.control_url(), &TlsOptions::default(), WAIT)?;
        Ok(Client::start(config, move || {
            let control = control.clone();
            async move { control.token(None, uid, &[ROOM]).await.map(|t| t.token) }
        })?)
    }

    /// A client of `uid` on `kind` receiving room messages on gateway `first` (the only one
    /// listed when it connects), and a second gateway listed beside it: somewhere to go.
    async fn receiving_on(
        &self,
        first: &str,
        kind: TransportKind,
        uid: u64,
    ) -> anyhow::Result<(Client, danmu_gateway::Gateway, Publisher)> {
        self.listed(&[first]).await?;
        let mut client = self.client(kind, uid, None)?;
        assert_eq!(connected(&mut client, kind).await?, first);
        let next = self.gateway().await?;
        self.listed(&[first, &next.node_id]).await?;
        let publisher = self.publisher(Priority::Low);
        next_message(&mut client, WAIT).await?;
        Ok((client, next, publisher))
    }

    /// `danmu <command> --control <this control> --room <ROOM> <args>`.
    fn cli(&self, command: &str, args: &[&str]) -> anyhow::Result<tokio::process::Command> {
        let mut cli =
            tokio::process::Command::new(fabric::workspace_binary("danmu", "danmu-client")?);
        cli.args([
            command,
            "--control",
            &self.control_url(),
            "--room",
            &ROOM.to_string(),
        ])
        .args(args);
        Ok(cli)
    }

    /// Publishes numbered danmu into the room every 50 ms until dropped.
    fn publisher(&self, priority: Priority) -> Publisher {
        let business = self.business.clone();
        let next = Arc::new(AtomicU64::new(0));
        let counter = next.clone();
        let task = tokio::spawn(async move {
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let _ = room::publish_to(&business, priority, &Scope::Room(ROOM), danmu(n)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Publisher { task, next }
    }
}

struct Publisher {
    task: tokio::task::JoinHandle<()>,
    next: Arc<AtomicU64>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The next event within `timeout`; an error when none came or the client stopped.
async fn next_event(client: &mut Client, timeout: Duration) -> anyhow::Result<Event> {
    tokio::time::timeout(timeout, client.next_event())
        .await
        .context("no event in time")?
        .context("the client stopped")
}

/// Skips events until `Connected` (checking its transport and region); returns its node.
async fn connected(client: &mut Client, kind: TransportKind) -> anyhow::Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        match next_event(client, deadline.saturating_duration_since(Instant::now())).await? {
            Event::Connected {
                transport,
                node,
                region,
                ..
            } => {
                anyhow::ensure!(transport == kind, "connected over {transport}, not {kind}");
                anyhow::ensure!(region == "A");
                return Ok(node);
            }
            Event::Stopped { reason } => bail!("stopped: {reason}"),
            _ => {}
        }
    }
}

/// The sequence number of the next business message (warm-up messages skipped); a
/// disconnection before it is an error.
async fn next_message(
    client: &mut Client,
    timeout: Duration,
) -> anyhow::Result<(u64, Bytes, Option<u32>)> {
    let deadline = Instant::now() + timeout;
    loop {
        match next_event(client, deadline.saturating_duration_since(Instant::now())).await? {
            Event::Message(message) => {
                if let Some(n) = room::sequence(&message.body)? {
                    return Ok((n, message.body, message.delivery_id));
                }
            }
            Event::Disconnected { reason } => {
                bail!("disconnected while waiting for a message: {reason}")
            }
            Event::Stopped { reason } => bail!("stopped: {reason}"),
            _ => {}
        }
    }
}

/// Skips messages and online counts until the client reports its disconnection.
async fn disconnection(client: &mut Client) -> anyhow::Result<CloseReason> {
    loop {
        match next_event(client, MOVE_WITHIN).await? {
            Event::Disconnected { reason } => return Ok(reason),
            Event::Message(_) | Event::Online { .. } => {}
            other => bail!("expected the disconnection, got {other:?}"),
        }
    }
}

async fn a_room_message_reaches_the_sdk(kind: TransportKind) -> anyhow::Result<()> {
    let fabric = Fabric::start().await?;
    let gateway = fabric.gateway().await?;
    fabric.listed(&[&gateway.node_id]).await?;
    let mut client = fabric.client(kind, 7, None)?;
    let node = connected(&mut client, kind).await?;
    assert_eq!(node, gateway.node_id);
    match next_event(&mut client, WAIT).await? {
        Event::Online { .. } => {}
        other => bail!("the heartbeat at join answers with the online count first, got {other:?}"),
    }
    let _publisher = fabric.publisher(Priority::Low);
    let (n, body, delivery_id) = next_message(&mut client, WAIT).await?;
    assert_eq!(body, danmu(n), "the payload as business published it");
    assert_eq!(delivery_id, None, "low priority carries no delivery id");
    Ok(())
}

async fn a_killed_gateway_s_client_receives_from_the_next_node(
    kind: TransportKind,
) -> anyhow::Result<()> {
    let fabric = Fabric::start().await?;
    let doomed_id = format!("sdk-doomed-{}", std::process::id());
    let doomed = GatewayProcess::start(
        &fabric.server.client_url(),
        &doomed_id,
        &fabric.keys,
        &format!(
            "report_interval = \"500ms\"\nnode_ttl = \"5s\"\n{}",
            fabric.tls_toml()
        ),
    )
    .await?;
    let (mut client, next, publisher) = fabric.receiving_on(&doomed_id, kind, 8).await?;

    let killed_at = Instant::now();
    doomed.signal(libc::SIGKILL)?;
    let reason = disconnection(&mut client).await?;
    assert!(
        !matches!(reason, CloseReason::Drain(_)),
        "a killed gateway sends no DRAIN: {reason}"
    );
    assert_eq!(connected(&mut client, kind).await?, next.node_id);
    let published_after = publisher.next.load(Ordering::Relaxed);
    let (n, _, _) = loop {
        let message = next_message(&mut client, MOVE_WITHIN).await?;
        if message.0 >= published_after {
            break message;
        }
    };
    let moved = killed_at.elapsed();
    eprintln!(
        "kill: message #{n} received from {} {moved:?} after the kill",
        next.node_id
    );
    assert!(moved < MOVE_WITHIN, "receiving again after {moved:?}");
    Ok(())
}

async fn drain_moves_the_client_before_the_close(kind: TransportKind) -> anyhow::Result<()> {
    let fabric = Fabric::start().await?;
    let mut config = fabric.gateway_config();
    config.drain_period = Duration::from_millis(300);
    let draining = fabric::start_gateway(config).await?;
    let draining_id = draining.node_id.clone();
    let (mut client, next, _publisher) = fabric.receiving_on(&draining_id, kind, 9).await?;

    let shutdown = tokio::spawn(draining.shutdown(Duration::from_secs(5)));
    let reason = disconnection(&mut client).await?;
    let drained_at = Instant::now();
    // A DRAIN reason means the packet came before the socket closed (a close first would
    // read as `ServerClosed`).
    assert!(
        matches!(&reason, CloseReason::Drain(Drain { reason, .. }) if reason == "shutdown"),
        "left because of DRAIN: {reason:?}"
    );
    assert_eq!(
        connected(&mut client, kind).await?,
        next.node_id,
        "another node"
    );
    next_message(&mut client, MOVE_WITHIN).await?;
    let moved = drained_at.elapsed();
    eprintln!(
        "drain: receiving from {} {moved:?} after the DRAIN",
        next.node_id
    );
    assert!(moved < MOVE_WITHIN);
    shutdown.await?;
    Ok(())
}

async fn a_duplicate_high_priority_delivery_is_shown_once(
    kind: TransportKind,
) -> anyhow::Result<()> {
    let fabric = Fabric::start().await?;
    let mut config = fabric.gateway_config();
    config.reach_retry = Duration::from_millis(200);
    let gateway = fabric::start_gateway(config).await?;
    let target = match kind {
        TransportKind::Ws => gateway.ws_addr,
        _ => gateway.tcp_addr,
    }
    .context("the gateway listens on ws and tcp")?;
    let proxy = AckDropper::start(target, kind == TransportKind::Ws).await?;
    // The SDK reaches the gateway through the proxy only: a fixed node list.
    let mut node = Node {
        node_id: gateway.node_id.clone(),
        region: "A".into(),
        ..Default::default()
    };
    match kind {
        TransportKind::Ws => node.ws = proxy.addr.to_string(),
        _ => node.tcp = proxy.addr.to_string(),
    }
    let mut client = fabric.client(kind, 10, Some(vec![node]))?;
    connected(&mut client, kind)
        .await
        .context("connecting through the proxy")?;

    // High-priority room messages; each one's first ACK is lost, so the gateway sends it
    // again, byte for byte, with the same delivery id.
    let publisher = fabric.publisher(Priority::High);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut ids: HashMap<u32, u32> = HashMap::new();
    while seen.len() < 5 {
        let (n, _, id) = next_message(&mut client, WAIT)
            .await
            .with_context(|| format!("high-priority messages so far: {seen:?}"))?;
        *seen.entry(n).or_default() += 1;
        *ids.entry(id.context("high priority carries a delivery id")?)
            .or_default() += 1;
    }
    drop(publisher);
    eventually(
        "the gateway has retried and every delivery is acknowledged",
        WAIT,
        async || {
            let retried = get(&gateway.stats.reach_retried);
            (retried >= 5 && get(&gateway.stats.reach_acked) == get(&gateway.stats.reach_delivered))
                .then_some(())
        },
    )
    .await?;
    assert!(proxy.dropped.load(Ordering::Relaxed) >= 5);
    // A last message after every retry: anything the duplicates made would come before it.
    let barrier = 1_000_000;
    room::publish_to(
        &fabric.business,
        Priority::High,
        &Scope::Room(ROOM),
        danmu(barrier),
    )
    .await?;
    loop {
        let (n, _, id) = next_message(&mut client, WAIT).await?;
        if n == barrier {
            break;
        }
        *seen.entry(n).or_default() += 1;
        *ids.entry(id.context("high priority carries a delivery id")?)
            .or_default() += 1;
    }
    assert!(
        seen.values().all(|count| *count == 1),
        "each message once: {seen:?}"
    );
    assert!(
        ids.values().all(|count| *count == 1),
        "each delivery id once: {ids:?}"
    );
    Ok(())
}

/// A TCP proxy in front of a gateway that loses the client's first ACK (op 1006) of every
/// delivery id, so the gateway retries it: what a lossy path does to an ACK. Server-to-client
/// bytes pass untouched. With `websocket`, the upgrade request passes as is and client frames
/// are decoded, filtered and masked again.
struct AckDropper {
    addr: std::net::SocketAddr,
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AckDropper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AckDropper {
    async fn start(target: std::net::SocketAddr, websocket: bool) -> anyhow::Result<AckDropper> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = proxy(client, server, websocket, counter).await;
                    }
                });
            }
        });
        Ok(AckDropper {
            addr,
            dropped,
            task,
        })
    }
}

async fn proxy(
    client: TcpStream,
    server: TcpStream,
    websocket: bool,
    dropped: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_client).await });
    let mut buf = BytesMut::new();
    if websocket {
        // The upgrade request, whole, as is.
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            anyhow::ensure!(
                from_client.read_buf(&mut buf).await? > 0,
                "closed in the upgrade"
            );
        };
        to_server.write_all(&buf.split_to(end)).await?;
    }
    let mut decoder = websocket::Decoder::new(websocket::Role::Server, 1 << 20);
    let mut acked = std::collections::HashSet::new();
    let mut keep = |packet: &frame::Frame| {
        let first_ack = packet.op == op::ACK && acked.insert(packet.seq);
        if first_ack {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        !first_ack
    };
    loop {
        if from_client.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        if !websocket {
            while let Some(packet) = frame::decode(&mut buf, 1 << 20)? {
                if keep(&packet) {
                    to_server.write_all(&packet.to_bytes()).await?;
                }
            }
            continue;
        }
        while let Some(message) = decoder.decode(&mut buf)? {
            let (opcode, payload) = match message {
                websocket::Message::Binary(payload) => {
                    let mut packets = BytesMut::from(payload);
                    let mut kept = BytesMut::new();
                    while let Some(packet) = frame::decode(&mut packets, 1 << 20)? {
                        if keep(&packet) {
                            kept.extend_from_slice(&packet.to_bytes());
                        }
                    }
                    if kept.is_empty() {
                        continue;
                    }
                    (websocket::opcode::BINARY, kept.freeze())
                }
                websocket::Message::Close(reason) => {
                    let (code, text) = reason.unwrap_or((1000, String::new()));
                    let mut payload = code.to_be_bytes().to_vec();
                    payload.extend_from_slice(text.as_bytes());
                    (websocket::opcode::CLOSE, Bytes::from(payload))
                }
                websocket::Message::Ping(p) => (websocket::opcode::PING, p),
                websocket::Message::Pong(p) => (websocket::opcode::PONG, p),
                websocket::Message::Text(t) => (websocket::opcode::TEXT, t),
            };
            to_server
                .write_all(&websocket::client_frame(opcode, &payload, [1, 2, 3, 4]))
                .await?;
        }
    }
}

/// `danmu watch --json` joins a room through control and prints each message as a JSON line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_room_message_as_a_json_line() -> anyhow::Result<()> {
    let fabric = Fabric::start().await?;
    let gateway = fabric.gateway().await?;
    fabric.listed(&[&gateway.node_id]).await?;
    let mut cli = fabric
        .cli(
            "watch",
            &[
                "--uid",
                "11",
                "--json",
                "--count",
                "1",
                "--transports",
                "ws,tcp",
            ],
        )?
        .env_remove("DANMU_API_KEY")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(cli.stdout.take().context("stdout")?).lines();
    let _publisher = fabric.publisher(Priority::Low);
    let mut events = Vec::new();
    let message = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            let event: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("not a JSON line: {line:?}"))?;
            events.push(event["event"].as_str().unwrap_or_default().to_owned());
            if event["event"] == "message" && event["body"]["cmd"] != room::WARMUP {
                return Ok::<_, anyhow::Error>(event);
            }
        }
        bail!("the CLI ended without a message: {events:?}")
    })
    .await
    .context("no message line in time")??;
    assert_eq!(message["body"]["cmd"], "DANMU_MSG", "{message}");
    assert!(message["body"]["n"].is_u64(), "{message}");
    assert_eq!(
        events.first().map(String::as_str),
        Some("connected"),
        "{events:?}"
    );
    let status = tokio::time::timeout(WAIT, cli.wait()).await??;
    assert!(
        status.success(),
        "--count 1 exits after one message: {status}"
    );
    Ok(())
}

/// `danmu send --json` joins, sends one danmu upstream and prints the gateway's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_a_danmu_and_prints_the_reply() -> anyhow::Result<()> {
    let fabric = Fabric::start().await?;
    let gateway = fabric.gateway().await?;
    fabric.listed(&[&gateway.node_id]).await?;
    let output = fabric
        .cli(
            "send",
            &[
                "--uid",
                "12",
                "--json",
                "--transports",
                "tcp",
                "hello from the CLI",
            ],
        )?
        .env_remove("DANMU_API_KEY")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, output).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}: {stdout}", output.status);
    let reply: serde_json::Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["event"] == "upstream_reply")
        .with_context(|| format!("no reply line in {stdout:?}"))?;
    assert_eq!(reply["reply"]["code"], 0, "{reply}");
    assert!(reply["reply"]["id"].is_string(), "{reply}");
    Ok(())
}
