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

/// Facts about one encoding, for metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncodeStats {
    pub raw_len: usize,
    pub packet_len: usize,
}

/// Encodes messages as one brotli-compressed GOIM batch (version 3, op 5) and wraps it with the
/// metadata gateways need.
pub fn encode_batch<A>(
    messages: &[Pending<A>],
    origin: &str,
    stream: &str,
    priority: internal::Priority,
    brotli_quality: u32,
) -> (internal::EdgeBatch, EncodeStats) {
    let raw = batch::encode_messages(messages.iter().map(|m| m.payload.as_ref()));
    let compressed = batch::brotli_compress(&raw, brotli_quality);
    let packet = batch::compressed_packet(frame::version::BROTLI, &compressed);
    let stats = EncodeStats {
        raw_len: raw.len(),
        packet_len: packet.len(),
    };
    let edge = internal::EdgeBatch {
        packet,
        origin: origin.to_owned(),
        stream: stream.to_owned(),
        first_stream_seq: messages.first().map_or(0, |m| m.stream_seq),
        last_stream_seq: messages.last().map_or(0, |m| m.stream_seq),
        message_count: messages.len() as u32,
        raw_body_len: raw.len() as u32,
        oldest_publish_unix_micros: messages
            .iter()
            .map(|m| m.published_micros)
            .min()
            .unwrap_or(0),
        priority: priority as i32,
        stream_seqs: messages.iter().map(|m| m.stream_seq).collect(),
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
}
