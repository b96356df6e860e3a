//! Two-step decoding in the style of mini-redis: [`check`] answers "is a whole packet buffered,
//! and how long is it?" from a plain slice, then [`decode`] splits it off the read buffer. The
//! caller owns the socket; this code only looks at bytes.

use bytes::{Buf, BytesMut};

use super::{Frame, HEADER_LEN};

/// Why a buffer does not start with a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough bytes buffered yet; read more and try again. Not a protocol error.
    #[error("incomplete packet")]
    Incomplete,
    /// The header-length field is not 16. We never guess where the body starts.
    #[error("header length {0}, expected 16")]
    BadHeaderLen(u16),
    /// The packet-length field is smaller than the header itself.
    #[error("packet length {0} is shorter than the 16-byte header")]
    PacketTooShort(u32),
    /// The packet-length field exceeds the configured maximum: the peer is broken or hostile,
    /// and we refuse to buffer that much for it.
    #[error("packet length {len} exceeds the maximum {max}")]
    TooLarge {
        /// The announced packet length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

impl FrameError {
    /// True when more bytes are needed; every other variant means "close the connection".
    pub fn is_incomplete(&self) -> bool {
        matches!(self, FrameError::Incomplete)
    }
}

/// Returns the length of the packet at the start of `buf` if it is fully buffered.
///
/// Errors as soon as the header is known to be malformed, even when the body has not arrived,
/// so a hostile peer cannot make us wait for (and buffer) a packet we would reject anyway.
pub fn check(buf: &[u8], max_packet_len: usize) -> Result<usize, FrameError> {
    if buf.len() < HEADER_LEN {
        // Reject an oversized length as soon as its four bytes are in, not only after 16.
        if let Some(len) = buf.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) {
            check_len(len, max_packet_len)?;
        }
        return Err(FrameError::Incomplete);
    }
    let packet_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let header_len = u16::from_be_bytes([buf[4], buf[5]]);
    if usize::from(header_len) != HEADER_LEN {
        return Err(FrameError::BadHeaderLen(header_len));
    }
    let len = check_len(packet_len, max_packet_len)?;
    if buf.len() < len {
        return Err(FrameError::Incomplete);
    }
    Ok(len)
}

fn check_len(packet_len: u32, max_packet_len: usize) -> Result<usize, FrameError> {
    let len = packet_len as usize;
    if len < HEADER_LEN {
        return Err(FrameError::PacketTooShort(packet_len));
    }
    if len > max_packet_len {
        return Err(FrameError::TooLarge {
            len,
            max: max_packet_len,
        });
    }
    Ok(len)
}

/// Splits the next packet off `buf`. `Ok(None)` means "read more"; an error means the stream is
/// unusable and the connection should be closed. The body shares `buf`'s allocation.
pub fn decode(buf: &mut BytesMut, max_packet_len: usize) -> Result<Option<Frame>, FrameError> {
    let len = match check(buf, max_packet_len) {
        Ok(len) => len,
        Err(FrameError::Incomplete) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut packet = buf.split_to(len);
    packet.advance(6);
    let version = packet.get_u16();
    let op = packet.get_u32();
    let seq = packet.get_u32();
    Ok(Some(Frame {
        version,
        op,
        seq,
        body: packet.freeze(),
    }))
}
