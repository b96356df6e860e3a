//! Nested batch decoding (`batch::unpack`) as a client does it: the input is an outer packet
//! (frame-decoded) whose compressed body may be anything, including a decompression bomb.
//! Must hold: no panic; decompression never yields more than the limit; on success the inner
//! packets re-encode to exactly the decompressed bytes.

#![no_main]

use bytes::BytesMut;
use danmu_proto::batch::{self, BatchError};
use danmu_proto::frame::{self, Frame, version};
use libfuzzer_sys::fuzz_target;

/// Small, so that a bomb is reached quickly: any body expanding past it must be refused.
const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // First byte picks the version of a synthetic outer packet; the rest is its body. Then the
    // whole input is also tried as a wire packet, header included.
    if let Some((&v, body)) = data.split_first() {
        let v = match v % 4 {
            0 => version::ZLIB,
            1 => version::BROTLI,
            _ => u16::from(v),
        };
        check(&Frame::new(v, frame::op::MESSAGE, 0, body.to_vec()));
    }
    let mut buf = BytesMut::from(data);
    if let Ok(Some(outer)) = frame::decode(&mut buf, usize::MAX) {
        check(&outer);
    }
});

fn check(outer: &Frame) {
    let raw = match outer.version {
        version::ZLIB => batch::zlib_decompress(&outer.body, MAX),
        version::BROTLI => batch::brotli_decompress(&outer.body, MAX),
        _ => Ok(Vec::new()),
    };
    match batch::unpack(outer, MAX) {
        Ok(inner) => {
            if matches!(outer.version, version::RAW | version::CONTROL) {
                assert_eq!(inner, vec![outer.clone()]);
                return;
            }
            let raw = raw.expect("unpack succeeded where decompression failed");
            assert!(raw.len() <= MAX);
            let reencoded: Vec<u8> = inner.iter().flat_map(|f| f.to_bytes()).collect();
            assert_eq!(reencoded, raw);
        }
        Err(BatchError::TooLarge { max }) => {
            assert_eq!(max, MAX);
            assert_eq!(raw, Err(BatchError::TooLarge { max: MAX }));
        }
        Err(BatchError::UnknownVersion(v)) => assert_eq!(v, outer.version),
        Err(BatchError::Corrupt { .. }) => assert!(raw.is_err()),
        Err(BatchError::Inner(e)) => {
            assert!(raw.is_ok());
            assert!(!matches!(e, frame::FrameError::TooLarge { .. }));
        }
    }
}
