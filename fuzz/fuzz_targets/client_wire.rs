//! The client SDK's decoder of server bytes (`danmu_client::connection::Connection`, with its
//! `wire` decoder inside): WebSocket upgrade and frames or a packet stream, AUTH_REPLY,
//! batches of every protover, delivery ids, DRAIN, upstream replies, in arbitrary reads.
//! Must hold: no panic; at most one close, and nothing after it; the timers end every
//! connection.

#![no_main]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use danmu_client::connection::{AuthParams, Connection, Output, Timing};
use danmu_client::wire::Framing;
use danmu_proto::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let framing = if selector & 1 == 0 {
        Framing::Stream
    } else {
        Framing::WebSocket
    };
    let params = AuthParams {
        uid: 1,
        room: 2,
        protover: 3,
        token: "t".into(),
        device: String::new(),
        ack: selector & 2 != 0,
        drain: true,
    };
    let t0 = Instant::now();
    let mut conn = Connection::new(framing, "fuzz:1", params, Timing::default(), t0);
    let mut buf = BytesMut::new();
    // Start joined half of the time on streams, so the post-AUTH rules get most of the input.
    if framing == Framing::Stream && selector & 4 != 0 {
        buf.extend_from_slice(&frame::auth_reply(0));
    }
    let chunk = usize::from(selector >> 3).max(1);
    let mut closes = 0;
    for (i, piece) in rest.chunks(chunk).enumerate() {
        buf.extend_from_slice(piece);
        conn.handle_read(t0 + Duration::from_millis(i as u64), &mut buf);
        while conn.poll_transmit().is_some() {}
        while let Some(output) = conn.poll_output() {
            assert_eq!(closes, 0, "nothing after the close: {output:?}");
            if matches!(output, Output::Closed(_)) {
                closes += 1;
            }
        }
    }
    conn.handle_timeout(t0 + Duration::from_secs(60));
    conn.handle_timeout(t0 + Duration::from_secs(120));
    while let Some(output) = conn.poll_output() {
        assert_eq!(closes, 0, "nothing after the close: {output:?}");
        if matches!(output, Output::Closed(_)) {
            closes += 1;
        }
    }
    assert_eq!(closes, 1, "every connection ends");
});
