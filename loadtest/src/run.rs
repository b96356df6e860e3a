//! The coordinator of one measured run: spawns the worker processes, warms every room's path
//! up, publishes at the set rate, waits until every delivery arrived (or the drain time is
//! over), and adds up what the workers and `/proc` say.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use danmu_proto::subjects::{self, Priority, Scope};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::payload;
use crate::plan::{
    FromWorker, SampleStats, Target, ToWorker, TokenSource, Transport, WorkerFinal, WorkerPlan,
    peer_subject,
};
use crate::procfs::{self, SystemCpu, Watched};

/// Largest number of connections one worker process holds (20,000 open files per process
/// here, and some margin).
pub const MAX_CONNS_PER_WORKER: u64 = 15_000;

/// One measured run against one target.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: Target,
    pub transport: Transport,
    pub connections: u64,
    pub rooms: u64,
    /// Messages per second, over all rooms.
    pub rate: f64,
    pub size: usize,
    pub duration: Duration,
    pub workers: usize,
    /// Fully verified connections per worker.
    pub sample: u64,
    /// Where clients connect (our gateway's WebSocket or TCP address, or nats-server's
    /// WebSocket listener).
    pub addr: SocketAddr,
    /// Where the publisher connects.
    pub nats_url: String,
    pub token: TokenSource,
    pub first_room: u64,
    pub first_uid: u64,
    pub protover: u16,
    pub bulk_interval_ms: u64,
    /// How long after the last publish deliveries may still arrive.
    pub drain: Duration,
    pub connect_concurrency: usize,
    pub heartbeat_secs: u64,
    /// Processes under test.
    pub watch: Vec<Watched>,
    /// Prometheus pages whose counters are reported (name, URL).
    pub metrics: Vec<(String, String)>,
    /// This program, re-executed as `worker`.
    pub exe: PathBuf,
    /// Progress on stderr.
    pub verbose: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessCost {
    pub name: String,
    pub pid: u32,
    pub cpu_secs: f64,
    /// CPU seconds per second of the window: 1.0 = one core busy.
    pub cores: f64,
    pub rss_kib: u64,
    pub rss_peak_kib: u64,
}

/// Everything measured in one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub target: String,
    pub transport: String,
    pub connections: u64,
    pub rooms: u64,
    pub rate: f64,
    pub size: usize,
    pub duration_secs: f64,
    pub workers: usize,
    pub sample_per_worker: u64,
    pub published: u64,
    /// Deliveries (one message to one connection) the published messages call for.
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub extra: u64,
    pub loss_pct: f64,
    pub connections_complete: u64,
    pub connections_short: u64,
    pub connections_over: u64,
    pub max_missing_per_connection: u64,
    pub connections_closed: u64,
    pub error_count: u64,
    pub errors: Vec<String>,
    pub sample: SampleStats,
    pub latency: Latency,
    /// Worst sample latency (ms) in each second of publishing, in order.
    pub worst_latency_per_second_ms: Vec<f64>,
    /// From the first publish to the last delivery (or the end of the drain time).
    pub window_secs: f64,
    pub offered_deliveries_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub bytes_received: u64,
    pub bytes_per_delivery: f64,
    /// A message as one uncompressed GOIM packet (16-byte header + payload).
    pub uncompressed_packet_bytes: usize,
    /// Transport units received (WebSocket frames, or GOIM packets on TCP) per delivery.
    pub units_per_delivery: f64,
    pub servers: Vec<ProcessCost>,
    pub server_cpu_secs: f64,
    pub server_cpu_us_per_delivery: f64,
    /// The process that holds the client connections (gateway, or nats-server for the peer).
    pub edge: String,
    pub edge_cpu_us_per_delivery: f64,
    pub client_cpu_secs: f64,
    pub client_cpu_us_per_delivery: f64,
    pub client_rss_kib: u64,
    /// Fraction of the machine's CPUs busy during the window (all processes).
    pub machine_busy: f64,
    /// Cores busy with processes other than the servers under test and the load client
    /// (other work on the machine, kernel threads): what disturbed the measurement.
    pub other_cores: f64,
    pub open_secs: f64,
    pub warmup_secs: f64,
    pub batches_decoded: u64,
    pub batches_memo: u64,
    /// Counter increases on the services' Prometheus pages during the window.
    pub metrics: BTreeMap<String, f64>,
    pub complete: bool,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    pid: u32,
    plan: WorkerPlan,
    progress: Option<(u64, u64, u64, Vec<u64>)>,
    done: Option<WorkerFinal>,
}

fn log(config: &RunConfig, what: std::fmt::Arguments<'_>) {
    if config.verbose {
        eprintln!("danmu-load [{}]: {what}", config.target.label());
    }
}

/// Splits `connections` into worker plans.
pub fn plans(config: &RunConfig) -> anyhow::Result<Vec<WorkerPlan>> {
    ensure!(config.connections > 0, "--connections must be at least 1");
    ensure!(config.rooms > 0, "--rooms must be at least 1");
    ensure!(config.workers > 0, "--workers must be at least 1");
    ensure!(
        config.connections <= config.workers as u64 * MAX_CONNS_PER_WORKER,
        "{} connections need at least {} workers ({MAX_CONNS_PER_WORKER} per worker process)",
        config.connections,
        config.connections.div_ceil(MAX_CONNS_PER_WORKER)
    );
    ensure!(
        !(config.target == Target::NatsWs && config.transport == Transport::Tcp),
        "nats-server's peer listener is WebSocket only"
    );
    let workers = (config.workers as u64).min(config.connections);
    let mut out = Vec::new();
    let mut first = 0;
    for w in 0..workers {
        let conns = config.connections / workers + u64::from(w < config.connections % workers);
        out.push(WorkerPlan {
            worker: w as usize,
            target: config.target,
            transport: config.transport,
            addr: config.addr,
            first_conn: first,
            conns,
            rooms: config.rooms,
            first_room: config.first_room,
            first_uid: config.first_uid,
            protover: config.protover,
            sample: config.sample.min(conns),
            token: config.token.clone(),
            connect_concurrency: config.connect_concurrency,
            bulk_interval_ms: config.bulk_interval_ms,
            heartbeat_secs: config.heartbeat_secs,
        });
        first += conns;
    }
    Ok(out)
}

/// Runs one workload against one target and reports.
pub async fn run(config: &RunConfig) -> anyhow::Result<Report> {
    let plans = plans(config)?;
    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, anyhow::Result<FromWorker>)>();
    let mut workers = Vec::new();
    let opening = Instant::now();
    log(
        config,
        format_args!(
            "opening {} connections in {} worker processes",
            config.connections,
            plans.len()
        ),
    );
    for plan in plans {
        let mut child = Command::new(&config.exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} worker", config.exe.display()))?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let pid = child.id().context("worker pid")?;
        let mut line = serde_json::to_vec(&plan)?;
        line.push(b'\n');
        stdin.write_all(&line).await?;
        let index = plan.worker;
        let tx = events_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        let parsed = serde_json::from_str::<FromWorker>(&line)
                            .with_context(|| format!("worker {index} said {line:?}"));
                        if tx.send((index, parsed)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send((index, Err(anyhow::anyhow!("worker {index} exited"))));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send((index, Err(e.into())));
                        return;
                    }
                }
            }
        });
        workers.push(Worker {
            child,
            stdin,
            pid,
            plan,
            progress: None,
            done: None,
        });
    }
    drop(events_tx);

    // Every worker connected.
    let open_deadline = Instant::now() + Duration::from_secs(120 + config.connections / 100);
    let mut ready = 0;
    while ready < workers.len() {
        let (index, event) = next_event(&mut events, open_deadline, "connections to open").await?;
        match event? {
            FromWorker::Ready { .. } => ready += 1,
            FromWorker::Failed { error } => bail!("{error}"),
            // A worker that is ready reports progress while the others still connect.
            event @ FromWorker::Progress { .. } => absorb(&mut workers[index], event)?,
            FromWorker::Final(_) => bail!("worker {index} reported before it was ready"),
        }
    }
    let open_secs = opening.elapsed().as_secs_f64();
    log(
        config,
        format_args!(
            "{} connections open in {open_secs:.1} s",
            config.connections
        ),
    );

    let nats = async_nats::ConnectOptions::new()
        .name("danmu-load publisher")
        .connect(config.nats_url.as_str())
        .await
        .with_context(|| format!("connecting the publisher to {}", config.nats_url))?;
    let room_ids: Vec<u64> = (0..config.rooms).map(|r| config.first_room + r).collect();
    let subject_of = |room: u64| match config.target {
        Target::Danmu => subjects::push(Priority::Low, &Scope::Room(room)),
        Target::NatsWs => peer_subject(room),
    };
    let subjects_by_room: Vec<String> = room_ids.iter().map(|&r| subject_of(r)).collect();

    // Warm-up: every connection has received a message, so every room's path (NATS interest,
    // the gateway's subscription, the distributor's stream) is live before anything counts.
    let warming = Instant::now();
    let warm_deadline = warming + Duration::from_secs(60 + config.connections / 500);
    let mut cold: Vec<u64> = room_ids.clone();
    let mut last_publish = Instant::now() - Duration::from_secs(1);
    loop {
        let warm: u64 = workers
            .iter()
            .map(|w| w.progress.as_ref().map_or(0, |p| p.1))
            .sum();
        if warm >= config.connections {
            break;
        }
        if last_publish.elapsed() >= Duration::from_millis(300) {
            for &room in &cold {
                let subject = subject_of(room);
                nats.publish(subject, Bytes::from(payload::warmup(room)))
                    .await?;
            }
            nats.flush().await?;
            last_publish = Instant::now();
        }
        let (index, event) = next_event(&mut events, warm_deadline, "every connection to warm up")
            .await
            .with_context(|| {
                format!(
                    "{} of {} connections warm",
                    workers
                        .iter()
                        .map(|w| w.progress.as_ref().map_or(0, |p| p.1))
                        .sum::<u64>(),
                    config.connections
                )
            })?;
        absorb(&mut workers[index], event?)?;
        cold = workers
            .iter()
            .flat_map(|w| {
                w.progress
                    .as_ref()
                    .map(|p| p.3.clone())
                    .unwrap_or_else(|| room_ids.clone())
            })
            .collect();
        cold.sort_unstable();
        cold.dedup();
    }
    // Let warm-ups still in flight land before the clock starts.
    settle(&mut events, &mut workers, Duration::from_millis(500)).await?;
    let warmup_secs = warming.elapsed().as_secs_f64();
    log(
        config,
        format_args!("every connection warm after {warmup_secs:.1} s; publishing"),
    );

    // Measurement.
    let client_pids: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    let cpu_before = cpu_of(&config.watch)?;
    let client_before = client_cpu(&client_pids);
    let system_before = SystemCpu::now()?;
    let metrics_before = scrape_all(&config.metrics).await;
    let mut peaks: Vec<u64> = config
        .watch
        .iter()
        .map(|w| procfs::rss_kib(w.pid).unwrap_or(0))
        .collect();

    let total = (config.rate * config.duration.as_secs_f64()).round() as u64;
    let mut per_room = vec![0u64; config.rooms as usize];
    let started = Instant::now();
    let publisher = {
        let nats = nats.clone();
        let subjects_by_room = subjects_by_room.clone();
        let (rate, size, rooms, first_room) =
            (config.rate, config.size, config.rooms, config.first_room);
        tokio::spawn(async move {
            let mut sent = 0u64;
            let mut seqs = vec![0u64; rooms as usize];
            let mut ticker = tokio::time::interval(Duration::from_millis(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while sent < total {
                ticker.tick().await;
                let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
                while sent < due {
                    let r = (sent % rooms) as usize;
                    let seq = seqs[r];
                    seqs[r] += 1;
                    let body =
                        payload::message(first_room + r as u64, seq, payload::unix_nanos(), size);
                    nats.publish(subjects_by_room[r].clone(), Bytes::from(body))
                        .await?;
                    sent += 1;
                }
            }
            nats.flush().await?;
            anyhow::Ok(started.elapsed())
        })
    };
    for k in 0..total {
        per_room[(k % config.rooms) as usize] += 1;
    }
    let expected: u64 = workers
        .iter()
        .map(|w| {
            (w.plan.first_conn..w.plan.first_conn + w.plan.conns)
                .map(|c| per_room[(c % config.rooms) as usize])
                .sum::<u64>()
        })
        .sum();

    let mut publisher = Some(publisher);
    let mut publish_secs = None;
    let mut last_rss = Instant::now();
    let mut last_log = Instant::now();
    let mut complete = false;
    let end = loop {
        if let Some(handle) = &publisher
            && handle.is_finished()
        {
            let handle = publisher.take().expect("checked");
            publish_secs = Some(handle.await??.as_secs_f64());
        }
        let received: u64 = workers
            .iter()
            .map(|w| w.progress.as_ref().map_or(0, |p| p.0))
            .sum();
        if publisher.is_none() && received >= expected {
            complete = received == expected;
            break Instant::now();
        }
        let deadline = started + config.duration + config.drain;
        if publisher.is_none() && Instant::now() >= deadline {
            break Instant::now();
        }
        if last_rss.elapsed() >= Duration::from_millis(250) {
            last_rss = Instant::now();
            for (peak, w) in peaks.iter_mut().zip(&config.watch) {
                *peak = (*peak).max(procfs::rss_kib(w.pid).unwrap_or(0));
            }
        }
        if last_log.elapsed() >= Duration::from_secs(2) {
            last_log = Instant::now();
            log(
                config,
                format_args!(
                    "{:.0} s: {received} of {expected} deliveries",
                    started.elapsed().as_secs_f64()
                ),
            );
        }
        let wait_until = Instant::now() + Duration::from_millis(500);
        match tokio::time::timeout_at(wait_until.into(), events.recv()).await {
            Ok(Some((index, event))) => absorb(&mut workers[index], event?)?,
            Ok(None) => bail!("every worker exited"),
            Err(_) => {}
        }
    };
    let window_secs = end.duration_since(started).as_secs_f64();
    let cpu_after = cpu_of(&config.watch)?;
    let client_after = client_cpu(&client_pids);
    let system_after = SystemCpu::now()?;
    let metrics_after = scrape_all(&config.metrics).await;
    if let Some(handle) = publisher.take() {
        handle.abort();
        bail!("the publisher did not finish within the run");
    }
    log(
        config,
        format_args!(
            "published {total} in {:.1} s; stopping the workers",
            publish_secs.unwrap_or(0.0)
        ),
    );

    // Final reports.
    let stop = ToWorker::Stop {
        expected_per_room: per_room.clone(),
    };
    let mut line = serde_json::to_vec(&stop)?;
    line.push(b'\n');
    for worker in &mut workers {
        worker.stdin.write_all(&line).await?;
        worker.stdin.flush().await?;
    }
    let final_deadline = Instant::now() + Duration::from_secs(60);
    while workers.iter().any(|w| w.done.is_none()) {
        let (index, event) = next_event(&mut events, final_deadline, "final reports").await?;
        match event {
            Ok(event) => absorb(&mut workers[index], event)?,
            // A worker exits right after its final report.
            Err(_) if workers[index].done.is_some() => {}
            Err(error) => return Err(error),
        }
    }
    for worker in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await;
    }

    // Adding up.
    let mut report = Report {
        target: config.target.label().into(),
        transport: config.transport.label().into(),
        connections: config.connections,
        rooms: config.rooms,
        rate: config.rate,
        size: config.size,
        duration_secs: config.duration.as_secs_f64(),
        workers: workers.len(),
        sample_per_worker: config.sample,
        published: total,
        expected,
        window_secs,
        open_secs,
        warmup_secs,
        complete,
        uncompressed_packet_bytes: 16
            + payload::message(config.first_room, 0, 0, config.size).len(),
        ..Default::default()
    };
    let mut latency = crate::worker::histogram();
    let mut worst = BTreeMap::<u64, u64>::new();
    let mut units = 0;
    for worker in &workers {
        let f = worker.done.as_ref().expect("checked above");
        report.received += f.received;
        report.connections_complete += f.complete;
        report.connections_short += f.short;
        report.connections_over += f.over;
        report.extra += f.extra;
        report.max_missing_per_connection = report.max_missing_per_connection.max(f.max_missing);
        report.connections_closed += f.closed;
        report.error_count += f.error_count;
        report.errors.extend(f.errors.iter().take(5).cloned());
        report.sample.merge(&f.sample);
        report.bytes_received += f.bytes;
        report.batches_decoded += f.batches_decoded;
        report.batches_memo += f.batches_memo;
        report.client_rss_kib += f.rss_kib;
        units += f.units;
        for &(second, micros) in &f.worst_per_second {
            let w = worst.entry(second).or_default();
            *w = (*w).max(micros);
        }
        for &(value, count) in &f.latency_us {
            latency.saturating_record_n(value, count);
        }
        ensure!(
            f.expected
                == (worker.plan.first_conn..worker.plan.first_conn + worker.plan.conns)
                    .map(|c| per_room[(c % config.rooms) as usize])
                    .sum::<u64>(),
            "worker {} computed another expectation",
            worker.plan.worker
        );
    }
    report.lost = expected.saturating_sub(report.received);
    report.loss_pct = 100.0 * report.lost as f64 / expected.max(1) as f64;
    report.complete = report.lost == 0 && report.extra == 0;
    let ms = |us: u64| us as f64 / 1000.0;
    report.latency = Latency {
        count: latency.len(),
        p50_ms: ms(latency.value_at_quantile(0.50)),
        p90_ms: ms(latency.value_at_quantile(0.90)),
        p99_ms: ms(latency.value_at_quantile(0.99)),
        p999_ms: ms(latency.value_at_quantile(0.999)),
        max_ms: ms(latency.max()),
        mean_ms: latency.mean() / 1000.0,
    };
    report.worst_latency_per_second_ms = worst.values().map(|&us| us as f64 / 1000.0).collect();
    let deliveries = report.received.max(1) as f64;
    report.offered_deliveries_per_sec = expected as f64 / config.duration.as_secs_f64();
    report.deliveries_per_sec = report.received as f64 / window_secs.max(1e-9);
    report.bytes_per_delivery = report.bytes_received as f64 / deliveries;
    report.units_per_delivery = units as f64 / deliveries;
    for (i, w) in config.watch.iter().enumerate() {
        let cpu = cpu_after[i] - cpu_before[i];
        report.servers.push(ProcessCost {
            name: w.name.clone(),
            pid: w.pid,
            cpu_secs: cpu,
            cores: cpu / window_secs.max(1e-9),
            rss_kib: procfs::rss_kib(w.pid).unwrap_or(0),
            rss_peak_kib: peaks[i],
        });
        report.server_cpu_secs += cpu;
    }
    report.server_cpu_us_per_delivery = report.server_cpu_secs * 1e6 / deliveries;
    let edge_name = match config.target {
        Target::Danmu => "gateway",
        Target::NatsWs => "nats-server",
    };
    if let Some(edge) = report.servers.iter().find(|s| s.name == edge_name) {
        report.edge = edge.name.clone();
        report.edge_cpu_us_per_delivery = edge.cpu_secs * 1e6 / deliveries;
    }
    report.client_cpu_secs = client_after - client_before;
    report.client_cpu_us_per_delivery = report.client_cpu_secs * 1e6 / deliveries;
    report.machine_busy = system_after.busy_since(&system_before);
    report.other_cores = system_after.other_cores(
        &system_before,
        report.server_cpu_secs + report.client_cpu_secs,
        window_secs,
    );
    for (name, after) in &metrics_after {
        let before = metrics_before.get(name).copied().unwrap_or(0.0);
        let counter = ["_total", "_sum", "_count"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        if counter && after - before != 0.0 {
            report.metrics.insert(name.clone(), after - before);
        }
    }
    Ok(report)
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<(usize, anyhow::Result<FromWorker>)>,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<(usize, anyhow::Result<FromWorker>)> {
    match tokio::time::timeout_at(deadline.into(), events.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("every worker exited while waiting for {what}"),
        Err(_) => bail!("timed out waiting for {what}"),
    }
}

fn absorb(worker: &mut Worker, event: FromWorker) -> anyhow::Result<()> {
    match event {
        FromWorker::Progress {
            received,
            warm,
            closed,
            cold_rooms,
            ..
        } => worker.progress = Some((received, warm, closed, cold_rooms)),
        FromWorker::Final(report) => worker.done = Some(*report),
        FromWorker::Failed { error } => bail!("{error}"),
        FromWorker::Ready { .. } => {}
    }
    Ok(())
}

/// Keeps absorbing progress for `quiet`.
async fn settle(
    events: &mut mpsc::UnboundedReceiver<(usize, anyhow::Result<FromWorker>)>,
    workers: &mut [Worker],
    quiet: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + quiet;
    while let Ok(Some((index, event))) = tokio::time::timeout_at(until.into(), events.recv()).await
    {
        absorb(&mut workers[index], event?)?;
    }
    Ok(())
}

fn cpu_of(watch: &[Watched]) -> anyhow::Result<Vec<f64>> {
    watch
        .iter()
        .map(|w| procfs::cpu_secs(w.pid).with_context(|| format!("{} (pid {})", w.name, w.pid)))
        .collect()
}

/// CPU seconds of the worker processes and of this one (the publisher).
fn client_cpu(workers: &[u32]) -> f64 {
    workers
        .iter()
        .chain(std::iter::once(&std::process::id()))
        .filter_map(|&pid| procfs::cpu_secs(pid).ok())
        .sum()
}

async fn scrape_all(pages: &[(String, String)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (_, url) in pages {
        match crate::http::scrape(url).await {
            Ok(values) => out.extend(values),
            Err(error) => eprintln!("danmu-load: scraping {url}: {error:#}"),
        }
    }
    out
}
