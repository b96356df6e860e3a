//! One test binary for the whole crate (one link instead of seven).

mod auth;
mod batch;
mod frame;
mod token;
mod upstream;
mod ws_frames;
mod ws_handshake;

/// Bytes from a hex string; spaces and newlines are ignored.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}
