//! One nats-server process: spawned from a rendered config, killed and its store removed on Drop.

use std::fs::{self, File};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use super::config::{ServerPorts, ServerSpec, server_config};
use super::{binary, monitor};
use crate::wait::eventually;

/// How much of the server log an error quotes.
const LOG_TAIL_BYTES: u64 = 4096;
/// How long a graceful [`NatsServer::stop`] may take before the process is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where a server keeps its config, log and JetStream store.
#[derive(Debug)]
pub(crate) enum ServerDir {
    /// Removed when the server is dropped.
    Temp(TempDir),
    /// Kept after the server stops (`local-nats`).
    Kept(PathBuf),
}

impl ServerDir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            ServerDir::Temp(dir) => dir.path(),
            ServerDir::Kept(dir) => dir,
        }
    }
}

/// A running nats-server. Dropping it kills the process, waits for it and removes its temporary
/// directory (config, log and JetStream store).
#[derive(Debug)]
pub struct NatsServer {
    spec: ServerSpec,
    binary: PathBuf,
    child: Option<Child>,
    pid: u32,
    ready_timeout: Duration,
    // Last field: dropped after the process is gone.
    dir: ServerDir,
}

impl NatsServer {
    /// Writes the config into `dir` and spawns the server; does not wait for it (see
    /// [`NatsServer::wait_healthy`]).
    pub(crate) fn spawn(
        spec: ServerSpec,
        dir: ServerDir,
        ready_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let binary = binary::binary()?;
        fs::create_dir_all(&spec.store_dir)
            .with_context(|| format!("creating {}", spec.store_dir.display()))?;
        let config_path = dir.path().join("nats.conf");
        fs::write(&config_path, server_config(&spec))
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut server = Self {
            spec,
            binary,
            child: None,
            pid: 0,
            ready_timeout,
            dir,
        };
        server.spawn_process()?;
        Ok(server)
    }

    fn spawn_process(&mut self) -> anyhow::Result<()> {
        // Appending keeps the log of earlier runs across restarts.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.pid = child.id();
        self.child = Some(child);
        Ok(())
    }

    /// `nats://127.0.0.1:PORT`
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.spec.ports.client)
    }

    /// nats-server's own WebSocket listener, `ws://127.0.0.1:PORT` (no TLS).
    pub fn websocket_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.spec.ports.websocket)
    }

    /// The HTTP monitoring endpoint, `http://127.0.0.1:PORT`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.ports.monitor)
    }

    /// The process id of the current (or last) process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `server_name`.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The cluster name, which is the region.
    pub fn cluster(&self) -> &str {
        &self.spec.region
    }

    pub fn ports(&self) -> ServerPorts {
        self.spec.ports
    }

    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// The directory holding `nats.conf`, `nats.log` and the JetStream store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("nats.conf")
    }

    /// The server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("nats.log")
    }

    /// The last few KiB of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path(), LOG_TAIL_BYTES)
            .unwrap_or_else(|e| format!("(cannot read {}: {e})", self.log_path().display()))
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the process (SIGKILL) and waits for it; the store stays. No-op when not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully (SIGTERM, through `nats-server --signal`), killing it if it
    /// has not exited within 10 s. No-op when not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let signalled = Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("term={}", child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if signalled {
            let deadline = std::time::Instant::now() + STOP_GRACE;
            while std::time::Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server if it runs, starts it again on the same ports and store, and waits until
    /// it is healthy (for a supercluster region that includes contact with the meta leader, so
    /// a majority of regions must be up).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_process()?;
        self.wait_healthy(self.ready_timeout).await
    }

    /// Waits until `/healthz` answers 200: JetStream is enabled and, when clustered, in contact
    /// with a meta leader. Fails at once, with the log tail, if the process exits.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("nats-server {} to be healthy", self.name());
        // A fatal error is a value: it ends the polling at once instead of being retried.
        let outcome = eventually(
            &what,
            timeout,
            async || -> anyhow::Result<Option<anyhow::Result<()>>> {
                if let Err(exited) = self.check_running() {
                    return Ok(Some(Err(exited)));
                }
                self.check_healthy().await.map(|()| Some(Ok(())))
            },
        )
        .await;
        match outcome {
            Ok(result) => result,
            Err(e) => Err(e.context(format!("log tail of {}:\n{}", self.name(), self.log_tail()))),
        }
    }

    /// Errors (with the log tail) if the process has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        let status = match self.child.as_mut() {
            None => anyhow::bail!("nats-server {} is not running (killed)", self.name()),
            Some(child) => child.try_wait()?,
        };
        match status {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                anyhow::bail!(
                    "nats-server {} exited ({status}); log tail of {}:\n{}",
                    self.name(),
                    self.log_path().display(),
                    self.log_tail()
                )
            }
        }
    }

    /// `/healthz` answers 200.
    pub async fn check_healthy(&self) -> anyhow::Result<()> {
        let (status, body) = monitor::get(self.spec.ports.monitor, "/healthz").await?;
        anyhow::ensure!(
            status == 200,
            "{}: /healthz: HTTP {status}: {}",
            self.name(),
            body.trim()
        );
        Ok(())
    }

    /// `GET` a monitoring endpoint that answers JSON (`/varz`, `/jsz`, `/connz`, `/gatewayz`, ...).
    pub async fn monitor_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        monitor::get_json(self.spec.ports.monitor, path).await
    }

    /// A client connected to this server as the test admin user (everything allowed: see
    /// [`super::users::test_admin`]), for setting up and inspecting; servers started by
    /// [`super::single`] and [`super::supercluster`] list it.
    pub async fn connect_admin(&self) -> anyhow::Result<async_nats::Client> {
        super::users::test_admin()
            .connect(&self.client_url())
            .await
            .with_context(|| format!("connecting to {} as admin", self.name()))
    }

    /// A client connected to this server as the test business publisher (the chart's
    /// publisher permissions for this server's region).
    pub async fn connect_publisher(&self) -> anyhow::Result<async_nats::Client> {
        super::users::test_publisher()
            .connect(&self.client_url())
            .await
            .with_context(|| format!("connecting to {} as the publisher", self.name()))
    }

    /// A JetStream context on a new admin connection to this server.
    pub async fn jetstream_admin(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.connect_admin().await?))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_tail(path: &Path, bytes: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(String::from_utf8_lossy(&tail).into_owned())
}
