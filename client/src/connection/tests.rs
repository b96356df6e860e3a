//! The connection's rules with bytes and a virtual clock: no socket, no sleep.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use danmu_proto::batch;
use danmu_proto::frame::{self, Frame, op, version};
use danmu_proto::upstream::UpstreamRequest;
use danmu_proto::websocket::{self, Role};
use proptest::prelude::*;

use super::*;

fn params(ack: bool) -> AuthParams {
    AuthParams {
        uid: 42,
        room: 1001,
        protover: 3,
        token: "t".into(),
        device: "d".into(),
        ack,
        drain: true,
    }
}

/// A connection over a stream that has sent AUTH and read `{"code":0}` at `t0`.
fn joined(ack: bool, t0: Instant) -> Connection {
    let mut conn = Connection::new(Framing::Stream, "", params(ack), Timing::default(), t0);
    let auth = sent_packets(&mut conn);
    assert_eq!(auth.len(), 1);
    feed(&mut conn, t0, &frame::auth_reply(0));
    assert_eq!(conn.poll_output(), Some(Output::Joined));
    conn
}

fn feed(conn: &mut Connection, now: Instant, bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    conn.handle_read(now, &mut buf);
}

/// Everything transmitted so far, as packets (stream framing).
fn sent_packets(conn: &mut Connection) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while let Some(bytes) = conn.poll_transmit() {
        buf.extend_from_slice(&bytes);
    }
    let mut packets = Vec::new();
    while let Some(packet) = frame::decode(&mut buf, usize::MAX).unwrap() {
        packets.push(packet);
    }
    assert!(buf.is_empty());
    packets
}

fn outputs(conn: &mut Connection) -> Vec<Output> {
    std::iter::from_fn(|| conn.poll_output()).collect()
}

fn message(seq: u32, body: &'static str) -> Bytes {
    Frame::new(version::RAW, op::MESSAGE, seq, body).to_bytes()
}

fn msg(body: &'static str, delivery_id: Option<u32>) -> Output {
    Output::Message(Message {
        body: Bytes::from_static(body.as_bytes()),
        delivery_id,
    })
}

#[test]
fn auth_first_with_the_opt_ins() {
    let mut conn = Connection::new(
        Framing::Stream,
        "",
        params(true),
        Timing::default(),
        Instant::now(),
    );
    let sent = sent_packets(&mut conn);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].op, sent[0].version), (op::AUTH, version::CONTROL));
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["uid"], 42);
    assert_eq!(body["roomid"], 1001);
    assert_eq!(body["protover"], 3);
    assert_eq!(body["key"], "t");
    assert_eq!(body["ack"], true);
    assert_eq!(body["drain"], true);
}

#[test]
fn heartbeat_at_join_then_every_interval_with_the_round_trip() {
    let t0 = Instant::now();
    let mut conn = joined(false, t0);
    let sent = sent_packets(&mut conn);
    assert_eq!(
        sent.iter().map(|p| p.op).collect::<Vec<_>>(),
        [op::HEARTBEAT]
    );
    let reply_at = t0 + Duration::from_millis(7);
    feed(&mut conn, reply_at, &frame::heartbeat_reply(1234));
    assert_eq!(
        outputs(&mut conn),
        [Output::Online {
            count: 1234,
            rtt: Duration::from_millis(7)
        }]
    );
    let next = t0 + Duration::from_secs(30);
    assert_eq!(conn.poll_timeout(), Some(next));
    conn.handle_timeout(next - Duration::from_millis(1));
    assert!(
        sent_packets(&mut conn).is_empty(),
        "not before the interval"
    );
    conn.handle_timeout(next);
    assert_eq!(sent_packets(&mut conn)[0].op, op::HEARTBEAT);
}

#[test]
fn an_unanswered_heartbeat_closes_the_connection() {
    let t0 = Instant::now();
    let mut conn = joined(false, t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    conn.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        outputs(&mut conn),
        [Output::Closed(CloseReason::HeartbeatTimeout)]
    );
    assert_eq!(conn.poll_timeout(), None);
}

#[test]
fn auth_timeout_and_refusal() {
    let t0 = Instant::now();
    let mut conn = Connection::new(Framing::Stream, "", params(false), Timing::default(), t0);
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    conn.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(
        outputs(&mut conn),
        [Output::Closed(CloseReason::AuthTimeout)]
    );

    let mut conn = Connection::new(Framing::Stream, "", params(false), Timing::default(), t0);
    feed(&mut conn, t0, &frame::auth_reply(-101));
    assert_eq!(
        outputs(&mut conn),
        [Output::Closed(CloseReason::AuthRefused(-101))]
    );
}

#[test]
fn anything_but_auth_reply_first_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut conn = Connection::new(Framing::Stream, "", params(false), Timing::default(), t0);
    feed(&mut conn, t0, &message(0, "{}"));
    assert!(matches!(
        outputs(&mut conn)[..],
        [Output::Closed(CloseReason::Protocol(_))]
    ));
}

#[test]
fn every_protover_is_unpacked() {
    let t0 = Instant::now();
    let mut conn = joined(false, t0);
    let run = batch::encode_messages([&b"a"[..], &b"b"[..]]);
    let zlib = batch::compressed_packet(version::ZLIB, &batch::zlib_compress(&run, 6));
    let brotli = batch::compressed_packet(version::BROTLI, &batch::brotli_compress(&run, 5));
    let mut bytes = message(0, "raw").to_vec();
    bytes.extend_from_slice(&zlib);
    bytes.extend_from_slice(&brotli);
    feed(&mut conn, t0, &bytes);
    assert_eq!(
        outputs(&mut conn),
        [
            msg("raw", None),
            msg("a", None),
            msg("b", None),
            msg("a", None),
            msg("b", None)
        ]
    );
}

#[test]
fn high_priority_deliveries_are_acked_every_time_and_shown_once() {
    let t0 = Instant::now();
    let mut conn = joined(true, t0);
    sent_packets(&mut conn);
    feed(&mut conn, t0, &message(5, "hi"));
    feed(&mut conn, t0, &message(5, "hi"));
    feed(&mut conn, t0, &message(0, "lo"));
    assert_eq!(outputs(&mut conn), [msg("hi", Some(5)), msg("lo", None)]);
    let acks: Vec<_> = sent_packets(&mut conn)
        .into_iter()
        .map(|p| (p.op, p.seq, p.body.len()))
        .collect();
    assert_eq!(acks, [(op::ACK, 5, 0), (op::ACK, 5, 0)]);
}

#[test]
fn without_ack_a_sequence_is_not_a_delivery_id() {
    let t0 = Instant::now();
    let mut conn = joined(false, t0);
    sent_packets(&mut conn);
    feed(&mut conn, t0, &message(5, "x"));
    feed(&mut conn, t0, &message(5, "x"));
    assert_eq!(outputs(&mut conn), [msg("x", None), msg("x", None)]);
    assert!(sent_packets(&mut conn).is_empty());
}

#[test]
fn drain_closes_with_its_reason() {
    let t0 = Instant::now();
    let mut conn = joined(false, t0);
    let body = r#"{"reason":"shutdown","reconnect_after_ms":250}"#;
    feed(&mut conn, t0, &Frame::new(1, op::DRAIN, 1, body).to_bytes());
    assert_eq!(
        outputs(&mut conn),
        [Output::Closed(CloseReason::Drain(Drain {
            reason: "shutdown".into(),
            reconnect_after_ms: 250
        }))]
    );
    feed(&mut conn, t0, &message(0, "late"));
    assert!(outputs(&mut conn).is_empty(), "nothing after the close");
}

#[test]
fn upstream_only_when_joined_and_its_reply_is_matched_by_sequence() {
    let t0 = Instant::now();
    let request = UpstreamRequest {
        msg: "hello".into(),
        color: 0xffffff,
        mode: 1,
    };
    let mut conn = Connection::new(Framing::Stream, "", params(false), Timing::default(), t0);
    assert_eq!(conn.send_upstream(&request), None);
    let mut conn = joined(false, t0);
    sent_packets(&mut conn);
    let seq = conn.send_upstream(&request).unwrap();
    let sent = sent_packets(&mut conn);
    assert_eq!((sent[0].op, sent[0].seq), (op::UPSTREAM, seq));
    let reply = UpstreamReply {
        code: -201,
        retry_after_ms: Some(1000),
        ..Default::default()
    };
    feed(&mut conn, t0, &reply.to_frame(seq));
    assert_eq!(outputs(&mut conn), [Output::UpstreamReply { seq, reply }]);
}

#[test]
fn websocket_upgrade_masked_frames_ping_and_close() {
    let t0 = Instant::now();
    let mut conn = Connection::new(
        Framing::WebSocket,
        "gw:7000",
        params(false),
        Timing::default(),
        t0,
    );
    let request = conn.poll_transmit().unwrap();
    let request = String::from_utf8(request.to_vec()).unwrap();
    assert!(request.starts_with("GET /sub HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("Host: gw:7000\r\n"), "{request}");
    assert!(conn.poll_transmit().is_none(), "AUTH waits for the upgrade");

    feed(&mut conn, t0, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    let mut server = websocket::Decoder::new(Role::Server, 1 << 20);
    let mut from_client = BytesMut::new();
    let mut received = |conn: &mut Connection| {
        while let Some(bytes) = conn.poll_transmit() {
            from_client.extend_from_slice(&bytes);
        }
        std::iter::from_fn(|| server.decode(&mut from_client).unwrap()).collect::<Vec<_>>()
    };
    let auth = received(&mut conn);
    let [websocket::Message::Binary(auth)] = &auth[..] else {
        panic!("{auth:?}")
    };
    assert_eq!(
        u32::from_be_bytes(auth[8..12].try_into().unwrap()),
        op::AUTH
    );

    let mut bytes = websocket::server_binary(&frame::auth_reply(0)).to_vec();
    bytes.extend_from_slice(&websocket::server_frame(websocket::opcode::PING, b"p"));
    bytes.extend_from_slice(&websocket::close_frame(Role::Server, 1012, "restart"));
    feed(&mut conn, t0, &bytes);
    let replies = received(&mut conn);
    assert_eq!(replies.len(), 3, "{replies:?}");
    assert_eq!(
        replies[1],
        websocket::Message::Pong(Bytes::from_static(b"p"))
    );
    assert_eq!(
        replies[2],
        websocket::Message::Close(Some((1012, String::new())))
    );
    assert_eq!(
        outputs(&mut conn),
        [
            Output::Joined,
            Output::Closed(CloseReason::ServerClosed(Some((1012, "restart".into()))))
        ]
    );
}

proptest! {
    /// Whatever a server sends, in whatever pieces: no panic, at most one close, nothing after it.
    #[test]
    fn arbitrary_server_bytes(
        websocket in any::<bool>(),
        joined_first in any::<bool>(),
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
    ) {
        let t0 = Instant::now();
        let framing = if websocket { Framing::WebSocket } else { Framing::Stream };
        let mut conn = Connection::new(framing, "h:1", params(true), Timing::default(), t0);
        if joined_first && !websocket {
            feed(&mut conn, t0, &frame::auth_reply(0));
        }
        let mut buf = BytesMut::new();
        for piece in pieces {
            buf.extend_from_slice(&piece);
            conn.handle_read(t0, &mut buf);
            while conn.poll_transmit().is_some() {}
        }
        // A heartbeat due, then its reply overdue (or the auth timeout): every path ends.
        conn.handle_timeout(t0 + Duration::from_secs(60));
        conn.handle_timeout(t0 + Duration::from_secs(120));
        let all = outputs(&mut conn);
        let closes = all.iter().filter(|o| matches!(o, Output::Closed(_))).count();
        prop_assert_eq!(closes, 1, "every connection ends by a minute: {:?}", all);
        prop_assert!(matches!(all.last(), Some(Output::Closed(_))));
    }
}
