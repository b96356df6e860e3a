//! Batches: nested packets, zlib (v2) and brotli (v3), and the limits that keep a client or a
//! gateway safe from decompression bombs.

use bytes::BytesMut;
use danmu_proto::batch::{
    self, BatchError, DEFAULT_BROTLI_QUALITY, brotli_compress, brotli_decompress,
    compressed_packet, encode_messages, unpack, zlib_compress, zlib_decompress,
};
use danmu_proto::frame::{self, DEFAULT_MAX_PACKET_LEN, Frame, op, version};
use proptest::prelude::*;

use crate::hex;

const DANMU: &[u8] = br#"{"cmd":"DANMU_MSG"}"#;
const GIFT: &[u8] = br#"{"cmd":"SEND_GIFT"}"#;

fn expected_inner() -> Vec<Frame> {
    vec![
        Frame::new(version::RAW, op::MESSAGE, 0, DANMU),
        Frame::new(version::RAW, op::MESSAGE, 0, GIFT),
    ]
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let f = frame::decode(&mut buf, DEFAULT_MAX_PACKET_LEN)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    f
}

#[test]
fn encode_messages_is_a_run_of_v0_packets() {
    let run = encode_messages([DANMU, GIFT]);
    let mut expected = hex("00 00 00 23 00 10 00 00 00 00 00 05 00 00 00 00");
    expected.extend_from_slice(DANMU);
    expected.extend_from_slice(&hex("00 00 00 23 00 10 00 00 00 00 00 05 00 00 00 00"));
    expected.extend_from_slice(GIFT);
    assert_eq!(run, expected);
    assert!(encode_messages(std::iter::empty()).is_empty());
}

#[test]
fn zlib_batch_from_another_implementation_unpacks() {
    // Produced by Python's zlib.compress(run, 6): any RFC 1950 encoder must interoperate.
    let wire = hex(
        "00000044001000020000000500000000789c636060506610600001561051ad949c9ba264a5e4e2e8e7
         1b1aef1becae54cb804349b0ab9f4bbcbba75b88522d004d0e0bbb",
    );
    let outer = decode_one(&wire);
    assert_eq!((outer.version, outer.op), (version::ZLIB, op::MESSAGE));
    assert_eq!(unpack(&outer, 1 << 20).unwrap(), expected_inner());
}

#[test]
fn brotli_batch_from_the_docs_unpacks() {
    // docs/protocol.md, "Batches": the same two messages as a version-3 batch.
    let wire = hex(
        "00 00 00 46 00 10 00 03 00 00 00 05 00 00 00 00 81 28 02 00 20 96 b7 2b ba 90 4f 69
         9a ed f9 09 af 20 0b 54 21 99 56 44 16 81 a8 92 c8 62 19 40 80 07 5c 47 8f fb 1e 46
         4a 6a 36 97 75 e5 df aa e7 26 4b 6b 19 fc",
    );
    let outer = decode_one(&wire);
    assert_eq!((outer.version, outer.op), (version::BROTLI, op::MESSAGE));
    assert_eq!(unpack(&outer, 1 << 20).unwrap(), expected_inner());
}

#[test]
fn batch_sequence() {
    let wire = batch::compressed_packet_with_seq(version::BROTLI, 4242, b"xyz");
    assert_eq!(decode_one(&wire).seq, 4242);
}

#[test]
fn v2_zlib_batch_round_trip() {
    let run = encode_messages([DANMU, GIFT]);
    let z = zlib_compress(&run, batch::DEFAULT_ZLIB_LEVEL);
    assert_eq!(z[0], 0x78, "RFC 1950 header");
    let wire = compressed_packet(version::ZLIB, &z);
    assert_eq!(&wire[..4], &((16 + z.len()) as u32).to_be_bytes());
    assert_eq!(
        &wire[4..16],
        &hex("00 10 00 02 00 00 00 05 00 00 00 00")[..]
    );
    assert_eq!(
        unpack(&decode_one(&wire), 1 << 20).unwrap(),
        expected_inner()
    );
}

#[test]
fn v3_brotli_batch_round_trip() {
    let run = encode_messages([DANMU, GIFT]);
    let b = brotli_compress(&run, DEFAULT_BROTLI_QUALITY);
    let wire = compressed_packet(version::BROTLI, &b);
    let outer = decode_one(&wire);
    assert_eq!((outer.version, outer.op, outer.seq), (3, 5, 0));
    assert_eq!(unpack(&outer, 1 << 20).unwrap(), expected_inner());
}

#[test]
fn uncompressed_versions_unpack_to_themselves() {
    let m = decode_one(&frame::message(DANMU));
    assert_eq!(unpack(&m, 0).unwrap(), vec![m.clone()]);
    let hb = decode_one(&frame::heartbeat_reply(5));
    assert_eq!(unpack(&hb, 0).unwrap(), vec![hb.clone()]);
    let odd = Frame::new(9, op::MESSAGE, 0, &b"x"[..]);
    assert_eq!(unpack(&odd, 100), Err(BatchError::UnknownVersion(9)));
}

#[test]
fn decompression_is_bounded() {
    let zeros = vec![0u8; 4 << 20];
    let z = zlib_compress(&zeros, 9);
    let b = brotli_compress(&zeros, 5);
    assert!(z.len() < 10_000 && b.len() < 10_000);
    assert_eq!(
        zlib_decompress(&z, 1 << 20),
        Err(BatchError::TooLarge { max: 1 << 20 })
    );
    assert_eq!(
        brotli_decompress(&b, 1 << 20),
        Err(BatchError::TooLarge { max: 1 << 20 })
    );
    // Exactly at the limit is fine.
    assert_eq!(zlib_decompress(&z, 4 << 20).unwrap().len(), 4 << 20);
    assert_eq!(brotli_decompress(&b, 4 << 20).unwrap().len(), 4 << 20);
}

#[test]
fn truncated_or_corrupt_batches_are_errors() {
    let run = encode_messages([DANMU, GIFT, DANMU]);
    for compressed in [
        zlib_compress(&run, 6),
        brotli_compress(&run, DEFAULT_BROTLI_QUALITY),
    ] {
        let v = if compressed[0] == 0x78 { 2 } else { 3 };
        for cut in 0..compressed.len() {
            let f = Frame::new(v, op::MESSAGE, 0, compressed[..cut].to_vec());
            assert!(unpack(&f, 1 << 20).is_err(), "v{v} cut at {cut} accepted");
        }
    }
    // A whole stream whose content is not whole packets.
    let half = &run[..run.len() - 3];
    let f = Frame::new(2, op::MESSAGE, 0, zlib_compress(half, 6));
    assert!(matches!(unpack(&f, 1 << 20), Err(BatchError::Inner(_))));
}

proptest! {
    #[test]
    fn batches_round_trip(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..30),
        quality in 0u32..=11,
    ) {
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let run = encode_messages(refs.iter().copied());
        for (v, body) in [(2, zlib_compress(&run, quality.min(9))), (3, brotli_compress(&run, quality))] {
            let outer = decode_one(&compressed_packet(v, &body));
            let inner = unpack(&outer, run.len()).unwrap();
            prop_assert_eq!(inner.len(), messages.len());
            for (f, m) in inner.iter().zip(&messages) {
                prop_assert_eq!((f.version, f.op, f.seq), (0, op::MESSAGE, 0));
                prop_assert_eq!(&f.body[..], &m[..]);
            }
        }
    }

    #[test]
    fn fuzz_unpack_never_panics(
        v in 2u16..=3,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = unpack(&Frame::new(v, op::MESSAGE, 0, body), 1 << 16);
    }
}

/// A real zlib bomb: a valid zlib stream of `mib` MiB of zeros, about 1 KiB of stream per MiB.
/// Built by compressing one MiB of zeros with a sync flush (which ends the block on a byte
/// boundary) and repeating the second such block, which only copies from the window; then an
/// empty final block and the Adler-32 of the zeros.
fn zlib_bomb(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let zeros = vec![0u8; 1 << 20];
    let mut enc = Compress::new(Compression::best(), true);
    let mut first = Vec::with_capacity(8 << 10);
    enc.compress_vec(&zeros, &mut first, FlushCompress::Sync)
        .unwrap();
    let mut repeat = Vec::with_capacity(8 << 10);
    enc.compress_vec(&zeros, &mut repeat, FlushCompress::Sync)
        .unwrap();
    assert_eq!(enc.total_in(), 2 << 20, "output buffers too small");
    let mut stream = first;
    for _ in 1..mib {
        stream.extend_from_slice(&repeat);
    }
    // Final fixed-Huffman block holding only end-of-block (BFINAL=1, BTYPE=01, code 0000000).
    stream.extend_from_slice(&[0x03, 0x00]);
    // Adler-32 of n zero bytes: a = 1, b = n mod 65521.
    let b = ((mib as u64) << 20) % 65521;
    stream.extend_from_slice(&(((b << 16) | 1) as u32).to_be_bytes());
    stream
}

/// A real brotli bomb: `mib` MiB of zeros, streamed through the encoder at quality 1.
fn brotli_bomb(mib: usize) -> Vec<u8> {
    use std::io::Write;
    let zeros = vec![0u8; 1 << 20];
    let mut enc = brotli::CompressorWriter::new(Vec::new(), 1 << 16, 1, 24);
    for _ in 0..mib {
        enc.write_all(&zeros).unwrap();
    }
    enc.into_inner()
}

#[test]
fn gigabyte_bombs_are_refused_without_inflating_them() {
    // The constructions are sound: small ones inflate to exactly their zeros.
    for (v, small) in [
        (version::ZLIB, zlib_bomb(3)),
        (version::BROTLI, brotli_bomb(3)),
    ] {
        let inner = unpack(&Frame::new(v, op::MESSAGE, 0, small.clone()), 3 << 20);
        // Zeros are not whole packets (header length 0): the body inflated fully, then split.
        assert!(
            matches!(inner, Err(BatchError::Inner(_))),
            "v{v}: {inner:?}"
        );
        let raw = match v {
            version::ZLIB => zlib_decompress(&small, 3 << 20),
            _ => brotli_decompress(&small, 3 << 20),
        };
        assert_eq!(raw.unwrap(), vec![0u8; 3 << 20]);
    }
    // 1 GiB each, from about 1 MiB (zlib) and 190 KiB (brotli) of stream. Unbounded, unpack
    // would allocate the whole gigabyte; bounded, it stops one byte past the limit.
    for (v, bomb) in [
        (version::ZLIB, zlib_bomb(1024)),
        (version::BROTLI, brotli_bomb(1024)),
    ] {
        assert!(bomb.len() < 2 << 20, "v{v}: {} bytes", bomb.len());
        let outer = decode_one_big(&compressed_packet(v, &bomb));
        assert_eq!(
            unpack(&outer, 1 << 20),
            Err(BatchError::TooLarge { max: 1 << 20 })
        );
    }
}

/// Like `decode_one`, for an outer packet larger than a client packet may be.
fn decode_one_big(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    frame::decode(&mut buf, usize::MAX).unwrap().unwrap()
}

#[test]
fn large_window_brotli_is_refused() {
    // The encoder's large-window mode (lgwin up to 30: a 1 GiB window the decoder would
    // allocate up front). A valid stream, but not RFC 7932 brotli.
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin: 30,
        large_window: true,
        ..Default::default()
    };
    let mut large = Vec::new();
    let run = encode_messages([DANMU, GIFT]);
    brotli::BrotliCompress(&mut &run[..], &mut large, &params).unwrap();
    assert_eq!(large[0] & 0x7f, 0x11, "not a large-window stream");
    assert!(matches!(
        brotli_decompress(&large, 1 << 20),
        Err(BatchError::Corrupt {
            codec: "brotli",
            ..
        })
    ));
    // The same input at RFC 7932's largest window decodes.
    let params = brotli::enc::BrotliEncoderParams {
        lgwin: 24,
        large_window: false,
        ..params
    };
    let mut standard = Vec::new();
    brotli::BrotliCompress(&mut &run[..], &mut standard, &params).unwrap();
    let outer = Frame::new(version::BROTLI, op::MESSAGE, 0, standard);
    assert_eq!(unpack(&outer, 1 << 20).unwrap(), expected_inner());
}
