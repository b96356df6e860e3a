//! Group subscriptions on NATS: while a group has local members, one subscription per priority,
//! each priority on its own NATS connection, delivering edge batches to the group's fan-out
//! straight from the connection's read loop. High priority never waits behind a low-priority
//! flood, neither on the socket nor in a channel.
//!
//! Each priority's connection is a small subscriber speaking the NATS protocol itself
//! (`nats_wire`): a subscription costs a map entry, not an async-nats channel (see `nats_wire`
//! for why). The map is the truth: after a reconnect every subscription in it is sent again,
//! and SUB/UNSUB are idempotent, so commands racing a reconnect do no harm. Messages published
//! while a connection is down are lost to this gateway, as with any core NATS subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use danmu_proto::internal::EdgeBatch;
use danmu_proto::subjects::{self, Priority};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::groups::{DeliveryLimits, EdgeSource, Group};
use crate::nats_wire::{self, ServerOp};
use crate::stats::Stats;

/// Largest message accepted from NATS (nats-server's own default max_payload is 1 MiB).
const MAX_PAYLOAD: usize = 8 * 1024 * 1024;
/// A PING every this often; two unanswered mean the link is dead.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where a NATS connection goes: one of the servers, with credentials from the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub addr: String,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
}

/// Parses `nats://[user:pass@|token@]host:port[,...]` (scheme optional, port 4222 by default).
pub fn parse_servers(urls: &str) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let rest = match url.split_once("://") {
            Some(("nats", rest)) => rest,
            Some((scheme, _)) => bail!(
                "NATS URL {url:?}: scheme {scheme}:// is not supported by the edge subscriber (nats:// only)"
            ),
            None => url,
        };
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, rest),
        };
        let host = host.trim_end_matches('/');
        let addr = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:4222")
        };
        let (user, pass, token) = match credentials.map(|c| c.split_once(':')) {
            Some(Some((user, pass))) => (Some(user.to_owned()), Some(pass.to_owned()), None),
            Some(None) => (None, None, credentials.map(str::to_owned)),
            None => (None, None, None),
        };
        servers.push(Server {
            addr,
            user,
            pass,
            token,
        });
    }
    if servers.is_empty() {
        bail!("no NATS server in {urls:?}");
    }
    Ok(servers)
}

/// One priority's subscriptions: sid → group, and the channel to its connection task.
struct Subscriptions {
    priority: Priority,
    groups: Mutex<HashMap<u64, (String, Arc<Group>)>>,
    commands: mpsc::UnboundedSender<Bytes>,
}

impl Subscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Arc<Group>)>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub struct NatsEdge {
    high: Arc<Subscriptions>,
    low: Arc<Subscriptions>,
    next_sid: AtomicU64,
}

impl NatsEdge {
    /// Connects one subscriber per priority (retrying in the background until it can).
    pub fn start(
        servers: Vec<Server>,
        name: &str,
        limits: DeliveryLimits,
        stats: Arc<Stats>,
        stop: CancellationToken,
    ) -> NatsEdge {
        let start = |priority: Priority| {
            let (commands, receiver) = mpsc::unbounded_channel();
            let subscriptions = Arc::new(Subscriptions {
                priority,
                groups: Mutex::new(HashMap::new()),
                commands,
            });
            let link = Link {
                servers: servers.clone(),
                name: format!("{name} edge {priority}"),
                subscriptions: subscriptions.clone(),
                limits,
                stats: stats.clone(),
            };
            tokio::spawn(link.run(receiver, stop.clone()));
            subscriptions
        };
        NatsEdge {
            high: start(Priority::High),
            low: start(Priority::Low),
            next_sid: AtomicU64::new(1),
        }
    }
}

impl EdgeSource for NatsEdge {
    fn subscribe(&self, group: Arc<Group>) -> u64 {
        let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
        for subscriptions in [&self.high, &self.low] {
            let subject = subjects::edge(subscriptions.priority, &group.scope);
            let command = nats_wire::sub(&subject, sid);
            subscriptions.lock().insert(sid, (subject, group.clone()));
            let _ = subscriptions.commands.send(command);
        }
        sid
    }

    fn unsubscribe(&self, sid: u64) {
        for subscriptions in [&self.high, &self.low] {
            subscriptions.lock().remove(&sid);
            let _ = subscriptions.commands.send(nats_wire::unsub(sid));
        }
    }
}

/// One priority's connection: connects, subscribes everything in the map, delivers, and
/// reconnects when the link fails.
struct Link {
    servers: Vec<Server>,
    name: String,
    subscriptions: Arc<Subscriptions>,
    limits: DeliveryLimits,
    stats: Arc<Stats>,
}

impl Link {
    async fn run(self, mut commands: mpsc::UnboundedReceiver<Bytes>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        for attempt in 0usize.. {
            let server = &self.servers[attempt % self.servers.len()];
            let served = tokio::select! {
                _ = stop.cancelled() => return,
                served = self.serve(server, &mut commands) => served,
            };
            match served {
                Ok(()) => return, // the gateway dropped its edge: shutting down
                Err(error) => {
                    tracing::warn!(%error, server = %server.addr, link = %self.name, "edge link down; reconnecting");
                    if error.to_string().contains("Slow Consumer") {
                        self.stats
                            .gateway_behind(self.subscriptions.priority.token());
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn serve(
        &self,
        server: &Server,
        commands: &mut mpsc::UnboundedReceiver<Bytes>,
    ) -> anyhow::Result<()> {
        let mut stream = TcpStream::connect(&server.addr)
            .await
            .with_context(|| format!("connecting to {}", server.addr))?;
        stream.set_nodelay(true)?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        // INFO first; a server that insists on TLS is refused with a clear reason.
        let info = loop {
            if let Some(op) = nats_wire::parse(&mut buf, MAX_PAYLOAD)? {
                break op;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("closed before INFO");
            }
        };
        match info {
            ServerOp::Info(json) if json.contains("\"tls_required\":true") => {
                bail!("the server requires TLS, which the edge subscriber does not speak")
            }
            ServerOp::Info(_) => {}
            other => bail!("expected INFO, got {other:?}"),
        }
        let mut hello = BytesMut::new();
        hello.extend_from_slice(&nats_wire::connect(
            &self.name,
            server.user.as_deref(),
            server.pass.as_deref(),
            server.token.as_deref(),
        ));
        // What was queued while down is superseded by the map, sent whole below.
        while commands.try_recv().is_ok() {}
        for (sid, (subject, _)) in self.subscriptions.lock().iter() {
            hello.extend_from_slice(&nats_wire::sub(subject, *sid));
        }
        stream.write_all(&hello).await?;
        tracing::info!(server = %server.addr, link = %self.name, "edge link up");

        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut unanswered = 0;
        loop {
            tokio::select! {
                read = stream.read_buf(&mut buf) => {
                    if read? == 0 {
                        bail!("the server closed the connection");
                    }
                    let mut replies = BytesMut::new();
                    while let Some(op) = nats_wire::parse(&mut buf, MAX_PAYLOAD)? {
                        match op {
                            ServerOp::Msg { sid, reply, payload } => {
                                self.deliver(sid, payload);
                                // A user-scope high-priority batch is a request: answering it
                                // tells the distributor the user is online here.
                                if let Some(reply) = reply {
                                    replies.extend_from_slice(&nats_wire::empty_pub(&reply));
                                }
                            }
                            ServerOp::Ping => replies.extend_from_slice(nats_wire::PONG),
                            ServerOp::Pong => unanswered = 0,
                            ServerOp::Err(reason) => bail!("server error: {reason}"),
                            ServerOp::Info(_) | ServerOp::Ok => {}
                        }
                    }
                    if !replies.is_empty() {
                        stream.write_all(&replies).await?;
                    }
                    if buf.capacity() > 4 * 1024 * 1024 && buf.is_empty() {
                        buf = BytesMut::with_capacity(64 * 1024);
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { return Ok(()) };
                    stream.write_all(&command).await?;
                }
                _ = ping.tick() => {
                    if unanswered >= 2 {
                        bail!("no PONG for two pings");
                    }
                    unanswered += 1;
                    stream.write_all(nats_wire::PING).await?;
                }
            }
        }
    }

    fn deliver(&self, sid: u64, payload: Bytes) {
        let Some(group) = self
            .subscriptions
            .lock()
            .get(&sid)
            .map(|(_, group)| group.clone())
        else {
            return; // unsubscribed meanwhile
        };
        match EdgeBatch::decode(payload) {
            Ok(batch) => group.deliver(batch, self.limits, &self.stats),
            Err(error) => {
                tracing::warn!(%error, scope = %group.scope, "undecodable edge batch");
                self.stats.batch_received("corrupt");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_and_credentials_parse() {
        let servers = parse_servers("nats://127.0.0.1:4222, nats://u:p@b:4223,tok@c,d:1").unwrap();
        let addrs: Vec<_> = servers.iter().map(|s| s.addr.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:4222", "b:4223", "c:4222", "d:1"]);
        assert_eq!(
            (servers[1].user.as_deref(), servers[1].pass.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(servers[2].token.as_deref(), Some("tok"));
        assert!(parse_servers("tls://a:4222").is_err());
        assert!(parse_servers(" , ").is_err());
    }
}
