//! What a connection has to write, as plain code: a queue of shared buffers written vectored,
//! resuming mid-buffer after a short write. The socket stays with the caller, which asks for
//! the next slices (`slices`) and reports how much the kernel took (`advance`).
//!
//! Replies the client asked for (pongs, heartbeat, room-change and upstream replies) are counted
//! apart: fan-out traffic is bounded by the member's outbound queue before it gets here, replies
//! are bounded here, so a client that floods pings and never reads cannot grow our memory.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

/// Buffers are written in groups of up to this many per system call.
pub const MAX_SLICES: usize = 32;

/// One queued buffer and whether it is a reply (counted against the reply bound).
struct Entry {
    bytes: Bytes,
    reply: bool,
}

/// The write queue of one connection.
#[derive(Default)]
pub struct Transmit {
    pending: VecDeque<Entry>,
    /// Bytes of the front buffer already written.
    offset: usize,
    /// Bytes of replies queued and not yet fully written.
    reply_bytes: usize,
}

impl Transmit {
    /// Queues fan-out data (already bounded by the outbound queue). Empty buffers are skipped.
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.pending.push_back(Entry {
                bytes,
                reply: false,
            });
        }
    }

    /// Queues a reply if the replies waiting stay within `limit` bytes; `false` when they would
    /// not (the caller closes the connection).
    #[must_use]
    pub fn push_reply(&mut self, bytes: Bytes, limit: usize) -> bool {
        if self.reply_bytes + bytes.len() > limit {
            return false;
        }
        self.reply_bytes += bytes.len();
        self.pending.push_back(Entry { bytes, reply: true });
        true
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Bytes waiting, all kinds.
    pub fn queued_bytes(&self) -> usize {
        self.pending.iter().map(|e| e.bytes.len()).sum::<usize>() - self.offset
    }

    /// Drops everything not yet started: a connection cut off for not reading gets no more
    /// data, only its close frame. A buffer already partly written stays, so the next bytes
    /// still start on a frame boundary.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.offset > 0);
        while self.pending.len() > keep {
            let entry = self.pending.pop_back().expect("len checked");
            if entry.reply {
                self.reply_bytes -= entry.bytes.len();
            }
        }
    }

    /// Fills `slices` with the next buffers to write; returns how many.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut count = 0;
        for (i, entry) in self.pending.iter().take(MAX_SLICES).enumerate() {
            let bytes = if i == 0 {
                &entry.bytes[self.offset..]
            } else {
                &entry.bytes[..]
            };
            slices[i] = IoSlice::new(bytes);
            count += 1;
        }
        count
    }

    /// The kernel took `n` bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.pending.front() else {
                debug_assert!(false, "advanced past the queue");
                return;
            };
            let left = front.bytes.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            let entry = self.pending.pop_front().expect("front checked");
            if entry.reply {
                self.reply_bytes -= entry.bytes.len();
            }
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            // Written out: an idle connection keeps no deque (one allocation per busy spell is
            // cheaper than ~100 B kept by every connection that ever received anything).
            self.pending = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_resumes_mid_buffer() {
        let mut transmit = Transmit::default();
        transmit.push(Bytes::from_static(b"abc"));
        transmit.push(Bytes::from_static(b"defg"));
        transmit.advance(4);
        assert_eq!(transmit.offset, 1);
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(transmit.slices(&mut slices), 1);
        assert_eq!(&*slices[0], b"efg");
        transmit.advance(3);
        assert!(transmit.is_empty());
        assert_eq!(transmit.offset, 0);
    }

    #[test]
    fn replies_are_bounded_and_released_as_written() {
        let mut transmit = Transmit::default();
        assert!(transmit.push_reply(Bytes::from_static(b"pong1"), 10));
        assert!(transmit.push_reply(Bytes::from_static(b"pong2"), 10));
        assert!(!transmit.push_reply(Bytes::from_static(b"x"), 10), "full");
        transmit.push(Bytes::from(vec![0; 100])); // data does not count
        transmit.advance(7);
        assert!(
            !transmit.push_reply(Bytes::from_static(b"123456"), 10),
            "pong2 is half written: it still counts"
        );
        transmit.advance(3);
        assert!(transmit.push_reply(Bytes::from_static(b"12345"), 10));
    }

    #[test]
    fn discarding_keeps_a_started_buffer_whole() {
        let mut transmit = Transmit::default();
        transmit.push(Bytes::from_static(b"abcd"));
        transmit.push(Bytes::from_static(b"efgh"));
        assert!(transmit.push_reply(Bytes::from_static(b"r"), 10));
        transmit.advance(2);
        transmit.discard_unstarted();
        assert_eq!(transmit.queued_bytes(), 2);
        assert_eq!(transmit.reply_bytes, 0);
        let mut fresh = Transmit::default();
        fresh.push(Bytes::from_static(b"abcd"));
        fresh.discard_unstarted();
        assert!(fresh.is_empty());
    }
}
