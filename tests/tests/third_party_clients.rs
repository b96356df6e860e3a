//! An unmodified third-party client of the Bilibili live protocol, `bilibili-live-ws` (npm,
//! pinned in `tests/compat/package.json`, installed by `scripts/install-deps`), receives from our
//! gateway over WebSocket and TCP with protover 2 and 3: a lone message, which the distributor
//! sends as a plain version-0 packet (no brotli), and a burst, which arrives as compressed
//! batches. Node runs `tests/compat/receive.js`, which prints what the library decoded.
//! The unmodified `blivedm` (PyPI), which speaks only `wss`, receives the same from the
//! gateway's own TLS port (`tests/compat/blivedm_receive.py`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use danmu_distributor::Stats as DistributorStats;
use danmu_tests::fabric::SingleRegion;
use danmu_tests::room::{self, WARMUP, danmu};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(30);
const ROOM: u64 = 77;
const BURST: u64 = 30;

struct Viewer {
    label: String,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Viewer {
    /// The next event the client printed, within `WAIT`.
    async fn next(&mut self) -> anyhow::Result<serde_json::Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .with_context(|| format!("{}: nothing within {WAIT:?}", self.label))??
            .with_context(|| format!("{}: the client exited", self.label))?;
        let event: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: not JSON: {line}", self.label))?;
        if event["event"] == "error" {
            bail!("{}: {}", self.label, event["why"]);
        }
        Ok(event)
    }

    /// The next business message that is not a warm-up, as the library decoded it.
    async fn next_message(&mut self) -> anyhow::Result<serde_json::Value> {
        loop {
            let event = self.next().await?;
            if event["event"] == "msg" && event["data"]["cmd"] != WARMUP {
                return Ok(event["data"].clone());
            }
        }
    }

    /// Waits for any message (warm-ups included) while `publish` keeps publishing warm-ups.
    async fn warm(
        &mut self,
        business: &async_nats::Client,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        let warmup = bytes::Bytes::from(serde_json::json!({ "cmd": WARMUP }).to_string());
        loop {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{}: no warm-up message arrived",
                self.label
            );
            room::publish(business, ROOM, warmup.clone()).await?;
            if let Ok(line) =
                tokio::time::timeout(Duration::from_millis(300), self.lines.next_line()).await
            {
                let line = line?.with_context(|| format!("{}: the client exited", self.label))?;
                if line.contains(r#""event":"msg""#) {
                    return Ok(());
                }
                ensure!(
                    !line.contains(r#""event":"error""#),
                    "{}: {line}",
                    self.label
                );
            }
        }
    }
}

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

async fn spawn(
    f: &SingleRegion,
    transport: &str,
    protover: u16,
    uid: u64,
) -> anyhow::Result<Viewer> {
    let dir = compat_dir();
    ensure!(
        dir.join("node_modules/bilibili-live-ws").is_dir(),
        "bilibili-live-ws is not installed in {}: run scripts/install-deps",
        dir.display()
    );
    let addr = match transport {
        "ws" => f.addr(danmu_tests::client::Transport::WebSocket),
        _ => f.addr(danmu_tests::client::Transport::Tcp),
    };
    let token = f.keys.token(uid, None, Duration::from_secs(600));
    let mut child = Command::new("node")
        .current_dir(&dir)
        .arg("receive.js")
        .args([
            transport,
            &addr.to_string(),
            &ROOM.to_string(),
            &uid.to_string(),
            &protover.to_string(),
            &token,
            // Warm-ups, the lone message and the burst, with room to spare.
            "100000",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running node (is Node.js installed?)")?;
    let stdout = child.stdout.take().expect("piped");
    let mut viewer = Viewer {
        label: format!("bilibili-live-ws {transport} protover {protover}"),
        child,
        lines: BufReader::new(stdout).lines(),
    };
    let live = viewer.next().await?;
    ensure!(
        live["event"] == "live",
        "{}: expected AUTH to succeed, got {live}",
        viewer.label
    );
    Ok(viewer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bilibili_live_ws_receives_lone_messages_and_batches() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let mut viewers = Vec::new();
    for (uid, (transport, protover)) in [("ws", 3), ("tcp", 3), ("ws", 2), ("tcp", 2)]
        .into_iter()
        .enumerate()
    {
        viewers.push(spawn(&f, transport, protover, uid as u64 + 1).await?);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    for viewer in &mut viewers {
        viewer.warm(&f.business, deadline).await?;
    }

    // A lone message into a quiet room leaves as a plain version-0 packet. The room is quiet
    // once a window (20 ms) has passed since its last batch: give it ten.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = &f.distributor.stats;
    let plain_before =
        DistributorStats::get(&stats.batches_out) - DistributorStats::get(&stats.compressions);
    room::publish(&f.business, ROOM, danmu(0)).await?;
    for viewer in &mut viewers {
        let message = viewer.next_message().await?;
        assert_eq!(message["n"], 0, "{}: {message}", viewer.label);
        assert_eq!(message["info"][1], "hello", "{}", viewer.label);
    }
    let plain =
        DistributorStats::get(&stats.batches_out) - DistributorStats::get(&stats.compressions);
    assert_eq!(
        plain - plain_before,
        1,
        "the lone message went out uncompressed"
    );

    // A burst is aggregated into brotli batches (and zlib for protover 2).
    let compressed_before = DistributorStats::get(&stats.compressions);
    for n in 1..=BURST {
        room::publish(&f.business, ROOM, danmu(n)).await?;
    }
    f.business.flush().await?;
    for viewer in &mut viewers {
        for n in 1..=BURST {
            let message = viewer.next_message().await?;
            assert_eq!(message["n"], n, "{}: complete and in order", viewer.label);
        }
    }
    assert!(
        DistributorStats::get(&stats.compressions) > compressed_before,
        "the burst was compressed"
    );
    for mut viewer in viewers {
        let _ = viewer.child.kill().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blivedm_receives_over_the_gateways_own_wss_port() -> anyhow::Result<()> {
    let cert = danmu_tests::tls::TestCert::generate();
    let f =
        SingleRegion::start_with(|_, gateway| danmu_tests::tls::with_tls(gateway, &cert)).await?;
    let addr = f.gateway.wss_addr.expect("wss is configured");
    let uid = 5;
    let token = f.keys.token(uid, None, Duration::from_secs(600));
    let mut child = Command::new("python3")
        .current_dir(compat_dir())
        .arg("blivedm_receive.py")
        .args([
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &ROOM.to_string(),
            &uid.to_string(),
            &token,
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running python3 with blivedm (scripts/install-deps installs it)")?;
    let stdout = child.stdout.take().expect("piped");
    let mut viewer = Viewer {
        label: "blivedm wss".into(),
        child,
        lines: BufReader::new(stdout).lines(),
    };
    let live = viewer.next().await?;
    ensure!(
        live["event"] == "live",
        "expected AUTH to succeed, got {live}"
    );
    viewer
        .warm(&f.business, tokio::time::Instant::now() + WAIT)
        .await?;
    for n in 0..=BURST {
        room::publish(&f.business, ROOM, danmu(n)).await?;
    }
    for n in 0..=BURST {
        let message = viewer.next_message().await?;
        assert_eq!(message["n"], n, "blivedm: complete and in order: {message}");
        assert_eq!(message["info"][1], "hello");
    }
    let _ = viewer.child.kill().await;
    Ok(())
}
