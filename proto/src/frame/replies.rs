//! Ready-made server packets. Each returns `Bytes` so a gateway can queue the same reply without
//! re-encoding.

use bytes::{BufMut, Bytes, BytesMut};

use super::{HEADER_LEN, op, put_header, version};

/// AUTH_REPLY: version 1, op 8, JSON body `{"code":N}`. Never empty: some clients fail to parse
/// an empty AUTH_REPLY body.
pub fn auth_reply(code: i32) -> Bytes {
    let body = format!("{{\"code\":{code}}}");
    packet(version::CONTROL, op::AUTH_REPLY, REPLY_SEQ, body.as_bytes())
}

/// HEARTBEAT_REPLY: version 1, op 3, body exactly the 4-byte big-endian online count, which is
/// what Bilibili clients read as the room's popularity.
pub fn heartbeat_reply(online: u32) -> Bytes {
    packet(
        version::CONTROL,
        op::HEARTBEAT_REPLY,
        REPLY_SEQ,
        &online.to_be_bytes(),
    )
}

/// MESSAGE: version 0, op 5, sequence 0, one raw body.
pub fn message(body: &[u8]) -> Bytes {
    packet(version::RAW, op::MESSAGE, 0, body)
}

/// Sequence of reply packets: Bilibili servers answer AUTH and HEARTBEAT with sequence 1, and
/// clients written against them never look at it, so we do the same.
const REPLY_SEQ: u32 = 1;

fn packet(version: u16, op: u32, seq: u32, body: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(HEADER_LEN + body.len());
    put_header(&mut dst, body.len(), version, op, seq);
    dst.put_slice(body);
    dst.freeze()
}
