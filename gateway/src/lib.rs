//! The edge gateway: holds client connections (WebSocket, TCP; GOIM framing), verifies
//! tokens locally, subscribes to a room's edge subject only while it has local members, and
//! writes each batch's pre-encoded bytes to every member.
//!
//! # Layout
//!
//! Three parts, a folder each, around one connection core:
//!
//! - `connection`: **the core**. One client connection as a plain state machine driven with an
//!   explicit clock (upgrade, session, presence, reach, drain, stall, reply and low-priority
//!   budgets, close), with what it is made of: `session` (the GOIM rules: auth, heartbeat,
//!   room change), `reach` (high reach: delivery ids, ACKs, retries), `presence` (enter/exit
//!   events), `framing` (bytes to packets), `transport` (the listener kind and its framing).
//!   It imports nothing of the gateway but `stats`.
//! - `transport`: **the transports**, one module each, the only code touching client
//!   sockets: thin glue that moves bytes, wake-ups and timers between a socket and the core.
//! - `fanout`: **the fan-out**: which connections each push target reaches (`groups`), a
//!   batch's encodings built once (`edge`), the bounded per-connection queue (`outbound`),
//!   offline pushes read on connect (`offline`).
//!
//! Around them: `nats` (our own edge subscriber, the NATS options, presence events and
//! online reports, health reports into the nodes bucket), `upstream` (viewers' danmu: rate
//! limits, deny lists, word filter, publishing), `online` (online counts summed across
//! gateways), `config`, `stats` (metrics, and atomics tests read).

pub mod config;
pub mod connection;
pub mod error;
pub mod fanout;
pub mod nats;
pub mod online;
pub mod stats;
pub mod transport;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use danmu_proto::internal::NodeReport;
use danmu_proto::token::TokenVerifier;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use stats::Stats;

use crate::connection::Transport;
pub use crate::transport::tcp::Listeners;

/// A running gateway.
pub struct Gateway {
    pub stats: Arc<Stats>,
    pub node_id: String,
    pub ws_addr: Option<std::net::SocketAddr>,
    pub tcp_addr: Option<std::net::SocketAddr>,
    pub wss_addr: Option<std::net::SocketAddr>,
    pub tls_addr: Option<std::net::SocketAddr>,
    /// QUIC's UDP address.
    pub quic_addr: Option<std::net::SocketAddr>,
    /// The certificates of the TLS and QUIC listeners (none without them).
    pub certificates: Option<Arc<transport::tls::Certificates>>,
    shared: Arc<transport::Shared>,
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
    let limits = fanout::groups::DeliveryLimits {
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
        let (sink, publisher) = nats::presence::EventSink::start(client.clone(), stats.clone());
        background.spawn(publisher);
        Some(sink)
    } else {
        None
    };
    background.spawn(nats::presence::follow_totals(
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
    let shared = transport::Shared {
        limits: Arc::new(config.limits()),
        verifier,
        groups: fanout::groups::Groups::new(Box::new(edge_source), stats.clone()),
        origin: connection::presence::Origin {
            gateway: node_id.clone(),
            region: config.region.clone(),
        },
        stats: stats.clone(),
        shutdown: stopped.clone(),
        offline: Some(fanout::offline::OfflineReader::start(
            async_nats::jetstream::new(client.clone()),
            transport::MAX_OFFLINE,
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

    let addr = |l: &Option<tokio::net::TcpListener>| l.as_ref().map(|l| l.local_addr()).transpose();
    let ws_addr = addr(&listeners.ws)?;
    let tcp_addr = addr(&listeners.tcp)?;
    let wss_addr = addr(&listeners.wss)?;
    let tls_addr = addr(&listeners.tls)?;
    let quic_addr = listeners
        .quic
        .as_ref()
        .map(|s| s.local_addr())
        .transpose()?;
    let mut tasks = JoinSet::new();
    let connections = TaskTracker::new();
    for (listener, transport) in [
        (listeners.ws, Transport::Ws),
        (listeners.tcp, Transport::Tcp),
    ] {
        if let Some(listener) = listener {
            tasks.spawn(transport::tcp::accept_loop(
                listener,
                transport,
                shared.clone(),
                config.max_connections,
                connections.clone(),
                stopped.clone(),
                move |stream, peer, shared, admitted, connections: &TaskTracker| {
                    connections.spawn(transport::serve(stream, peer, transport, shared, admitted));
                },
            ));
        }
    }
    let encrypted = listeners.wss.is_some() || listeners.tls.is_some() || listeners.quic.is_some();
    let certificates = match encrypted {
        true => {
            let certificates = transport::tls::Certificates::load(&config.tls.certificates)
                .context("loading [[tls.certificates]]")?;
            tasks.spawn(
                certificates
                    .clone()
                    .watch(config.tls.reload_interval, stopped.clone()),
            );
            Some(certificates)
        }
        false => None,
    };
    for (listener, transport, alpn) in [
        (listeners.wss, Transport::Wss, transport::tls::ALPN_WSS),
        (listeners.tls, Transport::Tls, &[][..]),
    ] {
        let (Some(listener), Some(certificates)) = (listener, &certificates) else {
            continue;
        };
        let server = transport::tls::server_config(certificates.clone(), alpn);
        tasks.spawn(transport::tcp::accept_loop(
            listener,
            transport,
            shared.clone(),
            config.max_connections,
            connections.clone(),
            stopped.clone(),
            move |stream, peer, shared, admitted, connections: &TaskTracker| {
                match transport::tls::TlsSocket::new(
                    stream,
                    server.clone(),
                    transport.label(),
                    shared.stats.clone(),
                ) {
                    Ok(socket) => {
                        connections
                            .spawn(transport::serve(socket, peer, transport, shared, admitted));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "starting a TLS connection");
                        if admitted {
                            shared.stats.connection_ended(transport.label());
                        }
                    }
                }
            },
        ));
    }
    if let (Some(socket), Some(certificates)) = (listeners.quic, &certificates) {
        let server = transport::quic::server_config(certificates.clone(), &config.quic)?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .context("starting the QUIC endpoint")?;
        tasks.spawn(transport::quic::accept_loop(
            endpoint,
            config.quic.clone(),
            shared.clone(),
            config.max_connections,
            connections.clone(),
            stopped.clone(),
        ));
    }

    let js = async_nats::jetstream::new(client.clone());
    let store = nats::report::open_bucket(&js, &config.nodes_bucket, config.node_ttl).await?;
    let advertise = |addr: Option<std::net::SocketAddr>| {
        addr.map(|a| format!("{}:{}", config.advertise_host, a.port()))
            .unwrap_or_default()
    };
    let reporter = nats::report::Reporter {
        store,
        node: NodeReport {
            node_id: node_id.clone(),
            region: config.region.clone(),
            ws_addr: advertise(ws_addr),
            tcp_addr: advertise(tcp_addr),
            wss_addr: advertise(wss_addr),
            tls_addr: advertise(tls_addr),
            quic_addr: advertise(quic_addr),
            // WebTransport (ALPN h3) shares the QUIC port and endpoint.
            webtransport_addr: advertise(quic_addr),
            ..Default::default()
        },
        quic_certificates: quic_addr.and(certificates.clone()),
        capacity: config.capacity,
        interval: config.report_interval,
        stats: stats.clone(),
    };
    tasks.spawn(reporter.run(stopped.clone()));
    let counted = shared.clone();
    tasks.spawn(nats::presence::report_online(
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
    tracing::info!(%node_id, region = %config.region, ?ws_addr, ?tcp_addr, ?wss_addr, ?tls_addr, ?quic_addr, "gateway started");
    Ok(Gateway {
        stats,
        node_id,
        ws_addr,
        tcp_addr,
        wss_addr,
        tls_addr,
        quic_addr,
        certificates,
        shared,
        client,
        stop,
        edge_stop,
        tasks,
        connections,
        background,
    })
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
