//! One task per client connection: the only place that touches a client socket.
//!
//! The task moves bytes between the socket and the plain parts: `Inbound` (bytes to frames),
//! `Session` (frames to actions), the member's `Outbound` queue (batches from the room) and
//! `Writer` (non-blocking vectored writes). It waits on socket readiness rather than on reads
//! into a buffer, so an idle connection holds no read or write buffer at all.

mod inbound;
mod writer;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use danmu_proto::{frame, subjects, websocket};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::edge::Transport;
use crate::groups::{Group, Groups, Member};
use crate::nats_presence::EventSink;
use crate::online::Totals;
use crate::outbound::Outbound;
use crate::presence::{Origin, Presence};
use crate::reach::{Reach, ReachConfig, ReachCounts};
use crate::session::{Action, CloseReason, Identity, Session, SessionConfig};
use crate::stats::Stats;
use crate::unix_millis;
use danmu_proto::subjects::Scope;
use danmu_proto::token::TokenVerifier;

pub use inbound::{Inbound, Input};
use writer::Writer;

/// What every connection task shares.
pub struct Shared {
    pub session: SessionConfig,
    pub verifier: TokenVerifier,
    pub groups: Groups,
    /// This gateway's region: every connection joins its region-scope group.
    pub region: String,
    pub stats: Arc<Stats>,
    pub limits: ConnLimits,
    pub shutdown: CancellationToken,
    /// Where offline pushes wait; none disables their delivery on connect.
    pub offline: Option<async_nats::jetstream::Context>,
    pub brotli_quality: u32,
    /// Node id and region stamped on enter/exit events.
    pub origin: Origin,
    /// Where enter/exit events go; none in tests that do not look at them.
    pub events: Option<EventSink>,
    /// Online counts of every gateway, for HEARTBEAT_REPLY.
    pub online: Arc<RwLock<Totals>>,
    /// Upstream danmu; none answers every UPSTREAM as disabled.
    pub upstream: Option<crate::upstream::Upstream>,
    next_id: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_packet_len: usize,
    pub max_ws_message_len: usize,
    pub max_handshake_len: usize,
    pub outbound_queue_bytes: usize,
    pub socket_send_buffer: Option<usize>,
    pub reach: ReachConfig,
    /// How long a closing connection may take to flush its last frames.
    pub close_linger: Duration,
    /// Departures on shutdown are spread over this period.
    pub drain_period: Duration,
    /// A connection whose socket takes no byte for this long while data waits is cut off as a
    /// slow consumer, even if shedding low priority kept its queue within bounds.
    pub write_stall: Duration,
}

impl ConnLimits {
    pub fn from_config(config: &crate::Config) -> Self {
        ConnLimits {
            max_packet_len: config.max_packet_bytes,
            max_ws_message_len: config.max_ws_message_bytes,
            max_handshake_len: config.max_handshake_bytes,
            outbound_queue_bytes: config.outbound_queue_bytes,
            socket_send_buffer: config.socket_send_buffer_bytes,
            reach: ReachConfig {
                retry_after: config.reach_retry,
                max_retries: config.reach_max_retries,
                max_pending: config.reach_max_pending,
            },
            close_linger: config.close_linger,
            drain_period: config.drain_period,
            write_stall: config.write_stall_timeout,
        }
    }
}

/// Most offline pushes handed to one connect (the stream keeps at most this many per user too).
const MAX_OFFLINE: usize = 1000;

/// Low priority handed to the writer at a time: what high priority may have to wait behind.
const LOW_PRIORITY_BUDGET: usize = 64 * 1024;

/// A joined connection: its member entry and every group it belongs to.
struct Joined {
    member: Arc<Member>,
    room: Arc<Group>,
    scopes: Vec<Scope>,
    /// Opted in to DRAIN.
    drain: bool,
    /// Enter/exit event numbering.
    presence: Presence,
    /// High-reach bookkeeping, for clients that opted in.
    reach: Option<Reach>,
    /// Reach counts already added to the gateway's metrics.
    reach_reported: ReachCounts,
}

impl Shared {
    pub fn new(
        session: SessionConfig,
        verifier: TokenVerifier,
        groups: Groups,
        region: String,
        stats: Arc<Stats>,
        limits: ConnLimits,
        shutdown: CancellationToken,
    ) -> Self {
        Shared {
            session,
            verifier,
            groups,
            origin: Origin {
                gateway: String::new(),
                region: region.clone(),
            },
            events: None,
            online: Arc::new(RwLock::new(Totals::new(Duration::ZERO))),
            region,
            stats,
            limits,
            shutdown,
            offline: None,
            brotli_quality: danmu_proto::batch::DEFAULT_BROTLI_QUALITY,
            upstream: None,
            next_id: AtomicU64::new(1),
        }
    }
}

/// Serves one accepted socket until it closes.
pub async fn serve(stream: TcpStream, peer: SocketAddr, transport: Transport, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    if let Some(bytes) = shared.limits.socket_send_buffer {
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
    }
    let label = transport.label();
    shared.stats.connection_opened(label);
    let mut conn = Conn {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        transport,
        peer: peer.ip(),
        session: Session::new(shared.session, Instant::now()),
        inbound: Inbound::new(
            transport,
            shared.limits.max_packet_len,
            shared.limits.max_ws_message_len,
        ),
        writer: Writer::default(),
        joined: None,
        read_buf: BytesMut::new(),
        stalled_since: None,
        shared,
    };
    let reason = match conn.handshake(&stream).await {
        Ok(()) => conn.run(&stream).await,
        Err(reason) => reason,
    };
    conn.leave(&reason);
    tracing::debug!(conn = conn.id, reason = %reason.detail(), "connection closed");
    conn.shared.stats.connection_closed(label, &reason);
}

struct Conn {
    id: u64,
    transport: Transport,
    /// For the upstream IP deny list.
    peer: IpAddr,
    session: Session,
    inbound: Inbound,
    writer: Writer,
    joined: Option<Joined>,
    /// Bytes read but not yet parsed; empty (unallocated) while idle.
    read_buf: BytesMut,
    /// Since when the socket has taken nothing while bytes wait to be written.
    stalled_since: Option<Instant>,
    shared: Arc<Shared>,
}

impl Conn {
    /// WebSocket upgrade on `/sub`; nothing for TCP.
    async fn handshake(&mut self, stream: &TcpStream) -> Result<(), CloseReason> {
        if self.transport != Transport::WebSocket {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.shared.session.auth_timeout;
        let max = self.shared.limits.max_handshake_len;
        loop {
            match websocket::parse_upgrade_request(&self.read_buf, max) {
                Ok(Some((request, consumed))) => {
                    let _ = self.read_buf.split_to(consumed);
                    if request.path.split('?').next() != Some("/sub") {
                        self.writer
                            .push(Bytes::from(websocket::error_response(404, "only /sub")));
                        let _ = self.flush_for(stream, Duration::from_secs(1)).await;
                        return Err(CloseReason::Protocol(format!("path {}", request.path)));
                    }
                    self.writer
                        .push(Bytes::from(websocket::accept_response(&request.key)));
                    return Ok(());
                }
                Ok(None) => {}
                Err(error) => {
                    self.writer
                        .push(Bytes::from(websocket::error_response(400, "bad upgrade")));
                    let _ = self.flush_for(stream, Duration::from_secs(1)).await;
                    return Err(CloseReason::Protocol(format!("handshake: {error}")));
                }
            }
            tokio::select! {
                ready = stream.readable() => ready.map_err(|_| CloseReason::PeerClosed)?,
                _ = tokio::time::sleep_until(deadline) => return Err(CloseReason::AuthTimeout),
            }
            self.read_some(stream)?;
        }
    }

    async fn run(&mut self, stream: &TcpStream) -> CloseReason {
        let shutdown = self.shared.shutdown.clone();
        let mut leave_at: Option<Instant> = None;
        loop {
            // Allocated only while a read or a tick is being handled, so an idle connection
            // holds neither.
            let mut inputs = Vec::new();
            let mut actions = Vec::new();
            if let Some(reason) = self.pump_outbound(stream) {
                return self.finish(stream, reason).await;
            }
            let deadline = tokio::time::Instant::from_std(self.session.deadline());
            let outbound = self.joined.as_ref().map(|joined| joined.member.clone());
            let retry_at = self
                .joined
                .as_ref()
                .and_then(|j| j.reach.as_ref())
                .and_then(Reach::deadline);
            let stall_deadline = self
                .stalled_since
                .map(|since| since + self.shared.limits.write_stall);
            tokio::select! {
                _ = shutdown.cancelled(), if leave_at.is_none() => {
                    if self.joined.is_none() {
                        return self.finish(stream, CloseReason::Shutdown).await;
                    }
                    // Each connection leaves at its own moment within the drain period; until
                    // then it keeps receiving.
                    let period = self.shared.limits.drain_period.as_millis() as u64;
                    let offset = self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % period.max(1);
                    leave_at = Some(Instant::now() + Duration::from_millis(offset));
                }
                _ = sleep_until(leave_at), if leave_at.is_some() => {
                    if self.joined.as_ref().is_some_and(|j| j.drain) {
                        self.writer.push(self.transport.wrap(&drain_frame()));
                    }
                    return self.finish(stream, CloseReason::Drain).await;
                }
                ready = stream.readable() => {
                    if ready.is_err() {
                        return CloseReason::PeerClosed;
                    }
                    if let Err(reason) = self.read_some(stream) {
                        return self.finish(stream, reason).await;
                    }
                    if let Err(reason) = self.inbound.decode(&mut self.read_buf, &mut inputs) {
                        return self.finish(stream, reason).await;
                    }
                    if self.read_buf.is_empty() {
                        self.read_buf = BytesMut::new();
                    }
                    for input in inputs.drain(..) {
                        self.on_input(input, &mut actions);
                    }
                    if let Some(reason) = self.apply(&mut actions) {
                        return self.finish(stream, reason).await;
                    }
                }
                _ = stream.writable(), if !self.writer.is_empty() => {}
                _ = wait_ready(outbound.as_deref().map(|m| &m.outbound)) => {}
                _ = sleep_until(retry_at), if retry_at.is_some() => self.retry_unacked(),
                _ = sleep_until(stall_deadline), if stall_deadline.is_some() => {
                    // Nothing written for the whole stall period (progress resets the clock).
                    return self.finish(stream, CloseReason::SlowConsumer).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(action) = self.session.on_tick(Instant::now()) {
                        actions.push(action);
                        if let Some(reason) = self.apply(&mut actions) {
                            return self.finish(stream, reason).await;
                        }
                    }
                }
            }
        }
    }

    /// Reads what the socket has. EOF and errors close the connection.
    fn read_some(&mut self, stream: &TcpStream) -> Result<(), CloseReason> {
        loop {
            self.read_buf.reserve(4096);
            match stream.try_read_buf(&mut self.read_buf) {
                Ok(0) => return Err(CloseReason::PeerClosed),
                Ok(_)
                    if self.read_buf.len()
                        > self.shared.limits.max_ws_message_len * 2 + 64 * 1024 =>
                {
                    return Err(CloseReason::TooLarge);
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(CloseReason::PeerClosed),
            }
        }
    }

    fn on_input(&mut self, input: Input, actions: &mut Vec<Action>) {
        let now = Instant::now();
        match input {
            Input::Frame(frame) => {
                let now_unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                self.session
                    .on_frame(frame, now, now_unix, &self.shared.verifier, actions);
            }
            Input::Ping(payload) => {
                self.session.heard(now);
                self.writer
                    .push(websocket::server_frame(websocket::opcode::PONG, &payload));
            }
            Input::Alive => self.session.heard(now),
            Input::Closed => actions.push(self.session.close(CloseReason::PeerClosed)),
        }
    }

    /// Carries out session actions; returns the close reason if one of them closes.
    fn apply(&mut self, actions: &mut Vec<Action>) -> Option<CloseReason> {
        let mut close = None;
        for action in actions.drain(..) {
            match action {
                Action::Send(frame) => {
                    let wrapped = self.transport.wrap(&frame);
                    self.writer.push(wrapped);
                }
                Action::Join(identity) => {
                    self.shared.stats.auth(true);
                    let member = Arc::new(Member {
                        conn_id: self.id,
                        transport: self.transport,
                        protover: identity.protover,
                        outbound: Outbound::new(self.shared.limits.outbound_queue_bytes),
                    });
                    // The room, the user's and the device's targets, the region, everyone.
                    let mut scopes = vec![Scope::Room(identity.room), Scope::User(identity.uid)];
                    if subjects::is_valid_token(&identity.device) {
                        scopes.push(Scope::Device(identity.device.clone()));
                    }
                    scopes.push(Scope::Region(self.shared.region.clone()));
                    scopes.push(Scope::All);
                    let groups = &self.shared.groups;
                    let room = groups.join(scopes[0].clone(), member.clone());
                    for scope in &scopes[1..] {
                        groups.join(scope.clone(), member.clone());
                    }
                    self.deliver_offline(&identity, &member);
                    let (presence, enter) = Presence::enter(
                        self.id,
                        identity.uid,
                        identity.device.clone(),
                        identity.room,
                        &self.shared.origin,
                        unix_millis(),
                    );
                    self.emit(enter);
                    self.joined = Some(Joined {
                        member,
                        room,
                        scopes,
                        presence,
                        drain: identity.drain,
                        reach: identity
                            .ack
                            .then(|| Reach::new(self.shared.limits.reach, self.transport)),
                        reach_reported: ReachCounts::default(),
                    });
                }
                Action::ChangeRoom(room) => self.change_room(room),
                Action::Upstream { seq, room, body } => {
                    if let Some(reason) = self.upstream(seq, room, &body) {
                        close.get_or_insert(reason);
                    }
                }
                Action::Ack(id) => {
                    if let Some(reach) = self.joined.as_mut().and_then(|j| j.reach.as_mut()) {
                        reach.ack(id);
                    }
                    self.report_reach();
                }
                Action::HeartbeatReply => {
                    let online = self.joined.as_ref().map_or(0, |joined| {
                        let Scope::Room(room) = joined.scopes[0] else {
                            return 0;
                        };
                        self.shared
                            .online
                            .read()
                            .unwrap_or_else(PoisonError::into_inner)
                            .count(room, joined.room.online(), Instant::now())
                    });
                    let reply = self.transport.wrap(&frame::heartbeat_reply(online));
                    self.writer.push(reply);
                }
                Action::Close(reason) => {
                    if matches!(reason, CloseReason::AuthFailed(_)) {
                        self.shared.stats.auth(false);
                    }
                    close.get_or_insert(reason);
                }
            }
        }
        close
    }

    /// Moves the member's queued batches to the writer and writes what the socket takes,
    /// coming back for low priority left behind while the socket keeps taking bytes.
    fn pump_outbound(&mut self, stream: &TcpStream) -> Option<CloseReason> {
        loop {
            if let Some(joined) = &mut self.joined {
                let now = Instant::now();
                let reach = &mut joined.reach;
                let overflowed = joined.member.outbound.drain_into(
                    self.writer.queue(),
                    LOW_PRIORITY_BUDGET,
                    |item, queue| match reach.as_mut().and_then(|r| r.send(item.clone(), now)) {
                        Some([head, body]) => queue.extend([head, body]),
                        None => queue.push_back(item),
                    },
                );
                if overflowed {
                    return Some(CloseReason::SlowConsumer);
                }
                self.report_reach();
            }
            match self.writer.write_to(stream) {
                Err(_) => return Some(CloseReason::PeerClosed),
                Ok(_) if self.writer.is_empty() => self.stalled_since = None,
                Ok(0) => {
                    self.stalled_since.get_or_insert_with(Instant::now);
                }
                Ok(_) => self.stalled_since = Some(Instant::now()),
            }
            let more_low = self
                .joined
                .as_ref()
                .is_some_and(|joined| joined.member.outbound.has_low());
            if !self.writer.is_empty() || !more_low {
                return None;
            }
        }
    }

    /// Hands the user's offline pushes (if any wait) to this connection, as high priority.
    fn deliver_offline(&self, identity: &Identity, member: &Arc<Member>) {
        let Some(js) = self.shared.offline.clone() else {
            return;
        };
        let (uid, protover, transport) = (identity.uid, identity.protover, self.transport);
        let (member, quality) = (member.clone(), self.shared.brotli_quality);
        tokio::spawn(async move {
            match crate::offline::take(&js, uid, MAX_OFFLINE).await {
                Ok(payloads) if !payloads.is_empty() => {
                    let encoded = crate::offline::encode(&payloads, protover, transport, quality);
                    member.outbound.push(encoded, true, payloads.len() as u32);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, uid, "offline pushes"),
            }
        });
    }

    /// Decides on an upstream danmu and queues the reply; a flood closes.
    fn upstream(&mut self, seq: u32, room: u64, body: &[u8]) -> Option<CloseReason> {
        let identity = self.session.identity()?;
        let now_unix_ms = unix_millis();
        let sender = crate::upstream::Sender {
            uid: identity.uid,
            device: &identity.device,
            room,
            ip: self.peer,
            now: Instant::now(),
            now_unix_ms,
        };
        let shared = &self.shared;
        let handled =
            crate::upstream::handle(shared.upstream.as_ref(), &shared.stats, &sender, seq, body);
        self.writer.push(self.transport.wrap(&handled.reply));
        handled.close
    }

    /// Leaves the current room's group and joins `room`'s; every other group stays.
    fn change_room(&mut self, room: u64) {
        let Some(joined) = &mut self.joined else {
            return;
        };
        let groups = &self.shared.groups;
        groups.leave(&joined.scopes[0], self.id);
        joined.scopes[0] = Scope::Room(room);
        joined.room = groups.join(Scope::Room(room), joined.member.clone());
        let events = joined
            .presence
            .change_room(room, &self.shared.origin, unix_millis());
        for event in events {
            self.emit(event);
        }
    }

    fn emit(&self, event: danmu_proto::presence::PresenceEvent) {
        if let Some(sink) = &self.shared.events {
            sink.emit(event);
        }
    }

    /// Sends the retries that are due.
    fn retry_unacked(&mut self) {
        let mut retries = Vec::new();
        if let Some(reach) = self.joined.as_mut().and_then(|j| j.reach.as_mut()) {
            reach.due(Instant::now(), &mut retries);
        }
        for bytes in retries {
            self.writer.push(bytes);
        }
        self.report_reach();
    }

    /// Adds what changed in this connection's reach counts to the gateway's metrics.
    fn report_reach(&mut self) {
        if let Some(joined) = &mut self.joined
            && let Some(reach) = &joined.reach
            && reach.counts != joined.reach_reported
        {
            self.shared
                .stats
                .reach(&joined.reach_reported, &reach.counts);
            joined.reach_reported = reach.counts;
        }
    }

    /// Leaves the room, says goodbye (WebSocket close frame) and flushes what is queued.
    async fn finish(&mut self, stream: &TcpStream, reason: CloseReason) -> CloseReason {
        self.leave(&reason);
        if reason == CloseReason::SlowConsumer {
            // Nothing more is written to a reader that could not keep up.
            return reason;
        }
        if self.transport == Transport::WebSocket && reason != CloseReason::PeerClosed {
            let close = websocket::close_frame(
                websocket::Role::Server,
                reason.websocket_code(),
                &reason.detail(),
            );
            self.writer.push(close);
        }
        let _ = self
            .flush_for(stream, self.shared.limits.close_linger)
            .await;
        reason
    }

    /// Writes what is queued, for at most `limit`.
    async fn flush_for(&mut self, stream: &TcpStream, limit: Duration) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.writer.is_empty() {
            self.writer.write_to(stream)?;
            if self.writer.is_empty() {
                break;
            }
            tokio::select! {
                ready = stream.writable() => ready?,
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Ok(())
    }

    /// Leaves every group and emits the exit; once, whatever calls it first.
    fn leave(&mut self, reason: &CloseReason) {
        if let Some(mut joined) = self.joined.take() {
            joined.member.outbound.close();
            for scope in &joined.scopes {
                self.shared.groups.leave(scope, self.id);
            }
            if let Some(exit) =
                joined
                    .presence
                    .close(reason.label(), &self.shared.origin, unix_millis())
            {
                self.emit(exit);
            }
        }
    }
}

/// DRAIN (op 1001): reconnect to another node from control's list.
fn drain_frame() -> Bytes {
    let body = br#"{"reason":"shutdown","reconnect_after_ms":0}"#;
    frame::Frame::new(frame::version::CONTROL, frame::op::DRAIN, 1, &body[..]).to_bytes()
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

async fn wait_ready(outbound: Option<&Outbound>) {
    match outbound {
        Some(outbound) => outbound.ready().await,
        None => std::future::pending().await,
    }
}
