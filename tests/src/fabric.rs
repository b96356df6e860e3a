//! Builders that run danmu's own services in-process against real NATS servers, on free
//! loopback ports, with test-friendly defaults. Each service connects as its role's test user of
//! its region ([`crate::nats::users`]), under the chart's permissions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use danmu_proto::token::{self, Claims, TokenIssuer};

use crate::nats::permissions::Role;
use crate::nats::users::test_user_of;

/// A signing key pair, as control and the gateways would hold it.
pub struct Keys {
    pub issuer: TokenIssuer,
    pub private_pem: String,
    pub public_pem: String,
}

impl Keys {
    pub fn generate() -> Keys {
        let pair = token::generate_keypair();
        Keys {
            issuer: TokenIssuer::from_private_pem(&pair.private_pem).expect("fresh key"),
            private_pem: pair.private_pem,
            public_pem: pair.public_pem,
        }
    }

    /// A token for `uid`, valid for `ttl`, for the given rooms (`None` = any room).
    pub fn token(&self, uid: u64, rooms: Option<Vec<u64>>, ttl: Duration) -> String {
        let now = unix_now();
        self.issuer
            .issue(&Claims {
                sub: uid.to_string(),
                uid,
                dev: format!("device-{uid}"),
                rooms,
                iat: now,
                exp: now + ttl.as_secs(),
                iss: token::ISSUER.into(),
                aud: token::AUDIENCE.into(),
            })
            .expect("issuing a token")
    }

    /// A token that expired a minute ago.
    pub fn expired_token(&self, uid: u64) -> String {
        let now = unix_now();
        self.issuer
            .issue(&Claims {
                sub: uid.to_string(),
                uid,
                dev: String::new(),
                rooms: None,
                iat: now - 120,
                exp: now - 60,
                iss: token::ISSUER.into(),
                aud: token::AUDIENCE.into(),
            })
            .expect("issuing a token")
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A gateway config on free loopback ports for `region`, verifying with `keys`, connecting as
/// the test gateway user of `region` ([`start_gateway`] switches to the echo gateway's user
/// when `upstream.echo_to_room` is on).
pub fn gateway_config(nats_url: &str, region: &str, keys: &Keys) -> danmu_gateway::Config {
    danmu_gateway::Config {
        node_id: format!("gw-{region}-{}", rand_suffix()),
        region: region.into(),
        nats_url: nats_url.into(),
        nats_nkey_seed: Some(seed_path(Role::Gateway, region)),
        token_public_key_pem: Some(keys.public_pem.clone()),
        ws_listen: Some(([127, 0, 0, 1], 0).into()),
        tcp_listen: Some(([127, 0, 0, 1], 0).into()),
        report_interval: Duration::from_millis(500),
        drain_period: Duration::from_millis(500),
        node_ttl: Duration::from_secs(5),
        ..Default::default()
    }
}

/// The seed file of the test user of `role` in `region`, as the services' configs take it
/// (`nats_nkey_seed`).
pub fn seed_path(role: Role, region: &str) -> String {
    test_user_of(role, region)
        .seed_file
        .to_string_lossy()
        .into_owned()
}

/// Starts a gateway in-process. With `upstream.echo_to_room` on, a gateway that connects as
/// its region's plain test gateway user connects as the echo gateway's instead (the chart
/// grants the echo's publishes only when it is configured).
pub async fn start_gateway(
    mut config: danmu_gateway::Config,
) -> anyhow::Result<danmu_gateway::Gateway> {
    if config.upstream.echo_to_room
        && config.nats_nkey_seed.as_deref() == Some(&seed_path(Role::Gateway, &config.region))
    {
        config.nats_nkey_seed = Some(seed_path(Role::GatewayEcho, &config.region));
    }
    let listeners = danmu_gateway::Listeners::bind(&config).await?;
    danmu_gateway::start(listeners, config).await
}

/// The `nats_nkey_seed = "..."` line of a service's TOML config for the test user of `role` in
/// `region`.
pub fn seed_toml(role: Role, region: &str) -> String {
    format!("nats_nkey_seed = {:?}\n", seed_path(role, region))
}

/// A distributor config for `region` with a short failover, so tests that kill one do not
/// wait long for the standby; it connects as the test distributor user of `region`.
pub fn distributor_config(nats_url: &str, region: &str) -> danmu_distributor::Config {
    let mut config = danmu_distributor::Config {
        nats_url: nats_url.into(),
        nats_nkey_seed: Some(seed_path(Role::Distributor, region).into()),
        region: region.into(),
        instance: format!("dist-{region}-{}", rand_suffix()),
        ..Default::default()
    };
    for worker in [&mut config.low, &mut config.high] {
        worker.ack_wait = Duration::from_secs(1);
        worker.failover = Duration::from_secs(2);
    }
    config
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    std::process::id() * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One region on one real nats-server: keys, a distributor, a gateway and a business
/// connection (the test publisher user), the set most integration tests start from.
pub struct SingleRegion {
    pub server: crate::NatsServer,
    pub keys: Keys,
    pub distributor: danmu_distributor::Distributor,
    pub gateway: danmu_gateway::Gateway,
    pub business: async_nats::Client,
}

impl SingleRegion {
    pub async fn start() -> anyhow::Result<SingleRegion> {
        Self::start_with(|_, _| {}).await
    }

    /// Starts with the test defaults adjusted by `configure`.
    pub async fn start_with(
        configure: impl FnOnce(&mut danmu_distributor::Config, &mut danmu_gateway::Config),
    ) -> anyhow::Result<SingleRegion> {
        Self::start_on(crate::single().await?, configure).await
    }

    /// Starts on `server` (region A, listing the test users: e.g. [`crate::nats::single_with`]
    /// a [`crate::nats::FabricUsers`] block) with the test defaults adjusted by `configure`.
    pub async fn start_on(
        server: crate::NatsServer,
        configure: impl FnOnce(&mut danmu_distributor::Config, &mut danmu_gateway::Config),
    ) -> anyhow::Result<SingleRegion> {
        let url = server.client_url();
        let keys = Keys::generate();
        let mut distributor = distributor_config(&url, "A");
        let mut gateway = gateway_config(&url, "A", &keys);
        configure(&mut distributor, &mut gateway);
        Ok(SingleRegion {
            distributor: danmu_distributor::start(distributor).await?,
            gateway: start_gateway(gateway).await?,
            business: crate::nats::connect_publisher(&url).await?,
            server,
            keys,
        })
    }

    pub fn url(&self) -> String {
        self.server.client_url()
    }

    /// The gateway's address for `transport`.
    pub fn addr(&self, transport: crate::client::Transport) -> std::net::SocketAddr {
        match transport {
            crate::client::Transport::WebSocket => self.gateway.ws_addr,
            crate::client::Transport::Tcp => self.gateway.tcp_addr,
        }
        .expect("the test gateway listens on both transports")
    }

    /// A client authenticated into `room` (see [`crate::room::join`]).
    pub async fn join(
        &self,
        transport: crate::client::Transport,
        uid: u64,
        room: u64,
        protover: u16,
    ) -> anyhow::Result<crate::client::Client> {
        crate::room::join(
            &self.keys,
            transport,
            self.addr(transport),
            uid,
            room,
            protover,
        )
        .await
    }
}

/// A control config against `nats_url`, signing with `keys`, serving presence for `region`,
/// connecting as the test control user of `region`.
pub fn control_config(nats_url: &str, region: &str, keys: &Keys) -> danmu_control::Config {
    danmu_control::Config {
        nats_url: nats_url.into(),
        nats_nkey_seed: Some(seed_path(Role::Control, region).into()),
        private_key_pem: Some(keys.private_pem.clone().into()),
        regions: vec![region.into()],
        default_region: region.into(),
        region: Some(region.into()),
        node_ttl: Duration::from_secs(5),
        online_publish_interval: Duration::from_millis(200),
        ..Default::default()
    }
}

/// Control running in-process on a free loopback port; [`Control::stop`] stops it as its
/// shutdown signal would, dropping it aborts it.
pub struct Control {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), danmu_control::Error>>,
}

impl Control {
    /// Completes the shutdown future and returns what `danmu_control::run` returned; an error
    /// if it has not returned within 15 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let joined = tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .map_err(|_| anyhow::anyhow!("control did not stop within 15s of its shutdown"))?;
        Ok(joined??)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_control(config: danmu_control::Config) -> anyhow::Result<Control> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(danmu_control::run(listener, config, async move {
        let _ = stopped.await;
    }));
    Ok(Control {
        addr,
        stop: Some(stop),
        task,
    })
}

/// The `danmu-gateway` binary next to the running test's binary (`scripts/test` builds every
/// bin before testing), for tests that signal or kill a gateway process.
pub fn gateway_binary() -> anyhow::Result<std::path::PathBuf> {
    workspace_binary("danmu-gateway", "danmu-gateway")
}

/// The binary `name` of workspace package `package`, next to the running test's binary
/// (`scripts/test` builds every bin before testing).
pub fn workspace_binary(name: &str, package: &str) -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .filter(|path| path.exists())
        .ok_or_else(|| {
            anyhow::anyhow!("build it first: cargo build -p {package} (scripts/test does)")
        })
}

/// A gateway process on free loopback ports; killed when dropped.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub ws_addr: std::net::SocketAddr,
    pub tcp_addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts `danmu-gateway` with `extra` TOML lines after the basics (region A's test gateway
    /// user unless `extra` says otherwise), and waits until it accepts connections.
    pub async fn start(
        nats_url: &str,
        node_id: &str,
        keys: &Keys,
        extra: &str,
    ) -> anyhow::Result<GatewayProcess> {
        let dir = tempfile::tempdir()?;
        let key_path = dir.path().join("control.pub.pem");
        std::fs::write(&key_path, &keys.public_pem)?;
        let (ws, tcp) = (crate::ports::free_port(), crate::ports::free_port());
        let region = extra
            .lines()
            .find_map(|line| {
                let value = line.strip_prefix("region")?.trim().strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "A".to_owned());
        let seed = if extra.contains("nats_nkey_seed") || extra.contains("nats_creds") {
            String::new()
        } else {
            seed_toml(Role::Gateway, &region)
        };
        let config = format!(
            "node_id = \"{node_id}\"\nnats_url = \"{nats_url}\"\ntoken_public_key_path = \"{}\"\n\
             ws_listen = \"127.0.0.1:{ws}\"\ntcp_listen = \"127.0.0.1:{tcp}\"\n{seed}{extra}\n",
            key_path.display()
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config)?;
        let child = std::process::Command::new(gateway_binary()?)
            .arg("--config")
            .arg(&config_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let process = GatewayProcess {
            child,
            ws_addr: format!("127.0.0.1:{ws}").parse()?,
            tcp_addr: format!("127.0.0.1:{tcp}").parse()?,
            _dir: dir,
        };
        let ws_addr = process.ws_addr;
        crate::eventually(
            "the gateway process accepts connections",
            Duration::from_secs(20),
            async || std::net::TcpStream::connect(ws_addr).ok().map(|_| ()),
        )
        .await?;
        Ok(process)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`, `libc::SIGKILL`).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the pid of a child this process spawned and still owns.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        anyhow::ensure!(sent == 0, "kill({}, {signal}) failed", self.child.id());
        Ok(())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
