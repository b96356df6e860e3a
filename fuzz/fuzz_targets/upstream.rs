//! The UPSTREAM body parser (`upstream::UpstreamRequest::parse`) on arbitrary bytes. Must hold:
//! no panic; an accepted request satisfies every documented check and serializes back to JSON
//! that parses to the same request.

#![no_main]

use danmu_proto::upstream::{MODES, UpstreamRequest};
use libfuzzer_sys::fuzz_target;

const MAX_CHARS: usize = 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = UpstreamRequest::parse(data, MAX_CHARS) {
        assert!(!request.msg.trim().is_empty());
        assert!(!request.msg.chars().any(char::is_control));
        assert!(request.msg.chars().count() <= MAX_CHARS);
        assert!(request.color <= 0xFF_FF_FF);
        assert!(MODES.contains(&request.mode));
        let json = serde_json::to_vec(&request).expect("serializing a parsed UPSTREAM body");
        assert_eq!(
            UpstreamRequest::parse(&json, MAX_CHARS).expect("re-parsing"),
            request
        );
    }
});
