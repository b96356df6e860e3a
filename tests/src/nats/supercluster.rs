//! Starting one standalone server or a supercluster (one server per region, gateways between
//! every pair), with retries when a freshly chosen port was taken before the server bound it.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use super::config::{Gateway, ServerPorts, ServerSpec};
use super::server::{NatsServer, ServerDir};
use super::users::FabricUsers;
use crate::wait::eventually;

/// A standalone server is healthy in well under a second; a supercluster elects its JetStream
/// meta leader in 5-10 s on loopback, more on a loaded CI machine.
pub const SINGLE_READY_TIMEOUT: Duration = Duration::from_secs(20);
pub const SUPERCLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts with free ports are retried this often when a server exits while starting.
const START_ATTEMPTS: usize = 3;

/// One JetStream server, cluster (region) "A", with the region mappings for A and the test
/// users of region A ([`FabricUsers::for_tests`]: no anonymous clients); returns once JetStream
/// answers.
///
/// It is standalone, not a one-server cluster: a clustered JetStream never elects a meta leader
/// without a route, gateway or leaf connection to another server. Stream placement is ignored.
pub async fn single() -> anyhow::Result<NatsServer> {
    let users = FabricUsers::for_tests(&["A"])?;
    single_with(users.authorization_block("A"), false).await
}

/// A standalone server like [`single`], but without the test users: `extra` is appended to its
/// config (TLS, users, an operator: see
/// [`super::security`]); `operator_mode` when `extra` sets an operator (the region mappings
/// are then left out: operator mode keeps them in account JWTs).
pub async fn single_with(extra: String, operator_mode: bool) -> anyhow::Result<NatsServer> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let temp = TempDir::with_prefix("danmu-nats-")?;
        let spec = ServerSpec {
            name: "sA".into(),
            region: "A".into(),
            ports: ServerPorts::free(),
            store_dir: temp.path().join("store"),
            gateways: Vec::new(),
            extra: extra.clone(),
            operator_mode,
        };
        let mut server = NatsServer::spawn(spec, ServerDir::Temp(temp), SINGLE_READY_TIMEOUT)?;
        match server.wait_healthy(SINGLE_READY_TIMEOUT).await {
            Ok(()) => return Ok(server),
            Err(e) if server.is_running() => return Err(e),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .expect("at least one attempt")
        .context("starting a single nats-server"))
}

/// One nats-server per region, joined by gateways, JetStream clustered across all of them.
#[derive(Debug)]
pub struct Supercluster {
    /// In the order the regions were given.
    pub regions: Vec<NatsServer>,
}

impl Supercluster {
    /// The server of region `name`. Panics if there is none (a typo in a test).
    pub fn region(&self, name: &str) -> &NatsServer {
        self.regions
            .iter()
            .find(|s| s.cluster() == name)
            .unwrap_or_else(|| panic!("no region {name:?} in this supercluster"))
    }

    /// The server of region `name`, to kill or restart it.
    pub fn region_mut(&mut self, name: &str) -> &mut NatsServer {
        self.regions
            .iter_mut()
            .find(|s| s.cluster() == name)
            .unwrap_or_else(|| panic!("no region {name:?} in this supercluster"))
    }

    /// Every region's client URL, comma-separated (what NATS clients accept as a server list).
    pub fn client_urls(&self) -> String {
        self.regions
            .iter()
            .map(NatsServer::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops every server gracefully (SIGTERM), in reverse order.
    pub fn stop(&mut self) {
        for server in self.regions.iter_mut().rev() {
            server.stop();
        }
    }
}

/// A supercluster of one server per region, gateways between all, JetStream on, with the test
/// users of those regions ([`FabricUsers::for_tests`]): ready once
/// every server is healthy, sees a meta leader and has gateways to and from every other region.
/// `supercluster(&["A", "B"])` is the usual two-region setup.
pub async fn supercluster(regions: &[&str]) -> anyhow::Result<Supercluster> {
    SuperclusterBuilder::new(regions).start().await
}

/// Which ports the servers of a supercluster listen on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PortLayout {
    /// Free loopback ports, chosen anew on every attempt: for tests.
    #[default]
    Free,
    /// [`ServerPorts::dev`] by region index (4222, 4223, ...): for `local-nats`.
    Dev,
    /// One entry per region, in order.
    Fixed(Vec<ServerPorts>),
}

/// Builds a [`Supercluster`]: regions, port layout, where the stores live, how long to wait.
#[derive(Debug, Clone)]
pub struct SuperclusterBuilder {
    regions: Vec<String>,
    ports: PortLayout,
    store_root: Option<PathBuf>,
    ready_timeout: Duration,
    /// Whose `authorization` block every server gets; `None`: the test users of the regions.
    users: Option<FabricUsers>,
}

impl SuperclusterBuilder {
    pub fn new(regions: &[&str]) -> Self {
        Self {
            regions: regions.iter().map(|r| r.to_string()).collect(),
            ports: PortLayout::Free,
            store_root: None,
            ready_timeout: SUPERCLUSTER_READY_TIMEOUT,
            users: None,
        }
    }

    /// The users every server lists (each with its own region's block): `local-nats` passes
    /// the dev users; the default is [`FabricUsers::for_tests`] of the regions.
    pub fn users(mut self, users: FabricUsers) -> Self {
        self.users = Some(users);
        self
    }

    pub fn ports(mut self, ports: PortLayout) -> Self {
        self.ports = ports;
        self
    }

    /// Keep each region's config, log and store under `root/<region>` instead of a temporary
    /// directory removed on Drop: the JetStream data survives a restart of the whole supercluster.
    pub fn store_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.store_root = Some(root.into());
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The ports of every region for one attempt.
    fn choose_ports(&self) -> anyhow::Result<Vec<ServerPorts>> {
        Ok(match &self.ports {
            PortLayout::Free => self.regions.iter().map(|_| ServerPorts::free()).collect(),
            PortLayout::Dev => (0..self.regions.len())
                .map(|i| ServerPorts::dev(u16::try_from(i).expect("fewer than 65536 regions")))
                .collect(),
            PortLayout::Fixed(ports) => {
                anyhow::ensure!(
                    ports.len() == self.regions.len(),
                    "{} port sets for {} regions",
                    ports.len(),
                    self.regions.len()
                );
                ports.clone()
            }
        })
    }

    /// The spec of every region, given its ports and the directory its store goes under.
    fn specs(
        &self,
        ports: &[ServerPorts],
        dirs: &[&std::path::Path],
    ) -> anyhow::Result<Vec<ServerSpec>> {
        let users = match &self.users {
            Some(users) => users.clone(),
            None => {
                let regions: Vec<&str> = self.regions.iter().map(String::as_str).collect();
                FabricUsers::for_tests(&regions)?
            }
        };
        let gateways: Vec<Gateway> = self
            .regions
            .iter()
            .zip(ports)
            .map(|(region, p)| Gateway {
                region: region.clone(),
                port: p.gateway,
            })
            .collect();
        Ok(self
            .regions
            .iter()
            .zip(ports)
            .zip(dirs)
            .map(|((region, p), dir)| ServerSpec {
                name: format!("s{region}"),
                region: region.clone(),
                ports: *p,
                store_dir: dir.join("store"),
                gateways: gateways.clone(),
                extra: users.authorization_block(region),
                operator_mode: false,
            })
            .collect())
    }

    /// Starts every server and waits until the supercluster is ready.
    pub async fn start(self) -> anyhow::Result<Supercluster> {
        anyhow::ensure!(
            !self.regions.is_empty(),
            "a supercluster needs at least one region"
        );
        let attempts = if self.ports == PortLayout::Free {
            START_ATTEMPTS
        } else {
            1
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let mut cluster = self.spawn_all()?;
            match wait_ready(&mut cluster, self.ready_timeout).await {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    // A server that exited while starting most likely lost a port race: retry.
                    let exited = cluster.regions.iter_mut().any(|s| !s.is_running());
                    last_error = Some(e);
                    if !exited {
                        break;
                    }
                }
            }
        }
        Err(last_error.expect("at least one attempt").context(format!(
            "starting a supercluster of regions {:?}",
            self.regions
        )))
    }

    fn spawn_all(&self) -> anyhow::Result<Supercluster> {
        let ports = self.choose_ports()?;
        let mut dirs = Vec::new();
        for region in &self.regions {
            dirs.push(match &self.store_root {
                Some(root) => {
                    let dir = root.join(region);
                    fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    ServerDir::Kept(dir)
                }
                None => ServerDir::Temp(TempDir::with_prefix(format!("danmu-nats-{region}-"))?),
            });
        }
        let paths: Vec<&std::path::Path> = dirs.iter().map(ServerDir::path).collect();
        let specs = self.specs(&ports, &paths)?;
        let mut regions = Vec::new();
        for (spec, dir) in specs.into_iter().zip(dirs) {
            // On error, the servers spawned so far are killed as `regions` drops.
            regions.push(NatsServer::spawn(spec, dir, self.ready_timeout)?);
        }
        Ok(Supercluster { regions })
    }
}

/// Ready: every server healthy (JetStream in contact with a meta leader), a meta leader named in
/// `/jsz`, and gateways connected both ways to every other region. Fails at once if a server exits.
async fn wait_ready(cluster: &mut Supercluster, timeout: Duration) -> anyhow::Result<()> {
    let names: Vec<String> = cluster
        .regions
        .iter()
        .map(|s| s.cluster().to_owned())
        .collect();
    let outcome = eventually("the supercluster to be ready", timeout, async || {
        for server in cluster.regions.iter_mut() {
            if let Err(exited) = server.check_running() {
                return Ok(Some(Err(exited)));
            }
        }
        for server in &cluster.regions {
            server.check_healthy().await?;
            check_meta_leader(server).await?;
            check_gateways(server, &names).await?;
        }
        anyhow::Ok(Some(Ok(())))
    })
    .await;
    match outcome {
        Ok(result) => result,
        Err(e) => {
            let logs: String = cluster
                .regions
                .iter()
                .map(|s| format!("\n--- log tail of {}:\n{}", s.name(), s.log_tail()))
                .collect();
            Err(e.context(logs))
        }
    }
}

async fn check_meta_leader(server: &NatsServer) -> anyhow::Result<()> {
    let jsz = server.monitor_json("/jsz").await?;
    let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or_default();
    anyhow::ensure!(
        !leader.is_empty(),
        "{}: no JetStream meta leader yet",
        server.name()
    );
    Ok(())
}

async fn check_gateways(server: &NatsServer, regions: &[String]) -> anyhow::Result<()> {
    let gatewayz = server.monitor_json("/gatewayz").await?;
    for other in regions.iter().filter(|r| r.as_str() != server.cluster()) {
        for direction in ["outbound_gateways", "inbound_gateways"] {
            anyhow::ensure!(
                gatewayz[direction].get(other).is_some(),
                "{}: no {direction} connection to region {other} yet",
                server.name()
            );
        }
    }
    Ok(())
}
