//! The connection's rules, driven with an explicit clock: what socket tests reach in seconds,
//! here in microseconds.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use danmu_proto::frame::{self, Frame, op};
use danmu_proto::presence::EventKind;
use danmu_proto::subjects::Scope;
use danmu_proto::token::{self, Claims, TokenIssuer, TokenVerifier};
use danmu_proto::websocket::{self, Message, Role, client_frame, opcode};

use super::*;
use crate::connection::reach::ReachConfig;
use crate::connection::session::SessionConfig;
use crate::fanout::outbound::Outbound;

const UNIX: u64 = 1_700_000_000;
const MASK: [u8; 4] = [7, 1, 9, 3];

struct TestContext {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    origin: Origin,
    stats: Stats,
    trusted: Vec<IpAddr>,
}

impl TestContext {
    fn new() -> Self {
        let pair = token::generate_keypair();
        TestContext {
            issuer: TokenIssuer::from_private_pem(&pair.private_pem).unwrap(),
            verifier: TokenVerifier::from_public_pem(&pair.public_pem).unwrap(),
            origin: Origin {
                gateway: "gw-1".into(),
                region: "A".into(),
            },
            stats: Stats::default(),
            trusted: vec!["10.0.0.1".parse().unwrap()],
        }
    }

    fn token(&self, uid: u64) -> String {
        self.issuer
            .issue(&Claims::new(uid, UNIX - 10, 3600))
            .unwrap()
    }
}

impl Context for TestContext {
    fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
    fn region(&self) -> &str {
        &self.origin.region
    }
    fn origin(&self) -> &Origin {
        &self.origin
    }
    fn online(&self, _room: u64, _now: Instant) -> u32 {
        1234
    }
    fn upstream(&self, sender: &Sender<'_>, seq: u32, body: &[u8]) -> Handled {
        crate::upstream::handle(None, &self.stats, sender, seq, body)
    }
    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted.contains(&ip)
    }
    fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn limits() -> Limits {
    Limits {
        session: SessionConfig {
            auth_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(90),
        },
        max_packet_len: 64 * 1024,
        max_ws_message_len: 64 * 1024,
        max_handshake_len: 8 * 1024,
        outbound_queue_bytes: 1 << 20,
        reply_queue_bytes: 4 * 1024,
        socket_send_buffer: None,
        reach: ReachConfig {
            retry_after: Duration::from_secs(1),
            max_retries: 2,
            max_pending: 16,
        },
        close_linger: Duration::from_secs(1),
        drain_period: Duration::from_secs(10),
        queue_wait_sample: 64,
        write_stall: Duration::from_secs(10),
        low_priority_budget: 1000,
        proxy_protocol: false,
        allowed_origins: Default::default(),
    }
}

/// A connection and its clock.
struct Harness {
    ctx: TestContext,
    conn: Connection,
    t0: Instant,
}

impl Harness {
    fn new(transport: Transport) -> Harness {
        Self::with(transport, limits(), true, 1)
    }

    fn with(transport: Transport, limits: Limits, admitted: bool, id: u64) -> Harness {
        let t0 = Instant::now();
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        Harness {
            ctx: TestContext::new(),
            conn: Connection::new(id, transport, peer, Arc::new(limits), admitted, t0),
            t0,
        }
    }

    fn at(&self, secs: f64) -> Now {
        Now {
            instant: self.t0 + Duration::from_secs_f64(secs),
            unix_ms: UNIX * 1000 + (secs * 1000.0) as u64,
        }
    }

    /// Feeds raw bytes at `secs`.
    fn feed(&mut self, secs: f64, bytes: &[u8]) {
        let now = self.at(secs);
        let mut buf = BytesMut::from(bytes);
        self.conn.handle_read(now, &mut buf, &self.ctx);
    }

    /// Feeds one client packet, framed for the transport.
    fn send(&mut self, secs: f64, packet: Frame) {
        let bytes = packet.to_bytes();
        match self.conn.transport().framing() {
            Framing::Stream => self.feed(secs, &bytes),
            Framing::Message => self.feed(secs, &client_frame(opcode::BINARY, &bytes, MASK)),
        }
    }

    fn upgrade(&mut self) {
        let request = websocket::client_request("gw", "/sub", "dGhlIHNhbXBsZSBub25jZQ==");
        self.feed(0.0, &request);
        let written = self.take_written();
        assert!(written.starts_with(b"HTTP/1.1 101"), "{written:?}");
    }

    fn auth(&mut self, secs: f64, uid: u64, room: u64, extra: &str) {
        if self.conn.transport().framing() == Framing::Message
            && matches!(self.conn.phase, Phase::Upgrade)
        {
            self.upgrade();
        }
        let key = self.ctx.token(uid);
        let body = format!(r#"{{"uid":{uid},"roomid":{room},"protover":0,"key":"{key}"{extra}}}"#);
        self.send(secs, Frame::new(1, op::AUTH, 1, body.into_bytes()));
    }

    /// Everything queued for the socket, as if the kernel took it all.
    fn take_written(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            let mut slices = [std::io::IoSlice::new(&[]); MAX_SLICES];
            let count = self.conn.transmit().slices(&mut slices);
            let n: usize = slices[..count].iter().map(|s| s.len()).sum();
            for slice in &slices[..count] {
                out.extend_from_slice(slice);
            }
            self.conn.handle_transmitted(self.t0, n);
        }
        out
    }

    /// The packets written (TCP), or the WebSocket messages' packets and control frames.
    fn written_packets(&mut self) -> Vec<Written> {
        let bytes = self.take_written();
        let mut buf = BytesMut::from(&bytes[..]);
        let mut out = Vec::new();
        match self.conn.transport().framing() {
            Framing::Stream => {
                while let Some(packet) = frame::decode(&mut buf, 1 << 20).unwrap() {
                    out.push(Written::Packet(packet));
                }
            }
            Framing::Message => {
                let mut decoder = websocket::Decoder::new(Role::Client, 1 << 20);
                while let Some(message) = decoder.decode(&mut buf).unwrap() {
                    match message {
                        Message::Binary(payload) => {
                            let mut payload = BytesMut::from(&payload[..]);
                            while let Some(packet) = frame::decode(&mut payload, 1 << 20).unwrap() {
                                out.push(Written::Packet(packet));
                            }
                        }
                        Message::Close(close) => out.push(Written::Close(close.map(|c| c.0))),
                        Message::Pong(payload) => out.push(Written::Pong(payload)),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }
        assert!(buf.is_empty(), "whole frames only");
        out
    }

    fn ops(&mut self) -> Vec<u32> {
        self.written_packets()
            .into_iter()
            .filter_map(|w| match w {
                Written::Packet(p) => Some(p.op),
                _ => None,
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn timeout(&mut self, secs: f64) {
        let now = self.at(secs);
        self.conn.handle_timeout(now, &self.ctx);
    }

    fn reason(&self) -> Option<CloseReason> {
        self.conn.close_reason().cloned()
    }
}

#[derive(Debug, PartialEq)]
enum Written {
    Packet(Frame),
    Close(Option<u16>),
    Pong(Bytes),
}

fn heartbeat() -> Frame {
    Frame::new(1, op::HEARTBEAT, 2, Bytes::new())
}

fn presence(events: &[Event]) -> Vec<(EventKind, u64, Option<String>, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Presence(p) => Some((p.event, p.room, p.reason.clone(), p.seq)),
            _ => None,
        })
        .collect()
}

#[test]
fn auth_joins_every_scope_and_asks_for_offline_pushes() {
    let mut h = Harness::new(Transport::Tcp);
    h.auth(0.0, 42, 1001, "");
    assert_eq!(h.ops(), [op::AUTH_REPLY]);
    let events = h.events();
    assert_eq!(
        events[0],
        Event::Join {
            scopes: vec![
                Scope::Room(1001),
                Scope::User(42),
                Scope::Region("A".into()),
                Scope::All
            ],
            protover: 0
        }
    );
    assert_eq!(events[1], Event::FetchOffline { uid: 42 });
    assert_eq!(presence(&events), [(EventKind::Enter, 1001, None, 1)]);
    assert!(h.conn.is_joined());
}

#[test]
fn every_transport_authenticates_in_its_own_framing() {
    for transport in Transport::ALL {
        let mut h = Harness::new(transport);
        h.auth(0.0, 42, 1001, "");
        assert_eq!(h.ops(), [op::AUTH_REPLY], "{transport:?}");
        assert!(h.conn.is_joined(), "{transport:?}");
    }
}

#[test]
fn a_proxy_header_is_expected_on_plain_tcp_only() {
    let proxied = Limits {
        proxy_protocol: true,
        ..limits()
    };
    // TLS and QUIC connections open with their own handshakes (done by the glue), never with
    // a PROXY header; the core sees their first packet straight away.
    for transport in [Transport::Tls, Transport::Quic, Transport::WebTransport] {
        let mut h = Harness::with(transport, proxied.clone(), true, 1);
        h.auth(0.0, 42, 1001, "");
        assert_eq!(h.ops(), [op::AUTH_REPLY], "{transport:?}");
    }
    let mut h = Harness::with(Transport::Tcp, proxied, true, 1);
    h.auth(0.0, 42, 1001, "");
    assert!(
        h.reason().is_some(),
        "an AUTH where the PROXY header belongs closes"
    );
}

#[test]
fn ops_before_auth_close_with_a_protocol_error() {
    let mut h = Harness::new(Transport::Ws);
    h.upgrade();
    h.send(0.1, heartbeat());
    assert!(matches!(h.reason(), Some(CloseReason::Protocol(d)) if d.contains("before AUTH")));
    assert_eq!(h.written_packets(), [Written::Close(Some(1002))]);
    assert!(h.events().is_empty(), "never joined: no leave, no exit");
    assert!(h.conn.is_done());
}

#[test]
fn a_second_auth_closes_and_exits_once() {
    let mut h = Harness::new(Transport::Ws);
    h.auth(0.0, 42, 1001, "");
    h.take_written();
    h.events();
    h.auth(1.0, 42, 1001, "");
    assert!(matches!(h.reason(), Some(CloseReason::Protocol(d)) if d == "second AUTH"));
    assert_eq!(h.written_packets(), [Written::Close(Some(1002))]);
    let events = h.events();
    assert!(matches!(&events[0], Event::Leave { scopes } if scopes.len() == 4));
    assert_eq!(
        presence(&events),
        [(EventKind::Exit, 1001, Some("protocol_error".into()), 2)]
    );
}

#[test]
fn enter_and_exit_pair_across_a_room_change_then_close() {
    let mut h = Harness::new(Transport::Tcp);
    h.auth(0.0, 42, 1, "");
    let change = Frame::new(1, op::ROOM_CHANGE, 5, &b"{\"roomid\":2}"[..]);
    h.send(1.0, change);
    h.conn.handle_peer_gone(h.at(2.0), &h.ctx);
    let events = h.events();
    assert!(events.contains(&Event::MoveRoom {
        from: Scope::Room(1),
        to: Scope::Room(2)
    }));
    assert_eq!(
        presence(&events),
        [
            (EventKind::Enter, 1, None, 1),
            (EventKind::Exit, 1, Some("room_change".into()), 2),
            (EventKind::Enter, 2, None, 3),
            (EventKind::Exit, 2, Some("peer_closed".into()), 4),
        ]
    );
    let leave = events.iter().find_map(|e| match e {
        Event::Leave { scopes } => Some(scopes),
        _ => None,
    });
    assert_eq!(
        leave.unwrap()[0],
        Scope::Room(2),
        "leaves the room it is in"
    );
}

#[test]
fn heartbeat_timeout_during_a_room_change_exits_the_new_room() {
    let mut h = Harness::new(Transport::Tcp);
    h.auth(0.0, 42, 1, "");
    h.send(
        60.0,
        Frame::new(1, op::ROOM_CHANGE, 5, &b"{\"roomid\":2}"[..]),
    );
    // The room change was heard: the timeout counts from it.
    assert_eq!(h.conn.poll_timeout(), Some(h.at(150.0).instant));
    h.timeout(149.9);
    assert_eq!(h.reason(), None);
    h.timeout(150.0);
    assert_eq!(h.reason(), Some(CloseReason::HeartbeatTimeout));
    let exits: Vec<_> = presence(&h.events())
        .into_iter()
        .filter(|p| p.0 == EventKind::Exit)
        .collect();
    assert_eq!(
        exits,
        [
            (EventKind::Exit, 1, Some("room_change".into()), 2),
            (EventKind::Exit, 2, Some("heartbeat_timeout".into()), 4)
        ]
    );
}

#[test]
fn pings_are_answered_but_do_not_keep_a_connection_alive() {
    let mut h = Harness::new(Transport::Ws);
    h.auth(0.0, 42, 1, "");
    h.take_written();
    for i in 1..=9 {
        h.feed(f64::from(i) * 10.0, &client_frame(opcode::PING, b"p", MASK));
    }
    let written = h.written_packets();
    assert_eq!(written.len(), 9);
    assert!(
        written
            .iter()
            .all(|w| *w == Written::Pong(Bytes::from_static(b"p")))
    );
    h.timeout(90.0);
    assert_eq!(h.reason(), Some(CloseReason::HeartbeatTimeout));
    assert_eq!(h.written_packets(), [Written::Close(Some(1001))]);
}

#[test]
fn a_client_close_is_answered_with_a_close_echoing_its_code() {
    let mut h = Harness::new(Transport::Ws);
    h.auth(0.0, 42, 1, "");
    h.take_written();
    h.feed(
        1.0,
        &client_frame(opcode::CLOSE, &1000u16.to_be_bytes(), MASK),
    );
    assert_eq!(h.reason(), Some(CloseReason::PeerClosed));
    assert_eq!(h.written_packets(), [Written::Close(Some(1000))]);
    assert!(h.conn.is_done(), "nothing left to flush");
}

#[test]
fn a_packet_spanning_websocket_messages_closes_at_once() {
    let mut h = Harness::new(Transport::Ws);
    h.auth(0.0, 42, 1, "");
    h.take_written();
    let lying = [
        0, 0, 3, 0xe8, 0, 0x10, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0x61, 0x62, 0x63, 0x64,
    ];
    h.feed(1.0, &client_frame(opcode::BINARY, &lying, MASK));
    assert!(matches!(h.reason(), Some(CloseReason::Protocol(d)) if d.contains("spans")));
    assert_eq!(h.written_packets(), [Written::Close(Some(1002))]);
}

#[test]
fn heartbeats_are_answered_with_the_online_count() {
    let mut h = Harness::new(Transport::Tcp);
    h.auth(0.0, 42, 1, "");
    h.take_written();
    h.send(1.0, heartbeat());
    let written = h.written_packets();
    let [Written::Packet(reply)] = &written[..] else {
        panic!("{written:?}")
    };
    assert_eq!(reply.op, op::HEARTBEAT_REPLY);
    assert_eq!(&reply.body[..], &1234u32.to_be_bytes());
}

#[test]
fn a_client_that_floods_pings_and_never_reads_is_closed_for_its_replies() {
    let mut h = Harness::new(Transport::Ws);
    h.auth(0.0, 42, 1, "");
    h.take_written();
    // Nothing is written from here: the client does not read.
    let ping = client_frame(opcode::PING, &[b'x'; 100], MASK);
    let mut sent = 0;
    while h.reason().is_none() {
        h.feed(1.0, &ping);
        sent += 1;
        assert!(sent < 1000, "never closed");
    }
    assert_eq!(h.reason(), Some(CloseReason::ReplyBacklog));
    // 4 KiB of 102-byte pongs: the 41st does not fit.
    assert_eq!(sent, 41);
    assert_eq!(
        h.written_packets(),
        [Written::Close(Some(1008))],
        "the pongs are dropped, the close goes out"
    );
}

#[test]
fn write_stall_cuts_a_reader_off_and_progress_restarts_the_clock() {
    let mut h = Harness::new(Transport::Tcp);
    h.auth(0.0, 42, 1, "");
    h.take_written();
    let outbound = Outbound::new(1 << 20);
    outbound.push(Bytes::from(vec![0u8; 500]), false, 1);
    h.conn.handle_outbound(h.at(1.0), &outbound, &h.ctx);
    h.conn.handle_write_blocked(h.at(1.0).instant);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(11.0).instant));
    // The socket takes 100 bytes at 5 s: the stall starts again.
    h.conn.handle_transmitted(h.at(5.0).instant, 100);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(15.0).instant));
    h.timeout(14.9);
    assert_eq!(h.reason(), None);
    h.timeout(15.0);
    assert_eq!(h.reason(), Some(CloseReason::SlowConsumer));
    assert_eq!(
        h.conn.transmit().queued_bytes(),
        400,
        "the frame in progress stays whole, nothing is added"
    );
}

#[test]
fn drain_departures_are_spread_over_the_period() {
    let mut moments = Vec::new();
    for id in 1..=200 {
        let mut h = Harness::with(Transport::Ws, limits(), true, id);
        h.auth(0.0, id, 1, r#","drain":true"#);
        h.take_written();
        h.conn.handle_shutdown(h.at(0.0), &h.ctx);
        let at = h.conn.poll_timeout().unwrap();
        let offset = at - h.t0;
        assert!(offset < Duration::from_secs(10), "{offset:?}");
        moments.push(offset.as_millis() / 1000);
        // Until its moment it stays; at it, DRAIN then close 1012.
        h.timeout(offset.as_secs_f64() - 0.001);
        assert_eq!(h.reason(), None);
        let now = Now {
            instant: at,
            unix_ms: UNIX * 1000,
        };
        h.conn.handle_timeout(now, &h.ctx);
        assert_eq!(h.reason(), Some(CloseReason::Drain));
        let written = h.written_packets();
        assert!(matches!(&written[0], Written::Packet(p) if p.op == op::DRAIN));
        assert_eq!(written[1], Written::Close(Some(1012)));
    }
    // Every second of the 10-second period gets some of the 200 departures.
    for second in 0..10 {
        let count = moments.iter().filter(|&&m| m == second).count();
        assert!((5..=40).contains(&count), "second {second}: {count}");
    }
}

#[test]
fn shutdown_closes_a_connection_that_has_not_joined_at_once() {
    let mut h = Harness::new(Transport::Ws);
    h.upgrade();
    h.conn.handle_shutdown(h.at(0.5), &h.ctx);
    assert_eq!(h.reason(), Some(CloseReason::Shutdown));
    assert_eq!(h.written_packets(), [Written::Close(Some(1001))]);
}

#[test]
fn reach_retries_interleave_with_the_low_priority_budget() {
    let mut h = Harness::new(Transport::Tcp);
    h.auth(0.0, 42, 1, r#","ack":true"#);
    h.take_written();
    let outbound = Outbound::new(1 << 20);
    let high = frame::message(b"{\"cmd\":\"NOTICE\"}");
    let low = Frame::new(0, op::MESSAGE, 0, vec![b'l'; 284]).to_bytes(); // 300 bytes
    for _ in 0..5 {
        outbound.push(low.clone(), false, 1);
    }
    outbound.push(high.clone(), true, 1);
    h.conn.handle_outbound(h.at(0.0), &outbound, &h.ctx);
    // High first with delivery id 1, then low until the queue holds the 1000-byte budget.
    let packets = h.written_packets();
    let seqs: Vec<_> = packets
        .iter()
        .map(|w| match w {
            Written::Packet(p) => (p.op, p.seq),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seqs,
        [
            (op::MESSAGE, 1),
            (op::MESSAGE, 0),
            (op::MESSAGE, 0),
            (op::MESSAGE, 0),
            (op::MESSAGE, 0)
        ],
        "34 + 4 x 300 bytes: the fourth low-priority batch crossed the 1000-byte budget"
    );
    assert!(
        outbound.has_low(),
        "one low-priority batch waits for the next round"
    );
    // The retry is due at 1 s; the rest of the low priority goes meanwhile.
    assert_eq!(h.conn.poll_timeout(), Some(h.at(1.0).instant));
    h.conn.handle_outbound(h.at(0.5), &outbound, &h.ctx);
    assert_eq!(h.written_packets().len(), 1);
    h.timeout(1.0);
    let retried = h.written_packets();
    assert!(
        matches!(&retried[..], [Written::Packet(p)] if p.seq == 1 && p.body == high.slice(16..))
    );
    // Acknowledged: no more retries.
    h.send(1.5, Frame::new(1, op::ACK, 1, Bytes::new()));
    assert_eq!(
        h.conn.poll_timeout(),
        Some(h.at(91.5).instant),
        "only the heartbeat"
    );
    assert_eq!(crate::stats::get(&h.ctx.stats.reach_retried), 1);
    assert_eq!(crate::stats::get(&h.ctx.stats.reach_acked), 1);
}

#[test]
fn past_the_connection_cap_websocket_gets_1013_after_the_upgrade_and_tcp_a_plain_close() {
    let mut h = Harness::with(Transport::Ws, limits(), false, 1);
    let request = websocket::client_request("gw", "/sub", "dGhlIHNhbXBsZSBub25jZQ==");
    h.feed(0.0, &request);
    let written = h.take_written();
    let end = written.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(written.starts_with(b"HTTP/1.1 101"));
    let mut decoder = websocket::Decoder::new(Role::Client, 1024);
    let mut rest = BytesMut::from(&written[end..]);
    assert!(matches!(
        decoder.decode(&mut rest).unwrap(),
        Some(Message::Close(Some((1013, _))))
    ));
    assert_eq!(h.reason(), Some(CloseReason::Overloaded));

    let h = Harness::with(Transport::Tcp, limits(), false, 2);
    assert_eq!(h.reason(), Some(CloseReason::Overloaded));
    assert!(h.conn.is_done(), "nothing to write: the socket just closes");
}

#[test]
fn the_upgrade_echoes_a_subprotocol_and_refuses_other_paths() {
    let mut h = Harness::new(Transport::Ws);
    let request = "GET /sub HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Protocol: goim, other\r\n\r\n";
    h.feed(0.0, request.as_bytes());
    let written = String::from_utf8(h.take_written()).unwrap();
    assert!(written.starts_with("HTTP/1.1 101"), "{written}");
    assert!(
        written
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol: goim\r\n"),
        "{written}"
    );

    // Refused upgrades get their status (RFC 6455 4.2.1, 4.4) and a close.
    for (request, status) in [
        (
            "GET /sub HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            "HTTP/1.1 426",
        ),
        (
            "PUT /sub HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "HTTP/1.1 405",
        ),
        ("GET /sub HTTP/1.1\r\nHost: gw\r\n\r\n", "HTTP/1.1 400"),
    ] {
        let mut h = Harness::new(Transport::Ws);
        h.feed(0.0, request.as_bytes());
        let written = String::from_utf8(h.take_written()).unwrap();
        assert!(written.starts_with(status), "{written}");
        assert!(matches!(h.reason(), Some(CloseReason::Protocol(_))));
        if status.ends_with("426") {
            assert!(written.contains("Sec-WebSocket-Version: 13"), "{written}");
        }
    }

    let mut h = Harness::new(Transport::Ws);
    h.feed(
        0.0,
        &websocket::client_request("gw", "/other", "dGhlIHNhbXBsZSBub25jZQ=="),
    );
    let written = String::from_utf8(h.take_written()).unwrap();
    assert!(written.starts_with("HTTP/1.1 404"), "{written}");
    assert!(matches!(h.reason(), Some(CloseReason::Protocol(_))));
}

#[test]
fn the_upgrade_checks_origin_against_allowed_origins() {
    let upgrade = |origin: Option<&str>| {
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        format!(
            "GET /sub HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
        )
    };
    let allowed = Limits {
        allowed_origins: danmu_runtime::origins::AllowedOrigins::new(&["https://live.example"])
            .unwrap(),
        ..limits()
    };
    let answer = |limits: &Limits, origin: Option<&str>| {
        let mut h = Harness::with(Transport::Ws, limits.clone(), true, 1);
        h.feed(0.0, upgrade(origin).as_bytes());
        (String::from_utf8(h.take_written()).unwrap(), h.reason())
    };
    for origin in [
        Some("https://live.example"),
        Some("HTTPS://LIVE.EXAMPLE"),
        None,
    ] {
        let (written, reason) = answer(&allowed, origin);
        assert!(written.starts_with("HTTP/1.1 101"), "{origin:?}: {written}");
        assert_eq!(reason, None);
    }
    for origin in ["https://evil.example", "null", "https://live.example.evil"] {
        let (written, reason) = answer(&allowed, Some(origin));
        assert!(written.starts_with("HTTP/1.1 403"), "{origin}: {written}");
        assert!(matches!(reason, Some(CloseReason::Protocol(_))), "{origin}");
    }
    // No list: no check.
    let (written, _) = answer(&limits(), Some("https://evil.example"));
    assert!(written.starts_with("HTTP/1.1 101"), "{written}");
}

#[test]
fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let request = |xff: &str| {
        format!(
            "GET /sub HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             X-Forwarded-For: {xff}\r\n\r\n"
        )
    };
    let t0 = Instant::now();
    let ctx = TestContext::new();
    let mut behind = Connection::new(
        1,
        Transport::Ws,
        "10.0.0.1".parse().unwrap(),
        Arc::new(limits()),
        true,
        t0,
    );
    let now = Now {
        instant: t0,
        unix_ms: UNIX * 1000,
    };
    let mut buf = BytesMut::from(request("203.0.113.9, 10.0.0.1").as_bytes());
    behind.handle_read(now, &mut buf, &ctx);
    assert_eq!(behind.client_ip(), "203.0.113.9".parse::<IpAddr>().unwrap());

    let mut direct = Connection::new(
        2,
        Transport::Ws,
        "192.0.2.7".parse().unwrap(),
        Arc::new(limits()),
        true,
        t0,
    );
    let mut buf = BytesMut::from(request("203.0.113.9").as_bytes());
    direct.handle_read(now, &mut buf, &ctx);
    assert_eq!(
        direct.client_ip(),
        "192.0.2.7".parse::<IpAddr>().unwrap(),
        "a client cannot claim another address"
    );
}

#[test]
fn auth_timeout_covers_the_websocket_upgrade() {
    let mut h = Harness::new(Transport::Ws);
    assert_eq!(h.conn.poll_timeout(), Some(h.at(10.0).instant));
    h.timeout(10.0);
    assert_eq!(h.reason(), Some(CloseReason::AuthTimeout));
    assert!(h.take_written().is_empty(), "no upgrade: no close frame");
    // Closing: only the linger deadline is left.
    assert_eq!(h.conn.poll_timeout(), Some(h.at(11.0).instant));
}

#[test]
fn a_closing_connection_stops_flushing_at_the_linger_deadline() {
    let mut h = Harness::new(Transport::Ws);
    h.auth(0.0, 42, 1, "");
    h.conn.handle_shutdown(h.at(0.0), &h.ctx);
    let leave_at = h.conn.poll_timeout().unwrap();
    h.conn.handle_timeout(
        Now {
            instant: leave_at,
            unix_ms: UNIX * 1000,
        },
        &h.ctx,
    );
    assert!(!h.conn.is_done(), "the close frame waits for the socket");
    assert_eq!(
        h.conn.poll_timeout(),
        Some(leave_at + Duration::from_secs(1))
    );
    h.conn.handle_timeout(
        Now {
            instant: leave_at + Duration::from_secs(1),
            unix_ms: UNIX * 1000,
        },
        &h.ctx,
    );
    assert!(h.conn.is_done());
}

#[test]
fn a_proxy_protocol_header_names_the_client_when_a_trusted_proxy_sends_it() {
    let with_proxy = Limits {
        proxy_protocol: true,
        ..limits()
    };
    let ctx = TestContext::new();
    let t0 = Instant::now();
    let now = Now {
        instant: t0,
        unix_ms: UNIX * 1000,
    };
    let behind_proxy = |peer: &str| {
        Connection::new(
            1,
            Transport::Tcp,
            peer.parse().unwrap(),
            Arc::new(with_proxy.clone()),
            true,
            t0,
        )
    };
    let heartbeat_before_auth = Frame::new(1, op::HEARTBEAT, 1, Bytes::new()).to_bytes();
    // v1, split in two reads, from the trusted balancer; the client's first packet follows.
    let mut conn = behind_proxy("10.0.0.1");
    let header = b"PROXY TCP4 203.0.113.9 10.0.0.5 51000 7100\r\n";
    let mut buf = BytesMut::from(&header[..10]);
    conn.handle_read(now, &mut buf, &ctx);
    assert_eq!(conn.client_ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
    buf.extend_from_slice(&header[10..]);
    buf.extend_from_slice(&heartbeat_before_auth);
    conn.handle_read(now, &mut buf, &ctx);
    assert_eq!(conn.client_ip(), "203.0.113.9".parse::<IpAddr>().unwrap());
    assert!(
        matches!(conn.close_reason(), Some(CloseReason::Protocol(d)) if d.contains("before AUTH")),
        "the bytes after the header are the client's"
    );

    // v2 (binary), IPv4, PROXY command.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 7, 10, 0, 0, 5, 0xc7, 0x38, 0x1b, 0xbc,
    ]);
    let mut conn = behind_proxy("10.0.0.1");
    conn.handle_read(now, &mut BytesMut::from(&v2[..]), &ctx);
    assert_eq!(conn.client_ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
    assert!(conn.close_reason().is_none());

    // From a peer that is not a trusted proxy, the header is consumed but not believed.
    let mut conn = behind_proxy("192.0.2.7");
    conn.handle_read(now, &mut BytesMut::from(&header[..]), &ctx);
    assert_eq!(conn.client_ip(), "192.0.2.7".parse::<IpAddr>().unwrap());
    assert!(conn.close_reason().is_none());

    // Garbage instead of a header closes.
    let mut conn = behind_proxy("10.0.0.1");
    conn.handle_read(
        now,
        &mut BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]),
        &ctx,
    );
    assert!(matches!(conn.close_reason(), Some(CloseReason::Protocol(d)) if d.contains("PROXY")));
}
