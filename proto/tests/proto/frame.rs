//! GOIM framing: byte-exact examples from the SPEC, round trips, incremental feeding, fuzzing.

use bytes::{Bytes, BytesMut};
use danmu_proto::frame::{
    self, DEFAULT_MAX_PACKET_LEN, Frame, FrameError, HEADER_LEN, check, decode, op, version,
};
use proptest::prelude::*;

use crate::hex;

const AUTH_JSON: &str = r#"{"uid":42,"roomid":1001,"protover":3,"platform":"web","type":2,"key":"<token>","buvid":"..."}"#;

fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = decode(&mut buf, DEFAULT_MAX_PACKET_LEN).unwrap().unwrap();
    assert!(buf.is_empty(), "trailing bytes");
    frame
}

#[test]
fn auth_example_from_spec() {
    let mut wire = hex("00 00 00 6d 00 10 00 01 00 00 00 07 00 00 00 01");
    wire.extend_from_slice(AUTH_JSON.as_bytes());
    let frame = decode_one(&wire);
    assert_eq!(frame.version, version::CONTROL);
    assert_eq!(frame.op, op::AUTH);
    assert_eq!(frame.seq, 1);
    assert_eq!(&frame.body[..], AUTH_JSON.as_bytes());
    assert_eq!(&frame.to_bytes()[..], &wire[..]);
}

#[test]
fn auth_reply_is_byte_exact() {
    let expected = hex("00 00 00 1a 00 10 00 01 00 00 00 08 00 00 00 01
         7b 22 63 6f 64 65 22 3a 30 7d");
    assert_eq!(&frame::auth_reply(0)[..], &expected[..]);
    let failed = decode_one(&frame::auth_reply(-101));
    assert_eq!(&failed.body[..], br#"{"code":-101}"#);
    assert_eq!(failed.op, op::AUTH_REPLY);
}

#[test]
fn heartbeat_examples() {
    let empty = decode_one(&hex("00 00 00 10 00 10 00 01 00 00 00 02 00 00 00 01"));
    assert_eq!(
        (empty.version, empty.op, empty.body.len()),
        (1, op::HEARTBEAT, 0)
    );
    let braces = decode_one(&hex(
        "00 00 00 12 00 10 00 01 00 00 00 02 00 00 00 01 7b 7d",
    ));
    assert_eq!(&braces.body[..], b"{}");
}

#[test]
fn heartbeat_reply_has_a_four_byte_body() {
    let expected = hex("00 00 00 14 00 10 00 01 00 00 00 03 00 00 00 01 00 00 04 d2");
    assert_eq!(&frame::heartbeat_reply(1234)[..], &expected[..]);
    let reply = decode_one(&expected);
    assert_eq!(reply.body.len(), 4);
    assert_eq!(reply.version, version::CONTROL);
}

#[test]
fn message_v0_is_byte_exact() {
    let body = br#"{"cmd":"DANMU_MSG","info":"hi"}"#;
    let mut expected = hex("00 00 00 2f 00 10 00 00 00 00 00 05 00 00 00 00");
    expected.extend_from_slice(body);
    assert_eq!(&frame::message(body)[..], &expected[..]);
    assert_eq!(
        Frame::new(version::RAW, op::MESSAGE, 0, &body[..]).to_bytes(),
        Bytes::from(expected)
    );
}

#[test]
fn our_ops_are_outside_the_legacy_range() {
    let ours = [
        op::FEATURES,
        op::DRAIN,
        op::ROOM_CHANGE,
        op::ROOM_CHANGE_REPLY,
        op::UPSTREAM,
        op::UPSTREAM_REPLY,
        op::ACK,
        op::RESUME,
        op::RESUME_REPLY,
    ];
    let mut sorted = ours.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ours.len(), "op codes collide");
    assert!(ours.iter().all(|&o| o >= 1000));
}

#[test]
fn check_reports_incomplete_then_length() {
    let wire = frame::message(b"hello");
    for n in 0..wire.len() {
        assert_eq!(check(&wire[..n], 1024), Err(FrameError::Incomplete));
    }
    assert_eq!(check(&wire, 1024), Ok(wire.len()));
    assert!(FrameError::Incomplete.is_incomplete());
}

#[test]
fn malformed_headers_are_rejected_early() {
    // Header length 12.
    let bad_header = hex("00 00 00 10 00 0c 00 01 00 00 00 02 00 00 00 01");
    assert_eq!(check(&bad_header, 1024), Err(FrameError::BadHeaderLen(12)));
    // Packet length shorter than the header.
    let short = hex("00 00 00 08 00 10 00 01 00 00 00 02 00 00 00 01");
    assert_eq!(check(&short, 1024), Err(FrameError::PacketTooShort(8)));
    // Oversized: refused from the first four bytes, before the body arrives.
    let huge = hex("00 10 00 00");
    assert_eq!(
        check(&huge, 1024),
        Err(FrameError::TooLarge {
            len: 0x10_0000,
            max: 1024
        })
    );
    let mut buf = BytesMut::from(&huge[..]);
    assert!(decode(&mut buf, 1024).is_err());
    assert!(!check(&huge, 1024).unwrap_err().is_incomplete());
}

#[test]
fn decode_does_not_copy_the_body() {
    let mut buf = BytesMut::new();
    Frame::new(0, 5, 0, vec![7u8; 100]).encode(&mut buf);
    let start = buf.as_ptr() as usize;
    let frame = decode(&mut buf, 1024).unwrap().unwrap();
    assert_eq!(frame.body.as_ptr() as usize, start + HEADER_LEN);
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(v, o, s, body)| Frame::new(v, o, s, body))
}

proptest! {
    #[test]
    fn round_trip(frame in arb_frame()) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        prop_assert_eq!(buf.len(), frame.encoded_len());
        prop_assert_eq!(&buf[..], &frame.to_bytes()[..]);
        let decoded = decode(&mut buf, DEFAULT_MAX_PACKET_LEN).unwrap().unwrap();
        prop_assert_eq!(decoded, frame);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_split_of_a_stream_decodes_the_same(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(f) = decode(&mut buf, DEFAULT_MAX_PACKET_LEN).unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn fuzz_decode_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        max in 0usize..100_000,
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = decode(&mut buf, max) {
            prop_assert!(frame.encoded_len() <= max);
        }
    }

    #[test]
    fn fuzz_plausible_headers(
        len in 0u32..200,
        header_len in prop_oneof![Just(16u16), any::<u16>()],
        rest in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&header_len.to_be_bytes());
        bytes.extend_from_slice(&rest);
        let mut buf = BytesMut::from(&bytes[..]);
        let before = buf.len();
        match decode(&mut buf, 1024) {
            Ok(Some(f)) => prop_assert_eq!(before - buf.len(), f.encoded_len()),
            Ok(None) => prop_assert_eq!(buf.len(), before),
            Err(e) => prop_assert!(!e.is_incomplete()),
        }
    }
}
