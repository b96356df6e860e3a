//! The GOIM / Bilibili live packet: a 16-byte big-endian header and a body.
//!
//! | bytes | field |
//! |---|---|
//! | 0-3 | packet length (u32, header included) |
//! | 4-5 | header length (u16, always 16) |
//! | 6-7 | protocol version (u16, see [`version`]) |
//! | 8-11 | operation (u32, see [`op`]) |
//! | 12-15 | sequence (u32) |
//!
//! The same bytes travel on WebSocket (binary messages), TCP and QUIC streams.

mod codec;
mod replies;

use bytes::{BufMut, Bytes, BytesMut};

pub use codec::{FrameError, check, decode};
pub use replies::{auth_reply, heartbeat_reply, message};

/// Length of the fixed packet header.
pub const HEADER_LEN: usize = 16;

/// Largest packet a gateway accepts from a client unless configured otherwise. Clients only send
/// AUTH, heartbeats and our small control ops upstream, so 64 KiB is generous; it bounds what a
/// single connection can make the gateway buffer.
pub const DEFAULT_MAX_PACKET_LEN: usize = 64 * 1024;

/// Operation codes (header bytes 8-11).
///
/// Ops below 1000 are the ones existing GOIM / Bilibili clients use. Our own ops start at 1000,
/// far above anything those clients send or understand, and a gateway sends them only to a
/// connection that opted in (see `docs/protocol.md`), so a legacy client never receives a packet
/// it cannot parse.
pub mod op {
    /// Client → server, about every 30 s; body empty or `{}`.
    pub const HEARTBEAT: u32 = 2;
    /// Server → client, version 1, body = the room's online count as 4 bytes u32 BE.
    pub const HEARTBEAT_REPLY: u32 = 3;
    /// Server → client business message(s): version 0 with one body, or version 2/3 wrapping a
    /// compressed run of version-0 op-5 packets.
    pub const MESSAGE: u32 = 5;
    /// Client → server, first packet of a connection; JSON body, see [`crate::auth`].
    pub const AUTH: u32 = 7;
    /// Server → client, version 1, JSON `{"code":N}`.
    pub const AUTH_REPLY: u32 = 8;

    /// Client → server: opt in to our extension ops (JSON body listing features). Reserved.
    pub const FEATURES: u32 = 1000;
    /// Server → client: this gateway is draining; reconnect elsewhere (JSON body with a reason
    /// and a delay). Sent only to connections that opted in; others are simply closed. Reserved.
    pub const DRAIN: u32 = 1001;
    /// Client → server: leave the current room and enter another without reconnecting. Reserved.
    pub const ROOM_CHANGE: u32 = 1002;
    /// Server → client: outcome of [`ROOM_CHANGE`], JSON `{"code":N,"roomid":R}`. Reserved.
    pub const ROOM_CHANGE_REPLY: u32 = 1003;
    /// Client → server: a danmu sent upstream by the viewer (opaque body). Reserved.
    pub const UPSTREAM: u32 = 1004;
    /// Server → client: outcome of [`UPSTREAM`] (accepted, rate-limited, filtered). Reserved.
    pub const UPSTREAM_REPLY: u32 = 1005;
    /// Client → server: acknowledges a high-priority batch; the packet's sequence is the
    /// delivery id the batch carried. Only clients that set `"ack": true` in AUTH get ids.
    pub const ACK: u32 = 1006;
    /// Client → server: resume a room from the last batch sequence the client saw. Reserved.
    pub const RESUME: u32 = 1007;
    /// Server → client: outcome of [`RESUME`] (replayed, or gap too old). Reserved.
    pub const RESUME_REPLY: u32 = 1008;
}

/// Protocol versions (header bytes 6-7): how to read the body.
pub mod version {
    /// The body is one raw payload (for op 5: one JSON business message).
    pub const RAW: u16 = 0;
    /// Heartbeat / control packets (AUTH_REPLY, HEARTBEAT_REPLY).
    pub const CONTROL: u16 = 1;
    /// The body is zlib (RFC 1950) of a run of whole version-0 packets.
    pub const ZLIB: u16 = 2;
    /// The body is brotli of a run of whole version-0 packets.
    pub const BROTLI: u16 = 3;
}

/// One decoded or to-be-encoded packet. The body is `Bytes` so decoding splits it off the read
/// buffer and encoding can share it without copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Protocol version, see [`version`].
    pub version: u16,
    /// Operation, see [`op`].
    pub op: u32,
    /// Sequence number; clients mostly send 1 and ignore what they receive.
    pub seq: u32,
    /// The body after the 16-byte header.
    pub body: Bytes,
}

impl Frame {
    /// A frame with the given header fields and body.
    pub fn new(version: u16, op: u32, seq: u32, body: impl Into<Bytes>) -> Self {
        Frame {
            version,
            op,
            seq,
            body: body.into(),
        }
    }

    /// Header plus body length: what the packet-length field says.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the encoded packet to `dst`.
    ///
    /// A body longer than `u32::MAX - 16` cannot be described by the length field; the length is
    /// then saturated, which every decoder rejects. Such bodies never occur: batches and client
    /// packets are bounded far below that.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        put_header(dst, self.body.len(), self.version, self.op, self.seq);
        dst.put_slice(&self.body);
    }

    /// The encoded packet as one `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut dst);
        dst.freeze()
    }
}

/// Writes a 16-byte header for a body of `body_len` bytes.
pub(crate) fn put_header(dst: &mut BytesMut, body_len: usize, version: u16, op: u32, seq: u32) {
    let packet_len = u32::try_from(HEADER_LEN + body_len).unwrap_or(u32::MAX);
    dst.put_u32(packet_len);
    dst.put_u16(HEADER_LEN as u16);
    dst.put_u16(version);
    dst.put_u32(op);
    dst.put_u32(seq);
}
