//! The driver: a tokio task that picks nodes, makes connections, runs [`Connection`] over them
//! and reports [`Event`]s to the application. The only code here touching sockets and clocks.
//!
//! **Choosing.** Control's node list is fetched before each pass over it (reused for its
//! `ttl_secs` while a pass goes well); the client's region comes first, other regions last,
//! the node just left after every other ([`order_nodes`]). On a node, the allowed transports
//! are tried in preference order, Happy-Eyeballs style (RFC 8305): the next one starts
//! [`Config::fallback_delay`] (250 ms) after the previous one if that has not connected yet,
//! or at once when it failed, and the first to connect wins. So with UDP blocked a QUIC-first
//! client is on WebSocket 250 ms plus one TCP connect later.
//!
//! **Reconnecting.** After a joined connection ends, the next attempt waits a random time within
//! the backoff's first window (full jitter, [`Backoff`]: 0-250 ms by default), then goes to
//! the next node. A pass over the whole list that reaches no room waits a doubling window
//! (up to 30 s) before the next pass. DRAIN: the client leaves at once (after the server's
//! `reconnect_after_ms`), to another node. A gateway process that dies closes its sockets, so
//! the client notices at once; a path that silently dies is noticed by the heartbeat's reply
//! timeout (at most `heartbeat_interval + heartbeat_reply_timeout`, 40 s by default).
//!
//! **Not yet.** Resume (RESUME, op 1007, after AUTH) and HTTP polling (control's `polling`
//! policy) come with the catch-up issue; the slots are [`Connection`]'s `_resume` field and
//! the policy check in `Driver::refresh_nodes`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use danmu_proto::upstream::{UpstreamReply, UpstreamRequest};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::backoff::Backoff;
use crate::connection::{AuthParams, CloseReason, Connection, Message, Output, Timing};
use crate::control::Control;
use crate::nodes::{Node, NodeList, TransportKind, order_nodes};
use crate::tls::TlsOptions;
use crate::transport::{self, ConnectError, Connector, Stream};

/// A boxed error from the application's token function.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the token function returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

type TokenFn = Arc<dyn Fn() -> TokenFuture + Send + Sync>;

/// Everything a client needs besides its token function.
#[derive(Clone, Debug)]
pub struct Config {
    /// Control's base URL, e.g. `http://127.0.0.1:8080`.
    pub control: String,
    /// The room to join.
    pub room: u64,
    /// The user id (the token's).
    pub uid: u64,
    /// Region hint for the node list (`None`: control decides from the client's address).
    pub region: Option<String>,
    /// A fixed node list used instead of control's (control is then never asked): for
    /// deployments with their own discovery, or one load-balanced address per transport.
    pub nodes: Option<Vec<Node>>,
    /// Device id sent in AUTH (`buvid`).
    pub device: String,
    /// What to ask for: 0 raw, 2 zlib, 3 brotli (default: the smallest bytes).
    pub protover: u16,
    /// Transports to use, most preferred first. Default [`TransportKind::DEFAULT_ORDER`].
    pub transports: Vec<TransportKind>,
    /// Certificates to trust on `wss`, `tls`, QUIC and an `https` control URL.
    pub tls: TlsOptions,
    /// Connection timers.
    pub timing: Timing,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// One transport's connect (TCP, TLS, QUIC handshake), and one control request. Default 5 s.
    pub connect_timeout: Duration,
    /// Head start of a more preferred transport before the next one starts too. Default 250 ms.
    pub fallback_delay: Duration,
    /// Opt in to high reach (ACKs, duplicates dropped). Default on.
    pub ack: bool,
    /// Opt in to DRAIN. Default on.
    pub drain: bool,
    /// Events buffered for the application before the client stops reading the socket (the
    /// gateway then sheds low priority for it). Default 1024.
    pub event_buffer: usize,
}

impl Config {
    /// Defaults for joining `room` as `uid` through control at `control`.
    pub fn new(control: &str, room: u64, uid: u64) -> Config {
        Config {
            control: control.to_owned(),
            room,
            uid,
            region: None,
            nodes: None,
            device: String::new(),
            protover: 3,
            transports: TransportKind::DEFAULT_ORDER.to_vec(),
            tls: TlsOptions::default(),
            timing: Timing::default(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            fallback_delay: Duration::from_millis(250),
            ack: true,
            drain: true,
            event_buffer: 1024,
        }
    }
}

/// What the application hears.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Joined the room on a gateway.
    Connected {
        /// How.
        transport: TransportKind,
        /// The gateway's node id.
        node: String,
        /// The gateway's region.
        region: String,
        /// The address connected to (`host:port`).
        addr: String,
        /// From the start of this connection attempt to AUTH_REPLY.
        setup: Duration,
    },
    /// A business message.
    Message(Message),
    /// The room's online count, at each heartbeat reply, with the heartbeat's round trip.
    Online {
        /// Members on every gateway of every region, at most ~2 s old.
        count: u32,
        /// Heartbeat to reply.
        rtt: Duration,
    },
    /// A joined connection ended; the client reconnects unless the reason is final
    /// ([`Event::Stopped`] follows then).
    Disconnected {
        /// Why.
        reason: CloseReason,
    },
    /// The client gave up for good: AUTH_REPLY -103 (room not allowed), -104 (bad request),
    /// -105 (uid is not the token's) or -106 (protover). Nothing follows. (A failing token
    /// function is retried with the backoff, never final.)
    Stopped {
        /// Why.
        reason: String,
    },
}

/// Why an upstream send failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// No joined connection right now (connecting or reconnecting).
    #[error("not connected")]
    NotConnected,
    /// The connection ended before the reply came.
    #[error("the connection ended before the reply")]
    Interrupted,
    /// No reply within 10 s.
    #[error("no reply within 10 s")]
    Timeout,
    /// The client is stopped.
    #[error("the client is stopped")]
    Stopped,
}

enum Command {
    Upstream(
        UpstreamRequest,
        oneshot::Sender<Result<UpstreamReply, SendError>>,
    ),
}

/// A running client. Dropping it stops the task and closes the connection.
pub struct Client {
    events: mpsc::Receiver<Event>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS settings are unusable (e.g. an unreadable CA file).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// No transport allowed.
    #[error("no transport allowed")]
    NoTransport,
}

impl Client {
    /// Starts connecting on the current tokio runtime. `token` is called once a connection to
    /// a gateway stands, before its AUTH (cache in it if tokens are expensive); an error drops
    /// that connection and is retried with the backoff.
    pub fn start<F, Fut, E>(config: Config, token: F) -> Result<Client, StartError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        if config.transports.is_empty() {
            return Err(StartError::NoTransport);
        }
        let connector = Connector::new(&config.tls)?;
        let control = Control::new(&config.control, &config.tls, config.connect_timeout)?;
        let token: TokenFn = Arc::new(move || {
            let fut = token();
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        let (events_tx, events) = mpsc::channel(config.event_buffer.max(1));
        let (commands_tx, commands) = mpsc::channel(64);
        let span = tracing::info_span!("danmu_client", room = config.room, uid = config.uid);
        let driver = Driver {
            backoff: config.backoff.clone(),
            config,
            connector,
            control,
            token,
            events: events_tx,
            commands,
            rng: StdRng::from_entropy(),
            nodes: None,
        };
        let task = tokio::spawn(driver.run().instrument(span));
        Ok(Client {
            events,
            commands: commands_tx,
            task,
        })
    }

    /// The next event; `None` once the client has stopped.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Sends a danmu upstream and waits (at most 10 s) for the gateway's reply; a reply with a
    /// negative code is a refusal (`docs/protocol.md`, "Upstream danmu"), not an error here.
    pub async fn send_danmu(&self, request: UpstreamRequest) -> Result<UpstreamReply, SendError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Upstream(request, tx))
            .await
            .map_err(|_| SendError::Stopped)?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SendError::Interrupted),
            Err(_) => Err(SendError::Timeout),
        }
    }
}

/// How one connection ended.
struct SessionEnd {
    joined: bool,
    reason: CloseReason,
}

struct Driver {
    config: Config,
    backoff: Backoff,
    connector: Connector,
    control: Control,
    token: TokenFn,
    events: mpsc::Sender<Event>,
    commands: mpsc::Receiver<Command>,
    rng: StdRng,
    /// The last node list and when it was fetched.
    nodes: Option<(NodeList, Instant)>,
}

/// AUTH_REPLY codes a retry cannot fix (`danmu_proto::auth::code`): the room is not allowed,
/// the request is malformed, the uid is not the token's, the protover is unknown.
fn is_final(code: i32) -> bool {
    use danmu_proto::auth::code;
    matches!(
        code,
        code::ROOM_NOT_ALLOWED
            | code::BAD_REQUEST
            | code::UID_MISMATCH
            | code::UNSUPPORTED_PROTOVER
    )
}

impl Driver {
    async fn run(mut self) {
        let mut avoid: Option<String> = None;
        let mut delay = Duration::ZERO;
        let mut stale = true;
        'passes: loop {
            if !delay.is_zero() {
                tracing::debug!(?delay, "waiting before the next attempt");
                if !self.idle(delay).await {
                    return;
                }
            }
            if stale || self.list_expired() {
                self.refresh_nodes().await;
            }
            let Some((list, _)) = &self.nodes else {
                delay = self.backoff.next_delay(&mut self.rng);
                continue;
            };
            let ordered = order_nodes(list, avoid.as_deref());
            for node in ordered {
                let started = Instant::now();
                let (kind, addr, stream) = match self.connect_node(&node).await {
                    Ok(connected) => connected,
                    Err(error) => {
                        tracing::info!(node = %node.node_id, %error, "connect failed, trying the next node");
                        continue;
                    }
                };
                // The token is asked for once a connection stands, so a pass over dead nodes
                // costs the application's backend nothing and the token is as fresh as can be.
                let token = match (self.token)().await {
                    Ok(token) => token,
                    Err(error) => {
                        tracing::warn!(%error, "the token function failed; backing off");
                        break;
                    }
                };
                let span =
                    tracing::info_span!("session", node = %node.node_id, transport = %kind, %addr);
                let end = self
                    .session(stream, kind, &node, &addr, token, started)
                    .instrument(span)
                    .await;
                let Some(end) = end else {
                    return; // the application is gone
                };
                if end.joined {
                    let _ = self
                        .events
                        .send(Event::Disconnected {
                            reason: end.reason.clone(),
                        })
                        .await;
                }
                match &end.reason {
                    CloseReason::Local => return,
                    CloseReason::AuthRefused(code) if is_final(*code) => {
                        let _ = self
                            .events
                            .send(Event::Stopped {
                                reason: format!("{} on node {}", end.reason, node.node_id),
                            })
                            .await;
                        return;
                    }
                    // A token problem (-101, -102): a new token, after the backoff.
                    CloseReason::AuthRefused(_) => {
                        tracing::warn!(reason = %end.reason, "token refused");
                        break;
                    }
                    CloseReason::Drain(drain) => {
                        tracing::info!(reason = %drain.reason, "the gateway is draining; moving");
                        avoid = Some(node.node_id.clone());
                        self.backoff.reset();
                        delay = Duration::from_millis(drain.reconnect_after_ms.min(60_000));
                        stale = true;
                        continue 'passes;
                    }
                    _ if end.joined => {
                        tracing::info!(reason = %end.reason, "disconnected; reconnecting elsewhere");
                        avoid = Some(node.node_id.clone());
                        self.backoff.reset();
                        delay = self.backoff.next_delay(&mut self.rng);
                        stale = true;
                        continue 'passes;
                    }
                    _ => {
                        tracing::info!(reason = %end.reason, "connection failed before joining, trying the next node");
                    }
                }
            }
            // A pass reached no room: back off, then ask control again.
            delay = self.backoff.next_delay(&mut self.rng);
            stale = true;
        }
    }

    fn list_expired(&self) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|(list, at)| at.elapsed() >= Duration::from_secs(list.ttl_secs.max(1)))
    }

    /// Fetches the node list; on failure keeps the previous one (control down must not stop a
    /// client that knows gateways).
    async fn refresh_nodes(&mut self) {
        if let Some(nodes) = &self.config.nodes {
            let region = self.config.region.clone();
            let list = NodeList {
                region: region
                    .unwrap_or_else(|| nodes.first().map(|n| n.region.clone()).unwrap_or_default()),
                policy: Default::default(),
                nodes: nodes.clone(),
                ttl_secs: u64::MAX,
            };
            self.nodes = Some((list, Instant::now()));
            return;
        }
        match self
            .control
            .nodes(self.config.region.as_deref(), Some(self.config.uid))
            .await
        {
            Ok(list) => {
                if list.policy.mode == "polling" {
                    // Polling slot: the catch-up issue adds it; until then, connect anyway.
                    tracing::warn!(
                        "control asks this client to poll; polling is not supported yet, connecting"
                    );
                }
                tracing::debug!(nodes = list.nodes.len(), region = %list.region, "node list");
                self.nodes = Some((list, Instant::now()));
            }
            Err(error) => tracing::warn!(%error, "fetching the node list"),
        }
    }

    /// Waits `delay`, answering commands meanwhile. False when the application is gone.
    async fn idle(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Upstream(_, reply)) => { let _ = reply.send(Err(SendError::NotConnected)); }
                    None => return false,
                },
            }
        }
    }

    /// Tries the node's allowed transports, staggered by `fallback_delay`; the first to
    /// connect wins (the others are dropped).
    async fn connect_node(
        &self,
        node: &Node,
    ) -> Result<(TransportKind, String, Box<dyn Stream>), ConnectError> {
        let mut pending = node
            .transports(&self.config.transports)
            .map(|(kind, addr)| (kind, addr.to_owned()))
            .collect::<Vec<_>>()
            .into_iter();
        let mut attempts = FuturesUnordered::new();
        let start = |(kind, addr): (TransportKind, String)| {
            let connector = self.connector.clone();
            let timeout = self.config.connect_timeout;
            async move {
                let stream = connector.connect(kind, &addr, timeout).await?;
                Ok::<_, ConnectError>((kind, addr, stream))
            }
        };
        let Some(first) = pending.next() else {
            return Err(ConnectError::NoTransport(node.node_id.clone()));
        };
        attempts.push(start(first));
        let mut last_error = None;
        loop {
            let head_start = tokio::time::sleep(self.config.fallback_delay);
            tokio::select! {
                done = attempts.next() => match done {
                    Some(Ok(connected)) => return Ok(connected),
                    Some(Err(error)) => {
                        tracing::debug!(%error, "transport failed");
                        last_error = Some(error);
                        if attempts.is_empty() {
                            match pending.next() {
                                Some(next) => attempts.push(start(next)),
                                None => break,
                            }
                        }
                    }
                    None => break,
                },
                () = head_start, if pending.len() > 0 => {
                    if let Some(next) = pending.next() {
                        attempts.push(start(next));
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ConnectError::NoTransport(node.node_id.clone())))
    }

    /// Runs one connection to its end. `None` when the application dropped the client.
    async fn session(
        &mut self,
        stream: Box<dyn Stream>,
        kind: TransportKind,
        node: &Node,
        addr: &str,
        token: String,
        started: Instant,
    ) -> Option<SessionEnd> {
        let params = AuthParams {
            uid: self.config.uid,
            room: self.config.room,
            protover: self.config.protover,
            token,
            device: self.config.device.clone(),
            ack: self.config.ack,
            drain: self.config.drain,
        };
        let mut conn = Connection::new(
            transport::framing(kind),
            addr,
            params,
            self.config.timing,
            Instant::now().into_std(),
        );
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut replies: HashMap<u32, oneshot::Sender<Result<UpstreamReply, SendError>>> =
            HashMap::new();
        let mut joined = false;
        loop {
            // What the connection wants written, then what it has to say.
            let mut wrote = false;
            while let Some(bytes) = conn.poll_transmit() {
                wrote = true;
                let write =
                    tokio::time::timeout(self.config.timing.auth_timeout, writer.write_all(&bytes));
                if !matches!(write.await, Ok(Ok(()))) {
                    conn.handle_eof();
                    break;
                }
            }
            if wrote {
                let _ = tokio::time::timeout(self.config.timing.auth_timeout, writer.flush()).await;
            }
            while let Some(output) = conn.poll_output() {
                let event = match output {
                    Output::Joined => {
                        joined = true;
                        self.backoff.reset();
                        tracing::info!("joined");
                        Event::Connected {
                            transport: kind,
                            node: node.node_id.clone(),
                            region: node.region.clone(),
                            addr: addr.to_owned(),
                            setup: started.elapsed(),
                        }
                    }
                    Output::Message(message) => Event::Message(message),
                    Output::Online { count, rtt } => Event::Online { count, rtt },
                    Output::UpstreamReply { seq, reply } => {
                        if let Some(tx) = replies.remove(&seq) {
                            let _ = tx.send(Ok(reply));
                        }
                        continue;
                    }
                    Output::Closed(reason) => {
                        // Flush the close frame, briefly: the peer may be gone.
                        while let Some(bytes) = conn.poll_transmit() {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(1),
                                writer.write_all(&bytes),
                            )
                            .await;
                        }
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
                        tracing::info!(%reason, "connection ended");
                        for (_, tx) in replies.drain() {
                            let _ = tx.send(Err(SendError::Interrupted));
                        }
                        return Some(SessionEnd { joined, reason });
                    }
                };
                if self.events.send(event).await.is_err() {
                    return None;
                }
            }
            let deadline = conn.poll_timeout().map(Instant::from_std);
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => conn.handle_eof(),
                    Ok(_) => conn.handle_read(Instant::now().into_std(), &mut buf),
                    Err(error) => {
                        tracing::debug!(%error, "read");
                        conn.handle_eof();
                    }
                },
                () = sleep_until(deadline) => conn.handle_timeout(Instant::now().into_std()),
                command = self.commands.recv() => match command {
                    Some(Command::Upstream(request, tx)) => match conn.send_upstream(&request) {
                        Some(seq) => { replies.insert(seq, tx); }
                        None => { let _ = tx.send(Err(SendError::NotConnected)); }
                    },
                    None => conn.close_local(),
                },
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
