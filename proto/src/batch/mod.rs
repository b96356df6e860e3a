//! Batches: a run of version-0 op-5 packets, compressed once and wrapped in one outer op-5
//! packet whose version says how (2 = zlib, 3 = brotli). The distributor builds the brotli form
//! once per batch; gateways derive the zlib and raw forms once per batch for members that asked
//! for them. Nothing here is ever done per connection.

mod compress;

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{self, Frame, HEADER_LEN, op, put_header, version};

pub use compress::{brotli_compress, brotli_decompress, zlib_compress, zlib_decompress};

/// Brotli quality used by the distributor. Seed 001 measured brotli 17-20 % smaller than zlib on
/// batches of 2-40 danmu. On our 20-message danmu corpus (`benches/codec.rs`, this 2-core
/// machine) quality 5 is 16 % smaller than zlib level 6 for about twice zlib's CPU (~0.1-0.2 ms
/// per batch, paid once per batch, not per member); quality 9 costs 20x more and 11 about 80x
/// more for under 8 % fewer bytes; quality 4 and below lose most of the gain over zlib. We may
/// tune it with those benches, never by feel.
pub const DEFAULT_BROTLI_QUALITY: u32 = 5;

/// zlib level for the derived protover-2 variant; 6 is zlib's own default trade-off.
pub const DEFAULT_ZLIB_LEVEL: u32 = 6;

/// Why a batch cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The compressed body is not valid zlib or brotli.
    #[error("corrupt {codec} stream: {detail}")]
    Corrupt {
        /// `"zlib"` or `"brotli"`.
        codec: &'static str,
        /// What the decompressor said.
        detail: String,
    },
    /// Decompression would exceed the caller's limit (a decompression bomb, or a misconfigured
    /// limit).
    #[error("decompressed body exceeds {max} bytes")]
    TooLarge {
        /// The caller's limit.
        max: usize,
    },
    /// The decompressed body does not split into whole packets.
    #[error("inner packet: {0}")]
    Inner(frame::FrameError),
    /// The outer packet's version is not one a batch can have.
    #[error("unknown protocol version {0}")]
    UnknownVersion(u16),
}

/// A run of version-0, op-5, sequence-0 packets, one per message: the body that is then
/// compressed, or sent as is to protover-0 clients.
pub fn encode_messages<'a>(messages: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut dst = BytesMut::new();
    for body in messages {
        dst.reserve(HEADER_LEN + body.len());
        put_header(&mut dst, body.len(), version::RAW, op::MESSAGE, 0);
        dst.put_slice(body);
    }
    dst.into()
}

/// The outer packet of a compressed batch: op 5, sequence 0, the given version (2 or 3).
pub fn compressed_packet(version: u16, compressed_body: &[u8]) -> Bytes {
    compressed_packet_with_seq(version, 0, compressed_body)
}

/// [`compressed_packet`] with a sequence: the room's batch sequence (low 32 bits), which
/// resuming clients report back; legacy clients ignore the field.
pub fn compressed_packet_with_seq(version: u16, seq: u32, compressed_body: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(HEADER_LEN + compressed_body.len());
    put_header(&mut dst, compressed_body.len(), version, op::MESSAGE, seq);
    dst.put_slice(compressed_body);
    dst.freeze()
}

/// What a client does with a received packet: versions 0 and 1 are returned as they are;
/// versions 2 and 3 are decompressed (at most `max_len` bytes) and split into their inner
/// packets, which must all be whole. Inner packets are not unpacked again.
pub fn unpack(frame: &Frame, max_len: usize) -> Result<Vec<Frame>, BatchError> {
    let raw = match frame.version {
        version::RAW | version::CONTROL => return Ok(vec![frame.clone()]),
        version::ZLIB => zlib_decompress(&frame.body, max_len)?,
        version::BROTLI => brotli_decompress(&frame.body, max_len)?,
        other => return Err(BatchError::UnknownVersion(other)),
    };
    split_packets(Bytes::from(raw))
}

/// Splits a run of whole packets; the frames' bodies share `raw`'s allocation.
pub fn split_packets(raw: Bytes) -> Result<Vec<Frame>, BatchError> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        // The run was bounded by the decompression limit already, so any inner length fits.
        let len = frame::check(&raw[pos..], usize::MAX).map_err(BatchError::Inner)?;
        let h = &raw[pos..pos + HEADER_LEN];
        frames.push(Frame {
            version: u16::from_be_bytes([h[6], h[7]]),
            op: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            seq: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            body: raw.slice(pos + HEADER_LEN..pos + len),
        });
        pos += len;
    }
    Ok(frames)
}
