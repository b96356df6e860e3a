//! One-shot compression helpers. Decompression always takes a limit because the input may come
//! from outside (a client, or a corrupted message): a few kilobytes of brotli can expand to
//! gigabytes.

use std::io::{Read, Write};

use super::BatchError;

/// Brotli of `data` at `quality` (0-11, clamped).
pub fn brotli_compress(data: &[u8], quality: u32) -> Vec<u8> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: quality.min(11) as i32,
        lgwin: window_bits(data.len()),
        size_hint: data.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut input = data;
    // Reading a slice and writing a Vec cannot fail.
    let _ = brotli::BrotliCompress(&mut input, &mut out, &params);
    out
}

/// Brotli window bits for an input of `len` bytes: the smallest window covering the input, but
/// at least 17. Larger windows make the encoder allocate and clear more memory per call (at
/// 20 messages, lgwin 22 costs three times lgwin 17), while at qualities 5-8 a window of 16
/// bits or less selects brotli's "forgetful chain" hasher, which measured 20x slower here on
/// danmu batches. Our batches are a few KiB, so the window is almost always 17.
fn window_bits(len: usize) -> i32 {
    let bits = usize::BITS - len.saturating_sub(1).leading_zeros();
    bits.clamp(17, 22) as i32
}

/// Decompresses brotli, failing once the output would exceed `max_len` bytes. Only RFC 7932
/// streams are accepted: a "large window" stream (window up to 1 GiB, an extension the brotli
/// decoder enables by default) is [`BatchError::Corrupt`], so decoding allocates at most a
/// 16 MiB window besides the output.
pub fn brotli_decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>, BatchError> {
    if is_large_window(data) {
        return Err(BatchError::Corrupt {
            codec: "brotli",
            detail: "large-window stream (RFC 7932 windows are at most 16 MiB)".to_owned(),
        });
    }
    let reader = brotli::Decompressor::new(data, 4096);
    read_bounded(reader, max_len, "brotli")
}

/// Whether a brotli stream starts with the large-window marker: WBITS read LSB first as the
/// bits 1, 000, 001 (the low seven bits 0x11), which RFC 7932 section 9.1 leaves invalid.
fn is_large_window(data: &[u8]) -> bool {
    data.first().is_some_and(|b| b & 0x7f == 0x11)
}

/// zlib (RFC 1950: the 2-byte header and Adler-32 trailer that protover-2 clients expect) of
/// `data` at `level` (0-9, clamped).
pub fn zlib_compress(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::new(level.min(9)),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Decompresses zlib, failing once the output would exceed `max_len` bytes.
pub fn zlib_decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>, BatchError> {
    read_bounded(flate2::read::ZlibDecoder::new(data), max_len, "zlib")
}

fn read_bounded(
    reader: impl Read,
    max_len: usize,
    codec: &'static str,
) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly max_len" from "more than max_len".
    let limit = (max_len as u64).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| BatchError::Corrupt {
            codec,
            detail: e.to_string(),
        })?;
    if out.len() > max_len {
        return Err(BatchError::TooLarge { max: max_len });
    }
    Ok(out)
}
