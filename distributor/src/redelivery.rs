//! Holding redelivered messages until they can be released in stream order.
//!
//! JetStream redelivers what a dead instance left unacked before any new message, but not
//! necessarily in stream order. Aggregating them as they come would reorder a room, and gateways
//! (which drop what is at or below the last sequence they delivered) would then lose the ones
//! that arrive late. So redeliveries wait here until the first new message shows the
//! redeliveries are over (or a short hold passes), and leave sorted.

use std::time::{Duration, Instant};

pub struct Redeliveries<M> {
    hold: Duration,
    held: Vec<(u64, M)>,
    release_at: Option<Instant>,
}

impl<M> Redeliveries<M> {
    pub fn new(hold: Duration) -> Self {
        Redeliveries {
            hold,
            held: Vec::new(),
            release_at: None,
        }
    }

    pub fn hold(&mut self, stream_seq: u64, message: M, now: Instant) {
        self.held.push((stream_seq, message));
        self.release_at.get_or_insert(now + self.hold);
    }

    /// When held messages must leave even if no new message arrives.
    pub fn deadline(&self) -> Option<Instant> {
        self.release_at
    }

    /// Everything held, in stream order.
    pub fn release(&mut self) -> Vec<M> {
        self.release_at = None;
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|(seq, _)| *seq);
        held.into_iter().map(|(_, m)| m).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_stream_order_with_a_deadline_from_the_first_held() {
        let mut held = Redeliveries::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(held.deadline(), None);
        held.hold(695, "695", t0);
        held.hold(688, "688", t0 + Duration::from_millis(5));
        held.hold(697, "697", t0 + Duration::from_millis(6));
        assert_eq!(held.deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(held.release(), ["688", "695", "697"]);
        assert_eq!(held.deadline(), None);
        assert!(held.release().is_empty());
    }
}
