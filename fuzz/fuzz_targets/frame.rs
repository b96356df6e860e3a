//! GOIM frame decoding (`frame::check`, `frame::decode`) over arbitrary bytes, as a gateway reads
//! a client's stream. Must hold: no panic; every decoded frame re-encodes to exactly the bytes it
//! was split from, and `check` announced that length; decoding stops at the first error.

#![no_main]

use bytes::BytesMut;
use danmu_proto::frame::{self, DEFAULT_MAX_PACKET_LEN, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small limit too, so the TooLarge path is reached with short inputs.
    for max in [DEFAULT_MAX_PACKET_LEN, 64] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.clone();
            let checked = frame::check(&before, max);
            match frame::decode(&mut buf, max) {
                Ok(Some(f)) => {
                    let len = checked.expect("decode found a frame that check refused");
                    assert!((HEADER_LEN..=max).contains(&len));
                    assert_eq!(f.encoded_len(), len);
                    assert_eq!(&f.to_bytes()[..], &before[..len]);
                    assert_eq!(buf.len(), before.len() - len);
                }
                Ok(None) => {
                    assert_eq!(checked, Err(frame::FrameError::Incomplete));
                    assert_eq!(buf, before, "an incomplete packet must not be consumed");
                    break;
                }
                Err(e) => {
                    assert!(!e.is_incomplete());
                    assert_eq!(checked, Err(e));
                    break;
                }
            }
        }
    }
});
