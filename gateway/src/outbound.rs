//! A connection's outbound queue, shared between the room fan-out (which pushes) and the
//! connection task (which writes). Bounded in bytes: a reader that cannot keep up overflows it
//! and is cut off, instead of making the room wait or the gateway's memory grow.
//!
//! Items are `Bytes` handles to buffers shared by every member of a room, so queueing a batch for
//! 15,000 members copies nothing. An idle queue holds no allocation.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The byte bound was exceeded: the queue is now closed and the connection must go.
    Overflow,
    /// The connection is already closing.
    Closed,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Bytes>,
    bytes: usize,
    overflowed: bool,
    closed: bool,
}

pub struct Outbound {
    limit: usize,
    queue: Mutex<Queue>,
    ready: Notify,
}

impl Outbound {
    pub fn new(limit_bytes: usize) -> Self {
        Outbound {
            limit: limit_bytes,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
        }
    }

    /// Queues bytes for the connection and wakes its task.
    pub fn push(&self, item: Bytes) -> Push {
        let mut queue = self.queue.lock().expect("outbound lock");
        if queue.closed {
            return Push::Closed;
        }
        if queue.bytes + item.len() > self.limit {
            queue.closed = true;
            queue.overflowed = true;
            queue.items.clear();
            queue.bytes = 0;
            drop(queue);
            self.ready.notify_one();
            return Push::Overflow;
        }
        queue.bytes += item.len();
        queue.items.push_back(item);
        drop(queue);
        self.ready.notify_one();
        Push::Queued
    }

    /// Moves everything queued into `into` (the writer's local list). Returns whether the queue
    /// overflowed, in which case the connection must close as a slow consumer.
    pub fn drain_into(&self, into: &mut VecDeque<Bytes>) -> bool {
        let mut queue = self.queue.lock().expect("outbound lock");
        into.extend(queue.items.drain(..));
        queue.bytes = 0;
        if queue.items.capacity() > 4 {
            // A burst grew it; give the memory back instead of keeping it for an idle connection.
            queue.items = VecDeque::new();
        }
        queue.overflowed
    }

    /// Refuses further pushes (the connection is closing).
    pub fn close(&self) {
        self.queue.lock().expect("outbound lock").closed = true;
    }

    /// Resolves when something was pushed since the last call (a permit is kept if nobody
    /// waited, so no wake-up is lost).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().expect("outbound lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_drain_in_order() {
        let outbound = Outbound::new(100);
        assert_eq!(outbound.push(Bytes::from_static(b"one")), Push::Queued);
        assert_eq!(outbound.push(Bytes::from_static(b"two")), Push::Queued);
        assert_eq!(outbound.queued_bytes(), 6);
        let mut local = VecDeque::new();
        assert!(!outbound.drain_into(&mut local));
        assert_eq!(
            local,
            [Bytes::from_static(b"one"), Bytes::from_static(b"two")]
        );
        assert_eq!(outbound.queued_bytes(), 0);
    }

    #[test]
    fn overflow_closes_the_queue_and_frees_it() {
        let outbound = Outbound::new(10);
        assert_eq!(outbound.push(Bytes::from_static(b"12345678")), Push::Queued);
        assert_eq!(outbound.push(Bytes::from_static(b"abc")), Push::Overflow);
        assert_eq!(outbound.queued_bytes(), 0);
        assert_eq!(outbound.push(Bytes::from_static(b"x")), Push::Closed);
        let mut local = VecDeque::new();
        assert!(outbound.drain_into(&mut local), "reports the overflow");
        assert!(local.is_empty());
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_lost() {
        let outbound = Outbound::new(10);
        outbound.push(Bytes::from_static(b"x"));
        tokio::time::timeout(std::time::Duration::from_secs(5), outbound.ready())
            .await
            .expect("the permit was kept");
    }
}
