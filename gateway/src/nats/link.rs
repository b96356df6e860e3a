//! The tokio side of one edge link: opens the transports the client asks for (TCP, then TLS),
//! moves bytes and commands in, wakes the client at its one deadline, and delivers messages to
//! their groups. Every decision is the client's (`client.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use danmu_proto::internal::EdgeBatch;
use danmu_proto::subjects::{self, Priority};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Disconnect, Event, ServerAddr, Subscription};
use crate::fanout::groups::{DeliveryLimits, Group};
use crate::stats::Stats;

/// Opening a TCP connection or a TLS session gives up after this long.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// A write (commands, PONGs, replies: small) that takes longer means the server is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What the edge asks of a link.
pub(super) enum Command {
    Subscribe { sid: u64, group: Arc<Group> },
    Unsubscribe(u64),
}

/// A link's subscription: a group's edge subject for the link's priority, derived when the
/// client (re)subscribes rather than stored.
#[derive(Clone)]
pub(super) struct EdgeSubscription {
    priority: Priority,
    group: Arc<Group>,
}

impl Subscription for EdgeSubscription {
    fn subject(&self) -> String {
        subjects::edge(self.priority, &self.group.scope)
    }
}

pub(super) struct Link {
    pub client: Client<EdgeSubscription>,
    pub priority: Priority,
    pub label: String,
    /// Built at start when TLS is configured, else on the first server that asks for it.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub options: Arc<super::options::NatsOptions>,
    pub limits: DeliveryLimits,
    pub stats: Arc<Stats>,
    /// The handshake completed on the current transport. A transport lost before that (a
    /// server still starting, refusing credentials, timing out) is a failed attempt, not a
    /// link lost: counting both made one server restart read as two losses per link.
    pub up: bool,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf).await,
            Transport::Tls(stream) => stream.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.write_all(bytes).await,
            Transport::Tls(stream) => {
                stream.write_all(bytes).await?;
                // rustls buffers plaintext until flushed.
                stream.flush().await
            }
        }
    }
}

impl Link {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let mut transport: Option<Transport> = None;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            while let Some(event) = self.client.poll_event() {
                let opened = tokio::select! {
                    _ = stop.cancelled() => return,
                    opened = self.handle_event(event, &mut transport) => opened,
                };
                if let Err(reason) = opened {
                    transport = None;
                    self.client.handle_closed(Instant::now(), reason);
                }
            }
            if let Some(stream) = transport.as_mut() {
                while let Some(bytes) = self.client.poll_transmit() {
                    // A server that stops reading must not stall the link (its PING timer
                    // included) for longer than this.
                    let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes))
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
                    if let Err(error) = written {
                        transport = None;
                        self.link_down(&format!("writing: {error}"));
                        self.client.handle_closed(Instant::now(), error.to_string());
                        break;
                    }
                }
            }
            let deadline = tokio::time::Instant::from_std(self.client.poll_timeout());
            tokio::select! {
                _ = stop.cancelled() => return,
                command = commands.recv() => match command {
                    // The gateway dropped its edge: shutting down.
                    None => return,
                    Some(Command::Subscribe { sid, group }) => {
                        let priority = self.priority;
                        self.client
                            .subscribe(sid, EdgeSubscription { priority, group });
                    }
                    Some(Command::Unsubscribe(sid)) => self.client.unsubscribe(sid),
                },
                read = async { transport.as_mut().expect("guarded").read(&mut buf).await },
                    if transport.is_some() =>
                {
                    let now = Instant::now();
                    match read {
                        Ok(0) => {
                            transport = None;
                            self.link_down("the server closed the connection");
                            self.client.handle_closed(now, "EOF".into());
                        }
                        Ok(n) => self.client.handle_read(&buf[..n], now),
                        Err(error) => {
                            transport = None;
                            self.link_down(&format!("reading: {error}"));
                            self.client.handle_closed(now, error.to_string());
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => self.client.handle_timeout(Instant::now()),
            }
        }
    }

    /// Acts on one event; `Err` when opening a transport (TCP or TLS) failed.
    async fn handle_event(
        &mut self,
        event: Event,
        transport: &mut Option<Transport>,
    ) -> Result<(), String> {
        match event {
            Event::Connect(server) => {
                *transport = None;
                let stream = open(&server).await.map_err(|error| {
                    tracing::debug!(%error, server = %server.addr(), link = %self.label, "NATS server not reachable");
                    error
                })?;
                *transport = Some(Transport::Plain(stream));
                self.client.handle_open(Instant::now());
            }
            Event::StartTls { host } => {
                let Some(Transport::Plain(stream)) = transport.take() else {
                    return Err("TLS asked for on no plain connection".into());
                };
                let config = match &self.tls {
                    Some(config) => config.clone(),
                    None => {
                        let config = self.options.tls_config().map_err(|e| format!("{e:#}"))?;
                        self.tls = Some(config.clone());
                        config
                    }
                };
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
                let connector = tokio_rustls::TlsConnector::from(config);
                let tls = tokio::time::timeout(OPEN_TIMEOUT, connector.connect(name, stream))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_owned())?
                    .map_err(|e| {
                        tracing::warn!(error = %e, %host, link = %self.label, "NATS TLS handshake failed");
                        format!("TLS handshake: {e}")
                    })?;
                *transport = Some(Transport::Tls(Box::new(tls)));
                self.client.handle_tls(Instant::now());
            }
            Event::Connected { server } => {
                self.up = true;
                tracing::info!(%server, link = %self.label, "edge link up");
            }
            Event::Close(reason) => {
                *transport = None;
                if let Disconnect::ServerError { kind, .. } = &reason {
                    self.stats.nats_error(kind.label());
                }
                self.link_down(&reason.to_string());
            }
            Event::ServerError { kind, message } => {
                tracing::warn!(%message, kind = kind.label(), link = %self.label, "NATS server error; link kept");
                self.stats.nats_error(kind.label());
            }
            Event::Message {
                sid,
                reply,
                payload,
            } => self.deliver(sid, reply, payload),
        }
        Ok(())
    }

    /// The transport is gone: a lost link if it had been up, else a failed attempt.
    fn link_down(&mut self, reason: &str) {
        if std::mem::take(&mut self.up) {
            self.stats.nats_link_down(self.priority.token());
            tracing::warn!(%reason, link = %self.label, priority = self.priority.token(), "edge link down; reconnecting");
        } else {
            tracing::debug!(%reason, link = %self.label, "NATS connection attempt failed");
        }
    }

    /// Hands a batch to its group. A request (a user-scope high-priority batch) is answered
    /// only if a member took the batch: the answer tells the distributor the user got it here,
    /// so it keeps no offline copy.
    fn deliver(&mut self, sid: u64, reply: Option<String>, payload: Bytes) {
        let Some(group) = self
            .client
            .subscription(sid)
            .map(|subscription| subscription.group.clone())
        else {
            return; // unsubscribed meanwhile
        };
        match EdgeBatch::decode(payload) {
            Ok(batch) => {
                self.stats
                    .edge_transit(self.priority.token(), batch.sent_unix_micros);
                let started = std::time::Instant::now();
                let taken = group.deliver(batch, self.limits, &self.stats);
                self.stats.fanout(self.priority.token(), started.elapsed());
                if !taken {
                    self.stats
                        .batch_dropped("not_queued", self.priority.token());
                } else if let Some(reply) = reply {
                    self.client.reply_empty(&reply);
                }
            }
            Err(error) => {
                tracing::warn!(%error, scope = %group.scope, "undecodable edge batch");
                self.stats.batch_received("corrupt");
            }
        }
    }
}

async fn open(server: &ServerAddr) -> Result<TcpStream, String> {
    let addr = (server.host.as_str(), server.port);
    let stream = tokio::time::timeout(OPEN_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {} timed out", server.addr()))?
        .map_err(|e| format!("connecting to {}: {e}", server.addr()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    Ok(stream)
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
