//! The gateway's NATS edge parser (`danmu_gateway::nats::wire::parse`) over arbitrary bytes, as
//! a link reads a server's stream. Must hold: no panic; an incomplete operation consumes
//! nothing; every operation returned consumed at least one byte; an error is final.

#![no_main]

use bytes::BytesMut;
use danmu_gateway::nats::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small payload bound too, so the too-large path is reached with short inputs.
    for max in [1024 * 1024, 8] {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.len();
            let snapshot = buf.clone();
            match wire::parse(&mut buf, max) {
                Ok(Some(_)) => assert!(buf.len() < before, "an operation consumed nothing"),
                Ok(None) => {
                    assert_eq!(
                        buf, snapshot,
                        "an incomplete operation must not be consumed"
                    );
                    break;
                }
                Err(_) => break,
            }
        }
    }
});
