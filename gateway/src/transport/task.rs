//! The connection task: the only code touching a client socket, and nothing else. It moves
//! bytes and wake-ups between the socket and the connection's state machine
//! (`crate::connection::Connection`) and carries out the events it emits (joining groups,
//! publishing presence, fetching offline pushes). All decisions are the state machine's.
//!
//! It waits on socket readiness rather than on reads into a buffer, so an idle connection holds
//! no read or write buffer at all. One `Sleep`, reset to the connection's earliest deadline,
//! is its only timer.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use danmu_proto::subjects::Scope;
use danmu_proto::token::TokenVerifier;
use ipnet::IpNet;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Socket;
use crate::connection::Transport;
use crate::connection::presence::Origin;
use crate::connection::{Connection, Context, Event, Limits, Now};
use crate::fanout::groups::{Groups, Member};
use crate::fanout::outbound::Outbound;
use crate::nats::presence::EventSink;
use crate::online::Totals;
use crate::stats::Stats;
use crate::upstream::{Handled, Sender, Upstream};

/// What every connection task shares; built once, by `crate::start` (or a test), never
/// changed afterwards.
pub struct Shared {
    pub limits: Arc<Limits>,
    pub verifier: TokenVerifier,
    pub groups: Groups,
    /// Node id and region stamped on enter/exit events; the region names the region scope.
    pub origin: Origin,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
    /// Reads offline pushes on connect; none disables their delivery.
    pub offline: Option<crate::fanout::offline::OfflineReader>,
    pub brotli_quality: u32,
    /// Where enter/exit events go; none in tests that do not look at them.
    pub events: Option<EventSink>,
    /// Online counts of every gateway, for HEARTBEAT_REPLY.
    pub online: Arc<RwLock<Totals>>,
    /// Upstream danmu; none answers every UPSTREAM as disabled.
    pub upstream: Option<Upstream>,
    /// Load balancers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Connection ids, unique within this gateway process.
    pub next_id: AtomicU64,
}

impl Context for Shared {
    fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    fn region(&self) -> &str {
        &self.origin.region
    }

    fn origin(&self) -> &Origin {
        &self.origin
    }

    fn online(&self, room: u64, now: Instant) -> u32 {
        let local = self
            .groups
            .get(&Scope::Room(room))
            .map_or(0, |group| group.online());
        self.online
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .count(room, local, now)
    }

    fn upstream(&self, sender: &Sender<'_>, seq: u32, body: &[u8]) -> Handled {
        crate::upstream::handle(self.upstream.as_ref(), &self.stats, sender, seq, body)
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Most offline pushes handed to one connect (the stream keeps at most this many per user too).
pub const MAX_OFFLINE: usize = 1000;

/// Serves one accepted socket until it closes. `admitted: false` means the gateway is at its
/// connection cap: the client gets a close (1013 on WebSocket) and nothing else. An admitted
/// connection was counted open by the caller (at accept, so a burst cannot overshoot the cap);
/// it is counted ended here. Returns the close reason's label (`peer_gone` when the client
/// left first), which a QUIC close carries as its reason phrase.
pub async fn serve<S: Socket>(
    socket: S,
    peer: SocketAddr,
    transport: Transport,
    shared: Arc<Shared>,
    admitted: bool,
) -> &'static str {
    let label = transport.label();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let mut conn = Connection::new(
        id,
        transport,
        peer.ip(),
        shared.limits.clone(),
        admitted,
        now,
    );
    let mut task = Task {
        socket,
        member: None,
        read_buf: BytesMut::new(),
        shared,
        counted: false,
        blocked_bytes: None,
    };
    task.run(&mut conn).await;
    task.finish(conn.limits().close_linger).await;
    task.count_close(&conn);
    task.report_blocked(false, 0);
    if admitted {
        task.shared.stats.connection_ended(label);
    }
    conn.close_reason()
        .map_or("closed", |reason| reason.label())
}

/// The IO half of one connection.
struct Task<S> {
    socket: S,
    /// The fan-out's handle on this connection, once joined.
    member: Option<Arc<Member>>,
    /// Bytes read but not yet parsed; empty (unallocated) while idle.
    read_buf: BytesMut,
    shared: Arc<Shared>,
    /// The close reason was counted (once, as soon as the connection decided to close).
    counted: bool,
    /// While the socket is full: the bytes this connection last added to
    /// `danmu_gateway_write_blocked_bytes`.
    blocked_bytes: Option<usize>,
}

impl<S: Socket> Task<S> {
    async fn run(&mut self, conn: &mut Connection) {
        let shutdown = self.shared.shutdown.clone().cancelled_owned();
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(shutdown, sleep);
        loop {
            self.carry_out(conn);
            self.write(conn);
            self.carry_out(conn);
            self.count_close(conn);
            if conn.is_write_blocked() || self.blocked_bytes.is_some() {
                let queued = self
                    .member
                    .as_ref()
                    .map_or(0, |m| m.outbound.queued_bytes());
                self.report_blocked(
                    conn.is_write_blocked(),
                    conn.transmit().queued_bytes() + queued,
                );
            }
            if conn.is_done() {
                return;
            }
            let timeout = conn.poll_timeout();
            if let Some(at) = timeout {
                sleep.as_mut().reset(at.into());
            }
            let wanted = Wanted {
                shutdown: !conn.is_closing() && !conn.is_draining(),
                read: !conn.is_closing(),
                write: conn.wants_write() || self.socket.wants_flush(),
                outbound: self.member.is_some() && conn.is_joined(),
                timer: timeout.is_some(),
            };
            let woke = self.wait(wanted, shutdown.as_mut(), sleep.as_mut()).await;
            if woke.shutdown {
                conn.handle_shutdown(Now::read(), &*self.shared);
            }
            match woke.readable {
                Some(Ok(())) => self.read(conn),
                Some(Err(_)) => conn.handle_peer_gone(Now::read(), &*self.shared),
                None => {}
            }
            if let Some(Err(_)) = woke.writable {
                conn.handle_peer_gone(Now::read(), &*self.shared);
            }
            if let Some(member) = self
                .member
                .clone()
                .filter(|_| woke.outbound && conn.is_joined())
            {
                conn.handle_outbound(Now::read(), &member.outbound, &*self.shared);
            }
            if woke.timer {
                conn.handle_timeout(Now::read(), &*self.shared);
            }
        }
    }

    /// Waits until at least one wanted source is ready and reports every one that is, so a
    /// busy source (a client that keeps sending) cannot starve another (its deliveries).
    ///
    /// Written as one `poll_fn` over poll-based sources instead of a `select!` of futures:
    /// a `select!` keeps every branch's future in the task while it waits (readable and
    /// writable futures, a `Notify` waiter: ~400 B per connection, idle or not); this keeps
    /// only the shutdown future and the timer, which live across iterations anyway.
    fn wait<'a>(
        &'a self,
        wanted: Wanted,
        mut shutdown: Pin<&'a mut WaitForCancellationFutureOwned>,
        mut sleep: Pin<&'a mut Sleep>,
    ) -> impl Future<Output = Woke> + 'a {
        std::future::poll_fn(move |cx| {
            let readable = match wanted.read {
                true => match self.socket.poll_read_ready(cx) {
                    Poll::Ready(ready) => Some(ready),
                    Poll::Pending => None,
                },
                false => None,
            };
            let writable = match wanted.write {
                true => match self.socket.poll_write_ready(cx) {
                    Poll::Ready(ready) => Some(ready),
                    Poll::Pending => None,
                },
                false => None,
            };
            let mut woke = Woke {
                shutdown: wanted.shutdown && shutdown.as_mut().poll(cx).is_ready(),
                readable,
                writable,
                ..Woke::default()
            };
            woke.outbound = wanted.outbound
                && self
                    .member
                    .as_ref()
                    .is_some_and(|member| member.outbound.poll_ready(cx).is_ready());
            woke.timer = wanted.timer && sleep.as_mut().poll(cx).is_ready();
            if woke.any() {
                Poll::Ready(woke)
            } else {
                Poll::Pending
            }
        })
    }

    /// Counts the close and logs it, once, when the connection has decided to close.
    fn count_close(&mut self, conn: &Connection) {
        let Some(reason) = conn.close_reason().filter(|_| !self.counted) else {
            return;
        };
        self.counted = true;
        let label = conn.transport().label();
        tracing::debug!(conn = conn.id(), client = %conn.client_ip(), reason = %reason.detail(), "connection closing");
        if conn.is_admitted() {
            self.shared.stats.connection_closing(label, reason.label());
        } else {
            self.shared.stats.connection_refused(label, reason.label());
        }
    }

    /// Keeps the write-blocked gauges (connections whose socket is full, and the bytes they hold
    /// in their queues) up to date, and counts a stall once when it begins. Only a connection
    /// that is behind pays for this: one whose writes all go through reports nothing.
    fn report_blocked(&mut self, blocked: bool, bytes: usize) {
        let stats = &self.shared.stats;
        match (self.blocked_bytes, blocked) {
            (None, true) => stats.write_blocked(bytes as f64, 1.0),
            (Some(before), true) => stats.write_blocked(bytes as f64 - before as f64, 0.0),
            (Some(before), false) => stats.write_blocked(-(before as f64), -1.0),
            (None, false) => {}
        }
        self.blocked_bytes = blocked.then_some(bytes);
    }

    /// Reads what the socket has and feeds it to the connection.
    fn read(&mut self, conn: &mut Connection) {
        let max = conn.limits().max_read_buffer();
        loop {
            self.read_buf.reserve(4096);
            match self.socket.try_read_buf(&mut self.read_buf) {
                Ok(0) => return conn.handle_peer_gone(Now::read(), &*self.shared),
                Ok(_) if self.read_buf.len() > max => {
                    let reason = crate::connection::CloseReason::TooLarge;
                    return conn.close(Now::read(), reason, &*self.shared);
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return conn.handle_peer_gone(Now::read(), &*self.shared),
            }
        }
        conn.handle_read(Now::read(), &mut self.read_buf, &*self.shared);
        if self.read_buf.is_empty() {
            self.read_buf = BytesMut::new();
        }
    }

    /// Closes the stream in order once the core is done with it: TLS sends `close_notify`,
    /// within `linger` (plain TCP has nothing to send and returns at once).
    async fn finish(&mut self, linger: Duration) {
        self.socket.start_close();
        let socket = &self.socket;
        let flushed = std::future::poll_fn(|cx| {
            loop {
                if !socket.wants_flush() {
                    return Poll::Ready(());
                }
                match socket.try_flush() {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        match socket.poll_write_ready(cx) {
                            Poll::Ready(Ok(())) => continue,
                            Poll::Ready(Err(_)) => return Poll::Ready(()),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    Err(_) => return Poll::Ready(()),
                    Ok(()) => {}
                }
            }
        });
        let _ = tokio::time::timeout(linger, flushed).await;
    }

    /// Writes what the socket takes, coming back to the member's queue for low priority left
    /// behind while the socket keeps taking bytes; then what the stream holds of its own
    /// (TLS records).
    fn write(&mut self, conn: &mut Connection) {
        self.write_queued(conn);
        if self.socket.wants_flush() && !conn.is_done() {
            match self.socket.try_flush() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => conn.handle_peer_gone(Now::read(), &*self.shared),
            }
        }
    }

    fn write_queued(&mut self, conn: &mut Connection) {
        loop {
            while conn.wants_write() {
                let mut slices = [std::io::IoSlice::new(&[]); crate::connection::MAX_SLICES];
                let count = conn.transmit().slices(&mut slices);
                match self.socket.try_write_vectored(&slices[..count]) {
                    Ok(0) => return conn.handle_peer_gone(Now::read(), &*self.shared),
                    Ok(n) => conn.handle_transmitted(Instant::now(), n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        return conn.handle_write_blocked(Instant::now());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return conn.handle_peer_gone(Now::read(), &*self.shared),
                }
            }
            match &self.member {
                Some(member) if conn.is_joined() && member.outbound.has_low() => {
                    conn.handle_outbound(Now::read(), &member.outbound, &*self.shared);
                }
                _ => return,
            }
        }
    }

    /// Carries out what the connection asked for.
    fn carry_out(&mut self, conn: &mut Connection) {
        while let Some(event) = conn.poll_event() {
            let groups = &self.shared.groups;
            match event {
                Event::Join { scopes, protover } => {
                    let member = Arc::new(Member {
                        conn_id: conn.id(),
                        framing: conn.transport().framing(),
                        protover,
                        outbound: {
                            let outbound = Outbound::new(conn.limits().outbound_queue_bytes);
                            // Ids start at 1: the first connection is timed, then one in N.
                            match (conn.id() - 1) % conn.limits().queue_wait_sample {
                                0 => outbound.timed(),
                                _ => outbound,
                            }
                        },
                    });
                    for scope in scopes {
                        groups.join(scope, member.clone());
                    }
                    self.member = Some(member);
                }
                Event::MoveRoom { from, to } => {
                    groups.leave(&from, conn.id());
                    if let Some(member) = &self.member {
                        groups.join(to, member.clone());
                    }
                }
                Event::Leave { scopes } => {
                    if let Some(member) = &self.member {
                        member.outbound.close();
                    }
                    for scope in &scopes {
                        groups.leave(scope, conn.id());
                    }
                }
                Event::Presence(event) => {
                    if let Some(sink) = &self.shared.events {
                        sink.emit(event);
                    }
                }
                Event::FetchOffline { uid } => {
                    if let (Some(offline), Some(member)) = (&self.shared.offline, &self.member) {
                        offline.deliver_on_connect(uid, member.clone());
                    }
                }
            }
        }
    }
}

/// What the connection task waits for in one round.
#[derive(Clone, Copy)]
struct Wanted {
    shutdown: bool,
    read: bool,
    write: bool,
    outbound: bool,
    timer: bool,
}

/// What was ready when the connection task woke.
#[derive(Default)]
struct Woke {
    shutdown: bool,
    readable: Option<std::io::Result<()>>,
    writable: Option<std::io::Result<()>>,
    outbound: bool,
    timer: bool,
}

impl Woke {
    fn any(&self) -> bool {
        self.shutdown
            || self.readable.is_some()
            || self.writable.is_some()
            || self.outbound
            || self.timer
    }
}
