//! `danmu-load fabric`: everything a workload needs on this machine, started here: one real
//! nats-server (`danmu_tests::single()`: JetStream, its own WebSocket listener for the peer),
//! and the release `danmu-gateway` and `danmu-distributor` binaries as child processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use danmu_proto::subjects::{self, Priority};
use danmu_tests::NatsServer;
use danmu_tests::client::Transport;
use danmu_tests::fabric::Keys;
use tokio::net::TcpStream;

use crate::procfs::Watched;

const READY_DEADLINE: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(20);

/// A child process killed on drop (SIGTERM first, so profilers wrapped around it write out).
pub struct ChildProcess {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    pub fn spawn(name: &str, bin: &Path, config: &Path, dir: &Path) -> anyhow::Result<Self> {
        ensure!(
            bin.is_file(),
            "{} not found: run `cargo build --release -p danmu-gateway -p danmu-distributor` \
             first (or pass its path)",
            bin.display()
        );
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(bin);
        command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (var, _) in std::env::vars() {
            if var.starts_with("DANMU_") {
                command.env_remove(var);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        Ok(ChildProcess {
            name: name.into(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); log tail of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signals our own child, not reaped yet.
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

#[derive(Clone, Debug)]
pub struct FabricOptions {
    pub gateway_bin: PathBuf,
    pub distributor_bin: PathBuf,
    /// TOML lines appended to the generated configs (tuning experiments).
    pub gateway_toml: String,
    pub distributor_toml: String,
    /// Whether to start our services (not needed when only the peer is measured).
    pub services: bool,
}

impl FabricOptions {
    /// The release binaries next to this one (`target/release/`).
    pub fn default_bins() -> (PathBuf, PathBuf) {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("target/release"));
        (dir.join("danmu-gateway"), dir.join("danmu-distributor"))
    }
}

/// A running fabric on loopback.
pub struct Fabric {
    pub nats: NatsServer,
    pub keys: Keys,
    pub gateway: Option<ChildProcess>,
    pub distributor: Option<ChildProcess>,
    pub ws_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    pub gateway_metrics: String,
    pub distributor_metrics: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Fabric {
    /// Services first, nats-server last (it goes with the fields): a gateway or distributor
    /// whose NATS is already gone spends its whole stop grace retrying (29 of the smoke preset's
    /// 42 s went there).
    fn drop(&mut self) {
        drop(self.gateway.take());
        drop(self.distributor.take());
    }
}

impl Fabric {
    pub async fn start(options: &FabricOptions) -> anyhow::Result<Fabric> {
        // Without the test fabric's users: the benchmark's processes and its nats-server
        // WebSocket peer connect anonymously.
        let nats = danmu_tests::nats::single_with(String::new(), false)
            .await
            .context("starting nats-server")?;
        let keys = Keys::generate();
        let dir = tempfile::TempDir::with_prefix("danmu-load-")?;
        let key_path = dir.path().join("token-public.pem");
        std::fs::write(&key_path, &keys.public_pem)?;
        let ws_addr = free_addr();
        let tcp_addr = free_addr();
        let gateway_metrics_addr = free_addr();
        let distributor_metrics_addr = free_addr();
        let mut fabric = Fabric {
            nats,
            keys,
            gateway: None,
            distributor: None,
            ws_addr,
            tcp_addr,
            gateway_metrics: format!("http://{gateway_metrics_addr}/metrics"),
            distributor_metrics: format!("http://{distributor_metrics_addr}/metrics"),
            dir,
        };
        if !options.services {
            return Ok(fabric);
        }
        let distributor_config = format!(
            "nats_url = {nats:?}\n\
             region = \"A\"\n\
             instance = \"load-distributor\"\n\
             metrics_listen = \"{distributor_metrics_addr}\"\n\
             {extra}\n",
            nats = fabric.nats.client_url(),
            extra = options.distributor_toml,
        );
        let path = fabric.dir.path().join("distributor.toml");
        std::fs::write(&path, distributor_config)?;
        fabric.distributor = Some(ChildProcess::spawn(
            "distributor",
            &options.distributor_bin,
            &path,
            fabric.dir.path(),
        )?);
        let gateway = fabric
            .spawn_gateway(
                "gateway",
                &options.gateway_bin,
                (ws_addr, tcp_addr),
                Some(gateway_metrics_addr),
                &options.gateway_toml,
            )
            .await;
        fabric.gateway = Some(gateway?);
        fabric.wait_distributor().await?;
        Ok(fabric)
    }

    /// Starts a gateway process named `name` (its config and log in the fabric's directory,
    /// listening on `ws` and `tcp`) and waits until it is ready: both ports accept, its health
    /// report is in the nodes bucket, and a probe client per transport authenticates.
    pub async fn spawn_gateway(
        &self,
        name: &str,
        bin: &Path,
        (ws, tcp): (SocketAddr, SocketAddr),
        metrics: Option<SocketAddr>,
        extra: &str,
    ) -> anyhow::Result<ChildProcess> {
        let node_id = format!("load-{name}-{}", std::process::id());
        let key_path = self.dir.path().join("token-public.pem");
        // The load clients send heartbeats only every 30 s (idle ones none); a long timeout
        // keeps a starved client from being cut off for that, which is not what is measured.
        let metrics = metrics
            .map(|addr| format!("metrics_listen = \"{addr}\"\n"))
            .unwrap_or_default();
        let config = format!(
            "node_id = {node_id:?}\n\
             region = \"A\"\n\
             nats_url = {nats:?}\n\
             token_public_key_path = {key:?}\n\
             ws_listen = \"{ws}\"\n\
             tcp_listen = \"{tcp}\"\n\
             heartbeat_timeout = \"1h\"\n\
             {metrics}\
             {extra}\n",
            nats = self.nats.client_url(),
            key = key_path.to_string_lossy(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let mut gateway = ChildProcess::spawn(name, bin, &path, self.dir.path())?;
        let deadline = Instant::now() + READY_DEADLINE;
        let js = async_nats::jetstream::new(async_nats::connect(self.nats.client_url()).await?);
        loop {
            gateway.check_running()?;
            let up = match js.get_key_value(subjects::NODES_BUCKET).await {
                Ok(store) => matches!(store.get(&node_id).await, Ok(Some(_))),
                Err(_) => false,
            } && TcpStream::connect(ws).await.is_ok()
                && TcpStream::connect(tcp).await.is_ok();
            if up {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{name} not ready within {READY_DEADLINE:?}; log tail:\n{}",
                gateway.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (transport, addr) in [(Transport::WebSocket, ws), (Transport::Tcp, tcp)] {
            let probe = danmu_tests::room::join(&self.keys, transport, addr, 0, 1, 3)
                .await
                .with_context(|| format!("probe client of {name} over {transport:?}"))?;
            drop(probe);
        }
        Ok(gateway)
    }

    async fn wait_distributor(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        let js = async_nats::jetstream::new(async_nats::connect(self.nats.client_url()).await?);
        let stream = subjects::push_stream("A", Priority::Low);
        loop {
            self.check_running()?;
            if let Ok(s) = js.get_stream(&stream).await
                && s.consumer_info("distributor-lo").await.is_ok()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the distributor was not ready within {READY_DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The processes under test for a target.
    pub fn watched(&self, target: crate::plan::Target) -> Vec<Watched> {
        let mut out = Vec::new();
        if target == crate::plan::Target::Danmu {
            for child in [&self.gateway, &self.distributor].into_iter().flatten() {
                out.push(Watched {
                    name: child.name.clone(),
                    pid: child.pid(),
                });
            }
        }
        out.push(Watched {
            name: "nats-server".into(),
            pid: self.nats.pid(),
        });
        out
    }

    pub fn nats_ws_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.nats.ports().websocket).into()
    }

    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for child in [&mut self.gateway, &mut self.distributor]
            .into_iter()
            .flatten()
        {
            child.check_running()?;
        }
        ensure!(self.nats.is_running(), "nats-server exited");
        Ok(())
    }
}

/// A free port on loopback.
pub fn free_addr() -> SocketAddr {
    ([127, 0, 0, 1], danmu_tests::ports::free_port()).into()
}

/// nats-server's version string.
pub fn nats_server_version() -> String {
    danmu_tests::nats::binary()
        .ok()
        .and_then(|bin| Command::new(bin).arg("--version").output().ok())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .map(|v| v.trim_start_matches("nats-server: ").to_string())
        .unwrap_or_else(|| "(unknown)".into())
}
