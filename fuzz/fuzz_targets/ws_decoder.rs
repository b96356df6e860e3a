//! The WebSocket decoder in the server role (what the gateway runs on client bytes). The input is
//! decoded twice: in one buffer, and fed in chunks whose sizes come from the input. Must hold:
//! no panic; both give the same messages, the same error at the same offset (read boundaries
//! change nothing); data messages stay within the limit, control payloads within 125
//! bytes, text is UTF-8.

#![no_main]

use bytes::BytesMut;
use danmu_proto::websocket::{Decoder, Message, Role, WsError};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let whole = run(data, data.len().max(1));
    let chunked = run(data, usize::from(step % 16) + 1);
    assert_eq!(whole, chunked);
    for message in &whole.0 {
        match message {
            Message::Binary(b) => assert!(b.len() <= MAX),
            Message::Text(t) => {
                assert!(t.len() <= MAX);
                assert!(std::str::from_utf8(t).is_ok());
            }
            Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
            Message::Close(Some((code, reason))) => {
                assert!(*code >= 1000);
                assert!(reason.len() <= 123);
            }
            Message::Close(None) => {}
        }
    }
});

/// Messages decoded, the error that stopped decoding, and how many bytes were consumed.
fn run(data: &[u8], chunk: usize) -> (Vec<Message>, Option<WsError>, usize) {
    let mut decoder = Decoder::new(Role::Server, MAX);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut messages = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(e) => return (messages, Some(e), fed - buf.len()),
            }
        }
    }
    (messages, None, fed - buf.len())
}
