//! The edge gateway: holds client connections (WebSocket and TCP, GOIM framing), verifies
//! tokens locally, subscribes to a room's edge subject only while it has local members, and
//! writes each batch's pre-encoded bytes to every member.
//!
//! # Layout
//! - `config`: the TOML configuration and its validation.
//! - `connection`: one client connection as a plain state machine (upgrade, session, presence,
//!   reach, drain, stall, reply and low-priority budgets, close), driven with an explicit
//!   clock; `CloseReason` lives there.
//! - `session`: the GOIM protocol rules of a connection (auth, heartbeat, room change), plain
//!   code used by `connection`.
//! - `transport`: WebSocket or TCP framing, the one fact both fan-out and connection need.
//! - `groups`: which connections each push target (room, user, device, region, everyone)
//!   reaches here, and the fan-out of a batch to them.
//! - `edge`: a batch's per-protover, per-transport encodings (built once) and de-duplication.
//! - `offline`: a user's waiting offline pushes, read and removed on connect.
//! - `reach`: high reach (delivery ids, ACKs, retries) for one connection, plain code.
//! - `outbound`: the bounded per-connection queue between fan-out and socket.
//! - `conn`: the connection task, the only code touching client sockets: thin glue around
//!   `connection`, over the `conn::Socket` interface.
//! - `presence`: a connection's enter/exit events, plain code.
//! - `online`: online counts summed across gateways (control's totals), plain code.
//! - `nats`: group subscriptions on NATS, one link per priority, through our own subscriber
//!   (wire parser, sans-IO client, tokio link), and the NATS options (servers, credentials,
//!   TLS) every NATS connection of the gateway uses.
//! - `nats_presence`: enter/exit events, online reports and totals over NATS.
//! - `report`: health reports into the nodes KV bucket.
//! - `stats`: counters, as metrics and as atomics tests can read.
//! - `upstream`: viewers' danmu sent upstream: rate limits, deny lists, word filter, publishing.

pub mod config;
pub mod conn;
pub mod connection;
pub mod edge;
pub mod error;
pub mod groups;
pub mod nats;
mod nats_presence;
pub mod offline;
pub mod online;
pub mod outbound;
pub mod presence;
pub mod reach;
mod report;
pub mod session;
pub mod stats;
pub mod transport;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use danmu_proto::internal::NodeReport;
use danmu_proto::token::TokenVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use stats::Stats;

use crate::transport::Transport;

/// Bound listeners; tests bind `127.0.0.1:0` and pass them in.
#[derive(Default)]
pub struct Listeners {
    pub ws: Option<TcpListener>,
    pub tcp: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the configuration asks for.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |addr: Option<std::net::SocketAddr>| async move {
            match addr {
                Some(addr) => TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .with_context(|| format!("binding {addr}")),
                None => Ok(None),
            }
        };
        Ok(Listeners {
            ws: bind(config.ws_listen).await?,
            tcp: bind(config.tcp_listen).await?,
        })
    }
}

/// A running gateway.
pub struct Gateway {
    pub stats: Arc<Stats>,
    pub node_id: String,
    pub ws_addr: Option<std::net::SocketAddr>,
    pub tcp_addr: Option<std::net::SocketAddr>,
    shared: Arc<conn::Shared>,
    client: async_nats::Client,
    stop: CancellationToken,
    edge_stop: CancellationToken,
    tasks: JoinSet<()>,
    /// Every connection task: shutdown waits for them to end.
    connections: TaskTracker,
    /// Event publisher and totals follower: they outlive the connections.
    background: JoinSet<()>,
}

pub async fn start(listeners: Listeners, config: Config) -> anyhow::Result<Gateway> {
    config.validate()?;
    let verifier = TokenVerifier::from_public_pem(&config.public_key_pem()?)
        .context("reading the token public key")?;
    let node_id = config.node_id();
    let stats = Arc::new(Stats::default());
    stats::describe();
    stats.connection_cap(config.max_connections);
    // Edge batches come through our own subscriber (one link per priority, `nats`); these two
    // async-nats connections carry everything else: offline pushes, health and online
    // reports, presence events (the first), upstream danmu (the second, so a flood of them
    // never queues ahead of the rest). All use the same servers, credentials and TLS.
    let nats_options = Arc::new(nats::NatsOptions::from_config(&config)?);
    let connect = |label: &'static str| {
        let options = nats_options.async_nats(format!("danmu-gateway {node_id} {label}"));
        let urls = nats_options.async_nats_urls();
        let url = config.nats_url.clone();
        async move {
            options?
                .connect(urls)
                .await
                .with_context(|| format!("connecting to NATS at {url}"))
        }
    };
    let client = connect("control").await?;
    let upstream_nats = connect("upstream").await?;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let limits = groups::DeliveryLimits {
        max_raw_batch: config.max_batch_bytes,
        brotli_quality: config.brotli_quality,
    };
    // Stopped only after the connections are gone: draining members keep receiving.
    let edge_stop = CancellationToken::new();
    let edge_source = nats::NatsEdge::start(
        nats_options.clone(),
        &format!("danmu-gateway {node_id}"),
        limits,
        stats.clone(),
        edge_stop.clone(),
    )?;
    let online = Arc::new(std::sync::RwLock::new(online::Totals::new(
        config.online_totals_max_age(),
    )));
    let mut background = JoinSet::new();
    let events = if config.presence_events {
        let (sink, publisher) = nats_presence::EventSink::start(client.clone(), stats.clone());
        background.spawn(publisher);
        Some(sink)
    } else {
        None
    };
    background.spawn(nats_presence::follow_totals(
        client.clone(),
        config.region.clone(),
        online.clone(),
    ));
    let started_unix_ms = unix_millis();
    let upstream = upstream::Upstream::start(
        &config.upstream,
        &node_id,
        &config.region,
        upstream_nats,
        stats.clone(),
        started_unix_ms,
    )?;
    let trusted_proxies = upstream::moderation::parse_nets(&config.trusted_proxies)
        .map_err(|reason| anyhow::anyhow!("trusted_proxies: {reason}"))?;
    let shared = conn::Shared {
        limits: Arc::new(connection::Limits::from_config(&config)),
        verifier,
        groups: groups::Groups::new(Box::new(edge_source), stats.clone()),
        origin: presence::Origin {
            gateway: node_id.clone(),
            region: config.region.clone(),
        },
        stats: stats.clone(),
        shutdown: stopped.clone(),
        offline: Some(offline::OfflineReader::start(
            async_nats::jetstream::new(client.clone()),
            conn::MAX_OFFLINE,
            config.brotli_quality,
            stats.clone(),
        )),
        brotli_quality: config.brotli_quality,
        events,
        online,
        upstream: Some(upstream),
        trusted_proxies,
        next_id: std::sync::atomic::AtomicU64::new(1),
    };
    let shared = Arc::new(shared);

    let ws_addr = listeners.ws.as_ref().map(|l| l.local_addr()).transpose()?;
    let tcp_addr = listeners.tcp.as_ref().map(|l| l.local_addr()).transpose()?;
    let mut tasks = JoinSet::new();
    let connections = TaskTracker::new();
    for (listener, transport) in [
        (listeners.ws, Transport::WebSocket),
        (listeners.tcp, Transport::Tcp),
    ] {
        if let Some(listener) = listener {
            tasks.spawn(accept_loop(
                listener,
                transport,
                shared.clone(),
                config.max_connections,
                connections.clone(),
                stopped.clone(),
            ));
        }
    }

    let js = async_nats::jetstream::new(client.clone());
    let store = report::open_bucket(&js, &config.nodes_bucket, config.node_ttl).await?;
    let advertise = |addr: Option<std::net::SocketAddr>| {
        addr.map(|a| format!("{}:{}", config.advertise_host, a.port()))
            .unwrap_or_default()
    };
    let reporter = report::Reporter {
        store,
        node: NodeReport {
            node_id: node_id.clone(),
            region: config.region.clone(),
            ws_addr: advertise(ws_addr),
            tcp_addr: advertise(tcp_addr),
            ..Default::default()
        },
        capacity: config.capacity,
        interval: config.report_interval,
        stats: stats.clone(),
    };
    tasks.spawn(reporter.run(stopped.clone()));
    let counted = shared.clone();
    tasks.spawn(nats_presence::report_online(
        client.clone(),
        move || {
            let counts = counted.groups.room_counts();
            counted
                .online
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .set_reported(&counts);
            counts
        },
        node_id.clone(),
        config.region.clone(),
        config.online_report_interval(),
        stopped,
    ));
    tracing::info!(%node_id, region = %config.region, ?ws_addr, ?tcp_addr, "gateway started");
    Ok(Gateway {
        stats,
        node_id,
        ws_addr,
        tcp_addr,
        shared,
        client,
        stop,
        edge_stop,
        tasks,
        connections,
        background,
    })
}

/// Accepts until stopped. Past `max_connections` a connection is still served, but only to be
/// told to go (close 1013 on WebSocket, a plain close on TCP): existing ones notice nothing.
async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    shared: Arc<conn::Shared>,
    max_connections: Option<usize>,
    connections: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Counted here, before the task runs, so a burst of accepts sees every
                    // connection admitted before it.
                    let open = shared.stats.connections_open.load(std::sync::atomic::Ordering::Relaxed);
                    let admitted = max_connections.is_none_or(|max| open < max as i64);
                    if admitted {
                        shared.stats.connection_opened(transport.label());
                    }
                    let _ = stream.set_nodelay(true);
                    if let Some(bytes) = shared.limits.socket_send_buffer {
                        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
                    }
                    connections.spawn(conn::serve(stream, peer, transport, shared.clone(), admitted));
                }
                Err(error) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    tracing::warn!(%error, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

impl Gateway {
    /// Members of a room on this gateway.
    pub fn online(&self, room: u64) -> u32 {
        self.shared
            .groups
            .get(&danmu_proto::subjects::Scope::Room(room))
            .map_or(0, |r| r.online())
    }

    /// Drains: stops accepting, removes the node from node lists, and lets every connection
    /// leave at its own moment within the drain period (clients that opted in get DRAIN first;
    /// WebSocket clients get close code 1012); waits for connections to be gone (at most
    /// `grace`).
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "connections still open after the grace period");
        }
        // The last connections' exits are on their way out; let them reach NATS.
        if let Some(events) = &self.shared.events {
            events.flushed(&self.client, Duration::from_secs(2)).await;
        }
        self.background.abort_all();
        self.edge_stop.cancel();
    }
}

/// Wall-clock time in unix milliseconds, as events and reports carry it.
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Runs until `shutdown` resolves, then drains. With `health_listen`, serves `/healthz` and
/// `/readyz`: not ready until started (NATS connected), nor from the start of the drain, so a
/// load balancer stops sending new clients here while the old ones are told to move.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let grace = config.drain_period + config.close_linger * 2;
    let health = danmu_runtime::health::Health::starting("connecting to NATS");
    if let Some(addr) = config.health_listen {
        health
            .serve(addr)
            .await
            .map_err(|error| anyhow::anyhow!("binding health_listen {addr}: {error}"))?;
    }
    let gateway = start(listeners, config).await?;
    health.set_ready();
    shutdown.await;
    health.set_not_ready("draining");
    gateway.shutdown(grace).await;
    Ok(())
}
