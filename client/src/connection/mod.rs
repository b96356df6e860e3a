//! One connection to a gateway as a plain state machine, in the shape of the gateway's own
//! `connection` and of `quinn-proto`: no socket, no clock of its own. The driver
//! ([`crate::client`]) feeds it the bytes it reads ([`Connection::handle_read`]) and the time
//! ([`Connection::handle_timeout`] at [`Connection::poll_timeout`]), and writes what
//! [`Connection::poll_transmit`] gives; [`Connection::poll_output`] says what happened.
//!
//! The rules (`docs/protocol.md`): on WebSocket the upgrade first; then AUTH (op 7), nothing else
//! until AUTH_REPLY `{"code":0}`; HEARTBEAT (op 2) right away and every `heartbeat_interval`,
//! its reply (op 3) carries the online count; MESSAGE (op 5) batches are unpacked (protover 0, 2,
//! 3); with `ack`, a message with a non-zero sequence is a high-priority delivery: ACK it (op
//! 1006) every time it arrives, hand it to the application once; DRAIN (op 1001) ends the
//! connection with [`CloseReason::Drain`]. Whatever the server sends, nothing panics: bad bytes
//! close the connection with [`CloseReason::Protocol`].

mod dedup;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use danmu_proto::auth::{AuthReply, AuthRequest};
use danmu_proto::frame::{Frame, op, version};
use danmu_proto::upstream::{UpstreamReply, UpstreamRequest};
use danmu_proto::{batch, websocket};
use serde::Deserialize;

pub use dedup::Dedup;

use crate::wire::{Framing, Inbound, WireDecoder};

/// What the client says in AUTH (`docs/protocol.md`, "AUTH").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthParams {
    /// User id; must equal the token's.
    pub uid: u64,
    /// Room to enter; the token must allow it.
    pub room: u64,
    /// What this client decodes: 0 raw, 2 zlib, 3 brotli (all three are decoded here).
    pub protover: u16,
    /// The token from control.
    pub token: String,
    /// Device id (`buvid`); informational for the gateway.
    pub device: String,
    /// Opt in to high reach: delivery ids, ACKs, retries.
    pub ack: bool,
    /// Opt in to DRAIN before a gateway shutdown closes the connection.
    pub drain: bool,
}

/// Timers of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// From the first byte sent to AUTH_REPLY (WebSocket upgrade included); past it, close.
    /// Default 10 s, the gateway's own auth timeout.
    pub auth_timeout: Duration,
    /// Between heartbeats. Default 30 s (`docs/protocol.md`; the gateway closes after 90 s
    /// of silence).
    pub heartbeat_interval: Duration,
    /// A heartbeat without a reply for this long means the path is dead (a half-open TCP
    /// connection, a lost QUIC path): close. Default 10 s.
    pub heartbeat_reply_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            auth_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_reply_timeout: Duration::from_secs(10),
        }
    }
}

/// Largest packet, WebSocket message and decompressed batch accepted from a server: 16 MiB,
/// far above what a gateway sends (batches are bounded by the distributor's `max_batch_bytes`),
/// small enough that a hostile server cannot make a client buffer without bound.
pub const MAX_PACKET_LEN: usize = 16 * 1024 * 1024;

/// One business message for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The payload as business published it (by convention JSON with a `cmd` field).
    pub body: Bytes,
    /// The delivery id of a high-priority message on a connection with `ack` on; `None` for
    /// low priority (and for every message without `ack`).
    pub delivery_id: Option<u32>,
}

/// The body of DRAIN (op 1001).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Drain {
    /// Why, e.g. `shutdown`.
    #[serde(default)]
    pub reason: String,
    /// How long to wait before reconnecting, in milliseconds.
    #[serde(default)]
    pub reconnect_after_ms: u64,
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// AUTH_REPLY with a non-zero code (`danmu_proto::auth::code`).
    #[error("authentication refused with code {0}")]
    AuthRefused(i32),
    /// No AUTH_REPLY within `auth_timeout`.
    #[error("no AUTH_REPLY in time")]
    AuthTimeout,
    /// A heartbeat went unanswered for `heartbeat_reply_timeout`.
    #[error("heartbeat unanswered")]
    HeartbeatTimeout,
    /// The gateway sent DRAIN: reconnect elsewhere.
    #[error("the gateway is draining ({})", .0.reason)]
    Drain(Drain),
    /// The server closed: WebSocket close code and reason, or `None` for an end of stream.
    #[error("closed by the server{}", match .0 { Some((code, reason)) => format!(" ({code} {reason})"), None => String::new() })]
    ServerClosed(Option<(u16, String)>),
    /// The server's bytes break the protocol (described).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The application closed the connection.
    #[error("closed by the application")]
    Local,
}

/// What a connection reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// AUTH_REPLY `{"code":0}`: the connection is in the room.
    Joined,
    /// A business message (each batch is unpacked into its messages, duplicates dropped).
    Message(Message),
    /// A HEARTBEAT_REPLY: the room's online count and the heartbeat's round trip.
    Online {
        /// Members of the room on every gateway, at most ~2 s old.
        count: u32,
        /// From the heartbeat to its reply.
        rtt: Duration,
    },
    /// The reply to [`Connection::send_upstream`], with the sequence it returned.
    UpstreamReply {
        /// The request's sequence.
        seq: u32,
        /// The gateway's answer (`docs/protocol.md`, "Upstream danmu").
        reply: UpstreamReply,
    },
    /// The connection is over; nothing follows.
    Closed(CloseReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Upgrading,
    Authenticating,
    Joined,
    Closed,
}

/// One connection's protocol state. See the module documentation.
#[derive(Debug)]
pub struct Connection {
    framing: Framing,
    phase: Phase,
    decoder: WireDecoder,
    params: AuthParams,
    timing: Timing,
    auth_deadline: Instant,
    next_heartbeat: Option<Instant>,
    /// When the heartbeat awaiting its reply was sent.
    heartbeat_sent: Option<Instant>,
    dedup: Dedup,
    next_upstream_seq: u32,
    inbound: Vec<Inbound>,
    transmits: VecDeque<Bytes>,
    outputs: VecDeque<Output>,
    /// Resume slot: the catch-up issue adds the last room batch sequence seen here and a
    /// RESUME (op 1007) after AUTH_REPLY; until then a new connection starts fresh.
    _resume: (),
}

impl Connection {
    /// A new connection made at `now` over `framing`. `host` is the WebSocket `Host` header
    /// (`host:port` of the gateway); unused on streams. The first transmit (the upgrade
    /// request, or AUTH) is queued at once.
    pub fn new(
        framing: Framing,
        host: &str,
        params: AuthParams,
        timing: Timing,
        now: Instant,
    ) -> Self {
        let mut conn = Connection {
            framing,
            phase: Phase::Authenticating,
            decoder: WireDecoder::new(framing, MAX_PACKET_LEN),
            params,
            timing,
            auth_deadline: now + timing.auth_timeout,
            next_heartbeat: None,
            heartbeat_sent: None,
            dedup: Dedup::default(),
            next_upstream_seq: 1,
            inbound: Vec::new(),
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
            _resume: (),
        };
        match framing {
            Framing::WebSocket => {
                conn.phase = Phase::Upgrading;
                let key = websocket::client_key(rand::random());
                conn.transmits
                    .push_back(websocket::client_request(host, "/sub", &key).into());
            }
            Framing::Stream => conn.send_auth(),
        }
        conn
    }

    /// True once AUTH_REPLY `{"code":0}` arrived, until the close.
    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }

    /// True once the connection is over.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Bytes the server sent, appended to `buf` by the caller; consumes what is complete.
    pub fn handle_read(&mut self, now: Instant, buf: &mut BytesMut) {
        if self.is_closed() {
            buf.clear();
            return;
        }
        let mut inbound = std::mem::take(&mut self.inbound);
        let decoded = self.decoder.decode(buf, &mut inbound);
        for item in inbound.drain(..) {
            if self.is_closed() {
                break;
            }
            self.handle_inbound(now, item);
        }
        self.inbound = inbound;
        if let Err(error) = decoded {
            self.close(CloseReason::Protocol(error.to_string()));
        }
    }

    /// The server ended the stream (or the transport failed).
    pub fn handle_eof(&mut self) {
        self.close(CloseReason::ServerClosed(None));
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Upgrading | Phase::Authenticating => {
                if now >= self.auth_deadline {
                    self.close(CloseReason::AuthTimeout);
                }
            }
            Phase::Joined => {
                if let Some(sent) = self.heartbeat_sent
                    && now >= sent + self.timing.heartbeat_reply_timeout
                {
                    self.close(CloseReason::HeartbeatTimeout);
                    return;
                }
                if self.next_heartbeat.is_some_and(|at| now >= at) {
                    self.send_heartbeat(now);
                }
            }
        }
    }

    /// The earliest moment [`Connection::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Upgrading | Phase::Authenticating => Some(self.auth_deadline),
            Phase::Joined => {
                let reply = self
                    .heartbeat_sent
                    .map(|sent| sent + self.timing.heartbeat_reply_timeout);
                [reply, self.next_heartbeat].into_iter().flatten().min()
            }
        }
    }

    /// The next bytes to write, as the transport carries them.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Sends a danmu upstream (op 1004); the answer comes as [`Output::UpstreamReply`] with the
    /// returned sequence. `None` when the connection is not joined.
    pub fn send_upstream(&mut self, request: &UpstreamRequest) -> Option<u32> {
        if self.phase != Phase::Joined {
            return None;
        }
        let seq = self.next_upstream_seq;
        self.next_upstream_seq = self.next_upstream_seq.wrapping_add(1).max(1);
        let body = serde_json::to_vec(request).unwrap_or_default();
        self.send_packet(Frame::new(version::CONTROL, op::UPSTREAM, seq, body));
        Some(seq)
    }

    /// Closes from our side (a WebSocket Close frame is queued first).
    pub fn close_local(&mut self) {
        self.close(CloseReason::Local);
    }

    fn handle_inbound(&mut self, now: Instant, item: Inbound) {
        match item {
            Inbound::Upgraded => {
                self.phase = Phase::Authenticating;
                self.send_auth();
            }
            Inbound::Ping(payload) => self.send_ws(websocket::opcode::PONG, &payload),
            Inbound::Close(reason) => self.close(CloseReason::ServerClosed(reason)),
            Inbound::Packet(packet) => self.handle_packet(now, packet),
        }
    }

    fn handle_packet(&mut self, now: Instant, packet: Frame) {
        if self.phase == Phase::Authenticating {
            if packet.op != op::AUTH_REPLY {
                return self.close(CloseReason::Protocol(format!(
                    "op {} before AUTH_REPLY",
                    packet.op
                )));
            }
            return match serde_json::from_slice::<AuthReply>(&packet.body) {
                Ok(AuthReply { code: 0 }) => {
                    self.phase = Phase::Joined;
                    self.outputs.push_back(Output::Joined);
                    self.send_heartbeat(now);
                }
                Ok(AuthReply { code }) => self.close(CloseReason::AuthRefused(code)),
                Err(error) => {
                    self.close(CloseReason::Protocol(format!("AUTH_REPLY body: {error}")))
                }
            };
        }
        match packet.op {
            op::MESSAGE => self.handle_message(packet),
            op::HEARTBEAT_REPLY => {
                let Ok(count) = <[u8; 4]>::try_from(&packet.body[..]) else {
                    return self.close(CloseReason::Protocol(format!(
                        "HEARTBEAT_REPLY body of {} bytes",
                        packet.body.len()
                    )));
                };
                // The reply's sequence is always 1 (Bilibili's servers do the same), so one
                // heartbeat is outstanding at a time and the reply is its answer.
                let rtt = self
                    .heartbeat_sent
                    .take()
                    .map_or(Duration::ZERO, |sent| now.saturating_duration_since(sent));
                self.outputs.push_back(Output::Online {
                    count: u32::from_be_bytes(count),
                    rtt,
                });
            }
            op::DRAIN => {
                // A body we cannot read still means "go": the op is the message.
                let drain = serde_json::from_slice(&packet.body).unwrap_or(Drain {
                    reason: String::new(),
                    reconnect_after_ms: 0,
                });
                self.close(CloseReason::Drain(drain));
            }
            op::UPSTREAM_REPLY => match serde_json::from_slice(&packet.body) {
                Ok(reply) => self.outputs.push_back(Output::UpstreamReply {
                    seq: packet.seq,
                    reply,
                }),
                Err(error) => self.close(CloseReason::Protocol(format!(
                    "UPSTREAM_REPLY body: {error}"
                ))),
            },
            // Ops we never asked for (ROOM_CHANGE_REPLY, RESUME_REPLY, ...) carry nothing for
            // this client; newer gateways may add more, so they are skipped, not fatal.
            _ => tracing::debug!(
                op = packet.op,
                "skipping a packet of an op this client does not use"
            ),
        }
    }

    fn handle_message(&mut self, packet: Frame) {
        let delivery_id = (self.params.ack && packet.seq != 0).then_some(packet.seq);
        if let Some(id) = delivery_id {
            // Acknowledge every arrival: a retry means our earlier ACK was lost.
            self.send_packet(Frame::new(version::CONTROL, op::ACK, id, Bytes::new()));
            if !self.dedup.insert(id) {
                tracing::debug!(id, "dropping a duplicate delivery");
                return;
            }
        }
        let inner = match batch::unpack(&packet, MAX_PACKET_LEN) {
            Ok(inner) => inner,
            Err(error) => return self.close(CloseReason::Protocol(format!("batch: {error}"))),
        };
        for message in inner {
            if message.op != op::MESSAGE {
                continue;
            }
            self.outputs.push_back(Output::Message(Message {
                body: message.body,
                delivery_id,
            }));
        }
    }

    fn send_auth(&mut self) {
        let p = &self.params;
        let body = AuthRequest {
            uid: p.uid,
            roomid: p.room,
            protover: p.protover,
            platform: "danmu-client".into(),
            kind: 2,
            key: p.token.clone(),
            buvid: p.device.clone(),
            ack: p.ack,
            drain: p.drain,
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        self.send_packet(Frame::new(version::CONTROL, op::AUTH, 1, body));
    }

    fn send_heartbeat(&mut self, now: Instant) {
        self.send_packet(Frame::new(version::CONTROL, op::HEARTBEAT, 1, Bytes::new()));
        // Keep the first unanswered one: its age is what tells a dead path.
        self.heartbeat_sent.get_or_insert(now);
        self.next_heartbeat = Some(now + self.timing.heartbeat_interval);
    }

    fn send_packet(&mut self, packet: Frame) {
        match self.framing {
            Framing::Stream => self.transmits.push_back(packet.to_bytes()),
            Framing::WebSocket => self.send_ws(websocket::opcode::BINARY, &packet.to_bytes()),
        }
    }

    fn send_ws(&mut self, opcode: u8, payload: &[u8]) {
        self.transmits
            .push_back(websocket::client_frame(opcode, payload, rand::random()));
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.framing == Framing::WebSocket && self.phase != Phase::Upgrading {
            // Answer the server's Close with its code (RFC 6455 5.5.1); otherwise a normal close.
            let code = match &reason {
                CloseReason::ServerClosed(Some((code, _))) => *code,
                _ => websocket::close_code::NORMAL,
            };
            self.transmits
                .push_back(websocket::close_frame(websocket::Role::Client, code, ""));
        }
        self.phase = Phase::Closed;
        self.outputs.push_back(Output::Closed(reason));
    }
}
