//! Idle-connection memory benchmark: gateway RSS per connection, beside nats-server's own
//! WebSocket listener measured in the same run.
//!
//! ```text
//! cargo build --release -p danmu-gateway -p danmu-tests --bin idle-conns
//! target/release/idle-conns --connections 5000
//! ```
//!
//! What it does:
//! 1. Raises the soft open-file limit to the hard one (children inherit it) and starts one real
//!    nats-server (`danmu_tests::single()`, JetStream on, WebSocket listener on).
//! 2. Peer (unless `--skip-peer`): samples nats-server's VmRSS until stable, opens N WebSocket
//!    connections to its own listener, each subscribing to `danmu.edge.room.<k>` (100 rooms)
//!    and waiting for PONG, samples again until stable, checks every connection is still open,
//!    closes them and waits for the server to count 0 clients.
//! 3. For each gateway transport: spawns a FRESH `danmu-gateway` child process (so a transport
//!    never reuses memory the previous one freed), waits for its health report in the nodes KV
//!    bucket and for one probe client per transport to authenticate, samples VmRSS until stable,
//!    opens N connections (WebSocket upgrade on `/sub` or raw TCP, AUTH with a valid token into
//!    one of 100 rooms, AUTH_REPLY code 0), samples again until stable, checks every connection
//!    is still open, then kills the gateway.
//!
//! "Stable" means two consecutive samples 200 ms apart within 1 %. The figure is
//! (RSS after - RSS before) / N, in KiB.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::BytesMut;
use clap::{Parser, ValueEnum};
use danmu_proto::websocket;
use danmu_tests::NatsServer;
use danmu_tests::client::{Client, Transport};
use danmu_tests::fabric::Keys;
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
/// How long a gateway or a connection batch may take to come up.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long a gateway may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// File descriptors this process needs besides the connections.
const FD_MARGIN: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    Ws,
    Tcp,
    Both,
}

#[derive(Debug, Parser)]
#[command(
    about = "Open N idle connections; report gateway RSS per connection beside nats-server's WebSocket listener"
)]
struct Args {
    /// Idle connections per transport (and for the peer).
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// Which gateway transport(s) to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    transport: Which,
    /// The gateway binary (default: `<workspace>/target/release/danmu-gateway`).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Do not measure nats-server's own WebSocket listener.
    #[arg(long)]
    skip_peer: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Connections opened concurrently.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Print the sizes of the gateway's per-connection types (the connection task's future
    /// first) and exit: where the per-connection bytes go, without running anything.
    #[arg(long)]
    print_sizes: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Measurement {
    /// `websocket`, `tcp`, or `nats-server websocket` for the peer.
    target: String,
    connections: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_conn: f64,
    /// Seconds taken to open and authenticate every connection.
    open_secs: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    gateway: Measurement,
    peer_kib_per_conn: Option<f64>,
    /// peer KiB/conn ÷ gateway KiB/conn.
    ratio: Option<f64>,
    bar_kib: f64,
    bar_met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    connections: usize,
    rooms: u64,
    nats_server_version: String,
    peer: Option<Measurement>,
    gateway: Vec<Row>,
}

fn main() -> std::process::ExitCode {
    match try_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("idle-conns: FAILED: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_sizes {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(print_sizes());
    }
    ensure!(args.connections > 0, "--connections must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    // Before any thread or child process exists, so every child inherits the raised limit.
    raise_fd_limit(args.connections as u64 + FD_MARGIN)?;
    let gateway_bin = match &args.gateway_bin {
        Some(path) => path.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/danmu-gateway"),
    };
    ensure!(
        gateway_bin.is_file(),
        "gateway binary not found at {}: run `cargo build --release -p danmu-gateway` first \
         (or pass --gateway-bin)",
        gateway_bin.display()
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args, gateway_bin))
}

async fn run(args: Args, gateway_bin: PathBuf) -> anyhow::Result<()> {
    let n = args.connections;
    let server = danmu_tests::single()
        .await
        .context("starting nats-server")?;
    let version = nats_server_version();
    let keys = Keys::generate();
    let dir = tempfile::TempDir::with_prefix("danmu-idle-conns-")?;
    let key_path = dir.path().join("token-public.pem");
    std::fs::write(&key_path, &keys.public_pem)?;

    let peer = if args.skip_peer {
        None
    } else {
        progress(
            &args,
            format_args!("peer: {n} WebSocket connections to nats-server"),
        );
        Some(
            measure_peer(&server, n, args.concurrency)
                .await
                .context("measuring nats-server's WebSocket listener")?,
        )
    };

    let transports: &[Transport] = match args.transport {
        Which::Ws => &[Transport::WebSocket],
        Which::Tcp => &[Transport::Tcp],
        Which::Both => &[Transport::WebSocket, Transport::Tcp],
    };
    let mut rows = Vec::new();
    for &transport in transports {
        progress(
            &args,
            format_args!("gateway: {n} {} connections", label(transport)),
        );
        let gateway = measure_gateway(
            &server,
            &gateway_bin,
            dir.path(),
            &key_path,
            &keys,
            transport,
            n,
            args.concurrency,
        )
        .await
        .with_context(|| format!("measuring the gateway over {}", label(transport)))?;
        let bar_kib = match transport {
            Transport::WebSocket => 4.0,
            Transport::Tcp => 3.0,
        };
        let peer_kib = peer.as_ref().map(|p| p.kib_per_conn);
        rows.push(Row {
            ratio: peer_kib.map(|p| p / gateway.kib_per_conn.max(f64::MIN_POSITIVE)),
            peer_kib_per_conn: peer_kib,
            bar_met: gateway.kib_per_conn <= bar_kib,
            bar_kib,
            gateway,
        });
    }

    let report = Report {
        connections: n,
        rooms: ROOMS,
        nats_server_version: version,
        peer,
        gateway: rows,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn progress(args: &Args, what: std::fmt::Arguments<'_>) {
    if !args.json {
        eprintln!("idle-conns: {what}");
    }
}

fn label(transport: Transport) -> &'static str {
    match transport {
        Transport::WebSocket => "websocket",
        Transport::Tcp => "tcp",
    }
}

fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>11} {:>13} {:>13} {:>9} {:>14} {:>7} {:>6} {:>7}",
        "transport",
        "connections",
        "RSS before",
        "RSS after",
        "KiB/conn",
        "peer KiB/conn",
        "ratio",
        "bar",
        "met"
    );
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for row in &report.gateway {
        let g = &row.gateway;
        let _ = writeln!(
            out,
            "{:<24} {:>11} {:>13} {:>13} {:>9.2} {:>14} {:>7} {:>6} {:>7}",
            format!("gateway {}", g.target),
            g.connections,
            mib(g.rss_before_kib),
            mib(g.rss_after_kib),
            g.kib_per_conn,
            row.peer_kib_per_conn
                .map_or("-".into(), |p| format!("{p:.2}")),
            row.ratio.map_or("-".into(), |r| format!("{r:.1}x")),
            format!("≤{}", row.bar_kib),
            if row.bar_met { "met" } else { "NOT met" }
        );
    }
    if let Some(p) = &report.peer {
        let _ = writeln!(
            out,
            "{:<24} {:>11} {:>13} {:>13} {:>9.2}",
            "nats-server websocket",
            p.connections,
            mib(p.rss_before_kib),
            mib(p.rss_after_kib),
            p.kib_per_conn,
        );
    }
    let _ = writeln!(
        out,
        "({} rooms; nats-server {}; KiB/conn = (RSS after - RSS before) / connections)",
        report.rooms, report.nats_server_version
    );
    out
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and checks `needed` fits.
fn raise_fd_limit(needed: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    ensure!(
        limit.rlim_cur >= needed,
        "{needed} file descriptors needed, the limit is {} (hard {}): use fewer --connections",
        limit.rlim_cur,
        limit.rlim_max
    );
    Ok(())
}

fn nats_server_version() -> String {
    danmu_tests::nats::binary()
        .ok()
        .and_then(|bin| Command::new(bin).arg("--version").output().ok())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .map(|v| v.trim_start_matches("nats-server: ").to_string())
        .unwrap_or_else(|| "(unknown)".into())
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// Samples VmRSS every 200 ms until two consecutive samples are within 1 %.
async fn stable_rss(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + STABLE_DEADLINE;
    let mut last = rss_kib(pid)?;
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let now = rss_kib(pid)?;
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

// ---------------------------------------------------------------------------------------------
// The gateway, as a child process.

/// A spawned gateway, killed on drop.
struct GatewayProcess {
    child: Child,
    log: PathBuf,
}

impl GatewayProcess {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the gateway exited ({status}); log tail of {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for GatewayProcess {
    /// SIGTERM (a graceful shutdown, so a profiler wrapped around the gateway writes its
    /// output), SIGKILL if it is still running after a grace period.
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure_gateway(
    server: &NatsServer,
    gateway_bin: &Path,
    dir: &Path,
    key_path: &Path,
    keys: &Keys,
    transport: Transport,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Measurement> {
    let ws_addr: SocketAddr = ([127, 0, 0, 1], danmu_tests::ports::free_port()).into();
    let tcp_addr: SocketAddr = ([127, 0, 0, 1], danmu_tests::ports::free_port()).into();
    let node_id = format!("bench-idle-{}-{}", label(transport), std::process::id());
    // Heartbeats are not sent by this benchmark, so the heartbeat timeout is long enough to
    // outlast the run; everything else is the default.
    let config = format!(
        "node_id = {node_id:?}\n\
         region = \"A\"\n\
         nats_url = {nats:?}\n\
         token_public_key_path = {key:?}\n\
         ws_listen = \"{ws_addr}\"\n\
         tcp_listen = \"{tcp_addr}\"\n\
         heartbeat_timeout_ms = 3600000\n",
        nats = server.client_url(),
        key = key_path.to_string_lossy(),
    );
    let config_path = dir.join(format!("gateway-{}.toml", label(transport)));
    std::fs::write(&config_path, config)?;
    let log = dir.join(format!("gateway-{}.log", label(transport)));
    let log_file = std::fs::File::create(&log)?;
    let mut command = Command::new(gateway_bin);
    command
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    for var in [
        "DANMU_NATS_URL",
        "DANMU_REGION",
        "DANMU_NODE_ID",
        "DANMU_ADVERTISE_HOST",
        "DANMU_TOKEN_PUBLIC_KEY_PATH",
        "DANMU_METRICS_LISTEN",
    ] {
        command.env_remove(var);
    }
    let child = command
        .spawn()
        .with_context(|| format!("spawning {}", gateway_bin.display()))?;
    let mut gateway = GatewayProcess { child, log };
    let pid = gateway.child.id();

    wait_gateway_ready(&mut gateway, server, &node_id, keys, ws_addr, tcp_addr).await?;

    let before = stable_rss(pid).await?;
    let addr = match transport {
        Transport::WebSocket => ws_addr,
        Transport::Tcp => tcp_addr,
    };
    let started = Instant::now();
    let mut clients: Vec<Client> = futures::stream::iter(0..n)
        .map(|i| async move {
            danmu_tests::room::join(keys, transport, addr, i as u64 + 1, room_of(i), PROTOVER)
                .await
                .with_context(|| format!("connection {i} of {n} to {addr}"))
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
    drop(clients);
    drop(gateway);
    Ok(Measurement {
        target: label(transport).into(),
        connections: n,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_conn: after.saturating_sub(before) as f64 / n as f64,
        open_secs,
    })
}

/// Ready = both ports accept, the health report is in the nodes bucket (start-up finished) and
/// a probe client per transport authenticates.
async fn wait_gateway_ready(
    gateway: &mut GatewayProcess,
    server: &NatsServer,
    node_id: &str,
    keys: &Keys,
    ws_addr: SocketAddr,
    tcp_addr: SocketAddr,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let nats = server.connect().await?;
    let js = async_nats::jetstream::new(nats);
    loop {
        gateway.check_running()?;
        if let Ok(store) = js.get_key_value(danmu_proto::subjects::NODES_BUCKET).await
            && let Ok(Some(_)) = store.get(node_id).await
            && TcpStream::connect(ws_addr).await.is_ok()
            && TcpStream::connect(tcp_addr).await.is_ok()
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the gateway did not become ready within {READY_DEADLINE:?}; log tail:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (transport, addr) in [(Transport::WebSocket, ws_addr), (Transport::Tcp, tcp_addr)] {
        let probe = danmu_tests::room::join(keys, transport, addr, 0, FIRST_ROOM, PROTOVER)
            .await
            .with_context(|| format!("probe client over {}", label(transport)))?;
        drop(probe);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The peer: nats-server's own WebSocket listener, spoken to as a browser would.

async fn measure_peer(
    server: &NatsServer,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Measurement> {
    let pid = server.pid();
    let addr: SocketAddr = ([127, 0, 0, 1], server.ports().websocket).into();
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
    Ok(Measurement {
        target: "nats-server websocket".into(),
        connections: n,
        rss_before_kib: before,
        rss_after_kib: after,
        kib_per_conn: after.saturating_sub(before) as f64 / n as f64,
        open_secs,
    })
}

async fn wait_no_clients(server: &NatsServer) -> anyhow::Result<()> {
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
                 SUB danmu.edge.room.{room} 1\r\nPING\r\n"
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

impl danmu_gateway::groups::EdgeSource for NoEdge {
    fn subscribe(&self, _group: Arc<danmu_gateway::groups::Group>) -> tokio::task::AbortHandle {
        tokio::spawn(std::future::pending::<()>()).abort_handle()
    }
}

async fn print_sizes() -> anyhow::Result<()> {
    use danmu_gateway::conn::{self, ConnLimits, Input, Shared};
    use danmu_gateway::session::{Action, Session, SessionConfig};
    use std::mem::{size_of, size_of_val};

    let keys = Keys::generate();
    let stats = Arc::new(danmu_gateway::Stats::default());
    let defaults = danmu_gateway::Config::default();
    let shared = Arc::new(Shared::new(
        SessionConfig {
            auth_timeout: defaults.auth_timeout(),
            heartbeat_timeout: defaults.heartbeat_timeout(),
        },
        danmu_proto::token::TokenVerifier::from_public_pem(&keys.public_pem)?,
        danmu_gateway::groups::Groups::new(Box::new(NoEdge), stats.clone()),
        defaults.region.clone(),
        stats,
        ConnLimits::from_config(&defaults),
        tokio_util::sync::CancellationToken::new(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stream = TcpStream::connect(listener.local_addr()?).await?;
    let other = TcpStream::connect(listener.local_addr()?).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let outbound = danmu_gateway::outbound::Outbound::new(defaults.outbound_queue_bytes);
    // Futures built, never polled: their sizes are what a task stores.
    let peer = stream.peer_addr()?;
    let serve = conn::serve(stream, peer, danmu_gateway::edge::Transport::Tcp, shared);
    let (readable, writable) = (other.readable(), other.writable());
    let (cancelled, ready) = (cancel.cancelled(), outbound.ready());
    let rows = [
        (
            "conn::serve future (+ ~100 B task header/trailer, allocation 128-aligned)",
            std::mem::size_of_val(&serve),
        ),
        ("session::Session", size_of::<Session>()),
        ("conn::Inbound", size_of::<conn::Inbound>()),
        (
            "rooms::Member (in an Arc)",
            size_of::<danmu_gateway::groups::Member>(),
        ),
        (
            "outbound::Outbound",
            size_of::<danmu_gateway::outbound::Outbound>(),
        ),
        ("session::Action (Vec kept by run)", size_of::<Action>()),
        ("conn::Input (Vec kept by run)", size_of::<Input>()),
        ("tokio::net::TcpStream", size_of::<TcpStream>()),
        (
            "select branch: TcpStream::readable()",
            size_of_val(&readable),
        ),
        (
            "select branch: TcpStream::writable()",
            size_of_val(&writable),
        ),
        (
            "select branch: CancellationToken::cancelled()",
            size_of_val(&cancelled),
        ),
        ("select branch: Outbound::ready()", size_of_val(&ready)),
        (
            "select branch: tokio::time::Sleep",
            size_of::<tokio::time::Sleep>(),
        ),
    ];
    drop((serve, readable, writable, cancelled, ready));
    for (what, bytes) in rows {
        println!("{bytes:>6} B  {what}");
    }
    Ok(())
}
