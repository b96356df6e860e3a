//! From an `EdgeBatch` to the bytes each member gets, built once per batch.
//!
//! The distributor publishes one brotli packet. A member gets one of six encodings, chosen by
//! its protover (3 brotli, 2 zlib, 0 raw) and framing (WebSocket needs a frame header, a stream
//! does not). Each encoding is built the first time a member needs it and then shared by every
//! other member of the room, so a gateway decompresses and recompresses at most once per batch,
//! never per connection.

use bytes::{Bytes, BytesMut};
use danmu_proto::internal::EdgeBatch;
use danmu_proto::{batch, frame};

use crate::stats::Stats;

pub use crate::connection::Framing;

/// zlib level for protover-2 members: built once per batch, so a good ratio is affordable.
const ZLIB_LEVEL: u32 = 6;

/// The encodings of one batch, built on demand.
pub struct Variants<'a> {
    max_raw_len: usize,
    /// Transport-independent packets per protover slot (0 raw, 1 zlib, 2 brotli); `Some(None)`
    /// records that a slot cannot be built (corrupt batch).
    packets: [Option<Option<Bytes>>; 3],
    /// Wire bytes per protover slot × 2 + framing (`Framing::index`: 0 message, 1 stream).
    wire: [Option<Option<Bytes>>; 6],
    stats: &'a Stats,
}

impl<'a> Variants<'a> {
    /// `packet` is the distributor's: a brotli batch (version 3), or a lone message as a plain
    /// version-0 packet, which every protover reads as it is (so every slot shares it and
    /// nothing is decompressed or recompressed for it).
    pub fn new(packet: Bytes, max_raw_len: usize, stats: &'a Stats) -> Self {
        let packets = if packet_version(&packet) == Some(frame::version::RAW) {
            [
                Some(Some(packet.clone())),
                Some(Some(packet.clone())),
                Some(Some(packet)),
            ]
        } else {
            [None, None, Some(Some(packet))]
        };
        Variants {
            max_raw_len,
            packets,
            wire: Default::default(),
            stats,
        }
    }

    /// The bytes for a member, or `None` if the batch cannot be decoded for its protover
    /// (a corrupt batch: counted, and the member gets nothing rather than garbage).
    pub fn get(&mut self, protover: u16, framing: Framing) -> Option<Bytes> {
        let version_slot = match protover {
            frame::version::ZLIB => 1,
            frame::version::BROTLI => 2,
            _ => 0,
        };
        let slot = version_slot * Framing::ALL.len() + framing.index();
        if let Some(wire) = &self.wire[slot] {
            return wire.clone();
        }
        let wire = self.packets(version_slot).map(|packets| match framing {
            // Stream members get the packets as they are: no copy.
            Framing::Stream => packets,
            Framing::Message => framing.wrap(&packets),
        });
        self.wire[slot] = Some(wire.clone());
        wire
    }

    fn packets(&mut self, version_slot: usize) -> Option<Bytes> {
        if let Some(packets) = &self.packets[version_slot] {
            return packets.clone();
        }
        let built = match version_slot {
            // The decompressed body, a run of version-0 packets, is what protover-0 members get.
            0 => {
                let brotli = self.packets(2)?;
                let raw = decompress(&brotli, self.max_raw_len);
                if raw.is_some() {
                    self.stats.variant_built("raw");
                }
                raw
            }
            _ => self.packets(0).map(|raw| {
                self.stats.variant_built("zlib");
                let compressed = batch::zlib_compress(&raw, ZLIB_LEVEL);
                batch::compressed_packet(frame::version::ZLIB, &compressed)
            }),
        };
        self.packets[version_slot] = Some(built.clone());
        built
    }
}

/// The version field of a packet's header (bytes 6-7), if it has a header.
fn packet_version(packet: &[u8]) -> Option<u16> {
    packet
        .get(6..8)
        .map(|version| u16::from_be_bytes([version[0], version[1]]))
}

fn decompress(packet: &Bytes, max_raw_len: usize) -> Option<Bytes> {
    let outer = frame::decode(&mut BytesMut::from(&packet[..]), packet.len()).ok()??;
    match outer.version {
        frame::version::BROTLI => batch::brotli_decompress(&outer.body, max_raw_len)
            .ok()
            .map(Bytes::from),
        _ => None,
    }
}

/// What part of a batch a room has not delivered yet.
#[derive(Debug, PartialEq, Eq)]
pub enum Fresh {
    All,
    /// Only the messages from this index on are new.
    From(usize),
    Nothing,
}

/// Per room: the last stream sequence delivered from each source stream. A distributor that
/// died before acking publishes those messages again; this is how a gateway writes them once.
#[derive(Debug, Default)]
pub struct Dedup {
    last: Vec<(String, u64)>,
}

impl Dedup {
    pub fn check(&mut self, batch: &EdgeBatch) -> Fresh {
        let index = match self.last.iter().position(|(s, _)| *s == batch.stream) {
            Some(index) => index,
            None => {
                self.last.push((batch.stream.clone(), 0));
                self.last.len() - 1
            }
        };
        let delivered = self.last[index].1;
        if batch.last_stream_seq <= delivered {
            return Fresh::Nothing;
        }
        self.last[index].1 = batch.last_stream_seq;
        if batch.first_stream_seq > delivered {
            return Fresh::All;
        }
        match batch.stream_seqs.iter().position(|&seq| seq > delivered) {
            Some(0) | None => Fresh::All,
            Some(from) => Fresh::From(from),
        }
    }
}

/// Rebuilds a batch's packet without its first `from` messages (rare: only after a failover).
pub fn trim(packet: &Bytes, from: usize, max_raw_len: usize, brotli_quality: u32) -> Option<Bytes> {
    let outer = frame::decode(&mut BytesMut::from(&packet[..]), packet.len()).ok()??;
    let inner = batch::unpack(&outer, max_raw_len).ok()?;
    let raw = batch::encode_messages(inner.iter().skip(from).map(|f| f.body.as_ref()));
    let compressed = batch::brotli_compress(&raw, brotli_quality);
    Some(batch::compressed_packet(
        frame::version::BROTLI,
        &compressed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(stream: &str, seqs: &[u64], bodies: &[&str]) -> EdgeBatch {
        let raw = batch::encode_messages(bodies.iter().map(|b| b.as_bytes()));
        let packet =
            batch::compressed_packet(frame::version::BROTLI, &batch::brotli_compress(&raw, 5));
        EdgeBatch {
            packet,
            stream: stream.into(),
            first_stream_seq: seqs[0],
            last_stream_seq: *seqs.last().unwrap(),
            message_count: seqs.len() as u32,
            raw_body_len: raw.len() as u32,
            stream_seqs: seqs.to_vec(),
            ..Default::default()
        }
    }

    fn bodies(bytes: &Bytes, framing: Framing) -> (u16, Vec<Bytes>) {
        let mut buf = BytesMut::from(&bytes[..]);
        if framing == Framing::Message {
            let mut decoder =
                danmu_proto::websocket::Decoder::new(danmu_proto::websocket::Role::Client, 1 << 20);
            match decoder.decode(&mut buf).unwrap().unwrap() {
                danmu_proto::websocket::Message::Binary(payload) => {
                    buf = BytesMut::from(&payload[..])
                }
                other => panic!("{other:?}"),
            }
        }
        let mut frames = Vec::new();
        while let Some(f) = frame::decode(&mut buf, 1 << 20).unwrap() {
            frames.push(f);
        }
        let version = frames[0].version;
        let inner = frames
            .iter()
            .flat_map(|f| batch::unpack(f, 1 << 20).unwrap())
            .map(|f| f.body)
            .collect();
        (version, inner)
    }

    #[test]
    fn every_variant_decodes_to_the_same_messages_and_is_built_once() {
        let stats = Stats::default();
        let edge = batch_of("S", &[1, 2, 3], &["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        let mut variants = Variants::new(edge.packet.clone(), 1 << 20, &stats);
        for protover in [0, 2, 3] {
            for framing in Framing::ALL {
                for _member in 0..3 {
                    let bytes = variants.get(protover, framing).unwrap();
                    let (version, inner) = bodies(&bytes, framing);
                    assert_eq!(version, protover);
                    assert_eq!(inner, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
                }
            }
        }
        assert_eq!(crate::stats::get(&stats.brotli_decodes), 1);
        assert_eq!(crate::stats::get(&stats.zlib_encodes), 1);
        assert_eq!(
            variants.get(3, Framing::Stream).unwrap(),
            edge.packet,
            "shared, not copied"
        );
    }

    #[test]
    fn a_lone_plain_packet_is_what_every_protover_gets_with_nothing_rebuilt() {
        let packet = Bytes::from(batch::encode_messages([&br#"{"cmd":"DANMU_MSG"}"#[..]]));
        let stats = Stats::default();
        let mut variants = Variants::new(packet.clone(), 1 << 20, &stats);
        for protover in [0, 2, 3] {
            assert_eq!(variants.get(protover, Framing::Stream).unwrap(), packet);
            let (version, inner) = bodies(
                &variants.get(protover, Framing::Message).unwrap(),
                Framing::Message,
            );
            assert_eq!(version, frame::version::RAW);
            assert_eq!(inner, vec![Bytes::from_static(br#"{"cmd":"DANMU_MSG"}"#)]);
        }
        assert_eq!(crate::stats::get(&stats.zlib_encodes), 0);
        assert_eq!(crate::stats::get(&stats.brotli_decodes), 0);
    }

    #[test]
    fn a_corrupt_batch_yields_nothing_for_derived_variants() {
        let stats = Stats::default();
        let packet = batch::compressed_packet(frame::version::BROTLI, b"not brotli at all");
        let mut variants = Variants::new(packet, 1 << 20, &stats);
        assert!(variants.get(0, Framing::Stream).is_none());
        assert!(variants.get(2, Framing::Message).is_none());
    }

    #[test]
    fn dedup_drops_repeats_and_trims_overlaps_per_stream() {
        let mut dedup = Dedup::default();
        assert_eq!(
            dedup.check(&batch_of("A", &[1, 4], &["x", "y"])),
            Fresh::All
        );
        assert_eq!(
            dedup.check(&batch_of("A", &[1, 4], &["x", "y"])),
            Fresh::Nothing
        );
        assert_eq!(
            dedup.check(&batch_of("B", &[2], &["z"])),
            Fresh::All,
            "streams are apart"
        );
        assert_eq!(
            dedup.check(&batch_of("A", &[4, 6, 9], &["y", "v", "w"])),
            Fresh::From(1)
        );
        assert_eq!(dedup.check(&batch_of("A", &[10], &["u"])), Fresh::All);
    }

    #[test]
    fn trim_keeps_the_new_messages() {
        let edge = batch_of("A", &[4, 6, 9], &["y", "v", "w"]);
        let packet = trim(&edge.packet, 1, 1 << 20, 5).unwrap();
        let (_, inner) = bodies(&packet, Framing::Stream);
        assert_eq!(inner, ["v", "w"]);
    }
}
