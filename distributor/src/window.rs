//! The adaptive aggregation window, as plain state driven by an explicit `now`.
//!
//! A quiet target's message leaves at once: latency matters more than batching when nothing
//! else is waiting. Once a target has flushed within its current window, it counts as hot and
//! its next messages wait until the window since the first of them has passed, or until the
//! batch reaches its message or byte bound, whichever comes first.
//!
//! The window widens with the target's rate. Every batch costs a gateway one write per member
//! whatever it holds, so frames per delivered message are what a hot room costs; a wider window
//! lowers them, and a hot room can afford the wait because its viewers see a stream, not one
//! message. Up to `knee_rate` messages per second the window is `window` (20 ms by default);
//! above it the window grows in proportion to the rate, up to `max_window` (100 ms by default,
//! half the 200 ms publish-to-client budget of SPEC's hot-room bar, so the fabric's other hops
//! keep the other half). A room at 1,000 msg/s thus leaves as 10 batches a second instead of 50
//! (or 1,000 unbatched): each member gets 10 frames a second. The rate is an exponentially
//! weighted average over about a second (`RATE_TAU`), so a burst does not widen the window of a
//! room that is otherwise quiet for long.
//!
//! A target past `max_rate` is degraded (seed 002: a big room gets fewer messages per viewer
//! rather than a fabric that falls behind): of its messages, a fraction `max_rate / rate` is
//! kept, spread evenly by a credit counter, and the rest are handed back as sampled out for the
//! caller to acknowledge and count. The rate estimate counts every message, kept or not, so the
//! kept rate settles at `max_rate`. Only the low-priority lane has a finite `max_rate`: high
//! priority (gifts that were paid for, notices) is never sampled.
//!
//! Order is preserved per target: a target has at most one open batch, and batches come out in
//! the order they close.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Time constant of a target's rate estimate: messages older than a few of these hardly count.
pub const RATE_TAU: Duration = Duration::from_secs(1);

/// Bounds of the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowConfig {
    /// The window of a hot target up to `knee_rate`: how long a message waits for company.
    pub window: Duration,
    /// The widest window, reached by targets far above `knee_rate`; at most this long does a
    /// message wait. Not below `window` (a narrower value means `window` throughout).
    pub max_window: Duration,
    /// Messages per second above which a target's window grows in proportion to its rate.
    pub knee_rate: f64,
    /// A batch closes when it holds this many messages.
    pub max_messages: usize,
    /// A batch closes when its payloads add up to this many bytes.
    pub max_bytes: usize,
    /// Messages per second a target may pass; beyond, its messages are sampled down to this
    /// rate. `f64::INFINITY`: never sampled.
    pub max_rate: f64,
}

impl WindowConfig {
    /// No aggregation at all: every message is its own batch.
    pub fn immediate() -> Self {
        WindowConfig {
            window: Duration::ZERO,
            max_window: Duration::ZERO,
            knee_rate: f64::INFINITY,
            max_messages: 1,
            max_bytes: usize::MAX,
            max_rate: f64::INFINITY,
        }
    }

    /// The window for a target receiving `rate` messages per second:
    /// `window × max(1, rate / knee_rate)`, capped at `max_window`.
    pub fn window_at(&self, rate: f64) -> Duration {
        if rate <= self.knee_rate || self.max_window <= self.window {
            return self.window;
        }
        self.window
            .mul_f64((rate / self.knee_rate).min(1e6))
            .min(self.max_window)
    }
}

/// What became of a pushed message.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<K, M> {
    /// It waits in its target's open batch.
    Waiting,
    /// A batch closed because of it (it left alone, or the batch reached a size bound).
    Closed(Batch<K, M>),
    /// Its target is past `max_rate`: dropped from delivery, handed back to be acknowledged
    /// and counted.
    SampledOut(M),
}

impl<K, M> Pushed<K, M> {
    /// The batch that closed, if one did.
    pub fn batch(self) -> Option<Batch<K, M>> {
        match self {
            Pushed::Closed(batch) => Some(batch),
            _ => None,
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
    /// Messages per second, exponentially weighted (see [`RATE_TAU`]), as of `rate_at`.
    rate: f64,
    rate_at: Instant,
    /// Sampling credit while past `max_rate`: each message adds `max_rate / rate`, a kept one
    /// spends 1.
    credit: f64,
}

impl<M> TargetState<M> {
    /// Counts one message at `now` into the rate: the old estimate decays by `e^(-dt/τ)` and
    /// the message adds `1/τ`, so a steady `r` msg/s converges to `r`.
    fn count(&mut self, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(self.rate_at).as_secs_f64();
        let tau = RATE_TAU.as_secs_f64();
        self.rate = self.rate * (-dt / tau).exp() + 1.0 / tau;
        self.rate_at = now;
        self.rate
    }
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

    /// Adds a message. A batch closes because of it when the target was quiet (the message
    /// leaves alone, at once) or the open batch reached a size bound; a target past
    /// `max_rate` may sample it out.
    pub fn push(&mut self, target: K, message: M, now: Instant) -> Pushed<K, M> {
        let config = self.config;
        let state = self.targets.entry(target.clone()).or_insert(TargetState {
            open: None,
            last_flush: None,
            rate: 0.0,
            rate_at: now,
            credit: 1.0,
        });
        let rate = state.count(now);
        if rate > config.max_rate {
            state.credit = (state.credit + config.max_rate / rate).min(1.0);
            // (A tolerance, so that three thirds make a whole.)
            if state.credit < 1.0 - 1e-9 {
                return Pushed::SampledOut(message);
            }
            state.credit -= 1.0;
        } else {
            state.credit = 1.0;
        }
        let window = config.window_at(rate);
        let len = message.payload_len();
        match &mut state.open {
            Some(open) => {
                open.bytes += len;
                open.messages.push(message);
                if open.messages.len() >= config.max_messages || open.bytes >= config.max_bytes {
                    let open = state.open.take().expect("checked above");
                    state.last_flush = Some(now);
                    return Pushed::Closed(Batch {
                        target,
                        messages: open.messages,
                    });
                }
                Pushed::Waiting
            }
            None => {
                let quiet = state
                    .last_flush
                    .is_none_or(|at| now.saturating_duration_since(at) >= window);
                if quiet || config.max_messages <= 1 || len >= config.max_bytes {
                    state.last_flush = Some(now);
                    return Pushed::Closed(Batch {
                        target,
                        messages: vec![message],
                    });
                }
                let closes_at = now + window;
                state.open = Some(Open {
                    messages: vec![message],
                    bytes: len,
                    closes_at,
                });
                self.deadlines.push(Reverse((closes_at, target)));
                Pushed::Waiting
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
        // A target is kept while a batch is open or its rate still counts; then it is quiet
        // whatever its window was, and its rate would start near zero again anyway.
        let keep = self
            .config
            .max_window
            .max(self.config.window)
            .max(RATE_TAU * 3);
        self.targets.retain(|_, state| {
            state.open.is_some() || now.saturating_duration_since(state.rate_at) < keep
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
            max_window: Duration::from_millis(20),
            knee_rate: 50.0,
            max_messages: 4,
            max_bytes: 1000,
            max_rate: f64::INFINITY,
        }
    }

    fn growing() -> WindowConfig {
        WindowConfig {
            max_window: Duration::from_millis(100),
            max_messages: 10_000,
            max_bytes: usize::MAX,
            ..config()
        }
    }

    #[test]
    fn the_window_grows_with_the_rate_up_to_its_bound() {
        let c = growing();
        assert_eq!(c.window_at(0.0), Duration::from_millis(20));
        assert_eq!(c.window_at(50.0), Duration::from_millis(20));
        assert_eq!(c.window_at(100.0), Duration::from_millis(40));
        assert_eq!(c.window_at(250.0), Duration::from_millis(100));
        assert_eq!(c.window_at(1e9), Duration::from_millis(100));
        assert_eq!(WindowConfig::immediate().window_at(1e9), Duration::ZERO);
    }

    /// Publishes `rate` msg/s into room 1 for `seconds` and returns the batch sizes.
    fn run(rate: u32, seconds: u32) -> Vec<usize> {
        let mut agg = Aggregator::new(growing());
        let t0 = Instant::now();
        let step = Duration::from_secs(1) / rate;
        let mut sizes = Vec::new();
        for i in 0..rate * seconds {
            let now = t0 + step * i;
            sizes.extend(agg.take_due(now).iter().map(|b| b.messages.len()));
            sizes.extend(
                agg.push(1u64, Msg(i, 10), now)
                    .batch()
                    .map(|b| b.messages.len()),
            );
        }
        sizes
    }

    #[test]
    fn frames_per_message_fall_as_a_room_heats_up() {
        // A quiet room (2 msg/s): every message leaves alone, at once.
        assert!(run(2, 5).iter().all(|&size| size == 1));
        // 40 msg/s, under the knee: the 20 ms window holds one message, so batches of 1.
        let warm = run(40, 5);
        // 1,000 msg/s: once the rate estimate has caught up (about a second), 100 ms batches.
        let hot = run(1000, 5);
        let settled: Vec<usize> = hot.iter().copied().skip(hot.len() / 2).collect();
        assert!(
            settled.iter().all(|&size| (95..=101).contains(&size)),
            "{settled:?}"
        );
        let frames_per_message =
            |sizes: &[usize]| sizes.len() as f64 / sizes.iter().sum::<usize>() as f64;
        assert!(frames_per_message(&warm) > 0.5, "{warm:?}");
        assert!(
            frames_per_message(&hot) < 0.02,
            "{}",
            frames_per_message(&hot)
        );
    }

    #[test]
    fn a_room_that_cools_down_sends_at_once_again() {
        let mut agg = Aggregator::new(growing());
        let t0 = Instant::now();
        for i in 0..2000u32 {
            let now = t0 + Duration::from_millis(1) * i;
            agg.take_due(now);
            agg.push(1u64, Msg(i, 10), now).batch();
        }
        let later = t0 + Duration::from_secs(10);
        agg.take_due(later);
        let batch = agg
            .push(1u64, Msg(9999, 10), later)
            .batch()
            .expect("quiet again: leaves at once");
        assert_eq!(ids(&batch), [9999]);
    }

    fn ids(batch: &Batch<u64, Msg>) -> Vec<u32> {
        batch.messages.iter().map(|m| m.0).collect()
    }

    #[test]
    fn a_quiet_rooms_message_leaves_at_once() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        let batch = agg
            .push(1u64, Msg(1, 10), t0)
            .batch()
            .expect("leaves at once");
        assert_eq!(ids(&batch), [1]);
        assert_eq!(agg.next_deadline(), None);
        // A whole window later the room is quiet again.
        let batch = agg
            .push(1, Msg(2, 10), t0 + Duration::from_millis(20))
            .batch();
        assert_eq!(ids(&batch.unwrap()), [2]);
    }

    #[test]
    fn a_hot_rooms_messages_wait_for_the_window() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        agg.push(1u64, Msg(1, 10), t0).batch().unwrap();
        assert!(
            agg.push(1, Msg(2, 10), t0 + Duration::from_millis(1))
                .batch()
                .is_none()
        );
        assert!(
            agg.push(1, Msg(3, 10), t0 + Duration::from_millis(5))
                .batch()
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
        agg.push(1u64, Msg(0, 1), t0).batch().unwrap();
        for i in 1..4 {
            assert!(agg.push(1, Msg(i, 1), t0).batch().is_none());
        }
        let batch = agg
            .push(1, Msg(4, 1), t0)
            .batch()
            .expect("max_messages reached");
        assert_eq!(ids(&batch), [1, 2, 3, 4]);
        assert_eq!(agg.next_deadline(), None);

        let t1 = t0 + Duration::from_millis(1);
        assert!(agg.push(1, Msg(5, 600), t1).batch().is_none());
        let batch = agg
            .push(1, Msg(6, 600), t1)
            .batch()
            .expect("max_bytes reached");
        assert_eq!(ids(&batch), [5, 6]);
    }

    #[test]
    fn rooms_are_independent_and_due_batches_come_oldest_first() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        agg.push(1u64, Msg(10, 1), t0).batch().unwrap();
        agg.push(2u64, Msg(20, 1), t0).batch().unwrap();
        agg.push(2, Msg(21, 1), t0 + Duration::from_millis(2))
            .batch();
        agg.push(1, Msg(11, 1), t0 + Duration::from_millis(3))
            .batch();
        let due = agg.take_due(t0 + Duration::from_millis(30));
        let order: Vec<(u64, Vec<u32>)> = due.iter().map(|b| (b.target, ids(b))).collect();
        assert_eq!(order, [(2, vec![21]), (1, vec![11])]);
    }

    #[test]
    fn quiet_rooms_are_forgotten() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        for room in 0..100u64 {
            agg.push(room, Msg(0, 1), t0).batch().unwrap();
        }
        agg.take_due(t0 + RATE_TAU * 3);
        assert!(agg.targets.is_empty());
    }

    #[test]
    fn take_all_flushes_everything_open() {
        let mut agg = Aggregator::new(config());
        let t0 = Instant::now();
        agg.push(1u64, Msg(1, 1), t0).batch().unwrap();
        agg.push(1, Msg(2, 1), t0).batch();
        agg.push(3u64, Msg(3, 1), t0).batch().unwrap();
        agg.push(3, Msg(4, 1), t0 + Duration::from_millis(1))
            .batch();
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
            assert_eq!(ids(&agg.push(1u64, Msg(i, 1), t0).batch().unwrap()), [i]);
        }
    }

    /// Pushes `rate` msg/s into room 1 for `seconds` with `max_rate`; returns the ids kept
    /// (in batches, in order) and the number sampled out.
    fn sampled(rate: u32, max_rate: f64, seconds: u32) -> (Vec<u32>, usize) {
        let mut agg = Aggregator::new(WindowConfig {
            max_rate,
            ..growing()
        });
        let t0 = Instant::now();
        let step = Duration::from_secs(1) / rate;
        let (mut kept, mut out) = (Vec::new(), 0);
        for i in 0..rate * seconds {
            let now = t0 + step * i;
            for batch in agg.take_due(now) {
                kept.extend(ids(&batch));
            }
            match agg.push(1u64, Msg(i, 10), now) {
                Pushed::Closed(batch) => kept.extend(ids(&batch)),
                Pushed::SampledOut(_) => out += 1,
                Pushed::Waiting => {}
            }
        }
        for batch in agg.take_all() {
            kept.extend(ids(&batch));
        }
        (kept, out)
    }

    #[test]
    fn a_room_past_max_rate_is_sampled_down_to_it_evenly() {
        let (kept, out) = sampled(1000, 100.0, 6);
        assert_eq!(kept.len() + out, 6000, "every message kept or handed back");
        // The rate estimate takes about a second to reach 1,000: count from second 2 on.
        let settled: Vec<u32> = kept.iter().copied().filter(|&i| i >= 2000).collect();
        let per_second = settled.len() as f64 / 4.0;
        assert!(
            (95.0..=105.0).contains(&per_second),
            "{per_second} kept per second"
        );
        // Evenly: one kept in every ~10, never a long gap (the viewers see a thinner stream,
        // not a stream with holes).
        let widest = settled.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest <= 11, "widest gap {widest}");
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "order kept");
    }

    #[test]
    fn a_room_under_max_rate_loses_nothing() {
        let (kept, out) = sampled(500, 600.0, 5);
        assert_eq!((kept.len(), out), (2500, 0));
        let (kept, out) = sampled(500, f64::INFINITY, 5);
        assert_eq!((kept.len(), out), (2500, 0));
    }

    #[test]
    fn a_burst_into_a_quiet_room_is_not_sampled() {
        // 150 messages at once into a room allowed 200 msg/s: the estimate reaches 150.
        let mut agg = Aggregator::new(WindowConfig {
            max_rate: 200.0,
            ..growing()
        });
        let t0 = Instant::now();
        for i in 0..150 {
            assert!(!matches!(
                agg.push(1u64, Msg(i, 1), t0),
                Pushed::SampledOut(_)
            ));
        }
    }
}
