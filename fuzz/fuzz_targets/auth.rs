//! The AUTH body parser (`auth::AuthRequest::parse`) on arbitrary bytes. Must hold: no panic;
//! an accepted body serializes back to JSON that parses to the same request.

#![no_main]

use danmu_proto::auth::AuthRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = AuthRequest::parse(data) {
        let json = serde_json::to_vec(&request).expect("serializing a parsed AUTH body");
        assert_eq!(AuthRequest::parse(&json).expect("re-parsing"), request);
        let _ = request.message_version();
    }
});
