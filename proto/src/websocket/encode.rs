//! Frame encoding. Everything we send is a single final frame: we never fragment.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Role, apply_mask, opcode};

/// Appends the header of a final (FIN) frame with `opcode` and a payload of `payload_len`
/// bytes, with the masking key if `mask` is given. The payload itself (masked by the caller
/// when `mask` is given) follows.
pub fn frame_header(opcode: u8, payload_len: usize, mask: Option<[u8; 4]>, dst: &mut BytesMut) {
    header(true, opcode, payload_len, mask, dst);
}

fn header(fin: bool, opcode: u8, payload_len: usize, mask: Option<[u8; 4]>, dst: &mut BytesMut) {
    let fin_bit = if fin { 0x80 } else { 0 };
    dst.put_u8(fin_bit | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    // Minimal length encoding, as RFC 6455 requires of senders.
    if payload_len < 126 {
        dst.put_u8(mask_bit | payload_len as u8);
    } else if let Ok(len) = u16::try_from(payload_len) {
        dst.put_u8(mask_bit | 126);
        dst.put_u16(len);
    } else {
        dst.put_u8(mask_bit | 127);
        dst.put_u64(payload_len as u64);
    }
    if let Some(mask) = mask {
        dst.put_slice(&mask);
    }
}

/// Appends a whole frame, fragment or not, masked if `mask` is given. The general form behind
/// the helpers below; tests and clients use it to send fragmented messages.
pub fn encode_frame(
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    dst: &mut BytesMut,
) {
    dst.reserve(14 + payload.len());
    header(fin, opcode, payload.len(), mask, dst);
    let start = dst.len();
    dst.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut dst[start..], mask);
    }
}

/// A server binary message in one `Bytes` (header and payload together): the gateway builds it
/// once per batch and writes the same bytes to every WebSocket member.
pub fn server_binary(payload: &[u8]) -> Bytes {
    server_frame(opcode::BINARY, payload)
}

/// An unmasked final frame with any opcode.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(10 + payload.len());
    encode_frame(true, opcode, payload, None, &mut dst);
    dst.freeze()
}

/// A masked final frame with any opcode.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Bytes {
    let mut dst = BytesMut::with_capacity(14 + payload.len());
    encode_frame(true, opcode, payload, Some(mask), &mut dst);
    dst.freeze()
}

/// A close frame sent by `role` (a client's is masked with a random key). The reason is cut at
/// a character boundary so the payload stays within the 125 bytes allowed for control frames.
pub fn close_frame(role: Role, code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    match role {
        Role::Server => server_frame(opcode::CLOSE, &payload),
        Role::Client => client_frame(opcode::CLOSE, &payload, random_mask()),
    }
}

/// Client masks must be unpredictable (RFC 6455 section 10.3); if the OS source fails we still
/// send a valid, merely predictable, mask.
fn random_mask() -> [u8; 4] {
    use rand_core::RngCore;
    let mut mask = [0x5a, 0x3c, 0xa5, 0xc3];
    let _ = rand_core::OsRng.try_fill_bytes(&mut mask);
    mask
}
