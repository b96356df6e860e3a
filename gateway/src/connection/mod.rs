//! One client connection as a plain state machine (the quinn-proto step): bytes, outbound
//! batches, timeouts and the shutdown signal go in, with the caller's `now`; bytes to write,
//! events for the gateway (join these scopes, emit this presence event, fetch offline pushes)
//! and one earliest deadline come out. No tokio, no sockets, no clock of its own, so every rule
//! of a connection's life is unit-tested in microseconds (`tests.rs`).
//!
//! ```text
//!  accept ─▶ Upgrade (WebSocket only) ─▶ Open ─────────────────────────▶ Closing ─▶ done
//!            HTTP upgrade or its error     AUTH, heartbeats, room change,   Close frame (WS),
//!                                          upstream, ACKs, fan-out, drain   flush for close_linger
//! ```
//!
//! The IO side (`crate::transport`) is thin glue: it reads into a buffer and calls `handle_read`,
//! calls `handle_outbound` when the member's queue has something, writes `transmit()`'s slices
//! and reports them with `handle_transmitted`/`handle_write_blocked`, keeps one `Sleep` reset to
//! `poll_timeout()` and calls `handle_timeout`, and carries out `poll_event()`'s events.
//! What a connection needs from the gateway (token verification, online counts, upstream
//! decisions, metrics) comes through [`Context`], which tests implement in a few lines.

mod close;
mod framing;
pub mod presence;
pub mod reach;
pub mod session;
#[cfg(test)]
mod tests;
mod timer;
mod transmit;
mod transport;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use danmu_proto::presence::PresenceEvent;
use danmu_proto::subjects::{self, Scope};
use danmu_proto::token::TokenVerifier;
use danmu_proto::{frame, websocket};

pub use close::CloseReason;
pub use framing::{Inbound, Input};
pub use timer::{Timer, TimerTable};
pub use transmit::{MAX_SLICES, Transmit};
pub use transport::{Framing, Transport};

use self::presence::{Origin, Presence};
use self::reach::{Reach, ReachConfig, ReachCounts};
use self::session::{Action, Session, SessionConfig};
use crate::fanout::outbound::Outbound;
use crate::stats::Stats;

/// Per-connection limits and periods, from the gateway's configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    pub session: SessionConfig,
    /// Largest client GOIM packet, header included (bytes).
    pub max_packet_len: usize,
    /// Largest client WebSocket message (bytes).
    pub max_ws_message_len: usize,
    /// Largest WebSocket upgrade request (bytes); past it the answer is 431.
    pub max_handshake_len: usize,
    /// Bound of the member's outbound queue (bytes), see `crate::fanout::outbound`.
    pub outbound_queue_bytes: usize,
    /// Bound of replies queued and not yet written (bytes): pongs, heartbeat, room-change and
    /// upstream replies. Past it the connection closes (`reply_backlog`).
    pub reply_queue_bytes: usize,
    /// Kernel send buffer per socket (bytes), `None` for the kernel's default.
    pub socket_send_buffer: Option<usize>,
    pub reach: ReachConfig,
    /// How long a closing connection may take to flush its last bytes.
    pub close_linger: Duration,
    /// Departures on shutdown are spread over this period.
    pub drain_period: Duration,
    /// A connection whose socket takes no byte for this long while data waits is cut off as a
    /// slow consumer, even if shedding low priority kept its queue within bounds.
    pub write_stall: Duration,
    /// One connection in this many has its outbound queue timed (`crate::fanout::outbound`).
    pub queue_wait_sample: u64,
    /// Low priority handed to the write queue at a time (bytes): what high priority may have to
    /// wait behind.
    pub low_priority_budget: usize,
    /// TCP connections start with a PROXY protocol header (v1 or v2, as HAProxy and cloud load
    /// balancers send it); the address in it is believed from trusted proxies only.
    pub proxy_protocol: bool,
    /// Origins whose browser pages may upgrade (`allowed_origins`); empty: any.
    pub allowed_origins: danmu_runtime::origins::AllowedOrigins,
}

impl Limits {
    /// Most bytes read and not yet parsed: a whole WebSocket message twice, plus slack.
    pub fn max_read_buffer(&self) -> usize {
        self.max_ws_message_len.max(self.max_handshake_len) * 2 + 64 * 1024
    }
}

/// One reading of the clock for one call: the monotonic instant for deadlines, unix
/// milliseconds for what events and tokens carry.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub instant: Instant,
    pub unix_ms: u64,
}

impl Now {
    /// Reads both clocks (the IO side's only clock reading per call).
    pub fn read() -> Now {
        Now {
            instant: Instant::now(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
        }
    }
}

/// Who sent an UPSTREAM and when, as the upstream rules (`crate::upstream`) judge it.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    pub uid: u64,
    pub device: &'a str,
    pub room: u64,
    pub ip: IpAddr,
    pub now: Instant,
    pub now_unix_ms: u64,
}

/// The reply to write and, after a flood, the reason to close.
#[derive(Debug)]
pub struct Handled {
    pub reply: Bytes,
    pub close: Option<CloseReason>,
}

/// What a connection asks of the gateway around it.
pub trait Context {
    /// Verifies tokens (Ed25519, local).
    fn verifier(&self) -> &TokenVerifier;
    /// This gateway's region: every joined connection is in its region-scope group.
    fn region(&self) -> &str;
    /// Node id and region stamped on presence events.
    fn origin(&self) -> &Origin;
    /// The online count of `room` for HEARTBEAT_REPLY.
    fn online(&self, room: u64, now: Instant) -> u32;
    /// Decides on an upstream danmu (rate limits, deny lists, words) and queues what passes.
    fn upstream(&self, sender: &Sender<'_>, seq: u32, body: &[u8]) -> Handled;
    /// Whether connections from `ip` are a trusted load balancer, whose `X-Forwarded-For`
    /// names the client.
    fn is_trusted_proxy(&self, ip: IpAddr) -> bool;
    fn stats(&self) -> &Stats;
}

/// What the gateway must do for a connection, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Authenticated: create the member (`protover` decides its encoding) and join every scope;
    /// the room is first.
    Join { scopes: Vec<Scope>, protover: u16 },
    /// Room change: leave `from`'s group, join `to`'s.
    MoveRoom { from: Scope, to: Scope },
    /// Closing: stop the member's queue and leave every group.
    Leave { scopes: Vec<Scope> },
    /// Publish an enter or exit event.
    Presence(PresenceEvent),
    /// Read the user's waiting offline pushes into the member's queue, as high priority.
    FetchOffline { uid: u64 },
}

enum Phase {
    /// TCP behind a load balancer: waiting for the PROXY protocol header.
    ProxyHeader,
    /// WebSocket only: waiting for the HTTP upgrade request.
    Upgrade,
    Open,
    Closing {
        reason: CloseReason,
        done: bool,
    },
}

/// A joined connection's state beyond the session.
struct Joined {
    /// The room it is in (changes with ROOM_CHANGE) and the user.
    room: u64,
    uid: u64,
    /// Whether the device is a valid subject token, so it has a device scope (the device
    /// itself is kept once, by `presence`).
    device_scope: bool,
    /// Opted in to DRAIN.
    drain: bool,
    presence: Presence,
    /// High-reach bookkeeping, for clients that opted in.
    reach: Option<Reach>,
    /// Reach counts already added to the gateway's metrics.
    reach_reported: ReachCounts,
}

impl Joined {
    /// The targets it is a member of: the room first, then the user's, the device's (if
    /// any), the region, everyone. Built when needed (join, leave) rather than kept: an idle
    /// connection's memory.
    fn scopes(&self, region: &str) -> Vec<Scope> {
        let mut scopes = Vec::with_capacity(5);
        scopes.push(Scope::Room(self.room));
        scopes.push(Scope::User(self.uid));
        if self.device_scope {
            scopes.push(Scope::Device(self.presence.device().to_owned()));
        }
        scopes.push(Scope::Region(region.to_owned()));
        scopes.push(Scope::All);
        scopes
    }
}

/// One client connection.
pub struct Connection {
    id: u64,
    transport: Transport,
    /// Shared by every connection: one pointer here instead of ~150 B copied into each.
    limits: Arc<Limits>,
    /// The client's address: the socket's peer, or what a trusted proxy says it is.
    client_ip: IpAddr,
    /// Past `max_connections`: answered with a close (1013 on WebSocket) and nothing else.
    admitted: bool,
    phase: Phase,
    session: Session,
    inbound: Inbound,
    joined: Option<Box<Joined>>,
    transmit: Transmit,
    timers: TimerTable,
    /// Since when the socket has taken nothing while bytes wait.
    stalled_since: Option<Instant>,
    /// A Close frame is queued or the peer is gone: no (other) Close frame is sent.
    close_sent: bool,
    events: VecDeque<Event>,
}

impl Connection {
    /// A freshly accepted connection. `admitted: false` (the gateway is at its connection cap)
    /// gets a close right away: after the upgrade with 1013 on WebSocket, at once on TCP.
    pub fn new(
        id: u64,
        transport: Transport,
        peer: IpAddr,
        limits: Arc<Limits>,
        admitted: bool,
        now: Instant,
    ) -> Connection {
        let mut conn = Connection {
            id,
            transport,
            client_ip: peer,
            admitted,
            phase: match transport {
                Transport::Ws | Transport::Wss => Phase::Upgrade,
                // A PROXY header comes before anything else on the socket; on a TLS listener
                // it would come before the TLS handshake, which the glue does not read.
                Transport::Tcp if limits.proxy_protocol => Phase::ProxyHeader,
                Transport::Tcp | Transport::Tls | Transport::Quic | Transport::WebTransport => {
                    Phase::Open
                }
            },
            session: Session::new(limits.session, now),
            inbound: Inbound::new(
                transport.framing(),
                limits.max_packet_len,
                limits.max_ws_message_len,
            ),
            limits,
            joined: None,
            transmit: Transmit::default(),
            timers: TimerTable::default(),
            stalled_since: None,
            // Only a WebSocket has a closing message of its own (RFC 6455 5.5.1).
            close_sent: match transport.framing() {
                Framing::Message => false,
                Framing::Stream => true,
            },
            events: VecDeque::new(),
        };
        if !admitted && transport.framing() == Framing::Stream {
            conn.begin_close(now, CloseReason::Overloaded);
        }
        conn.update_timers();
        conn
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The client's address (after `X-Forwarded-For` from a trusted proxy).
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// Whether it was admitted (under the connection cap).
    pub fn is_admitted(&self) -> bool {
        self.admitted
    }

    /// Why it closes, once it does.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        match &self.phase {
            Phase::Closing { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    /// Closed and flushed (or out of linger time): the socket can go.
    pub fn is_done(&self) -> bool {
        match self.phase {
            Phase::Closing { done, .. } => done || self.transmit.is_empty(),
            _ => false,
        }
    }

    /// The gateway's shutdown was seen and this connection waits for its moment to leave.
    pub fn is_draining(&self) -> bool {
        self.timers.get(Timer::Drain).is_some()
    }

    /// Joined a room: batches may be waiting in the member's queue.
    pub fn is_joined(&self) -> bool {
        self.joined.is_some() && !self.is_closing()
    }

    /// Bytes waiting to be written.
    pub fn transmit(&self) -> &Transmit {
        &self.transmit
    }

    pub fn wants_write(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The socket would not take all its bytes and the write queue has not emptied since: the
    /// reader is behind (the stall deadline runs).
    pub fn is_write_blocked(&self) -> bool {
        self.stalled_since.is_some()
    }

    /// The earliest deadline: call `handle_timeout` then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next thing the gateway must do for this connection.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        event
    }

    /// Bytes from the socket, appended to `buf` by the caller; everything complete is consumed,
    /// a partial packet stays in `buf`.
    pub fn handle_read(&mut self, now: Now, buf: &mut BytesMut, ctx: &impl Context) {
        if self.is_closing() {
            buf.clear();
            return;
        }
        if matches!(self.phase, Phase::ProxyHeader) {
            self.proxy_header(now.instant, buf, ctx);
        }
        if matches!(self.phase, Phase::Upgrade) {
            self.upgrade(now.instant, buf, ctx);
        }
        if matches!(self.phase, Phase::Open) && !buf.is_empty() {
            let mut inputs = Vec::new();
            let decoded = self.inbound.decode(buf, &mut inputs);
            for input in inputs {
                if self.is_closing() {
                    break;
                }
                self.on_input(now, input, ctx);
            }
            if let Err(reason) = decoded {
                self.close(now, reason, ctx);
            }
        }
        if self.is_closing() {
            buf.clear();
        }
        self.update_timers();
    }

    /// The peer closed its side (EOF) or the socket failed: nothing more can be read or said.
    pub fn handle_peer_gone(&mut self, now: Now, ctx: &impl Context) {
        self.close_sent = true;
        self.close(now, CloseReason::PeerClosed, ctx);
        if let Phase::Closing { done, .. } = &mut self.phase {
            *done = true;
        }
        self.update_timers();
    }

    /// The member's queue has batches: moves them to the write queue, high priority first (with
    /// delivery ids for high-reach clients), low priority within its budget.
    pub fn handle_outbound(&mut self, now: Now, outbound: &Outbound, ctx: &impl Context) {
        if self.is_closing() {
            return;
        }
        let Some(joined) = self.joined.as_mut() else {
            return;
        };
        let transmit = &mut self.transmit;
        let reach = &mut joined.reach;
        let drained = outbound.drain_into(
            transmit.queued_bytes(),
            self.limits.low_priority_budget,
            |item, high| match reach
                .as_mut()
                .filter(|_| high)
                .and_then(|r| r.send(item.clone(), now.instant))
            {
                Some([head, body]) => {
                    transmit.push(head);
                    transmit.push(body);
                }
                None => transmit.push(item),
            },
        );
        self.report_reach(ctx);
        if let Some(at) = drained.queued_at {
            ctx.stats()
                .queue_wait(now.instant.saturating_duration_since(at));
        }
        if drained.overflowed {
            self.close(now, CloseReason::SlowConsumer, ctx);
        }
        self.update_timers();
    }

    /// The socket took `n` bytes of `transmit()`'s slices.
    pub fn handle_transmitted(&mut self, now: Instant, n: usize) {
        self.transmit.advance(n);
        if self.transmit.is_empty() {
            self.stalled_since = None;
        } else if n > 0 {
            // Progress restarts the stall clock.
            self.stalled_since = Some(now);
        }
        self.update_timers();
    }

    /// The socket would block with bytes waiting: a stall starts unless one is running.
    pub fn handle_write_blocked(&mut self, now: Instant) {
        if !self.transmit.is_empty() {
            self.stalled_since.get_or_insert(now);
        }
        self.update_timers();
    }

    /// The gateway drains: a joined connection leaves at its own moment within the drain
    /// period (departures are spread so clients do not reconnect all at once), receiving until
    /// then; one that has not joined closes now.
    pub fn handle_shutdown(&mut self, now: Now, ctx: &impl Context) {
        if self.is_closing() || self.timers.get(Timer::Drain).is_some() {
            return;
        }
        if self.joined.is_none() {
            self.close(now, CloseReason::Shutdown, ctx);
        } else {
            let period = self.limits.drain_period.as_millis() as u64;
            let offset = self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % period.max(1);
            self.timers
                .set(Timer::Drain, now.instant + Duration::from_millis(offset));
        }
        self.update_timers();
    }

    /// Handles every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now, ctx: &impl Context) {
        // A copy of the table (it is `Copy`): handling a timer may change the live one.
        let table = self.timers;
        for timer in table.due(now.instant) {
            match timer {
                Timer::Linger => {
                    if let Phase::Closing { done, .. } = &mut self.phase {
                        *done = true;
                    }
                }
                _ if self.is_closing() => {}
                Timer::Idle => {
                    if let Some(action) = self.session.on_tick(now.instant) {
                        self.apply(now, action, ctx);
                    }
                }
                Timer::Retry => {
                    let mut retries = Vec::new();
                    if let Some(reach) = self.joined.as_mut().and_then(|j| j.reach.as_mut()) {
                        reach.due(now.instant, &mut retries);
                    }
                    for bytes in retries {
                        self.transmit.push(bytes);
                    }
                    self.report_reach(ctx);
                }
                Timer::Stall => self.close(now, CloseReason::SlowConsumer, ctx),
                Timer::Drain => {
                    if self.joined.as_ref().is_some_and(|j| j.drain) {
                        self.transmit
                            .push(self.transport.framing().wrap(&drain_packet()));
                    }
                    self.close(now, CloseReason::Drain, ctx);
                }
            }
        }
        self.update_timers();
    }

    /// Closes for a reason found outside (a read buffer over its bound, say). Idempotent: the
    /// first reason stays.
    pub fn close(&mut self, now: Now, reason: CloseReason, ctx: &impl Context) {
        if self.is_closing() {
            return;
        }
        if let Some(joined) = self.joined.take() {
            self.events.push_back(Event::Leave {
                scopes: joined.scopes(ctx.region()),
            });
            let mut presence = joined.presence;
            if let Some(exit) = presence.close(reason.label(), ctx.origin(), now.unix_ms) {
                self.events.push_back(Event::Presence(exit));
            }
        }
        self.begin_close(now.instant, reason);
        self.update_timers();
    }

    fn begin_close(&mut self, now: Instant, reason: CloseReason) {
        let _ = self.session.close(reason.clone());
        if matches!(
            reason,
            CloseReason::SlowConsumer | CloseReason::ReplyBacklog
        ) {
            // Nothing more for a reader that does not keep up but the close itself.
            self.transmit.discard_unstarted();
        }
        if !self.close_sent && !matches!(self.phase, Phase::Upgrade) {
            // RFC 6455 7.1.2: the server starts the closing handshake with a Close frame.
            self.transmit.push(websocket::close_frame(
                websocket::Role::Server,
                reason.websocket_code(),
                &reason.detail(),
            ));
            self.close_sent = true;
        }
        self.timers = TimerTable::default();
        self.timers
            .set(Timer::Linger, now + self.limits.close_linger);
        self.phase = Phase::Closing {
            reason,
            done: false,
        };
    }

    /// The PROXY protocol header (HAProxy's "PROXY protocol" v1 text or v2 binary) that a load
    /// balancer puts before the client's bytes. `LOCAL` (health checks) and `UNKNOWN` keep the
    /// socket's peer.
    fn proxy_header(&mut self, now: Instant, buf: &mut BytesMut, ctx: &impl Context) {
        use ppp::{HeaderResult, PartialResult as _};
        /// A v2 header with TLVs is at most a few hundred bytes; v1 is at most 107.
        const MAX_HEADER: usize = 4096;
        let parsed = HeaderResult::parse(buf);
        if parsed.is_incomplete() {
            if buf.len() > MAX_HEADER {
                self.begin_close(now, CloseReason::Protocol("PROXY header too long".into()));
            }
            return;
        }
        let (consumed, source) = match parsed {
            HeaderResult::V1(Ok(header)) => (
                header.header.len(),
                match header.addresses {
                    ppp::v1::Addresses::Tcp4(ip) => Some(IpAddr::V4(ip.source_address)),
                    ppp::v1::Addresses::Tcp6(ip) => Some(IpAddr::V6(ip.source_address)),
                    ppp::v1::Addresses::Unknown => None,
                },
            ),
            HeaderResult::V2(Ok(header)) => (
                header.header.len(),
                match (header.command, header.addresses) {
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(ip)) => {
                        Some(IpAddr::V4(ip.source_address))
                    }
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(ip)) => {
                        Some(IpAddr::V6(ip.source_address))
                    }
                    _ => None,
                },
            ),
            HeaderResult::V1(Err(error)) => {
                let reason = CloseReason::Protocol(format!("PROXY header: {error}"));
                return self.begin_close(now, reason);
            }
            HeaderResult::V2(Err(error)) => {
                let reason = CloseReason::Protocol(format!("PROXY header: {error}"));
                return self.begin_close(now, reason);
            }
        };
        if let Some(source) = source
            && ctx.is_trusted_proxy(self.client_ip)
        {
            self.client_ip = source;
        }
        buf.advance(consumed);
        self.phase = Phase::Open;
    }

    /// The WebSocket upgrade (RFC 6455 4.2): answers 101 on `/sub`, or the failure's status.
    fn upgrade(&mut self, now: Instant, buf: &mut BytesMut, ctx: &impl Context) {
        match websocket::parse_upgrade_request(buf, self.limits.max_handshake_len) {
            Ok(None) => {}
            Ok(Some((request, consumed))) => {
                buf.advance(consumed);
                if request.path.split('?').next() != Some("/sub") {
                    self.transmit
                        .push(Bytes::from(websocket::error_response(404, "only /sub")));
                    self.begin_close(now, CloseReason::Protocol(format!("path {}", request.path)));
                    return;
                }
                // A browser page of another site must not reach users' sessions through their
                // browser; clients that send no Origin are not browsers and are not checked.
                if let Some(origin) = request.origin.as_deref()
                    && !self.limits.allowed_origins.allows(origin)
                {
                    self.transmit.push(Bytes::from(websocket::error_response(
                        403,
                        "origin not allowed",
                    )));
                    let reason = format!("origin {origin:?} not allowed");
                    self.begin_close(now, CloseReason::Protocol(reason));
                    return;
                }
                if ctx.is_trusted_proxy(self.client_ip)
                    && let Some(client) = request
                        .forwarded_for
                        .as_deref()
                        .and_then(|header| forwarded_client(header, ctx))
                {
                    self.client_ip = client;
                }
                // RFC 6455 4.2.2: the server picks one of the offered subprotocols; any will
                // do, the protocol is the same, but a browser fails a handshake without one.
                self.transmit.push(Bytes::from(request.accept_response()));
                self.phase = Phase::Open;
                self.close_sent = false;
                if !self.admitted {
                    self.begin_close(now, CloseReason::Overloaded);
                }
            }
            Err(error) => {
                // 426 with the version we speak, 405, 431 or 400 (RFC 6455 4.2.1, 4.4).
                self.transmit.push(Bytes::from(error.response()));
                self.begin_close(now, CloseReason::Protocol(format!("handshake: {error}")));
            }
        }
    }

    fn on_input(&mut self, now: Now, input: Input, ctx: &impl Context) {
        match input {
            Input::Frame(frame) => {
                let mut actions = Vec::new();
                self.session.on_frame(
                    frame,
                    now.instant,
                    now.unix_ms / 1000,
                    ctx.verifier(),
                    &mut actions,
                );
                for action in actions {
                    if self.is_closing() {
                        break;
                    }
                    self.apply(now, action, ctx);
                }
            }
            // Answered, but not a heartbeat (`docs/protocol.md`, "Heartbeats").
            Input::Ping(payload) => self.reply(
                now,
                websocket::server_frame(websocket::opcode::PONG, &payload),
                ctx,
            ),
            Input::Closed(code) => {
                // RFC 6455 5.5.1: answer a Close with a Close, echoing the status code.
                let close = match code {
                    Some(code) => websocket::close_frame(websocket::Role::Server, code, ""),
                    None => websocket::server_frame(websocket::opcode::CLOSE, &[]),
                };
                self.transmit.push(close);
                self.close_sent = true;
                self.close(now, CloseReason::PeerClosed, ctx);
            }
        }
    }

    /// Carries out one session action.
    fn apply(&mut self, now: Now, action: Action, ctx: &impl Context) {
        match action {
            Action::Send(packet) => self.reply(now, self.transport.framing().wrap(&packet), ctx),
            Action::Join(identity) => {
                ctx.stats().auth(true);
                let (presence, enter) = Presence::enter(
                    self.id,
                    identity.uid,
                    identity.device.clone(),
                    identity.room,
                    ctx.origin(),
                    now.unix_ms,
                );
                let joined = Joined {
                    room: identity.room,
                    uid: identity.uid,
                    device_scope: subjects::is_valid_token(&identity.device),
                    drain: identity.drain,
                    presence,
                    reach: identity
                        .ack
                        .then(|| Reach::new(self.limits.reach, self.transport.framing())),
                    reach_reported: ReachCounts::default(),
                };
                self.events.push_back(Event::Join {
                    scopes: joined.scopes(ctx.region()),
                    protover: identity.protover,
                });
                self.events
                    .push_back(Event::FetchOffline { uid: identity.uid });
                self.events.push_back(Event::Presence(enter));
                self.joined = Some(Box::new(joined));
            }
            Action::ChangeRoom(room) => {
                let Some(joined) = &mut self.joined else {
                    return;
                };
                let from = std::mem::replace(&mut joined.room, room);
                self.events.push_back(Event::MoveRoom {
                    from: Scope::Room(from),
                    to: Scope::Room(room),
                });
                for event in joined.presence.change_room(room, ctx.origin(), now.unix_ms) {
                    self.events.push_back(Event::Presence(event));
                }
            }
            Action::Upstream { seq, room, body } => {
                let Some(identity) = self.session.identity() else {
                    return;
                };
                let sender = Sender {
                    uid: identity.uid,
                    device: &identity.device,
                    room,
                    ip: self.client_ip,
                    now: now.instant,
                    now_unix_ms: now.unix_ms,
                };
                let handled = ctx.upstream(&sender, seq, &body);
                self.reply(now, self.transport.framing().wrap(&handled.reply), ctx);
                if let Some(reason) = handled.close {
                    self.close(now, reason, ctx);
                }
            }
            Action::Ack(id) => {
                if let Some(reach) = self.joined.as_mut().and_then(|j| j.reach.as_mut()) {
                    reach.ack(id);
                }
                self.report_reach(ctx);
            }
            Action::HeartbeatReply => {
                let online = self
                    .session
                    .identity()
                    .map_or(0, |identity| ctx.online(identity.room, now.instant));
                self.reply(
                    now,
                    self.transport
                        .framing()
                        .wrap(&frame::heartbeat_reply(online)),
                    ctx,
                );
            }
            Action::Close(reason) => {
                if matches!(reason, CloseReason::AuthFailed(_)) {
                    ctx.stats().auth(false);
                }
                self.close(now, reason, ctx);
            }
        }
    }

    /// Queues a reply within the reply bound; a client that asks faster than it reads is closed.
    fn reply(&mut self, now: Now, bytes: Bytes, ctx: &impl Context) {
        if !self
            .transmit
            .push_reply(bytes, self.limits.reply_queue_bytes)
        {
            self.close(now, CloseReason::ReplyBacklog, ctx);
        }
    }

    /// Adds what changed in this connection's reach counts to the gateway's metrics.
    fn report_reach(&mut self, ctx: &impl Context) {
        if let Some(joined) = &mut self.joined
            && let Some(reach) = &joined.reach
            && reach.counts != joined.reach_reported
        {
            ctx.stats().reach(&joined.reach_reported, &reach.counts);
            joined.reach_reported = reach.counts;
        }
    }

    /// Sets every timer from the state, in one place.
    fn update_timers(&mut self) {
        if self.is_closing() {
            return; // only Linger, set when the close began
        }
        self.timers.set(Timer::Idle, self.session.deadline());
        let retry = self
            .joined
            .as_ref()
            .and_then(|j| j.reach.as_ref())
            .and_then(Reach::deadline);
        self.timers.put(Timer::Retry, retry);
        let stall = self
            .stalled_since
            .filter(|_| !self.transmit.is_empty())
            .map(|since| since + self.limits.write_stall);
        self.timers.put(Timer::Stall, stall);
    }
}

/// The client behind trusted proxies: the right-most address in `X-Forwarded-For` that is not
/// itself a trusted proxy (each proxy appends the address it received from).
fn forwarded_client(header: &str, ctx: &impl Context) -> Option<IpAddr> {
    for entry in header.rsplit(',') {
        let ip: IpAddr = entry.trim().parse().ok()?;
        if !ctx.is_trusted_proxy(ip) {
            return Some(ip);
        }
    }
    None
}

/// DRAIN (op 1001): reconnect to another node from control's list.
fn drain_packet() -> Bytes {
    let body = br#"{"reason":"shutdown","reconnect_after_ms":0}"#;
    frame::Frame::new(frame::version::CONTROL, frame::op::DRAIN, 1, &body[..]).to_bytes()
}
