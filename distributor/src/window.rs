//! The adaptive aggregation window, as plain state driven by an explicit `now`.
//!
//! A quiet target's message leaves at once: latency matters more than batching when nothing
//! else is waiting. Once a target has flushed within the last `window`, it counts as hot and its
//! next messages wait until the window since the first of them has passed, or until the batch
//! reaches its message or byte bound, whichever comes first. A hot room at 1,000 msg/s with a
//! 20 ms window leaves as 50 batches a second instead of 1,000 messages, and each batch is
//! compressed once.
//!
//! Order is preserved per target: a target has at most one open batch, and batches come out in
//! the order they close.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Bounds of the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// Longest time a message waits for company.
    pub window: Duration,
    /// A batch closes when it holds this many messages.
    pub max_messages: usize,
    /// A batch closes when its payloads add up to this many bytes.
    pub max_bytes: usize,
}

impl WindowConfig {
    /// No aggregation at all: every message is its own batch.
    pub fn immediate() -> Self {
        WindowConfig {
            window: Duration::ZERO,
            max_messages: 1,
            max_bytes: usize::MAX,
        }
    }
}

/// A closed batch, ready to encode and publish.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch<K, M> {
    pub target: K,
    pub messages: Vec<M>,
}

/// What the aggregator needs to know about a message: its payload size.
pub trait PayloadLen {
    fn payload_len(&self) -> usize;
}

struct Open<M> {
    messages: Vec<M>,
    bytes: usize,
    closes_at: Instant,
}

struct TargetState<M> {
    open: Option<Open<M>>,
    last_flush: Option<Instant>,
}

/// Per-target aggregation windows.
pub struct Aggregator<K, M> {
    config: WindowConfig,
    targets: HashMap<K, TargetState<M>>,
    /// Close times of open batches; entries are checked against the target's state when popped,
    /// so a batch closed early by a size bound leaves a stale entry that is simply skipped.
    deadlines: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Clone + Eq + Hash + Ord, M: PayloadLen> Aggregator<K, M> {
    pub fn new(config: WindowConfig) -> Self {
        Aggregator {
            config,
            targets: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    /// Adds a message. Returns a batch when one closes because of it: either the target was
    /// quiet (the message leaves alone, at once) or the open batch reached a size bound.
    pub fn push(&mut self, target: K, message: M, now: Instant) -> Option<Batch<K, M>> {
        let config = self.config;
        let state = self.targets.entry(target.clone()).or_insert(TargetState {
            open: None,
            last_flush: None,
        });
        let len = message.payload_len();
        match &mut state.open {
            Some(open) => {
                open.bytes += len;
                open.messages.push(message);
                if open.messages.len() >= config.max_messages || open.bytes >= config.max_bytes {
                    let open = state.open.take().expect("checked above");
                    state.last_flush = Some(now);
                    return Some(Batch {
                        target,
                        messages: open.messages,
                    });
                }
                None
            }
            None => {
                let quiet = state
                    .last_flush
                    .is_none_or(|at| now.saturating_duration_since(at) >= config.window);
                if quiet || config.max_messages <= 1 || len >= config.max_bytes {
                    state.last_flush = Some(now);
                    return Some(Batch {
                        target,
                        messages: vec![message],
                    });
                }
                let closes_at = now + config.window;
                state.open = Some(Open {
                    messages: vec![message],
                    bytes: len,
                    closes_at,
                });
                self.deadlines.push(Reverse((closes_at, target)));
                None
            }
        }
    }

    /// When the next open batch closes, if any is open.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale_deadlines();
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    /// Closes every batch whose window has passed, oldest first, and forgets targets that have
    /// been quiet for a whole window so the map does not grow with every room ever seen.
    pub fn take_due(&mut self, now: Instant) -> Vec<Batch<K, M>> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Reverse((at, target)) = self.deadlines.pop().expect("peeked");
            let Some(state) = self.targets.get_mut(&target) else {
                continue;
            };
            if state.open.as_ref().is_some_and(|open| open.closes_at == at) {
                let open = state.open.take().expect("checked above");
                state.last_flush = Some(now);
                due.push(Batch {
                    target,
                    messages: open.messages,
                });
            }
        }
        let window = self.config.window;
        self.targets.retain(|_, state| {
            state.open.is_some()
                || state
                    .last_flush
                    .is_some_and(|at| now.saturating_duration_since(at) < window)
        });
        due
    }

    /// Closes every open batch regardless of its window (shutdown).
    pub fn take_all(&mut self) -> Vec<Batch<K, M>> {
        let mut open: Vec<(Instant, K, Vec<M>)> = self
            .targets
            .drain()
            .filter_map(|(target, state)| state.open.map(|o| (o.closes_at, target, o.messages)))
            .collect();
        open.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        self.deadlines.clear();
        open.into_iter()
            .map(|(_, target, messages)| Batch { target, messages })
            .collect()
    }

    /// Messages waiting in open batches.
    pub fn pending_messages(&self) -> usize {
        self.targets
            .values()
            .filter_map(|s| s.open.as_ref())
            .map(|o| o.messages.len())
            .sum()
    }

    fn drop_stale_deadlines(&mut self) {
        while let Some(Reverse((at, target))) = self.deadlines.peek() {
            let live = self
                .targets
                .get(target)
                .and_then(|s| s.open.as_ref())
                .is_some_and(|open| open.closes_at == *at);
            if live {
                break;
            }
            self.deadlines.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Msg(u32, usize);
    impl PayloadLen for Msg {
        fn payload_len(&self) -> usize {
            self.1
        }
    }

    fn config() -> WindowConfig {
        WindowConfig {
            window: Duration::from_millis(20),
            max_messages: 4,
            max_bytes: 1000,
        }
    }

    fn ids(batch: &Batch<u64, Msg>) -> Vec<u32> {
        batch.messages.iter().map(|m| m.0).collect()
    }

    #[test]
    fn a_quiet_rooms_message_leaves_at_once() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        let batch = agg.push(1u64, Msg(1, 10), t0).expect("leaves at once");
        assert_eq!(ids(&batch), [1]);
        assert_eq!(agg.next_deadline(), None);
        // A whole window later the room is quiet again.
        let batch = agg.push(1, Msg(2, 10), t0 + Duration::from_millis(20));
        assert_eq!(ids(&batch.unwrap()), [2]);
    }

    #[test]
    fn a_hot_rooms_messages_wait_for_the_window() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        agg.push(1u64, Msg(1, 10), t0).unwrap();
        assert!(
            agg.push(1, Msg(2, 10), t0 + Duration::from_millis(1))
                .is_none()
        );
        assert!(
            agg.push(1, Msg(3, 10), t0 + Duration::from_millis(5))
                .is_none()
        );
        assert_eq!(
            agg.next_deadline(),
            Some(t0 + Duration::from_millis(21)),
            "the window runs from the first waiting message"
        );
        assert!(agg.take_due(t0 + Duration::from_millis(20)).is_empty());
        let due = agg.take_due(t0 + Duration::from_millis(21));
        assert_eq!(due.len(), 1);
        assert_eq!(ids(&due[0]), [2, 3]);
        assert_eq!(agg.pending_messages(), 0);
    }

    #[test]
    fn size_bounds_close_a_batch_early_and_leave_no_stale_deadline() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        agg.push(1u64, Msg(0, 1), t0).unwrap();
        for i in 1..4 {
            assert!(agg.push(1, Msg(i, 1), t0).is_none());
        }
        let batch = agg.push(1, Msg(4, 1), t0).expect("max_messages reached");
        assert_eq!(ids(&batch), [1, 2, 3, 4]);
        assert_eq!(agg.next_deadline(), None);

        let t1 = t0 + Duration::from_millis(1);
        assert!(agg.push(1, Msg(5, 600), t1).is_none());
        let batch = agg.push(1, Msg(6, 600), t1).expect("max_bytes reached");
        assert_eq!(ids(&batch), [5, 6]);
    }

    #[test]
    fn rooms_are_independent_and_due_batches_come_oldest_first() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        agg.push(1u64, Msg(10, 1), t0).unwrap();
        agg.push(2u64, Msg(20, 1), t0).unwrap();
        agg.push(2, Msg(21, 1), t0 + Duration::from_millis(2));
        agg.push(1, Msg(11, 1), t0 + Duration::from_millis(3));
        let due = agg.take_due(t0 + Duration::from_millis(30));
        let order: Vec<(u64, Vec<u32>)> = due.iter().map(|b| (b.target, ids(b))).collect();
        assert_eq!(order, [(2, vec![21]), (1, vec![11])]);
    }

    #[test]
    fn quiet_rooms_are_forgotten() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        for room in 0..100u64 {
            agg.push(room, Msg(0, 1), t0).unwrap();
        }
        agg.take_due(t0 + Duration::from_secs(1));
        assert!(agg.targets.is_empty());
    }

    #[test]
    fn take_all_flushes_everything_open() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        agg.push(1u64, Msg(1, 1), t0).unwrap();
        agg.push(1, Msg(2, 1), t0);
        agg.push(3u64, Msg(3, 1), t0).unwrap();
        agg.push(3, Msg(4, 1), t0 + Duration::from_millis(1));
        let all = agg.take_all();
        assert_eq!(all.len(), 2);
        assert_eq!(ids(&all[0]), [2]);
        assert_eq!(ids(&all[1]), [4]);
        assert_eq!(agg.next_deadline(), None);
    }

    #[test]
    fn immediate_config_never_waits() {
        let mut agg = Aggregator::new(WindowConfig::immediate());
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(ids(&agg.push(1u64, Msg(i, 1), t0).unwrap()), [i]);
        }
    }
}
