//! The kernel's floor: CPU per frame written to a loopback TCP socket with no runtime, no queue
//! and no protocol, in a preset's write pattern (`danmu-load floor`).
//!
//! Issue 10's CPU bars (gateway CPU per delivery ≤ 1/10 of nats-server's WebSocket on the
//! efficiency preset, ≤ 1/2 on many rooms) compare our edge with the peer's; both pay the kernel
//! for every frame they write. This benchmark measures that part alone: one thread on CPU 0
//! writes the same pre-encoded frame to `connections` sockets in the preset's pattern (a tick
//! every `tick_ms`, `writes_per_tick` writes per tick, round-robin over the sockets), and a
//! reader process on CPU 1 drains them the way the load client's bulk loop does (sleeping
//! `bulk_interval_ms` between polls). CPU is counted as the load tool counts the servers'
//! (`/proc/<pid>/stat` utime + stime, so softirq time is charged the same way), over the writing
//! window only, and divided by the writes. Whatever a server spends per delivery above this is
//! user space and scheduling; below it nothing written frame by frame can go.
//!
//! Two ways to write:
//! - `write`: one `write(2)` per frame, as the gateway's connection task does (`writev` with
//!   one buffer) and as nats-server's flusher does per client;
//! - `uring`: `io_uring` `IORING_OP_SEND`, `batch` sends per `io_uring_enter`, so the syscall
//!   entry is paid once per batch instead of once per frame (the TCP send is unchanged).
//!
//! The reader checks every byte arrived (frames × bytes), so a run that lost writes fails.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

/// How frames are handed to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// One `write(2)` per frame.
    Write,
    /// `io_uring` sends, `batch` per submission.
    Uring,
}

/// One run's shape.
#[derive(Clone, Debug, Serialize)]
pub struct FloorPlan {
    pub connections: usize,
    pub frame_bytes: usize,
    pub writes_per_tick: usize,
    pub tick_ms: u64,
    pub seconds: f64,
    pub mode: WriteMode,
    /// Sends per `io_uring_enter` (`uring` only).
    pub batch: usize,
    pub bulk_interval_ms: u64,
    /// Writer on CPU 0, reader on CPU 1 (as `fabric --pin split`); off where there is one core.
    pub pin: bool,
    /// The `danmu-load` binary, run as the reader process.
    #[serde(skip)]
    pub exe: std::path::PathBuf,
}

impl FloorPlan {
    /// Many rooms: 2,000 msg/s over 1,000 rooms of 10, one plain 119-B packet per delivery
    /// (bytes per delivery measured in `docs/performance.md`): 20,000 writes/s over 10,000
    /// sockets, 1,000 per 50-ms tick.
    pub fn many_rooms() -> Self {
        FloorPlan {
            connections: 10_000,
            frame_bytes: 119,
            writes_per_tick: 1_000,
            tick_ms: 50,
            seconds: 20.0,
            mode: WriteMode::Write,
            batch: 64,
            bulk_interval_ms: 50,
            pin: true,
            exe: std::env::current_exe().unwrap_or_else(|_| "danmu-load".into()),
        }
    }

    /// Efficiency: one room of 5,000 at 50 msg/s; the window sends a ~185-B batch of about 5
    /// messages every 100 ms (0.19 frames and 37 B per delivery measured): 5,000 writes per tick.
    pub fn efficiency() -> Self {
        FloorPlan {
            connections: 5_000,
            frame_bytes: 185,
            writes_per_tick: 5_000,
            tick_ms: 100,
            ..Self::many_rooms()
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct FloorReport {
    pub plan: FloorPlan,
    pub writes: u64,
    /// Writes the kernel refused (`EAGAIN`): 0 unless the reader falls behind.
    pub refused: u64,
    pub window_secs: f64,
    pub writer_cpu_secs: f64,
    pub writer_cpu_us_per_write: f64,
    pub reader_cpu_secs: f64,
    pub other_processes_cores: f64,
}

/// Entry point of `danmu-load floor`.
pub fn run(plan: &FloorPlan) -> anyhow::Result<FloorReport> {
    ensure!(
        plan.connections > 0 && plan.frame_bytes > 0 && plan.tick_ms > 0,
        "connections, frame bytes and tick must be positive"
    );
    ensure!(
        plan.batch > 0 && plan.batch <= 4096,
        "--batch must be 1..=4096"
    );
    crate::procfs::raise_fd_limit(plan.connections as u64 + 64)?;
    if plan.pin {
        crate::procfs::pin_process(std::process::id(), &[0])?;
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut reader = Command::new(&plan.exe)
        .args(["floor-reader", &addr.to_string()])
        .arg(plan.connections.to_string())
        .arg(plan.bulk_interval_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning the reader")?;
    if plan.pin {
        crate::procfs::pin_process(reader.id(), &[1])?;
    }
    let mut sockets = Vec::with_capacity(plan.connections);
    while sockets.len() < plan.connections {
        let (socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        sockets.push(socket);
    }
    let frame = vec![0x5au8; plan.frame_bytes];
    let fds: Vec<i32> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    let mut ring = match plan.mode {
        WriteMode::Write => None,
        WriteMode::Uring => Some(io_uring::IoUring::new(4096).context("io_uring_setup")?),
    };

    let system_before = crate::procfs::SystemCpu::now()?;
    let me = std::process::id();
    let reader_cpu_before = crate::procfs::cpu_secs(reader.id())?;
    let cpu_before = crate::procfs::cpu_secs(me)?;
    let started = Instant::now();
    let tick = Duration::from_millis(plan.tick_ms);
    let ticks = (plan.seconds * 1000.0 / plan.tick_ms as f64).ceil() as u64;
    let (mut next, mut writes, mut refused) = (0usize, 0u64, 0u64);
    for n in 0..ticks {
        let due = started + tick * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let members = (0..plan.writes_per_tick).map(|i| fds[(next + i) % fds.len()]);
        let (done, no) = match ring.as_mut() {
            None => write_each(members, &frame)?,
            Some(ring) => send_batched(ring, members, &frame, plan.batch)?,
        };
        next = (next + plan.writes_per_tick) % fds.len();
        writes += done;
        refused += no;
    }
    let window = started.elapsed().as_secs_f64();
    let cpu = crate::procfs::cpu_secs(me)? - cpu_before;
    let reader_cpu = crate::procfs::cpu_secs(reader.id())? - reader_cpu_before;
    let other_cores =
        crate::procfs::SystemCpu::now()?.other_cores(&system_before, cpu + reader_cpu, window);
    drop(sockets);

    let mut line = String::new();
    std::io::BufReader::new(reader.stdout.take().context("reader stdout")?).read_line(&mut line)?;
    let status = reader.wait()?;
    ensure!(status.success(), "the reader failed ({status})");
    let received: u64 = line.trim().parse().context("the reader's byte count")?;
    let sent = writes * plan.frame_bytes as u64;
    ensure!(
        received == sent,
        "the reader got {received} bytes of {sent} written"
    );
    Ok(FloorReport {
        plan: plan.clone(),
        writes,
        refused,
        window_secs: window,
        writer_cpu_secs: cpu,
        writer_cpu_us_per_write: cpu * 1e6 / writes.max(1) as f64,
        reader_cpu_secs: reader_cpu,
        other_processes_cores: other_cores,
    })
}

/// One `write(2)` per member; returns (written, refused).
fn write_each(members: impl Iterator<Item = i32>, frame: &[u8]) -> anyhow::Result<(u64, u64)> {
    let (mut done, mut refused) = (0, 0);
    for fd in members {
        // SAFETY: `fd` is an open socket we own; `frame` is valid for its length.
        let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
        match n {
            n if n as usize == frame.len() => done += 1,
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
                refused += 1
            }
            n => bail!("write returned {n}: {}", std::io::Error::last_os_error()),
        }
    }
    Ok((done, refused))
}

/// `batch` sends per `io_uring_enter`, waiting for their completions; returns (written, refused).
fn send_batched(
    ring: &mut io_uring::IoUring,
    members: impl Iterator<Item = i32>,
    frame: &[u8],
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    use io_uring::{opcode, types};
    let (mut done, mut refused) = (0, 0);
    let mut members = members.peekable();
    while members.peek().is_some() {
        let mut queued = 0;
        {
            let mut sq = ring.submission();
            for fd in members.by_ref().take(batch) {
                let send = opcode::Send::new(types::Fd(fd), frame.as_ptr(), frame.len() as u32)
                    .build()
                    .user_data(fd as u64);
                // SAFETY: `frame` outlives the submission: we wait for every completion below.
                unsafe { sq.push(&send) }.context("submission queue full")?;
                queued += 1;
            }
        }
        ring.submit_and_wait(queued)?;
        for cqe in ring.completion() {
            match cqe.result() {
                n if n as usize == frame.len() => done += 1,
                n if n == -libc::EAGAIN => refused += 1,
                n => bail!(
                    "send returned {n}: {}",
                    std::io::Error::from_raw_os_error(-n)
                ),
            }
        }
    }
    Ok((done, refused))
}

/// Entry point of `danmu-load floor-reader ADDR CONNECTIONS BULK_INTERVAL_MS`: connects, drains
/// every socket until all close, prints the bytes read.
pub fn reader_main(
    addr: SocketAddr,
    connections: usize,
    bulk_interval_ms: u64,
) -> anyhow::Result<()> {
    crate::procfs::raise_fd_limit(connections as u64 + 64)?;
    let mut poll = Poll::new()?;
    let mut streams = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = TcpStream::connect(addr)?;
        stream.set_nonblocking(true)?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        streams.push(Some(stream));
    }
    let (mut open, mut bytes) = (connections, 0u64);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    while open > 0 {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            let Some(stream) = streams[event.token().0].as_mut() else {
                continue;
            };
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        streams[event.token().0] = None;
                        open -= 1;
                        break;
                    }
                    Ok(n) => bytes += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if bulk_interval_ms > 0 {
            std::thread::sleep(Duration::from_millis(bulk_interval_ms));
        }
    }
    writeln!(std::io::stdout(), "{bytes}")?;
    Ok(())
}
