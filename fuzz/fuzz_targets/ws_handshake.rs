//! The WebSocket upgrade request parser (`websocket::parse_upgrade_request`) on arbitrary bytes.
//! Must hold: no panic; an accepted request consumed at most the limit and the bytes given, and
//! its 101 answer is a valid HTTP response; a refused one has a valid HTTP answer carrying its
//! status; every shorter prefix of an accepted request is "incomplete".

#![no_main]

use danmu_proto::websocket::{self, parse_upgrade_request};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    match parse_upgrade_request(data, MAX) {
        Ok(Some((request, n))) => {
            assert!(n <= data.len() && n <= MAX);
            assert_eq!(
                parse_upgrade_request(&data[..n], MAX),
                Ok(Some((request.clone(), n)))
            );
            assert_eq!(parse_upgrade_request(&data[..n - 1], MAX), Ok(None));
            let response = request.accept_response();
            assert_eq!(
                websocket::parse_response(&response),
                Ok(Some((101, response.len())))
            );
            if let Some(protocol) = request.selected_protocol() {
                let line = format!("\r\nSec-WebSocket-Protocol: {protocol}\r\n");
                assert!(response.windows(line.len()).any(|w| w == line.as_bytes()));
            }
        }
        Ok(None) => assert!(data.len() <= MAX),
        Err(e) => {
            let response = e.response();
            let (status, n) = websocket::parse_response(&response)
                .expect("error answer is not HTTP")
                .expect("error answer is incomplete");
            assert_eq!(status, e.status());
            assert!(n < response.len(), "error answer has no body");
        }
    }
});
