//! A worker process: opens its share of the connections, then reads them until told to stop,
//! counting every message and fully verifying a sample.
//!
//! Opening (WebSocket upgrade, AUTH or NATS `CONNECT`/`SUB`) runs on a small tokio runtime.
//! Reading runs on two plain epoll loops (`mio`), one thread each, so the client costs as
//! little CPU per delivery as we know how to make it:
//!
//! - **sample loop**: the first `sample` connections. Reads as soon as data arrives,
//!   decompresses every batch, checks every message's room and sequence (no gap, no
//!   duplicate, in order) and records publish-to-client latency (payload timestamp to the
//!   moment the read returned) in an HDR histogram.
//! - **bulk loop**: the others. Parses only headers: a GOIM packet of version 0 is one message;
//!   a compressed batch is counted through [`BatchCounter`] (decompressed once per worker,
//!   then recognised by content); a NATS `MSG` is one message. With `bulk_interval_ms` it
//!   sleeps between polls, so several batches arrive per read under load.

use std::collections::BTreeMap;
use std::io::{self, BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::BytesMut;
use danmu_proto::frame::{Frame, op};
use danmu_proto::token::{self, Claims, TokenIssuer};
use danmu_proto::websocket;
use futures::{StreamExt as _, TryStreamExt as _};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::count::{BatchCounter, for_each_message};
use crate::payload::{self, Fields};
use crate::plan::{
    FromWorker, SampleStats, Target, ToWorker, TokenSource, Transport, WorkerFinal, WorkerPlan,
    peer_subject,
};
use crate::wire::{Event, Kind, Parser};

/// How long opening one connection may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
const MAX_ERRORS_KEPT: usize = 20;
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x9e];

/// Latency histogram: 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// Entry point of `danmu-load worker` (stdin: plan and commands; stdout: reports).
pub fn main() -> anyhow::Result<()> {
    let mut line = String::new();
    // Not kept locked: the command thread below reads the following lines.
    io::stdin().lock().read_line(&mut line)?;
    let plan: WorkerPlan = serde_json::from_str(&line).context("reading the plan")?;
    crate::procfs::raise_fd_limit(plan.conns + 64)?;
    let started = Instant::now();
    let opened = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(open_all(&plan));
    let opened = match opened {
        Ok(opened) => opened,
        Err(error) => {
            send(&FromWorker::Failed {
                error: format!("worker {}: {error:#}", plan.worker),
            });
            return Err(error);
        }
    };
    send(&FromWorker::Ready {
        connected: opened.len() as u64,
        secs: started.elapsed().as_secs_f64(),
    });

    let shared = Arc::new(Shared::default());
    {
        let mut cold = shared.cold.lock().expect("cold lock");
        for conn in &opened {
            if conn.warm {
                shared.warm.fetch_add(1, Ordering::Relaxed);
            } else {
                *cold.entry(conn.room).or_default() += 1;
            }
        }
    }
    let heartbeat = (plan.target == Target::Danmu && plan.heartbeat_secs > 0).then(|| {
        let packet = Frame::new(1, op::HEARTBEAT, 1, Vec::new()).to_bytes();
        let bytes = match plan.transport {
            Transport::Ws => websocket::client_frame(websocket::opcode::BINARY, &packet, MASK),
            Transport::Tcp => packet,
        };
        (Duration::from_secs(plan.heartbeat_secs), bytes.to_vec())
    });
    let mut opened = opened;
    let bulk = opened.split_off((plan.sample as usize).min(opened.len()));
    let sample = opened;
    let mut loops = Vec::new();
    for (is_sample, conns) in [(true, sample), (false, bulk)] {
        if conns.is_empty() {
            continue;
        }
        let event_loop = Loop::new(is_sample, conns, &plan, shared.clone(), heartbeat.clone())?;
        loops.push(
            std::thread::Builder::new()
                .name(if is_sample { "sample" } else { "bulk" }.into())
                .spawn(move || event_loop.run())?,
        );
    }

    let (commands, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<ToWorker>(&line) {
                Ok(command) => {
                    if commands.send(command).is_err() {
                        break;
                    }
                }
                Err(error) => eprintln!("danmu-load worker: bad command {line:?}: {error}"),
            }
        }
    });
    let expected_per_room = loop {
        match received.recv_timeout(PROGRESS_EVERY) {
            Ok(ToWorker::Stop { expected_per_room }) => break expected_per_room,
            Err(mpsc::RecvTimeoutError::Timeout) => send(&shared.progress()),
            // The coordinator is gone: nothing to report to.
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the coordinator went away"),
        }
    };
    shared.stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for handle in loops {
        results.push(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a read loop panicked"))?,
        );
    }
    let mut report = finish(&plan, results, &expected_per_room);
    report.rss_kib = crate::procfs::rss_kib(std::process::id()).unwrap_or(0);
    report.cpu_secs = crate::procfs::cpu_secs(std::process::id()).unwrap_or(0.0);
    send(&FromWorker::Final(Box::new(report)));
    Ok(())
}

fn send(message: &FromWorker) {
    let mut out = io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, message);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// What the read loops and the reporting thread share.
#[derive(Default)]
struct Shared {
    received: AtomicU64,
    warm: AtomicU64,
    closed: AtomicU64,
    errors: AtomicU64,
    /// Connections not warm yet, per room id.
    cold: Mutex<BTreeMap<u64, u64>>,
    stop: AtomicBool,
}

impl Shared {
    fn progress(&self) -> FromWorker {
        let cold_rooms = {
            let cold = self.cold.lock().expect("cold lock");
            cold.iter()
                .filter(|(_, n)| **n > 0)
                .map(|(room, _)| *room)
                .take(2000)
                .collect()
        };
        FromWorker::Progress {
            received: self.received.load(Ordering::Relaxed),
            warm: self.warm.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cold_rooms,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Opening connections.

/// An open, authenticated (or subscribed) connection.
struct Opened {
    index: u64,
    room: u64,
    stream: std::net::TcpStream,
    parser: Parser,
    /// A message arrived during the handshake already.
    warm: bool,
}

async fn open_all(plan: &WorkerPlan) -> anyhow::Result<Vec<Opened>> {
    let issuer = match &plan.token {
        TokenSource::Key { private_pem } => Some(TokenIssuer::from_private_pem(private_pem)?),
        _ => None,
    };
    let issuer = issuer.as_ref();
    let mut opened: Vec<Opened> = futures::stream::iter(0..plan.conns)
        .map(|k| async move {
            let conn = plan.first_conn + k;
            tokio::time::timeout(OPEN_TIMEOUT, open_one(plan, issuer, conn))
                .await
                .context("timed out")
                .and_then(|r| r)
                .with_context(|| format!("connection {conn} to {}", plan.addr))
        })
        .buffer_unordered(plan.connect_concurrency.max(1))
        .try_collect()
        .await?;
    opened.sort_by_key(|o| o.index);
    Ok(opened)
}

async fn open_one(
    plan: &WorkerPlan,
    issuer: Option<&TokenIssuer>,
    conn: u64,
) -> anyhow::Result<Opened> {
    let room = plan.room_of(conn);
    let uid = plan.first_uid + conn;
    let mut stream = tokio::net::TcpStream::connect(plan.addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(4096);
    let (kind, path) = match (plan.target, plan.transport) {
        (Target::NatsWs, _) => (Kind::NatsWs, "/"),
        (Target::Danmu, Transport::Ws) => (Kind::GoimWs, "/sub"),
        (Target::Danmu, Transport::Tcp) => (Kind::GoimTcp, ""),
    };
    if kind != Kind::GoimTcp {
        upgrade(&mut stream, &mut buf, plan.addr, path).await?;
    }
    let first = match plan.target {
        Target::Danmu => {
            let token = match (&plan.token, issuer) {
                (_, Some(issuer)) => {
                    let now = crate::payload::unix_nanos() / 1_000_000_000;
                    issuer.issue(&Claims {
                        sub: uid.to_string(),
                        uid,
                        dev: format!("load-{uid}"),
                        rooms: Some(vec![room]),
                        iat: now,
                        exp: now + 24 * 3600,
                        iss: token::ISSUER.into(),
                        aud: token::AUDIENCE.into(),
                    })?
                }
                (TokenSource::Control { url, api_key }, None) => {
                    crate::http::control_token(url, api_key.as_deref(), uid, room).await?
                }
                _ => bail!("no token source: pass --token-key or --control"),
            };
            let body = serde_json::json!({
                "uid": uid, "roomid": room, "protover": plan.protover, "platform": "web",
                "type": 2, "key": token, "buvid": format!("load-{uid}"),
            });
            Frame::new(1, op::AUTH, 1, serde_json::to_vec(&body)?)
                .to_bytes()
                .to_vec()
        }
        Target::NatsWs => format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"danmu-load\"}}\r\n\
             SUB {} 1\r\nPING\r\n",
            peer_subject(room)
        )
        .into_bytes(),
    };
    let first = match kind {
        Kind::GoimTcp => first,
        _ => websocket::client_frame(websocket::opcode::BINARY, &first, MASK).to_vec(),
    };
    stream.write_all(&first).await?;

    let mut parser = Parser::new(kind);
    let mut state = Handshake::default();
    state.feed(&mut parser, &buf)?;
    while !state.done {
        ensure!(!state.closed, "closed by the server during the handshake");
        buf.clear();
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("closed by the server during the handshake");
        }
        state.feed(&mut parser, &buf)?;
    }
    if plan.target == Target::Danmu {
        ensure!(state.code == Some(0), "AUTH_REPLY code {:?}", state.code);
    }
    Ok(Opened {
        index: conn,
        room,
        stream: stream.into_std()?,
        parser,
        warm: state.warm,
    })
}

/// What the handshake has seen so far.
#[derive(Default)]
struct Handshake {
    /// AUTH_REPLY (ours) or PONG (nats-server) arrived.
    done: bool,
    code: Option<i64>,
    warm: bool,
    closed: bool,
}

impl Handshake {
    fn feed(&mut self, parser: &mut Parser, data: &[u8]) -> Result<(), crate::wire::WireError> {
        parser.feed(data, &mut |event| match event {
            Event::Goim {
                op: op::AUTH_REPLY,
                body,
                ..
            } => {
                self.done = true;
                self.code = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["code"].as_i64());
            }
            Event::Goim {
                op: op::MESSAGE, ..
            }
            | Event::NatsMsg(_) => self.warm = true,
            Event::NatsPong => self.done = true,
            Event::Closed => self.closed = true,
            _ => {}
        })
    }
}

/// WebSocket upgrade; what follows the 101 response stays in `buf`.
async fn upgrade(
    stream: &mut tokio::net::TcpStream,
    buf: &mut BytesMut,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<()> {
    let request = websocket::client_request(&addr.to_string(), path, "dGhlIHNhbXBsZSBub25jZQ==");
    stream.write_all(&request).await?;
    loop {
        if let Some((status, consumed)) = websocket::parse_response(buf)? {
            ensure!(status == 101, "upgrade refused with HTTP {status}");
            let _ = buf.split_to(consumed);
            return Ok(());
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("closed during the WebSocket upgrade");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

struct Conn {
    stream: mio::net::TcpStream,
    parser: Parser,
    room: u64,
    received: u64,
    warm: bool,
    closed: bool,
    /// Sample connections: the sequence expected next.
    next_seq: u64,
}

/// What a loop hands back when stopped.
struct LoopResult {
    /// Per connection: room id, messages received, closed.
    conns: Vec<(u64, u64, bool)>,
    latency: Histogram<u64>,
    /// Worst latency (µs) per unix second of publishing.
    worst: BTreeMap<u64, u64>,
    sample: SampleStats,
    warmups: u64,
    bytes: u64,
    units: u64,
    decoded: u64,
    memo: u64,
    errors: Vec<String>,
    error_count: u64,
}

struct Loop {
    sample: bool,
    conns: Vec<Conn>,
    poll: Poll,
    shared: Arc<Shared>,
    interval: Duration,
    heartbeat: Option<(Duration, Vec<u8>)>,
    pong: Vec<u8>,
    counter: BatchCounter,
    result: LoopResult,
}

impl Loop {
    fn new(
        sample: bool,
        opened: Vec<Opened>,
        plan: &WorkerPlan,
        shared: Arc<Shared>,
        heartbeat: Option<(Duration, Vec<u8>)>,
    ) -> anyhow::Result<Loop> {
        let poll = Poll::new()?;
        let mut conns = Vec::with_capacity(opened.len());
        for (i, o) in opened.into_iter().enumerate() {
            o.stream.set_nonblocking(true)?;
            let mut stream = mio::net::TcpStream::from_std(o.stream);
            poll.registry()
                .register(&mut stream, Token(i), Interest::READABLE)?;
            conns.push(Conn {
                stream,
                parser: o.parser,
                room: o.room,
                received: 0,
                warm: o.warm,
                closed: false,
                next_seq: 0,
            });
        }
        let count = conns.len() as u64;
        Ok(Loop {
            sample,
            conns,
            poll,
            shared,
            interval: if sample {
                Duration::ZERO
            } else {
                Duration::from_millis(plan.bulk_interval_ms)
            },
            heartbeat,
            pong: websocket::client_frame(websocket::opcode::BINARY, b"PONG\r\n", MASK).to_vec(),
            counter: BatchCounter::default(),
            result: LoopResult {
                conns: Vec::new(),
                latency: histogram(),
                worst: BTreeMap::new(),
                sample: SampleStats {
                    connections: if sample { count } else { 0 },
                    ..Default::default()
                },
                warmups: 0,
                bytes: 0,
                units: 0,
                decoded: 0,
                memo: 0,
                errors: Vec::new(),
                error_count: 0,
            },
        })
    }

    fn run(mut self) -> LoopResult {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; 256 * 1024];
        let mut last_sweep = Instant::now();
        let mut last_heartbeat = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            if let Err(error) = self.poll.poll(&mut events, Some(Duration::from_millis(50)))
                && error.kind() != io::ErrorKind::Interrupted
            {
                self.error(format!("poll: {error}"));
                break;
            }
            for event in &events {
                self.readable(event.token().0, &mut scratch);
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= Duration::from_secs(1) {
                self.counter.sweep();
                last_sweep = now;
            }
            if let Some((every, bytes)) = &self.heartbeat
                && now.duration_since(last_heartbeat) >= *every
            {
                last_heartbeat = now;
                for conn in self.conns.iter_mut().filter(|c| !c.closed) {
                    let _ = conn.stream.write(bytes);
                }
            }
            let spent = started.elapsed();
            if spent < self.interval {
                std::thread::sleep(self.interval - spent);
            }
        }
        let mut result = self.result;
        result.decoded = self.counter.decoded;
        result.memo = self.counter.hits;
        result.conns = self
            .conns
            .iter()
            .map(|c| (c.room, c.received, c.closed))
            .collect();
        result.units = self.conns.iter().map(|c| c.parser.units).sum();
        result
    }

    fn error(&mut self, error: String) {
        self.result.error_count += 1;
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        if self.result.errors.len() < MAX_ERRORS_KEPT {
            self.result.errors.push(error);
        }
    }

    fn readable(&mut self, i: usize, scratch: &mut [u8]) {
        loop {
            let conn = &mut self.conns[i];
            if conn.closed {
                return;
            }
            match conn.stream.read(scratch) {
                Ok(0) => {
                    self.close(i, None);
                    return;
                }
                Ok(n) => {
                    self.result.bytes += n as u64;
                    if let Err(error) = self.process(i, &scratch[..n]) {
                        self.close(i, Some(error));
                        return;
                    }
                    // A short read emptied the socket; new data raises a new edge.
                    if n < scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(i, Some(format!("read: {e}")));
                    return;
                }
            }
        }
    }

    fn close(&mut self, i: usize, error: Option<String>) {
        let conn = &mut self.conns[i];
        if conn.closed {
            return;
        }
        conn.closed = true;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let room = conn.room;
        self.shared.closed.fetch_add(1, Ordering::Relaxed);
        self.error(match error {
            Some(error) => format!("room {room}: {error}"),
            None => format!("room {room}: closed by the server"),
        });
    }

    /// Parses bytes read from connection `i`.
    fn process(&mut self, i: usize, data: &[u8]) -> Result<(), String> {
        let now_nanos = if self.sample {
            payload::unix_nanos()
        } else {
            0
        };
        let sample = self.sample;
        let Loop {
            conns,
            counter,
            result,
            ..
        } = self;
        let Conn {
            parser,
            room,
            received,
            warm,
            next_seq,
            ..
        } = &mut conns[i];
        let before = *received;
        let (mut got_message, mut ping, mut ws_closed) = (false, false, false);
        let mut bulk_warmups = 0u64;
        let mut failure = None;
        let mut check = |payload: &[u8], received: &mut u64| {
            if payload::is_warmup(payload) {
                result.warmups += 1;
                return;
            }
            *received += 1;
            if !sample {
                return;
            }
            let stats = &mut result.sample;
            stats.messages += 1;
            let Some(fields) = Fields::parse(payload) else {
                stats.unparsed += 1;
                return;
            };
            if fields.room != *room {
                stats.wrong_room += 1;
                return;
            }
            if fields.seq < *next_seq {
                stats.out_of_order += 1;
            } else {
                if fields.seq > *next_seq {
                    stats.gaps += 1;
                    stats.skipped += fields.seq - *next_seq;
                }
                *next_seq = fields.seq + 1;
            }
            let micros = now_nanos.saturating_sub(fields.ts_nanos) / 1000;
            result.latency.saturating_record(micros.max(1));
            let worst = result
                .worst
                .entry(fields.ts_nanos / 1_000_000_000)
                .or_default();
            *worst = (*worst).max(micros);
        };
        let fed = parser.feed(data, &mut |event| match event {
            Event::Goim {
                op: op::MESSAGE,
                version,
                body,
            } => {
                got_message = true;
                if sample {
                    if let Err(e) = for_each_message(version, body, |p| check(p, received)) {
                        failure = Some(e.to_string());
                    }
                } else {
                    match counter.count(version, body) {
                        Ok(counts) => {
                            *received += u64::from(counts.messages);
                            bulk_warmups += u64::from(counts.warmups);
                        }
                        Err(e) => failure = Some(e.to_string()),
                    }
                }
            }
            Event::NatsMsg(payload) => {
                got_message = true;
                check(payload, received);
            }
            Event::NatsPing => ping = true,
            Event::Closed => ws_closed = true,
            Event::Goim { .. } | Event::NatsPong => {}
        });
        let delta = *received - before;
        let room = *room;
        let newly_warm = got_message && !*warm;
        if newly_warm {
            *warm = true;
        }
        self.result.warmups += bulk_warmups;
        if delta > 0 {
            self.shared.received.fetch_add(delta, Ordering::Relaxed);
        }
        if newly_warm {
            self.shared.warm.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = self.shared.cold.lock().expect("cold lock").get_mut(&room) {
                *n = n.saturating_sub(1);
            }
        }
        if ping {
            let _ = self.conns[i].stream.write(&self.pong);
        }
        fed.map_err(|e| e.to_string())?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if ws_closed {
            return Err("WebSocket close frame from the server".into());
        }
        Ok(())
    }
}

fn finish(plan: &WorkerPlan, results: Vec<LoopResult>, expected_per_room: &[u64]) -> WorkerFinal {
    let mut report = WorkerFinal {
        connections: plan.conns,
        ..Default::default()
    };
    let mut latency = histogram();
    let mut worst = BTreeMap::new();
    for result in results {
        for (second, micros) in &result.worst {
            let w: &mut u64 = worst.entry(*second).or_default();
            *w = (*w).max(*micros);
        }
        for (room, received, closed) in result.conns {
            let index = (room - plan.first_room) as usize;
            let expected = expected_per_room.get(index).copied().unwrap_or(0);
            report.expected += expected;
            report.received += received;
            report.closed += u64::from(closed);
            match received.cmp(&expected) {
                std::cmp::Ordering::Equal => report.complete += 1,
                std::cmp::Ordering::Less => {
                    report.short += 1;
                    report.missing += expected - received;
                    report.max_missing = report.max_missing.max(expected - received);
                }
                std::cmp::Ordering::Greater => {
                    report.over += 1;
                    report.extra += received - expected;
                }
            }
        }
        let _ = latency.add(&result.latency);
        report.sample.merge(&result.sample);
        report.warmups += result.warmups;
        report.bytes += result.bytes;
        report.units += result.units;
        report.batches_decoded += result.decoded;
        report.batches_memo += result.memo;
        report.error_count += result.error_count;
        for error in result.errors {
            if report.errors.len() < MAX_ERRORS_KEPT {
                report.errors.push(error);
            }
        }
    }
    report.worst_per_second = worst.into_iter().collect();
    report.latency_us = latency
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    report
}
