//! UPSTREAM and UPSTREAM_REPLY: the byte examples of `docs/protocol.md`.

use bytes::BytesMut;
use danmu_proto::frame::{DEFAULT_MAX_PACKET_LEN, decode, op, version};
use danmu_proto::upstream::{UpstreamReply, UpstreamRequest, code};

use crate::hex;

#[test]
fn upstream_example_from_the_docs() {
    let wire = hex("00 00 00 39 00 10 00 01 00 00 03 ec 00 00 00 07
        7b 22 6d 73 67 22 3a 22 68 65 6c 6c 6f 22 2c 22 63 6f 6c 6f 72 22 3a 31 36 37 37 37 32 31 35 2c
        22 6d 6f 64 65 22 3a 31 7d");
    let frame = decode(&mut BytesMut::from(&wire[..]), DEFAULT_MAX_PACKET_LEN)
        .unwrap()
        .unwrap();
    assert_eq!(
        (frame.version, frame.op, frame.seq),
        (version::CONTROL, op::UPSTREAM, 7)
    );
    let request = UpstreamRequest::parse(&frame.body, 100).unwrap();
    assert_eq!(
        request,
        UpstreamRequest {
            msg: "hello".into(),
            color: 16777215,
            mode: 1
        }
    );
}

#[test]
fn upstream_replies_are_byte_exact() {
    let ok = UpstreamReply {
        code: code::OK,
        id: Some("gw-a-18bcfe56800-1".into()),
        ..Default::default()
    };
    let expected = hex("00 00 00 34 00 10 00 01 00 00 03 ed 00 00 00 07
        7b 22 63 6f 64 65 22 3a 30 2c 22 69 64 22 3a 22 67 77 2d 61 2d 31 38 62 63 66 65 35 36 38 30 30
        2d 31 22 7d");
    assert_eq!(&ok.to_frame(7)[..], &expected[..]);

    let limited = UpstreamReply {
        code: code::RATE_LIMITED,
        retry_after_ms: Some(1000),
        ..Default::default()
    };
    let expected = hex("00 00 00 33 00 10 00 01 00 00 03 ed 00 00 00 08
        7b 22 63 6f 64 65 22 3a 2d 32 30 31 2c 22 72 65 74 72 79 5f 61 66 74 65 72 5f 6d 73 22 3a 31 30
        30 30 7d");
    assert_eq!(&limited.to_frame(8)[..], &expected[..]);

    let masked = UpstreamReply {
        code: code::MASKED,
        id: Some("gw-a-18bcfe56800-2".into()),
        msg: Some("**** or ****?".into()),
        ..Default::default()
    };
    let expected = hex("00 00 00 4a 00 10 00 01 00 00 03 ed 00 00 00 09
        7b 22 63 6f 64 65 22 3a 31 2c 22 69 64 22 3a 22 67 77 2d 61 2d 31 38 62 63 66 65 35 36 38 30 30
        2d 32 22 2c 22 6d 73 67 22 3a 22 2a 2a 2a 2a 20 6f 72 20 2a 2a 2a 2a 3f 22 7d");
    assert_eq!(&masked.to_frame(9)[..], &expected[..]);
}

#[test]
fn reply_codes_are_distinct_and_outside_the_auth_range() {
    let codes = [
        code::OK,
        code::MASKED,
        code::RATE_LIMITED,
        code::USER_DENIED,
        code::IP_DENIED,
        code::BLOCKED_WORD,
        code::BAD_REQUEST,
        code::TOO_LONG,
        code::DISABLED,
        code::UNAVAILABLE,
    ];
    let mut sorted = codes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), codes.len());
    assert!(codes[2..].iter().all(|c| (-299..=-201).contains(c)));
}
