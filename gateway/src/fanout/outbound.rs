//! A connection's outbound queue, shared between the fan-out (which pushes) and the connection
//! task (which writes). Two queues, high priority ahead of low, bounded together in bytes:
//!
//! - low priority may fill at most half the bound; past that, new low-priority batches are shed;
//! - high priority may use the whole bound, shedding queued low priority to make room;
//! - a reader that cannot take even its high-priority traffic is cut off (slow consumer),
//!   instead of making the room wait or the gateway's memory grow.
//!
//! Every shed batch is reported with its message count so the shedding is counted exactly.
//! Items are `Bytes` handles to buffers shared by every member of a group, so queueing a batch
//! for 15,000 members copies nothing. An idle queue holds no allocation.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::task::AtomicWaker;

/// What [`Outbound::drain_into`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Drained {
    /// The queue overflowed: the connection must close as a slow consumer.
    pub overflowed: bool,
    /// On a timed queue ([`Outbound::timed`]): when the first batch of this drain was queued.
    pub queued_at: Option<Instant>,
}

/// What became of a push. `shed` counts low-priority messages dropped by it.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued {
        shed: u32,
    },
    /// A low-priority batch that did not fit: dropped.
    Shed {
        shed: u32,
    },
    /// High priority did not fit even without low priority: the connection must go.
    Overflow {
        shed: u32,
    },
    /// The connection is already closing.
    Closed,
}

#[derive(Default)]
struct Queue {
    high: VecDeque<Bytes>,
    /// Low-priority items with their message counts, for counting what is shed.
    low: VecDeque<(Bytes, u32)>,
    bytes: usize,
    low_bytes: usize,
    overflowed: bool,
    closed: bool,
    /// Timed queues only: when the first item since the last drain was pushed.
    first_at: Option<Instant>,
}

impl Queue {
    fn shed_low(&mut self) -> u32 {
        let shed = self.low.drain(..).map(|(_, messages)| messages).sum();
        self.bytes -= self.low_bytes;
        self.low_bytes = 0;
        shed
    }
}

pub struct Outbound {
    limit: usize,
    queue: Mutex<Queue>,
    /// Set by a push, taken by `poll_ready`: a wake-up kept while nobody waits.
    pushed: AtomicBool,
    /// The connection task, woken by a push. A waker slot rather than a `Notify`: waiting on
    /// it stores no future in the connection task (see `transport::task::Task::wait`).
    waker: AtomicWaker,
    /// Pushes note when the queue stopped being empty (a clock read per busy spell), so the
    /// connection task can report how long batches waited for it.
    timed: bool,
}

impl Outbound {
    pub fn new(limit_bytes: usize) -> Self {
        Outbound {
            limit: limit_bytes,
            queue: Mutex::new(Queue::default()),
            pushed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            timed: false,
        }
    }

    /// The same queue, noting when batches wait (for a sample of connections: the gateway times
    /// one in `queue_wait_sample`, 64 by default; the others never read the clock on a push).
    pub fn timed(mut self) -> Self {
        self.timed = true;
        self
    }

    /// Queues a batch of `messages` messages and wakes the connection task.
    pub fn push(&self, item: Bytes, high: bool, messages: u32) -> Push {
        let mut queue = self.queue.lock().expect("outbound lock");
        if queue.closed {
            return Push::Closed;
        }
        let len = item.len();
        let result = if high {
            let shed = if queue.bytes + len > self.limit {
                queue.shed_low()
            } else {
                0
            };
            if queue.bytes + len > self.limit {
                queue.closed = true;
                queue.overflowed = true;
                queue.high.clear();
                queue.bytes = 0;
                Push::Overflow { shed }
            } else {
                queue.bytes += len;
                queue.high.push_back(item);
                Push::Queued { shed }
            }
        } else if queue.low_bytes + len > self.limit / 2 || queue.bytes + len > self.limit {
            return Push::Shed { shed: messages };
        } else {
            queue.bytes += len;
            queue.low_bytes += len;
            queue.low.push_back((item, messages));
            Push::Queued { shed: 0 }
        };
        if self.timed && queue.first_at.is_none() {
            queue.first_at = Some(Instant::now());
        }
        drop(queue);
        self.pushed.store(true, Ordering::Release);
        self.waker.wake();
        result
    }

    /// Hands queued items to `take` (the connection's write queue): all high priority first
    /// (`take(item, true)`), then low priority (`take(item, false)`) until the write queue,
    /// which already held `pending` bytes, holds `low_budget` bytes, so low priority already
    /// handed over never delays much high priority. Says whether the queue overflowed, in
    /// which case the connection must close as a slow consumer.
    pub fn drain_into(
        &self,
        mut pending: usize,
        low_budget: usize,
        mut take: impl FnMut(Bytes, bool),
    ) -> Drained {
        let mut queue = self.queue.lock().expect("outbound lock");
        while let Some(item) = queue.high.pop_front() {
            queue.bytes -= item.len();
            pending += item.len();
            take(item, true);
        }
        while pending < low_budget {
            let Some((item, _)) = queue.low.pop_front() else {
                break;
            };
            pending += item.len();
            queue.bytes -= item.len();
            queue.low_bytes -= item.len();
            take(item, false);
        }
        // Emptied: give the memory back instead of keeping it for an idle connection (memory
        // per connection after a burst; one allocation per busy spell costs less).
        if queue.high.is_empty() && queue.high.capacity() > 0 {
            queue.high = VecDeque::new();
        }
        if queue.low.is_empty() && queue.low.capacity() > 0 {
            queue.low = VecDeque::new();
        }
        Drained {
            overflowed: queue.overflowed,
            queued_at: queue.first_at.take(),
        }
    }

    /// Refuses further pushes (the connection is closing).
    pub fn close(&self) {
        self.queue.lock().expect("outbound lock").closed = true;
    }

    /// Whether the connection is closing (pushes are refused).
    pub fn is_closed(&self) -> bool {
        self.queue.lock().expect("outbound lock").closed
    }

    /// Whether low priority is still waiting (the writer comes back for it).
    pub fn has_low(&self) -> bool {
        !self.queue.lock().expect("outbound lock").low.is_empty()
    }

    /// Ready when something was pushed since the last ready answer (a push while nobody waits
    /// is kept, so no wake-up is lost); otherwise registers `cx`'s waker for the next push.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pushed.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A push between the check and the registration woke the old waker: look again.
        if self.pushed.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().expect("outbound lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn high_priority_drains_first() {
        let outbound = Outbound::new(100);
        assert_eq!(
            outbound.push(Bytes::from_static(b"lo1"), false, 1),
            Push::Queued { shed: 0 }
        );
        assert_eq!(
            outbound.push(Bytes::from_static(b"hi1"), true, 1),
            Push::Queued { shed: 0 }
        );
        assert_eq!(
            outbound.push(Bytes::from_static(b"lo2"), false, 1),
            Push::Queued { shed: 0 }
        );
        assert_eq!(outbound.queued_bytes(), 9);
        let mut local = Vec::new();
        assert!(
            !outbound
                .drain_into(0, usize::MAX, |b, _| local.push(b))
                .overflowed
        );
        assert_eq!(local, ["hi1", "lo1", "lo2"]);
        assert_eq!(outbound.queued_bytes(), 0);
    }

    #[test]
    fn low_priority_fills_half_the_bound_then_is_shed_and_counted() {
        let outbound = Outbound::new(100);
        assert_eq!(outbound.push(bytes(40), false, 3), Push::Queued { shed: 0 });
        assert_eq!(outbound.push(bytes(20), false, 5), Push::Shed { shed: 5 });
        assert_eq!(outbound.push(bytes(10), false, 2), Push::Queued { shed: 0 });
        assert_eq!(outbound.queued_bytes(), 50);
    }

    #[test]
    fn high_priority_sheds_queued_low_priority_to_fit() {
        let outbound = Outbound::new(100);
        outbound.push(bytes(30), false, 3);
        outbound.push(bytes(20), false, 4);
        assert_eq!(outbound.push(bytes(40), true, 1), Push::Queued { shed: 0 });
        assert_eq!(outbound.push(bytes(40), true, 1), Push::Queued { shed: 7 });
        assert_eq!(outbound.queued_bytes(), 80);
        let mut local = Vec::new();
        outbound.drain_into(0, usize::MAX, |b, _| local.push(b));
        assert_eq!(local.len(), 2, "only the high-priority batches are left");
    }

    #[test]
    fn high_priority_that_cannot_fit_closes_the_queue() {
        let outbound = Outbound::new(100);
        outbound.push(bytes(20), false, 2);
        assert_eq!(outbound.push(bytes(90), true, 1), Push::Queued { shed: 2 });
        assert_eq!(
            outbound.push(bytes(20), true, 1),
            Push::Overflow { shed: 0 }
        );
        assert_eq!(outbound.queued_bytes(), 0);
        assert_eq!(outbound.push(bytes(1), true, 1), Push::Closed);
        let mut local = Vec::new();
        assert!(
            outbound
                .drain_into(0, usize::MAX, |b, _| local.push(b))
                .overflowed,
            "reports the overflow"
        );
        assert!(local.is_empty());
    }

    #[test]
    fn the_writer_takes_low_priority_within_its_budget() {
        let outbound = Outbound::new(1000);
        for _ in 0..4 {
            outbound.push(bytes(100), false, 1);
        }
        let mut local = Vec::new();
        outbound.drain_into(0, 250, |b, _| local.push(b));
        assert_eq!(local.len(), 3, "stops once the writer holds the budget");
        assert!(outbound.has_low());
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_lost() {
        let outbound = Outbound::new(10);
        outbound.push(Bytes::from_static(b"x"), true, 1);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            std::future::poll_fn(|cx| outbound.poll_ready(cx)),
        )
        .await
        .expect("the push was kept");
        let waiting = std::future::poll_fn(|cx| outbound.poll_ready(cx));
        assert!(
            futures::FutureExt::now_or_never(waiting).is_none(),
            "taken once"
        );
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_task() {
        let outbound = std::sync::Arc::new(Outbound::new(10));
        let waiter = tokio::spawn({
            let outbound = outbound.clone();
            async move { std::future::poll_fn(|cx| outbound.poll_ready(cx)).await }
        });
        tokio::task::yield_now().await;
        outbound.push(Bytes::from_static(b"x"), false, 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }

    #[test]
    fn a_timed_queue_says_when_its_first_batch_waited_from() {
        let outbound = Outbound::new(100).timed();
        let before = Instant::now();
        outbound.push(bytes(10), false, 1);
        outbound.push(bytes(10), true, 1);
        let drained = outbound.drain_into(0, usize::MAX, |_, _| {});
        let at = drained.queued_at.expect("timed");
        assert!(at >= before && at <= Instant::now());
        // Taken by the drain: an empty drain has no time.
        assert_eq!(
            outbound.drain_into(0, usize::MAX, |_, _| {}).queued_at,
            None
        );
        // An untimed queue never reads the clock.
        let plain = Outbound::new(100);
        plain.push(bytes(10), false, 1);
        assert_eq!(plain.drain_into(0, usize::MAX, |_, _| {}).queued_at, None);
    }
}
