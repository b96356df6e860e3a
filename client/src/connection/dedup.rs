//! Delivery ids already handed to the application, on one connection (ids count up from 1 per
//! connection, `docs/protocol.md` "High reach"), so a retried high-priority message is shown
//! once. Bounded: the oldest ids are forgotten past [`Dedup::CAPACITY`]; the gateway gives up
//! on a delivery after a few retries (`reach_max_retries`, 1 s apart by default), long before
//! that many newer ones arrive.

use std::collections::{HashSet, VecDeque};

/// A bounded set of recently seen delivery ids.
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashSet<u32>,
    order: VecDeque<u32>,
}

impl Dedup {
    /// Ids remembered.
    pub const CAPACITY: usize = 4096;

    /// Records `id`; false when it was seen already (a duplicate).
    pub fn insert(&mut self, id: u32) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_refused_until_forgotten() {
        let mut dedup = Dedup::default();
        assert!(dedup.insert(1));
        assert!(!dedup.insert(1));
        for id in 2..=Dedup::CAPACITY as u32 + 1 {
            assert!(dedup.insert(id));
        }
        assert_eq!(dedup.seen.len(), Dedup::CAPACITY);
        assert!(dedup.insert(1), "the oldest id is forgotten");
        assert!(!dedup.insert(Dedup::CAPACITY as u32));
    }
}
