//! `danmu-load idle`: memory per idle connection, per transport, beside nats-server's own
//! WebSocket listener measured in the same run.
//!
//! 1. Starts one real nats-server (JetStream on, its WebSocket listener on) and a token key.
//! 2. Peer (`nats-ws`): samples nats-server's VmRSS until stable, opens N WebSocket connections
//!    to its own listener, each subscribing to `danmu.edge.room.<k>` (100 rooms) and waiting
//!    for PONG, samples again until stable, checks every connection is still open, closes them
//!    and waits for the server to count 0 clients.
//! 3. Each gateway transport (`ws`, `tcp`): a FRESH `danmu-gateway` child process (so one
//!    transport never reuses memory the previous one freed), ready when its health report is in
//!    the nodes KV bucket and a probe client per transport authenticates; VmRSS sampled until
//!    stable, N connections opened (WebSocket upgrade on `/sub` or raw TCP, AUTH with a valid
//!    token into one of 100 rooms, AUTH_REPLY code 0), sampled again until stable, every
//!    connection checked still open and silent, gateway stopped (SIGTERM).
//!
//! "Stable" means two consecutive samples 200 ms apart within 1 %. The figure is
//! (RSS after - RSS before) / N, in KiB.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::BytesMut;
use clap::ValueEnum;
use danmu_proto::websocket;
use danmu_tests::client::{Client, Transport};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::fabric::{Fabric, FabricOptions};
use crate::procfs;

/// Rooms the connections are spread over.
const ROOMS: u64 = 100;
/// First room id.
const FIRST_ROOM: u64 = 1001;
/// The gateway's protocol version for AUTH (3 = brotli, what current web clients ask for).
const PROTOVER: u16 = 3;
/// RSS sampling: interval, relative tolerance between two samples, and deadline.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const STABLE_WITHIN: f64 = 0.01;
const STABLE_DEADLINE: Duration = Duration::from_secs(60);
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// File descriptors this process needs besides the connections.
const FD_MARGIN: u64 = 256;

/// What holds the idle connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IdleTarget {
    /// nats-server's own WebSocket listener (the peer).
    NatsWs,
    /// Our gateway over WebSocket.
    Ws,
    /// Our gateway over TCP.
    Tcp,
    /// Our gateway over WebSocket on TLS.
    Wss,
    /// Our gateway over TLS on TCP.
    Tls,
    /// Our gateway over QUIC (one stream per connection).
    Quic,
}

impl IdleTarget {
    fn label(self) -> &'static str {
        match self {
            IdleTarget::NatsWs => "nats-server websocket",
            IdleTarget::Ws => "gateway websocket",
            IdleTarget::Tcp => "gateway tcp",
            IdleTarget::Wss => "gateway wss",
            IdleTarget::Tls => "gateway tls",
            IdleTarget::Quic => "gateway quic",
        }
    }

    /// The SPEC's bar, KiB per connection.
    fn bar_kib(self) -> Option<f64> {
        match self {
            IdleTarget::NatsWs => None,
            IdleTarget::Ws => Some(4.0),
            IdleTarget::Tcp => Some(3.0),
            // SPEC: TLS transports at most twice their plain form's bar; QUIC 16 KiB.
            IdleTarget::Wss => Some(8.0),
            IdleTarget::Tls => Some(6.0),
            IdleTarget::Quic => Some(16.0),
        }
    }
}

pub struct IdleOptions {
    pub connections: usize,
    pub targets: Vec<IdleTarget>,
    pub concurrency: usize,
    pub gateway_bin: std::path::PathBuf,
    /// Batches of [`BURST_MESSAGES`] published to every room after the idle sample (0: none).
    pub burst_batches: usize,
    pub verbose: bool,
}

/// Messages per batch of the burst.
const BURST_MESSAGES: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub target: String,
    pub connections: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub kib_per_conn: f64,
    /// The same after every connection received a burst and went idle again (gateway rows,
    /// with `--burst-batches` above 0).
    pub kib_per_conn_after_burst: Option<f64>,
    /// Seconds taken to open (and authenticate) every connection.
    pub open_secs: f64,
    /// peer KiB/conn ÷ this KiB/conn (gateway rows, when the peer was measured).
    pub ratio: Option<f64>,
    pub bar_kib: Option<f64>,
    pub bar_met: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub machine: String,
    pub nats_server: String,
    pub connections: usize,
    pub rooms: u64,
    pub rows: Vec<Measurement>,
}

pub async fn run(options: &IdleOptions) -> anyhow::Result<IdleReport> {
    let n = options.connections;
    ensure!(n > 0, "--connections must be at least 1");
    ensure!(options.concurrency > 0, "--concurrency must be at least 1");
    procfs::raise_fd_limit(n as u64 + FD_MARGIN)?;
    ensure!(
        options.gateway_bin.is_file() || options.targets == [IdleTarget::NatsWs],
        "{} not found: run `cargo build --release -p danmu-gateway` first (or pass --gateway-bin)",
        options.gateway_bin.display()
    );
    let fabric = Fabric::start(&FabricOptions {
        gateway_bin: options.gateway_bin.clone(),
        distributor_bin: Default::default(),
        gateway_toml: String::new(),
        distributor_toml: String::new(),
        services: false,
    })
    .await?;
    let mut rows: Vec<Measurement> = Vec::new();
    // The peer first, so the gateway rows can carry the ratio.
    let mut targets = options.targets.clone();
    targets.sort_by_key(|t| *t != IdleTarget::NatsWs);
    targets.dedup();
    for target in targets {
        if options.verbose {
            eprintln!("danmu-load idle: {n} connections to {}", target.label());
        }
        let mut row = match target {
            IdleTarget::NatsWs => measure_peer(&fabric, n, options.concurrency).await,
            IdleTarget::Ws
            | IdleTarget::Tcp
            | IdleTarget::Wss
            | IdleTarget::Tls
            | IdleTarget::Quic => {
                measure_gateway(
                    &fabric,
                    &options.gateway_bin,
                    target,
                    n,
                    options.concurrency,
                    options.burst_batches,
                )
                .await
            }
        }
        .with_context(|| format!("measuring {}", target.label()))?;
        let peer = rows.iter().find(|r| r.target == IdleTarget::NatsWs.label());
        row.ratio = peer
            .filter(|_| target != IdleTarget::NatsWs)
            .map(|p| p.kib_per_conn / row.kib_per_conn.max(f64::MIN_POSITIVE));
        row.bar_kib = target.bar_kib();
        row.bar_met = row.bar_kib.map(|bar| {
            row.kib_per_conn <= bar && row.kib_per_conn_after_burst.is_none_or(|b| b <= bar)
        });
        rows.push(row);
    }
    Ok(IdleReport {
        machine: crate::report::machine(),
        nats_server: crate::fabric::nats_server_version(),
        connections: n,
        rooms: ROOMS,
        rows,
    })
}

pub fn table(report: &IdleReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>11} {:>11} {:>11} {:>9} {:>12} {:>7} {:>5} {:>8}",
        "target",
        "connections",
        "RSS before",
        "RSS after",
        "KiB/conn",
        "after burst",
        "ratio",
        "bar",
        "met"
    );
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for row in &report.rows {
        let _ = writeln!(
            out,
            "{:<24} {:>11} {:>11} {:>11} {:>9.2} {:>12} {:>7} {:>5} {:>8}",
            row.target,
            row.connections,
            mib(row.rss_before_kib),
            mib(row.rss_after_kib),
            row.kib_per_conn,
            row.kib_per_conn_after_burst
                .map_or("-".into(), |k| format!("{k:.2}")),
            row.ratio.map_or("-".into(), |r| format!("{r:.1}x")),
            row.bar_kib.map_or("-".into(), |b| format!("≤{b}")),
            match row.bar_met {
                None => "-",
                Some(true) => "met",
                Some(false) => "NOT met",
            }
        );
    }
    let _ = writeln!(
        out,
        "({} rooms; machine: {}; nats-server {}; KiB/conn = (RSS after - RSS before) / connections; \
         ratio = peer KiB/conn ÷ ours)",
        report.rooms, report.machine, report.nats_server
    );
    out
}

/// Samples VmRSS every 200 ms until two consecutive samples are within 1 %.
async fn stable_rss(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + STABLE_DEADLINE;
    let mut last = procfs::rss_kib(pid)?;
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let now = procfs::rss_kib(pid)?;
        if (now as f64 - last as f64).abs() <= last as f64 * STABLE_WITHIN {
            return Ok(now);
        }
        ensure!(
            Instant::now() < deadline,
            "RSS of pid {pid} did not settle within {STABLE_DEADLINE:?} (last samples {last} and {now} KiB)"
        );
        last = now;
    }
}

fn room_of(i: usize) -> u64 {
    FIRST_ROOM + i as u64 % ROOMS
}

fn measurement(target: IdleTarget, n: usize, before: u64, after: u64, open: f64) -> Measurement {
    Measurement {
        target: target.label().into(),
        connections: n,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_conn: after.saturating_sub(before) as f64 / n as f64,
        kib_per_conn_after_burst: None,
        open_secs: open,
        ratio: None,
        bar_kib: None,
        bar_met: None,
    }
}

async fn measure_gateway(
    fabric: &Fabric,
    bin: &Path,
    target: IdleTarget,
    n: usize,
    concurrency: usize,
    burst_batches: usize,
) -> anyhow::Result<Measurement> {
    let (ws, tcp) = (crate::fabric::free_addr(), crate::fabric::free_addr());
    let (wss, tls, quic) = (
        crate::fabric::free_addr(),
        crate::fabric::free_addr(),
        crate::fabric::free_addr(),
    );
    let name = format!("gateway-{target:?}").to_lowercase();
    // Every listener on every run, so the rows differ by what the clients use, not by what
    // the gateway loaded. The QUIC idle timeout as long as the heartbeat timeout the fabric
    // sets: idle load clients send no heartbeats.
    let cert = danmu_tests::tls::TestCert::generate();
    let extra = format!(
        "wss_listen = \"{wss}\"\ntls_listen = \"{tls}\"\nquic_listen = \"{quic}\"\n\
         [[tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n\
         [quic]\nmax_idle_timeout = \"1h\"\n",
        cert.files.cert_file, cert.files.key_file
    );
    let mut gateway = fabric
        .spawn_gateway(&name, bin, (ws, tcp), None, &extra)
        .await?;
    let pid = gateway.pid();
    let before = stable_rss(pid).await?;
    let (transport, addr) = match target {
        IdleTarget::Tcp | IdleTarget::Tls | IdleTarget::Quic => (Transport::Tcp, tcp),
        _ => (Transport::WebSocket, ws),
    };
    let client_tls = |alpn: &[&[u8]]| danmu_tests::client::Tls {
        config: cert.client_config(alpn),
        server_name: "localhost".into(),
    };
    let how = match target {
        IdleTarget::Wss => Connect::Tls(wss, client_tls(&[b"http/1.1"])),
        IdleTarget::Tls => Connect::Tls(tls, client_tls(&[])),
        IdleTarget::Quic => Connect::Quic(quic, quic_client_endpoint(&cert)?),
        _ => Connect::Plain(addr),
    };
    let (keys, how) = (&fabric.keys, &how);
    let started = Instant::now();
    let mut clients: Vec<Client> = futures::stream::iter(0..n)
        .map(|i| async move {
            let uid = i as u64 + 1;
            let room = room_of(i);
            let mut client = match how {
                Connect::Plain(addr) => Client::connect(transport, *addr).await,
                Connect::Tls(addr, tls) => Client::connect_tls(transport, *addr, tls).await,
                Connect::Quic(addr, endpoint) => {
                    async {
                        let connection = endpoint.connect(*addr, "localhost")?.await?;
                        danmu_tests::tls::quic_client(&connection).await
                    }
                    .await
                }
            }
            .with_context(|| format!("connection {i} of {n}"))?;
            let token = keys.token(uid, Some(vec![room]), Duration::from_secs(3600));
            let code = client.auth(uid, room, PROTOVER, &token).await?;
            ensure!(code == 0, "connection {i}: AUTH_REPLY code {code}");
            anyhow::Ok(client)
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .map_err(|e| match gateway.check_running() {
            Ok(()) => e,
            Err(exited) => e.context(exited.to_string()),
        })?;
    let open_secs = started.elapsed().as_secs_f64();
    let after = stable_rss(pid).await?;
    gateway.check_running()?;
    // Every connection must still be open and silent, or the figure means nothing.
    let closed = futures::stream::iter(clients.iter_mut())
        .map(|client| async move {
            match client.next(Duration::from_millis(100)).await {
                Err(_) => None,
                Ok(event) => Some(format!("{event:?}")),
            }
        })
        .buffer_unordered(concurrency.max(1000))
        .filter_map(|x| async move { x })
        .collect::<Vec<_>>()
        .await;
    ensure!(
        closed.is_empty(),
        "{} of {n} gateway connections were not idle at the end, e.g. {}",
        closed.len(),
        closed[0]
    );
    let mut row = measurement(target, n, before, after, open_secs);
    if burst_batches > 0 {
        burst(fabric, &mut clients, burst_batches, concurrency).await?;
        let after_burst = stable_rss(pid).await?;
        gateway.check_running()?;
        row.kib_per_conn_after_burst = Some(after_burst.saturating_sub(before) as f64 / n as f64);
    }
    drop(clients);
    drop(gateway);
    Ok(row)
}

/// How the load client reaches the gateway for one target.
enum Connect {
    Plain(std::net::SocketAddr),
    Tls(std::net::SocketAddr, danmu_tests::client::Tls),
    /// One client endpoint (one UDP socket) for every connection.
    Quic(std::net::SocketAddr, quinn::Endpoint),
}

/// A QUIC client endpoint trusting `cert`, offering ALPN `danmu/1`.
fn quic_client_endpoint(cert: &danmu_tests::tls::TestCert) -> anyhow::Result<quinn::Endpoint> {
    let crypto = cert.client_config(&[danmu_gateway::transport::quic::ALPN_DANMU]);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)?;
    let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    Ok(endpoint)
}

/// Publishes `batches` edge batches of [`BURST_MESSAGES`] danmu to every room (as the
/// distributor would: brotli, on the room's low-priority edge subject) and waits until every
/// client has read all of its messages, so each connection's write path has carried traffic.
async fn burst(
    fabric: &Fabric,
    clients: &mut [Client],
    batches: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    use danmu_proto::subjects::{self, Priority, Scope};
    use prost::Message as _;
    let nats = async_nats::connect(fabric.nats.client_url()).await?;
    let mut seq = 0u64;
    for b in 0..batches {
        for room in FIRST_ROOM..FIRST_ROOM + ROOMS {
            let first = (b * BURST_MESSAGES) as u64;
            let bodies: Vec<bytes::Bytes> = (first..first + BURST_MESSAGES as u64)
                .map(danmu_tests::room::danmu)
                .collect();
            let raw = danmu_proto::batch::encode_messages(bodies.iter().map(|b| b.as_ref()));
            let packet = danmu_proto::batch::compressed_packet(
                danmu_proto::frame::version::BROTLI,
                &danmu_proto::batch::brotli_compress(
                    &raw,
                    danmu_proto::batch::DEFAULT_BROTLI_QUALITY,
                ),
            );
            let seqs: Vec<u64> = (seq + 1..=seq + BURST_MESSAGES as u64).collect();
            seq += BURST_MESSAGES as u64;
            let edge = danmu_proto::internal::EdgeBatch {
                packet,
                origin: "A".into(),
                stream: "PUSH_LO_A".into(),
                first_stream_seq: seqs[0],
                last_stream_seq: *seqs.last().expect("not empty"),
                message_count: BURST_MESSAGES as u32,
                raw_body_len: raw.len() as u32,
                priority: danmu_proto::internal::Priority::Low as i32,
                stream_seqs: seqs,
                ..Default::default()
            };
            nats.publish(
                subjects::edge(Priority::Low, &Scope::Room(room)),
                edge.encode_to_vec().into(),
            )
            .await?;
        }
    }
    nats.flush().await?;
    let want = batches * BURST_MESSAGES;
    let short = futures::stream::iter(clients.iter_mut())
        .map(|client| async move {
            danmu_tests::room::receive_sequences(client, want, Duration::from_secs(60))
                .await
                .err()
        })
        .buffer_unordered(concurrency.max(1000))
        .filter_map(|x| async move { x })
        .collect::<Vec<_>>()
        .await;
    ensure!(
        short.is_empty(),
        "{} of {} connections did not receive the burst, e.g. {:#}",
        short.len(),
        clients.len(),
        short[0]
    );
    Ok(())
}

async fn measure_peer(
    fabric: &Fabric,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Measurement> {
    let server = &fabric.nats;
    let pid = server.pid();
    let addr = fabric.nats_ws_addr();
    // One probe first, so the listener's first-use costs are in the baseline as for the gateway.
    drop(nats_ws_subscribe(addr, FIRST_ROOM).await.context("probe")?);
    wait_no_clients(server).await?;
    let before = stable_rss(pid).await?;
    let started = Instant::now();
    let mut streams: Vec<TcpStream> = futures::stream::iter(0..n)
        .map(|i| async move {
            nats_ws_subscribe(addr, room_of(i))
                .await
                .with_context(|| format!("connection {i} of {n} to nats-server at {addr}"))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let open_secs = started.elapsed().as_secs_f64();
    let after = stable_rss(pid).await?;
    let closed = futures::stream::iter(streams.iter_mut())
        .map(|stream| async move {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut byte)).await {
                Err(_) | Ok(Ok(1..)) => false,
                Ok(Ok(0) | Err(_)) => true,
            }
        })
        .buffer_unordered(concurrency.max(1000))
        .filter(|closed| std::future::ready(*closed))
        .count()
        .await;
    ensure!(
        closed == 0,
        "{closed} of {n} nats-server WebSocket connections closed before the end"
    );
    drop(streams);
    wait_no_clients(server).await?;
    Ok(measurement(IdleTarget::NatsWs, n, before, after, open_secs))
}

async fn wait_no_clients(server: &danmu_tests::NatsServer) -> anyhow::Result<()> {
    danmu_tests::eventually(
        "nats-server to count 0 client connections",
        READY_DEADLINE,
        async || -> anyhow::Result<Option<()>> {
            let varz = server.monitor_json("/varz").await?;
            Ok((varz["connections"].as_u64() == Some(0)).then_some(()))
        },
    )
    .await
}

/// A WebSocket connection to nats-server that has subscribed to room `room`'s edge subject and
/// seen the PONG to its PING.
async fn nats_ws_subscribe(addr: SocketAddr, room: u64) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let request = websocket::client_request(&addr.to_string(), "/", "dGhlIHNhbXBsZSBub25jZQ==");
    stream.write_all(&request).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + READY_DEADLINE;
    let read = async |stream: &mut TcpStream, buf: &mut BytesMut| -> anyhow::Result<()> {
        let n = tokio::time::timeout_at(deadline, stream.read_buf(buf))
            .await
            .context("timed out")??;
        ensure!(n > 0, "nats-server closed the connection");
        Ok(())
    };
    loop {
        if let Some((status, consumed)) = websocket::parse_response(&buf)? {
            ensure!(status == 101, "upgrade refused with HTTP {status}");
            let _ = buf.split_to(consumed);
            break;
        }
        read(&mut stream, &mut buf).await?;
    }
    let mut decoder = websocket::Decoder::new(websocket::Role::Client, 1 << 20);
    // NATS protocol text carried by the WebSocket messages so far.
    let mut text = Vec::new();
    let mut sent = false;
    loop {
        while let Some(message) = decoder.decode(&mut buf)? {
            match message {
                websocket::Message::Binary(payload) | websocket::Message::Text(payload) => {
                    text.extend_from_slice(&payload)
                }
                websocket::Message::Close(why) => bail!("nats-server closed: {why:?}"),
                websocket::Message::Ping(_) | websocket::Message::Pong(_) => {}
            }
        }
        let body = String::from_utf8_lossy(&text);
        if let Some(err) = body.lines().find(|l| l.starts_with("-ERR")) {
            bail!("nats-server: {err}");
        }
        if !sent && body.starts_with("INFO ") && body.contains("\r\n") {
            let commands = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\n\
                 SUB {} 1\r\nPING\r\n",
                crate::plan::peer_subject(room)
            );
            let frame = websocket::client_frame(
                websocket::opcode::BINARY,
                commands.as_bytes(),
                [0x37, 0xfa, 0x21, 0x3d],
            );
            stream.write_all(&frame).await?;
            sent = true;
        }
        if sent && body.contains("PONG\r\n") {
            return Ok(stream);
        }
        read(&mut stream, &mut buf).await?;
    }
}

// ---------------------------------------------------------------------------------------------
// Sizes of what the gateway keeps per connection.

/// An edge source that never delivers: enough to build the gateway's shared state.
struct NoEdge;

impl danmu_gateway::fanout::groups::EdgeSource for NoEdge {
    fn subscribe(&self, _group: Arc<danmu_gateway::fanout::groups::Group>) -> u64 {
        0
    }

    fn unsubscribe(&self, _id: u64) {}
}

/// The sizes of the gateway's per-connection types, the connection task's future first.
pub async fn print_sizes() -> anyhow::Result<()> {
    use danmu_gateway::connection::session::{Action, Session};
    use danmu_gateway::connection::{Connection, Inbound, Input};
    use danmu_gateway::transport::{self, Shared};
    use std::mem::{size_of, size_of_val};

    let keys = danmu_tests::fabric::Keys::generate();
    let stats = Arc::new(danmu_gateway::Stats::default());
    let defaults = danmu_gateway::Config::default();
    let shared = Arc::new(Shared {
        limits: Arc::new(defaults.limits()),
        verifier: danmu_proto::token::TokenVerifier::from_public_pem(&keys.public_pem)?,
        groups: danmu_gateway::fanout::groups::Groups::new(Box::new(NoEdge), stats.clone()),
        origin: danmu_gateway::connection::presence::Origin {
            gateway: "sizes".into(),
            region: defaults.region.clone(),
        },
        stats,
        shutdown: tokio_util::sync::CancellationToken::new(),
        offline: None,
        brotli_quality: defaults.brotli_quality,
        events: None,
        online: Arc::new(std::sync::RwLock::new(danmu_gateway::online::Totals::new(
            std::time::Duration::ZERO,
        ))),
        upstream: None,
        trusted_proxies: Vec::new(),
        next_id: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stream = TcpStream::connect(listener.local_addr()?).await?;
    let other = TcpStream::connect(listener.local_addr()?).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    // Futures built, never polled: their sizes are what a task stores.
    let peer = other.local_addr()?;
    let serve = transport::serve(
        stream,
        peer,
        danmu_gateway::connection::Transport::Tcp,
        shared,
        true,
    );
    let cancelled = cancel.clone().cancelled_owned();
    let rows = [
        (
            "conn::serve future (+ ~100 B task header/trailer, allocation 128-aligned)",
            size_of_val(&serve),
        ),
        ("connection::Connection", size_of::<Connection>()),
        ("session::Session", size_of::<Session>()),
        ("connection::Inbound", size_of::<Inbound>()),
        (
            "rooms::Member (in an Arc)",
            size_of::<danmu_gateway::fanout::groups::Member>(),
        ),
        (
            "outbound::Outbound",
            size_of::<danmu_gateway::fanout::outbound::Outbound>(),
        ),
        ("session::Action (Vec while reading)", size_of::<Action>()),
        ("connection::Input (Vec while reading)", size_of::<Input>()),
        ("tokio::net::TcpStream", size_of::<TcpStream>()),
        (
            "kept while waiting: CancellationToken::cancelled_owned()",
            size_of_val(&cancelled),
        ),
        (
            "kept while waiting: tokio::time::Sleep",
            size_of::<tokio::time::Sleep>(),
        ),
        (
            "groups::Group (a user's or device's group, in an Arc)",
            size_of::<danmu_gateway::fanout::groups::Group>(),
        ),
    ];
    drop((serve, cancelled, other));
    for (what, bytes) in rows {
        println!("{bytes:>6} B  {what}");
    }
    Ok(())
}
