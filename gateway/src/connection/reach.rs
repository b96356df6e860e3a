//! High reach for one connection, as plain code with an explicit clock: delivery ids for
//! high-priority batches, acknowledgements, retries and expiry.
//!
//! A client that opted in (`"ack": true` in AUTH) gets every high-priority batch with a delivery
//! id in the GOIM header's sequence field and answers with ACK (op 1006) carrying the same id.
//! What is not acknowledged within `retry_after` is sent again, identical, up to `max_retries`
//! times; the client drops ids it has already seen. With a per-attempt loss rate `1 - r`, a
//! batch reaches the client with probability `1 - (1 - r)^(n + 1)` for `n = max_retries`:
//! 97 % per attempt and 2 retries give 99.9973 %.
//!
//! The batch bytes stay shared with every other member: only the 16-byte GOIM header (and the
//! WebSocket frame header before it) is rewritten per connection; the body is a zero-copy slice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use danmu_proto::frame::HEADER_LEN;

use crate::connection::Framing;

#[derive(Clone, Copy, Debug)]
pub struct ReachConfig {
    /// Time to wait for an ACK before sending again.
    pub retry_after: Duration,
    /// Sends after the first; then the batch expires (counted).
    pub max_retries: u32,
    /// Unacknowledged batches kept per connection; past it the oldest expires.
    pub max_pending: usize,
}

pub use crate::stats::ReachCounts;

struct Unacked {
    id: u32,
    head: Bytes,
    body: Bytes,
    attempts: u32,
    due: Instant,
}

pub struct Reach {
    config: ReachConfig,
    framing: Framing,
    last_id: u32,
    /// In due order: every entry waits the same `retry_after`, so appending keeps it sorted.
    unacked: VecDeque<Unacked>,
    pub counts: ReachCounts,
}

impl Reach {
    pub fn new(config: ReachConfig, framing: Framing) -> Self {
        Reach {
            config,
            framing,
            last_id: 0,
            unacked: VecDeque::new(),
            counts: ReachCounts::default(),
        }
    }

    /// Gives a high-priority batch (its wire bytes for this connection) a delivery id and
    /// returns the two buffers to write: a rewritten header and the shared body.
    pub fn send(&mut self, wire: Bytes, now: Instant) -> Option<[Bytes; 2]> {
        self.last_id = self.last_id.checked_add(1).unwrap_or(1);
        let id = self.last_id;
        let (head, body) = with_sequence(&wire, self.framing, id)?;
        if self.unacked.len() >= self.config.max_pending {
            self.unacked.pop_front();
            self.counts.expired += 1;
        }
        self.unacked.push_back(Unacked {
            id,
            head: head.clone(),
            body: body.clone(),
            attempts: 1,
            due: now + self.config.retry_after,
        });
        self.counts.delivered += 1;
        Some([head, body])
    }

    /// The client acknowledged `id`. Unknown ids (already acked, expired) are ignored.
    pub fn ack(&mut self, id: u32) {
        if let Some(index) = self.unacked.iter().position(|u| u.id == id) {
            self.unacked.remove(index);
            self.counts.acked += 1;
        }
    }

    /// When the next retry is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.unacked.front().map(|u| u.due)
    }

    /// Buffers to send again now; batches out of retries expire.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Bytes>) {
        while self.unacked.front().is_some_and(|u| u.due <= now) {
            let mut unacked = self.unacked.pop_front().expect("checked");
            if unacked.attempts > self.config.max_retries {
                self.counts.expired += 1;
                continue;
            }
            unacked.attempts += 1;
            unacked.due = now + self.config.retry_after;
            self.counts.retried += 1;
            out.push(unacked.head.clone());
            out.push(unacked.body.clone());
            self.unacked.push_back(unacked);
        }
    }

    pub fn pending(&self) -> usize {
        self.unacked.len()
    }
}

/// Splits a batch's wire bytes into a copy of its headers with the GOIM sequence set to `id`,
/// and the untouched rest.
fn with_sequence(wire: &Bytes, framing: Framing, id: u32) -> Option<(Bytes, Bytes)> {
    let goim_at = match framing {
        Framing::Stream => 0,
        Framing::Message => match wire.get(1)? & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        },
    };
    let body_at = goim_at + HEADER_LEN;
    if wire.len() < body_at {
        return None;
    }
    let mut head = BytesMut::from(&wire[..body_at]);
    head[goim_at + 12..body_at].copy_from_slice(&id.to_be_bytes());
    Some((head.freeze(), wire.slice(body_at..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use danmu_proto::frame::{self, Frame};
    use danmu_proto::websocket;

    fn config() -> ReachConfig {
        ReachConfig {
            retry_after: Duration::from_millis(300),
            max_retries: 2,
            max_pending: 64,
        }
    }

    fn packet() -> Bytes {
        Frame::new(0, frame::op::MESSAGE, 0, &b"{\"cmd\":\"PK_INVITE\"}"[..]).to_bytes()
    }

    fn joined([head, body]: [Bytes; 2]) -> Vec<u8> {
        [head.as_ref(), body.as_ref()].concat()
    }

    #[test]
    fn the_sequence_carries_the_delivery_id_and_the_body_is_shared() {
        let mut reach = Reach::new(config(), Framing::Stream);
        let wire = packet();
        let sent = reach.send(wire.clone(), Instant::now()).unwrap();
        assert_eq!(sent[1].as_ptr(), wire[16..].as_ptr(), "zero-copy body");
        let mut buf = bytes::BytesMut::from(&joined(sent)[..]);
        let frame = frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.seq, 1);
        assert_eq!(&frame.body[..], b"{\"cmd\":\"PK_INVITE\"}");
    }

    #[test]
    fn websocket_headers_are_skipped() {
        let mut reach = Reach::new(config(), Framing::Message);
        let wire = websocket::server_binary(&packet());
        let sent = joined(reach.send(wire, Instant::now()).unwrap());
        let mut decoder = websocket::Decoder::new(websocket::Role::Client, 1024);
        let websocket::Message::Binary(payload) = decoder
            .decode(&mut bytes::BytesMut::from(&sent[..]))
            .unwrap()
            .unwrap()
        else {
            panic!("not binary")
        };
        let frame = frame::decode(&mut bytes::BytesMut::from(&payload[..]), 1024)
            .unwrap()
            .unwrap();
        assert_eq!(frame.seq, 1);
    }

    #[test]
    fn unacknowledged_batches_are_retried_then_expire() {
        let mut reach = Reach::new(config(), Framing::Stream);
        let t0 = Instant::now();
        reach.send(packet(), t0).unwrap();
        reach
            .send(packet(), t0 + Duration::from_millis(10))
            .unwrap();
        reach.ack(2);
        assert_eq!(reach.deadline(), Some(t0 + Duration::from_millis(300)));
        let mut out = Vec::new();
        reach.due(t0 + Duration::from_millis(299), &mut out);
        assert!(out.is_empty());
        reach.due(t0 + Duration::from_millis(300), &mut out);
        assert_eq!(out.len(), 2, "header and body of id 1");
        out.clear();
        reach.due(t0 + Duration::from_millis(600), &mut out);
        assert_eq!(out.len(), 2, "second retry");
        out.clear();
        reach.due(t0 + Duration::from_millis(900), &mut out);
        assert!(out.is_empty(), "out of retries");
        assert_eq!(
            reach.counts,
            ReachCounts {
                delivered: 2,
                acked: 1,
                retried: 2,
                expired: 1
            }
        );
        assert_eq!(reach.pending(), 0);
    }

    #[test]
    fn an_ack_after_a_retry_stops_further_retries() {
        let mut reach = Reach::new(config(), Framing::Stream);
        let t0 = Instant::now();
        reach.send(packet(), t0).unwrap();
        let mut out = Vec::new();
        reach.due(t0 + Duration::from_millis(300), &mut out);
        reach.ack(1);
        reach.ack(1);
        assert_eq!(reach.deadline(), None);
        assert_eq!(reach.counts.acked, 1);
        assert_eq!(reach.counts.retried, 1);
    }
}
