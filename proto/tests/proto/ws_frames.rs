//! WebSocket frames: RFC 6455 examples, both roles, fragmentation, masking, limits, fuzzing.

use bytes::{Bytes, BytesMut};
use danmu_proto::websocket::{
    Decoder, Message, Role, WsError, apply_mask, client_frame, close_frame, encode_frame,
    frame_header, opcode, server_binary, server_frame,
};
use proptest::prelude::*;

use crate::hex;

const RFC_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn decode_all(role: Role, wire: &[u8]) -> Result<Vec<Message>, WsError> {
    let mut d = Decoder::new(role, 1 << 20);
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    while let Some(m) = d.decode(&mut buf)? {
        out.push(m);
    }
    assert!(buf.is_empty(), "undecoded bytes left");
    Ok(out)
}

fn text(s: &str) -> Message {
    Message::Text(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn rfc6455_section_5_7_examples() {
    assert_eq!(
        decode_all(Role::Client, &hex("81 05 48 65 6c 6c 6f")).unwrap(),
        vec![text("Hello")]
    );
    let masked = hex("81 85 37 fa 21 3d 7f 9f 4d 51 58");
    assert_eq!(
        decode_all(Role::Server, &masked).unwrap(),
        vec![text("Hello")]
    );
    assert_eq!(
        &client_frame(opcode::TEXT, b"Hello", RFC_MASK)[..],
        &masked[..]
    );
    assert_eq!(
        decode_all(Role::Client, &hex("01 03 48 65 6c 80 02 6c 6f")).unwrap(),
        vec![text("Hello")]
    );
    assert_eq!(
        &server_frame(opcode::PING, b"Hello")[..],
        &hex("89 05 48 65 6c 6c 6f")[..]
    );
    assert_eq!(
        decode_all(Role::Server, &hex("8a 85 37 fa 21 3d 7f 9f 4d 51 58")).unwrap(),
        vec![Message::Pong(Bytes::from_static(b"Hello"))]
    );
    let big = server_binary(&[0xab; 256]);
    assert_eq!(&big[..4], &hex("82 7e 01 00")[..]);
    assert_eq!(big.len(), 4 + 256);
    let huge = server_binary(&vec![0xcd; 65536]);
    assert_eq!(&huge[..10], &hex("82 7f 00 00 00 00 00 01 00 00")[..]);
    assert_eq!(
        decode_all(Role::Client, &huge).unwrap(),
        vec![Message::Binary(Bytes::from(vec![0xcd; 65536]))]
    );
}

#[test]
fn frame_header_forms() {
    let mut dst = BytesMut::new();
    frame_header(opcode::BINARY, 125, None, &mut dst);
    frame_header(opcode::BINARY, 126, Some(RFC_MASK), &mut dst);
    frame_header(opcode::BINARY, 70_000, None, &mut dst);
    assert_eq!(
        &dst[..],
        &hex("82 7d  82 fe 00 7e 37 fa 21 3d  82 7f 00 00 00 00 00 01 11 70")[..]
    );
}

#[test]
fn close_frames() {
    assert_eq!(
        &close_frame(Role::Server, 1000, "bye")[..],
        &hex("88 05 03 e8 62 79 65")[..]
    );
    let from_client = close_frame(Role::Client, 1001, "going");
    assert_eq!(from_client[1], 0x80 | 7, "client close frames are masked");
    assert_eq!(
        decode_all(Role::Server, &from_client).unwrap(),
        vec![Message::Close(Some((1001, "going".into())))]
    );
    // Reasons are cut at a character boundary to fit 125 bytes.
    let long = "é".repeat(100);
    let frame = close_frame(Role::Server, 1008, &long);
    assert!(frame.len() - 2 <= 125);
    let Message::Close(Some((1008, reason))) = &decode_all(Role::Client, &frame).unwrap()[0] else {
        panic!("not a close");
    };
    assert_eq!(reason.len(), 122);
    assert_eq!(
        decode_all(Role::Client, &hex("88 00")).unwrap(),
        vec![Message::Close(None)]
    );
}

#[test]
fn protocol_errors() {
    let cases: Vec<(Role, Vec<u8>, WsError, u16)> = vec![
        (Role::Client, hex("c2 00"), WsError::ReservedBits, 1002),
        (Role::Client, hex("83 00"), WsError::UnknownOpcode(3), 1002),
        (Role::Client, hex("8b 00"), WsError::UnknownOpcode(11), 1002),
        (Role::Server, hex("82 00"), WsError::UnmaskedFrame, 1002),
        (
            Role::Client,
            hex("82 80 00 00 00 00"),
            WsError::MaskedFrame,
            1002,
        ),
        (Role::Client, hex("09 00"), WsError::FragmentedControl, 1002),
        (
            Role::Client,
            hex("89 7e 00 7e"),
            WsError::ControlTooLong(126),
            1002,
        ),
        (
            Role::Client,
            hex("80 00"),
            WsError::UnexpectedContinuation,
            1002,
        ),
        (
            Role::Client,
            hex("02 00 82 00"),
            WsError::ExpectedContinuation,
            1002,
        ),
        (
            Role::Client,
            hex("82 7f 80 00 00 00 00 00 00 00"),
            WsError::BadLength,
            1002,
        ),
        (
            Role::Client,
            hex("88 01 03"),
            WsError::BadClosePayload,
            1002,
        ),
        (
            Role::Client,
            hex("88 02 03 ed"),
            WsError::BadCloseCode(1005),
            1002,
        ),
        (
            Role::Client,
            hex("88 02 03 e7"),
            WsError::BadCloseCode(999),
            1002,
        ),
        (
            Role::Client,
            hex("88 02 0b b8"),
            WsError::BadCloseCode(3000),
            0,
        ),
        (
            Role::Client,
            hex("88 03 03 e8 ff"),
            WsError::InvalidUtf8,
            1007,
        ),
        (Role::Client, hex("81 02 c3 28"), WsError::InvalidUtf8, 1007),
        (
            Role::Client,
            hex("01 01 c3 80 01 28"),
            WsError::InvalidUtf8,
            1007,
        ),
    ];
    for (role, wire, expected, code) in cases {
        match decode_all(role, &wire) {
            Err(e) => {
                assert_eq!(e, expected, "{wire:02x?}");
                assert_eq!(e.close_code(), code);
            }
            Ok(m) => assert_eq!(code, 0, "{wire:02x?} decoded to {m:?}"),
        }
    }
}

#[test]
fn too_large_is_refused_from_the_header_alone() {
    let mut d = Decoder::new(Role::Client, 1000);
    // Announces 1 GiB; only the header has arrived.
    let mut buf = BytesMut::from(&hex("82 7f 00 00 00 00 40 00 00 00")[..]);
    let err = d.decode(&mut buf).unwrap_err();
    assert_eq!(err.close_code(), 1009);
    // Fragments add up: 600 + 600 > 1000.
    let mut d = Decoder::new(Role::Client, 1000);
    let mut wire = BytesMut::new();
    encode_frame(false, opcode::BINARY, &[0; 600], None, &mut wire);
    encode_frame(true, opcode::CONTINUATION, &[0; 600], None, &mut wire);
    assert_eq!(
        d.decode(&mut wire),
        Err(WsError::TooLarge {
            len: 1200,
            max: 1000
        })
    );
    // Exactly the limit is fine.
    let mut d = Decoder::new(Role::Client, 1000);
    let mut wire = BytesMut::from(&server_binary(&[1; 1000])[..]);
    assert!(matches!(d.decode(&mut wire), Ok(Some(Message::Binary(b))) if b.len() == 1000));
}

#[test]
fn idle_decoder_holds_no_buffer() {
    assert!(std::mem::size_of::<Decoder>() <= 3 * std::mem::size_of::<usize>());
    let mut d = Decoder::new(Role::Client, 1 << 20);
    let mut wire = BytesMut::new();
    encode_frame(false, opcode::BINARY, b"ab", None, &mut wire);
    encode_frame(true, opcode::PING, b"p", None, &mut wire);
    encode_frame(true, opcode::CONTINUATION, b"cd", None, &mut wire);
    assert_eq!(
        d.decode(&mut wire).unwrap(),
        Some(Message::Ping(Bytes::from_static(b"p")))
    );
    assert!(d.in_message());
    assert_eq!(
        d.decode(&mut wire).unwrap(),
        Some(Message::Binary(Bytes::from_static(b"abcd")))
    );
    assert!(!d.in_message());
}

#[test]
fn non_minimal_lengths_are_accepted() {
    assert_eq!(
        decode_all(Role::Client, &hex("82 7e 00 02 61 62")).unwrap(),
        vec![Message::Binary(Bytes::from_static(b"ab"))]
    );
    assert_eq!(
        decode_all(Role::Client, &hex("82 7f 00 00 00 00 00 00 00 01 61")).unwrap(),
        vec![Message::Binary(Bytes::from_static(b"a"))]
    );
}

fn naive_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// A message to send, with how to fragment it and what control frame to slip in between.
#[derive(Debug, Clone)]
enum Item {
    Data {
        text: bool,
        payload: Vec<u8>,
        cuts: Vec<prop::sample::Index>,
        interleave: Option<Message>,
    },
    Control(Message),
}

fn arb_control() -> impl Strategy<Value = Message> {
    let small = proptest::collection::vec(any::<u8>(), 0..=125);
    let code = prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999];
    prop_oneof![
        small.clone().prop_map(|p| Message::Ping(p.into())),
        small.prop_map(|p| Message::Pong(p.into())),
        Just(Message::Close(None)),
        (code, "[a-zé ]{0,40}").prop_map(|(c, r)| Message::Close(Some((c, r)))),
    ]
}

fn arb_item() -> impl Strategy<Value = Item> {
    let data = (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..400),
        "\\PC{0,100}",
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        proptest::option::of(arb_control()),
    )
        .prop_map(|(text, bin, s, cuts, interleave)| Item::Data {
            text,
            payload: if text { s.into_bytes() } else { bin },
            cuts,
            interleave,
        });
    prop_oneof![3 => data, 1 => arb_control().prop_map(Item::Control)]
}

fn control_parts(m: &Message) -> (u8, Vec<u8>) {
    match m {
        Message::Ping(p) => (opcode::PING, p.to_vec()),
        Message::Pong(p) => (opcode::PONG, p.to_vec()),
        Message::Close(None) => (opcode::CLOSE, vec![]),
        Message::Close(Some((c, r))) => {
            let mut p = c.to_be_bytes().to_vec();
            p.extend_from_slice(r.as_bytes());
            (opcode::CLOSE, p)
        }
        _ => unreachable!(),
    }
}

/// Encodes items as `sender` would and returns the messages the peer must decode, in order.
fn encode_items(items: &[Item], sender: Role, mask: [u8; 4], wire: &mut BytesMut) -> Vec<Message> {
    let mask = (sender == Role::Client).then_some(mask);
    let mut expected = Vec::new();
    for item in items {
        match item {
            Item::Control(m) => {
                let (op, p) = control_parts(m);
                encode_frame(true, op, &p, mask, wire);
                expected.push(m.clone());
            }
            Item::Data {
                text,
                payload,
                cuts,
                interleave,
            } => {
                let mut points: Vec<usize> =
                    cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
                points.sort_unstable();
                points.dedup();
                points.retain(|&p| p != payload.len());
                points.push(payload.len());
                let mut from = 0;
                for (i, &to) in points.iter().enumerate() {
                    let op = match (i, text) {
                        (0, true) => opcode::TEXT,
                        (0, false) => opcode::BINARY,
                        _ => opcode::CONTINUATION,
                    };
                    let fin = i + 1 == points.len();
                    encode_frame(fin, op, &payload[from..to], mask, wire);
                    from = to;
                    if i == 0
                        && !fin
                        && let Some(c) = interleave
                    {
                        let (cop, cp) = control_parts(c);
                        encode_frame(true, cop, &cp, mask, wire);
                        expected.push(c.clone());
                    }
                }
                let bytes = Bytes::from(payload.clone());
                expected.push(if *text {
                    Message::Text(bytes)
                } else {
                    Message::Binary(bytes)
                });
            }
        }
    }
    expected
}

proptest! {
    #[test]
    fn mask_matches_the_definition(data in proptest::collection::vec(any::<u8>(), 0..100), mask in any::<[u8; 4]>()) {
        let mut fast = data.clone();
        let mut slow = data.clone();
        apply_mask(&mut fast, mask);
        naive_mask(&mut slow, mask);
        prop_assert_eq!(&fast, &slow);
        apply_mask(&mut fast, mask);
        prop_assert_eq!(fast, data);
    }

    #[test]
    fn streams_round_trip_in_both_roles_under_any_split(
        items in proptest::collection::vec(arb_item(), 1..8),
        client_sends in any::<bool>(),
        mask in any::<[u8; 4]>(),
        splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let (sender, receiver) = if client_sends {
            (Role::Client, Role::Server)
        } else {
            (Role::Server, Role::Client)
        };
        let mut wire = BytesMut::new();
        let expected = encode_items(&items, sender, mask, &mut wire);
        let mut points: Vec<usize> = splits.iter().map(|s| s.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut d = Decoder::new(receiver, 1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(m) = d.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert!(buf.is_empty());
        prop_assert!(!d.in_message());
    }

    #[test]
    fn fuzz_decoder_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        server in any::<bool>(),
        max in 0usize..2000,
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut d = Decoder::new(role, max);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
    }

    #[test]
    fn fuzz_decoder_plausible_frames(
        frames in proptest::collection::vec(
            (any::<bool>(), 0u8..16, proptest::collection::vec(any::<u8>(), 0..200), 0u8..3),
            0..10,
        ),
        server in any::<bool>(),
        max in 0usize..1000,
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut wire = Vec::new();
        for (fin, op, payload, len_form) in frames {
            wire.push(u8::from(fin) << 7 | op);
            let mask_bit = if server { 0x80 } else { 0 };
            match len_form {
                0 if payload.len() < 126 => wire.push(mask_bit | payload.len() as u8),
                1 => {
                    wire.push(mask_bit | 126);
                    wire.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                }
                _ => {
                    wire.push(mask_bit | 127);
                    wire.extend_from_slice(&(payload.len() as u64).to_be_bytes());
                }
            }
            if server {
                wire.extend_from_slice(&RFC_MASK);
            }
            wire.extend_from_slice(&payload);
        }
        let mut d = Decoder::new(role, max);
        let mut buf = BytesMut::from(&wire[..]);
        while let Ok(Some(m)) = d.decode(&mut buf) {
            if let Message::Binary(b) | Message::Text(b) = &m {
                prop_assert!(b.len() <= max);
            }
        }
    }
}

#[test]
fn examples_in_the_docs() {
    use danmu_proto::frame::{self, Frame, op, version};
    assert_eq!(
        &server_binary(&frame::heartbeat_reply(1234))[..],
        &hex("82 14 00 00 00 14 00 10 00 01 00 00 00 03 00 00 00 01 00 00 04 d2")[..]
    );
    let heartbeat = Frame::new(version::CONTROL, op::HEARTBEAT, 1, Bytes::new()).to_bytes();
    let masked = client_frame(opcode::BINARY, &heartbeat, RFC_MASK);
    assert_eq!(
        &masked[..],
        &hex("82 90 37 fa 21 3d 37 fa 21 2d 37 ea 21 3c 37 fa 21 3f 37 fa 21 3c")[..]
    );
    assert_eq!(
        decode_all(Role::Server, &masked).unwrap(),
        vec![Message::Binary(heartbeat)]
    );
    assert_eq!(
        &close_frame(Role::Server, 1003, "text message")[..],
        &hex("88 0e 03 eb 74 65 78 74 20 6d 65 73 73 61 67 65")[..]
    );
}
