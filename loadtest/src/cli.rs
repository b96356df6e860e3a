//! The command line.
//!
//! ```text
//! danmu-load fabric --preset efficiency              # start everything, run both targets
//! danmu-load run --target danmu --gateway 127.0.0.1:7000,127.0.0.1:7100 \
//!     --nats nats://127.0.0.1:4222 --token-key .dev/keys/control.key.pem ...
//! danmu-load corpus                                  # seed 001's table on our corpus
//! danmu-load idle --connections 10000                # memory per idle connection
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::fabric::{Fabric, FabricOptions};
use crate::idle::{IdleOptions, IdleTarget};
use crate::plan::{Target, TokenSource, Transport};
use crate::procfs::Watched;
use crate::report::{self, Comparison};
use crate::run::{self, RunConfig};

#[derive(Parser)]
#[command(
    name = "danmu-load",
    version,
    about = "Load tool of the danmu fabric, with nats-server's own WebSocket listener as the peer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a fabric that is already running.
    Run(RunArgs),
    /// Start nats-server, the gateway and the distributor (release binaries), then run the
    /// workload against our fabric and against nats-server's WebSocket listener.
    Fabric(FabricArgs),
    /// Compression on a danmu-shaped corpus: seed 001's zlib-vs-brotli table and CPU per batch.
    Corpus(CorpusArgs),
    /// Memory per idle connection: nats-server's WebSocket listener, then a fresh gateway per
    /// transport, N connections each.
    Idle(IdleArgs),
    /// The kernel's floor: CPU per frame written to loopback sockets in a preset's pattern by
    /// one bare thread (`write(2)` or batched `io_uring` sends), no runtime and no protocol.
    Floor(FloorArgs),
    /// (internal) The floor's reader process: ADDR CONNECTIONS BULK_INTERVAL_MS.
    #[command(hide = true)]
    FloorReader {
        addr: std::net::SocketAddr,
        connections: usize,
        bulk_interval_ms: u64,
    },
    /// (internal) A worker process: reads its plan on stdin, reports on stdout.
    #[command(hide = true)]
    Worker,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// One room, 15,000 members, 1,000 msg/s of 100 B (our fabric only: the peer cannot).
    HotRoom,
    /// One room, 5,000 members, 50 msg/s of 100 B: CPU per delivery, ours and the peer's.
    Efficiency,
    /// 10,000 connections over 1,000 rooms, 2,000 msg/s in total, 100 B.
    ManyRooms,
    /// 100 connections, 5 rooms, 100 msg/s for 5 s: checks the set-up works.
    Smoke,
}

#[derive(Args, Clone, Debug)]
struct Workload {
    /// Client connections in total.
    #[arg(long)]
    connections: Option<u64>,
    /// Rooms; connections join them round-robin, messages are published to them round-robin.
    #[arg(long)]
    rooms: Option<u64>,
    /// Messages per second in total, over all rooms.
    #[arg(long)]
    rate: Option<f64>,
    /// Payload bytes per message (JSON carrying room, sequence and publish time, padded).
    #[arg(long)]
    size: Option<usize>,
    /// Seconds of publishing.
    #[arg(long)]
    duration: Option<f64>,
    /// Worker processes holding the connections (at most 15,000 each).
    #[arg(long)]
    workers: Option<usize>,
    /// Connections per worker that decode and verify every message (the others only count).
    #[arg(long)]
    sample: Option<u64>,
    /// Our gateway's transport (the peer is WebSocket only).
    #[arg(long, value_enum)]
    transport: Option<Transport>,
    /// What our clients ask for in AUTH: 3 brotli, 2 zlib, 0 raw.
    #[arg(long, default_value_t = 3)]
    protover: u16,
    /// Counting-only connections are read at most every this many ms (0: at once). Cuts the
    /// client's CPU under load; latency is measured on the sample, which always reads at once.
    #[arg(long, default_value_t = 0)]
    bulk_interval_ms: u64,
    /// Seconds deliveries may still arrive after the last publish.
    #[arg(long, default_value_t = 20.0)]
    drain: f64,
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    #[arg(long, default_value_t = 100_001)]
    first_room: u64,
    #[arg(long, default_value_t = 10_000_000)]
    first_uid: u64,
    /// Heartbeat period towards our gateway, seconds (0: none).
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone, Debug)]
struct RunArgs {
    #[arg(long, value_enum)]
    target: Target,
    #[command(flatten)]
    workload: Workload,
    /// Our gateway: `ws-addr,tcp-addr` (e.g. `127.0.0.1:7000,127.0.0.1:7100`).
    #[arg(long)]
    gateway: Option<String>,
    /// Where the publisher connects.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// nats-server's WebSocket listener (the peer), e.g. `127.0.0.1:4242`.
    #[arg(long)]
    nats_ws: Option<SocketAddr>,
    /// Control's token-signing private key (PEM): clients sign their own tokens.
    #[arg(long)]
    token_key: Option<PathBuf>,
    /// Or: control's base URL; clients get tokens from `POST /v1/tokens`.
    #[arg(long)]
    control: Option<String>,
    #[arg(long, env = "DANMU_LOAD_API_KEY")]
    api_key: Option<String>,
    /// A process under test whose CPU and RSS are reported: `NAME=PID` (repeat). Name the one
    /// holding the clients `gateway` (ours) or `nats-server` (peer).
    #[arg(long = "watch")]
    watch: Vec<Watched>,
    /// A Prometheus page whose counters are reported: `NAME=URL` (repeat).
    #[arg(long = "metrics")]
    metrics: Vec<String>,
    /// Pin this process and its workers to these CPUs (e.g. `1`).
    #[arg(long, value_delimiter = ',')]
    client_cpus: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pin {
    /// Nothing pinned: every process may use both cores.
    None,
    /// Servers under test (nats-server, gateway, distributor) on CPU 0, the load client on CPU 1.
    /// The servers are started on CPU 0 (they inherit this process's affinity), so each runtime
    /// sizes itself to the one core it has, as in a container limited to one CPU: tokio runs one
    /// worker (`available_parallelism` reads the affinity), Go sets `GOMAXPROCS=1`.
    Split,
}

#[derive(Args, Clone, Debug)]
struct FabricArgs {
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Which targets, in order (default: the preset's; both otherwise).
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<Target>,
    #[command(flatten)]
    workload: Workload,
    #[arg(long, value_enum, default_value_t = Pin::None)]
    pin: Pin,
    /// Default: `danmu-gateway` next to this binary.
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Default: `danmu-distributor` next to this binary.
    #[arg(long)]
    distributor_bin: Option<PathBuf>,
    /// TOML appended to the gateway's generated config.
    #[arg(long, default_value = "")]
    gateway_toml: String,
    /// TOML appended to the distributor's generated config (e.g. `"[low]\nwindow = \"50ms\""`).
    #[arg(long, default_value = "")]
    distributor_toml: String,
}

#[derive(Args, Clone, Debug)]
struct CorpusArgs {
    /// Batches per size.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Seconds each timing runs for at least.
    #[arg(long, default_value_t = 0.5)]
    min_secs: f64,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone, Debug)]
struct IdleArgs {
    /// Idle connections per target.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// What holds them, in order (the peer is measured first whatever the order).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "nats-ws,ws,tcp"
    )]
    transport: Vec<IdleTarget>,
    /// Connections opened concurrently.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Default: `danmu-gateway` next to this binary (a wrapper script works, e.g. valgrind).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// After the idle sample, batches published to every room (10 messages each) before
    /// sampling again: memory per connection "after a burst". 0 skips it.
    #[arg(long, default_value_t = 5)]
    burst_batches: usize,
    /// Print the sizes of the gateway's per-connection types and exit.
    #[arg(long)]
    print_sizes: bool,
    #[arg(long)]
    json: bool,
}

/// The presets `floor` has a write pattern for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FloorPreset {
    /// 1,000 writes of 119 B per 50 ms over 10,000 sockets.
    ManyRooms,
    /// 5,000 writes of 185 B per 100 ms over 5,000 sockets.
    Efficiency,
}

#[derive(Args, Clone, Debug)]
struct FloorArgs {
    /// The write pattern of a `fabric` preset.
    #[arg(long, value_enum, default_value_t = FloorPreset::ManyRooms)]
    preset: FloorPreset,
    #[arg(long, value_enum, default_value_t = crate::floor::WriteMode::Write)]
    mode: crate::floor::WriteMode,
    /// Sends per `io_uring_enter` (`--mode uring`).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// How long to write for.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    #[arg(long)]
    json: bool,
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker => crate::worker::main(),
        Command::Corpus(args) => {
            let report = crate::corpus::measure(args.batches, args.min_secs);
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::corpus::table(&report));
            }
            Ok(())
        }
        Command::Idle(args) => runtime()?.block_on(idle_command(args)),
        Command::Floor(args) => floor_command(args),
        Command::FloorReader {
            addr,
            connections,
            bulk_interval_ms,
        } => crate::floor::reader_main(addr, connections, bulk_interval_ms),
        Command::Run(args) => runtime()?.block_on(run_command(args)),
        Command::Fabric(args) => runtime()?.block_on(fabric_command(args)),
    }
}

fn floor_command(args: FloorArgs) -> anyhow::Result<()> {
    let mut plan = match args.preset {
        FloorPreset::ManyRooms => crate::floor::FloorPlan::many_rooms(),
        FloorPreset::Efficiency => crate::floor::FloorPlan::efficiency(),
    };
    plan.mode = args.mode;
    plan.batch = args.batch;
    plan.seconds = args.seconds;
    let report = crate::floor::run(&plan)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:?} {:?}: {} writes of {} B over {} sockets in {:.2} s ({} refused); \
             writer {:.2} CPU s = {:.3} µs per write; reader {:.2} CPU s; other processes {:.2} cores",
            args.preset,
            plan.mode,
            report.writes,
            plan.frame_bytes,
            plan.connections,
            report.window_secs,
            report.refused,
            report.writer_cpu_secs,
            report.writer_cpu_us_per_write,
            report.reader_cpu_secs,
            report.other_processes_cores
        );
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The workload with a preset's values where the command line gives none.
struct Resolved {
    connections: u64,
    rooms: u64,
    rate: f64,
    size: usize,
    duration: f64,
    workers: usize,
    sample: u64,
    transport: Transport,
}

fn resolve(w: &Workload, preset: Option<Preset>) -> Resolved {
    let (connections, rooms, rate, duration, sample) = match preset {
        Some(Preset::HotRoom) => (15_000, 1, 1000.0, 20.0, 5),
        Some(Preset::Efficiency) => (5_000, 1, 50.0, 20.0, 5),
        // A sampled connection sees its room's 40 messages: 100 per worker give 8,000 latency
        // samples (10 gave 800, whose p99 is the 8th worst: one stall of either side decided it).
        Some(Preset::ManyRooms) => (10_000, 1_000, 2_000.0, 20.0, 100),
        Some(Preset::Smoke) => (100, 5, 100.0, 5.0, 5),
        None => (1_000, 10, 100.0, 10.0, 5),
    };
    Resolved {
        connections: w.connections.unwrap_or(connections),
        rooms: w.rooms.unwrap_or(rooms),
        rate: w.rate.unwrap_or(rate),
        size: w.size.unwrap_or(100),
        duration: w.duration.unwrap_or(duration),
        workers: w.workers.unwrap_or(2),
        sample: w.sample.unwrap_or(sample),
        transport: w.transport.unwrap_or(Transport::Ws),
    }
}

#[allow(clippy::too_many_arguments)]
fn config(
    w: &Workload,
    r: &Resolved,
    target: Target,
    addr: SocketAddr,
    nats_url: String,
    token: TokenSource,
    watch: Vec<Watched>,
    metrics: Vec<(String, String)>,
) -> anyhow::Result<RunConfig> {
    ensure!(
        r.rate > 0.0 && r.duration > 0.0,
        "rate and duration must be positive"
    );
    Ok(RunConfig {
        target,
        transport: if target == Target::NatsWs {
            Transport::Ws
        } else {
            r.transport
        },
        connections: r.connections,
        rooms: r.rooms,
        rate: r.rate,
        size: r.size,
        duration: Duration::from_secs_f64(r.duration),
        workers: r.workers,
        sample: r.sample,
        addr,
        nats_url,
        token,
        first_room: w.first_room,
        first_uid: w.first_uid,
        protover: w.protover,
        bulk_interval_ms: w.bulk_interval_ms,
        drain: Duration::from_secs_f64(w.drain),
        connect_concurrency: w.connect_concurrency,
        heartbeat_secs: w.heartbeat_secs,
        watch,
        metrics,
        exe: std::env::current_exe().context("finding this executable")?,
        verbose: !w.quiet,
    })
}

fn print_comparison(comparison: &Comparison, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(comparison)?);
    } else {
        print!("{}", report::table(comparison));
    }
    Ok(())
}

async fn idle_command(args: IdleArgs) -> anyhow::Result<()> {
    if args.print_sizes {
        return crate::idle::print_sizes().await;
    }
    let options = IdleOptions {
        connections: args.connections,
        targets: args.transport.clone(),
        concurrency: args.concurrency,
        gateway_bin: args
            .gateway_bin
            .clone()
            .unwrap_or_else(|| FabricOptions::default_bins().0),
        burst_batches: args.burst_batches,
        verbose: !args.json,
    };
    let report = crate::idle::run(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::idle::table(&report));
    }
    Ok(())
}

async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let w = &args.workload;
    let resolved = resolve(w, None);
    if !args.client_cpus.is_empty() {
        crate::procfs::pin_process(std::process::id(), &args.client_cpus)?;
    }
    let addr = match args.target {
        Target::NatsWs => args
            .nats_ws
            .context("--nats-ws ADDR (nats-server's WebSocket listener) is required")?,
        Target::Danmu => {
            let gateway = args
                .gateway
                .as_deref()
                .context("--gateway WS_ADDR,TCP_ADDR is required")?;
            let (ws, tcp) = gateway
                .split_once(',')
                .context("--gateway takes WS_ADDR,TCP_ADDR")?;
            match resolved.transport {
                Transport::Ws => ws.parse()?,
                Transport::Tcp => tcp.parse()?,
            }
        }
    };
    let token = match (&args.token_key, &args.control, args.target) {
        (_, _, Target::NatsWs) => TokenSource::None,
        (Some(path), _, _) => TokenSource::Key {
            private_pem: std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        },
        (None, Some(url), _) => TokenSource::Control {
            url: url.clone(),
            api_key: args.api_key.clone(),
        },
        (None, None, _) => bail!("pass --token-key PEM or --control URL"),
    };
    let metrics = args
        .metrics
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .context("--metrics takes NAME=URL")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = config(
        w,
        &resolved,
        args.target,
        addr,
        args.nats.clone(),
        token,
        args.watch.clone(),
        metrics,
    )?;
    crate::procfs::raise_fd_limit(1024)?;
    let result = run::run(&config).await?;
    let pinned = if args.client_cpus.is_empty() {
        "none".to_string()
    } else {
        format!("client on CPUs {:?}", args.client_cpus)
    };
    let comparison = Comparison::new(
        report::machine(),
        crate::fabric::nats_server_version(),
        pinned,
        vec![result],
    );
    print_comparison(&comparison, w.json)
}

async fn fabric_command(args: FabricArgs) -> anyhow::Result<()> {
    let w = &args.workload;
    let resolved = resolve(w, args.preset);
    let targets = if !args.targets.is_empty() {
        args.targets.clone()
    } else if args.preset == Some(Preset::HotRoom) {
        vec![Target::Danmu]
    } else {
        vec![Target::NatsWs, Target::Danmu]
    };
    crate::procfs::raise_fd_limit(1024)?;
    let (default_gateway, default_distributor) = FabricOptions::default_bins();
    let options = FabricOptions {
        gateway_bin: args.gateway_bin.clone().unwrap_or(default_gateway),
        distributor_bin: args.distributor_bin.clone().unwrap_or(default_distributor),
        gateway_toml: args.gateway_toml.clone(),
        distributor_toml: args.distributor_toml.clone(),
        services: targets.contains(&Target::Danmu),
    };
    if !w.quiet {
        eprintln!("danmu-load: starting nats-server, gateway and distributor");
    }
    if args.pin == Pin::Split {
        // Children inherit the affinity of the thread that forks them: start them on CPU 0.
        crate::procfs::pin_process(std::process::id(), &[0])?;
    }
    let mut fabric = Fabric::start(&options).await?;
    let pinned = match args.pin {
        Pin::None => "none".to_string(),
        Pin::Split => {
            crate::procfs::pin_process(std::process::id(), &[1])?;
            "servers under test started on CPU 0 (one runtime thread each), load client on CPU 1"
                .to_string()
        }
    };
    let mut results = Vec::new();
    for target in targets {
        let (addr, token, metrics) = match target {
            Target::Danmu => (
                match resolved.transport {
                    Transport::Ws => fabric.ws_addr,
                    Transport::Tcp => fabric.tcp_addr,
                },
                TokenSource::Key {
                    private_pem: fabric.keys.private_pem.clone(),
                },
                vec![
                    ("gateway".to_string(), fabric.gateway_metrics.clone()),
                    (
                        "distributor".to_string(),
                        fabric.distributor_metrics.clone(),
                    ),
                ],
            ),
            Target::NatsWs => (fabric.nats_ws_addr(), TokenSource::None, Vec::new()),
        };
        let config = config(
            w,
            &resolved,
            target,
            addr,
            fabric.nats.client_url(),
            token,
            fabric.watched(target),
            metrics,
        )?;
        let result = run::run(&config)
            .await
            .with_context(|| format!("running against {}", target.label()))?;
        fabric.check_running()?;
        if !w.quiet {
            eprintln!(
                "danmu-load [{}]: {} of {} deliveries, p99 {:.2} ms",
                target.label(),
                result.received,
                result.expected,
                result.latency.p99_ms
            );
        }
        results.push(result);
        // Let the previous run's connections close before the next one starts.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let comparison = Comparison::new(
        report::machine(),
        crate::fabric::nats_server_version(),
        pinned,
        results,
    );
    print_comparison(&comparison, w.json)
}
