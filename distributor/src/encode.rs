//! Turning a closed batch into the bytes gateways write: done once per batch, here, so no
//! gateway and no connection ever compresses anything.

use bytes::Bytes;
use danmu_proto::{batch, frame, internal};

/// One business message as the distributor holds it until its batch is published.
#[derive(Debug)]
pub struct Pending<A> {
    pub payload: Bytes,
    pub stream_seq: u64,
    /// When JetStream stored it (unix micros).
    pub published_micros: i64,
    /// Whatever acknowledges it once its batch is out (a JetStream acker in production).
    pub ack: A,
}

impl<A> crate::window::PayloadLen for Pending<A> {
    fn payload_len(&self) -> usize {
        self.payload.len()
    }
}

/// Longest payload that leaves uncompressed when it is alone in its batch (bytes).
///
/// A lone message, which is what a quiet room sends, goes out as a plain version-0 packet:
/// every protover reads version-0 packets (Bilibili's own servers send some messages that way
/// to protover-3 clients, and `blivedm` and `bilibili-live-ws` decode them), brotli would save
/// the distributor's CPU nothing, and on a message this short it saves few bytes or none (the
/// danmu corpus: 100-300 B JSON compresses to 75-90 %; the compressed packet's own 16-byte
/// header eats most of that). Longer lone messages (a big gift card) are still compressed.
pub const LONE_RAW_MAX: usize = 512;

/// Facts about one encoding, for metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncodeStats {
    pub raw_len: usize,
    pub packet_len: usize,
    /// Whether brotli ran (false for a lone message sent as a plain packet).
    pub compressed: bool,
}

/// Encodes messages as one brotli-compressed GOIM batch (version 3, op 5), or a lone short
/// message as a plain version-0 packet (see [`LONE_RAW_MAX`]), and wraps it with the metadata
/// gateways need.
pub fn encode_batch<A>(
    messages: &[Pending<A>],
    origin: &str,
    stream: &str,
    priority: internal::Priority,
    brotli_quality: u32,
) -> (internal::EdgeBatch, EncodeStats) {
    let raw = batch::encode_messages(messages.iter().map(|m| m.payload.as_ref()));
    let lone = matches!(messages, [only] if only.payload.len() <= LONE_RAW_MAX);
    let raw_len = raw.len();
    let packet = if lone {
        // `raw` is already the one version-0 packet.
        Bytes::from(raw)
    } else {
        let compressed = batch::brotli_compress(&raw, brotli_quality);
        batch::compressed_packet(frame::version::BROTLI, &compressed)
    };
    let stats = EncodeStats {
        raw_len,
        packet_len: packet.len(),
        compressed: !lone,
    };
    let edge = internal::EdgeBatch {
        packet,
        origin: origin.to_owned(),
        stream: stream.to_owned(),
        first_stream_seq: messages.first().map_or(0, |m| m.stream_seq),
        last_stream_seq: messages.last().map_or(0, |m| m.stream_seq),
        message_count: messages.len() as u32,
        raw_body_len: raw_len as u32,
        oldest_publish_unix_micros: messages
            .iter()
            .map(|m| m.published_micros)
            .min()
            .unwrap_or(0),
        priority: priority as i32,
        stream_seqs: messages.iter().map(|m| m.stream_seq).collect(),
        // Set by the worker at the moment it publishes.
        sent_unix_micros: 0,
    };
    (edge, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seq: u64, body: &str) -> Pending<()> {
        Pending {
            payload: Bytes::copy_from_slice(body.as_bytes()),
            stream_seq: seq,
            published_micros: 1_000 + seq as i64,
            ack: (),
        }
    }

    #[test]
    fn a_batch_unpacks_to_its_messages_in_order() {
        let messages: Vec<_> = (1..=20)
            .map(|i| pending(i, &format!(r#"{{"cmd":"DANMU_MSG","info":[{i},"hello"]}}"#)))
            .collect();
        let (edge, stats) = encode_batch(&messages, "A", "PUSH_LO_A", internal::Priority::Low, 5);
        assert_eq!(edge.message_count, 20);
        assert_eq!(edge.first_stream_seq, 1);
        assert_eq!(edge.last_stream_seq, 20);
        assert_eq!(edge.stream_seqs, (1..=20).collect::<Vec<_>>());
        assert_eq!(edge.oldest_publish_unix_micros, 1_001);
        assert!(stats.packet_len < stats.raw_len, "{stats:?}");

        let outer = frame::decode(&mut bytes::BytesMut::from(&edge.packet[..]), 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(outer.version, frame::version::BROTLI);
        assert_eq!(outer.op, frame::op::MESSAGE);
        let inner = batch::unpack(&outer, 1 << 20).unwrap();
        let bodies: Vec<_> = inner.iter().map(|f| f.body.clone()).collect();
        let expected: Vec<_> = messages.iter().map(|m| m.payload.clone()).collect();
        assert_eq!(bodies, expected);
    }

    #[test]
    fn a_lone_short_message_leaves_as_a_plain_packet_and_a_long_one_compressed() {
        let body = r#"{"cmd":"DANMU_MSG","info":[1,"hello"]}"#;
        let (edge, stats) = encode_batch(
            &[pending(7, body)],
            "A",
            "PUSH_LO_A",
            internal::Priority::Low,
            5,
        );
        assert!(!stats.compressed);
        assert_eq!(stats.packet_len, frame::HEADER_LEN + body.len());
        let outer = frame::decode(&mut bytes::BytesMut::from(&edge.packet[..]), 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(
            (outer.version, outer.op, &outer.body[..]),
            (frame::version::RAW, frame::op::MESSAGE, body.as_bytes())
        );
        assert_eq!((edge.message_count, edge.stream_seqs.clone()), (1, vec![7]));

        let long = "x".repeat(LONE_RAW_MAX + 1);
        let (edge, stats) = encode_batch(
            &[pending(8, &long)],
            "A",
            "PUSH_LO_A",
            internal::Priority::Low,
            5,
        );
        assert!(stats.compressed);
        assert_eq!(edge.packet[7], frame::version::BROTLI as u8);
    }
}
