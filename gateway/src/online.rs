//! Online counts summed over every gateway of every region, as control last published them
//! (`OnlineTotals` on `danmu.online.totals.<region>`), for HEARTBEAT_REPLY. Plain code: the
//! caller passes `now`.
//!
//! Totals lag the truth by up to a report interval plus an aggregation interval, so a room's
//! count is never shown below this gateway's own members; totals older than `max_age` (control
//! gone) fall back to the local count rather than freezing a stale number.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use danmu_proto::internal::OnlineTotals;

#[derive(Debug)]
pub struct Totals {
    counts: HashMap<u64, u32>,
    received_at: Option<Instant>,
    max_age: Duration,
}

impl Totals {
    pub fn new(max_age: Duration) -> Self {
        Totals {
            counts: HashMap::new(),
            received_at: None,
            max_age,
        }
    }

    /// Replaces the table with control's latest sums.
    pub fn replace(&mut self, totals: OnlineTotals, now: Instant) {
        self.counts = totals
            .rooms
            .into_iter()
            .map(|room| (room.room, room.count))
            .collect();
        self.received_at = Some(now);
    }

    /// Members of `room` everywhere, given `local` members here.
    pub fn count(&self, room: u64, local: u32, now: Instant) -> u32 {
        let fresh = self
            .received_at
            .is_some_and(|at| now.saturating_duration_since(at) <= self.max_age);
        if !fresh {
            return local;
        }
        self.counts.get(&room).copied().unwrap_or(0).max(local)
    }
}

#[cfg(test)]
mod tests {
    use danmu_proto::internal::RoomCount;

    use super::*;

    fn totals(rooms: &[(u64, u32)]) -> OnlineTotals {
        OnlineTotals {
            rooms: rooms
                .iter()
                .map(|&(room, count)| RoomCount { room, count })
                .collect(),
            gateways: 2,
            computed_unix_millis: 0,
        }
    }

    #[test]
    fn fresh_totals_count_every_gateway_but_never_less_than_here() {
        let start = Instant::now();
        let mut table = Totals::new(Duration::from_secs(5));
        assert_eq!(table.count(1, 3, start), 3, "nothing received yet: local");
        table.replace(totals(&[(1, 10), (2, 4)]), start);
        assert_eq!(table.count(1, 3, start), 10);
        assert_eq!(table.count(2, 6, start), 6, "joined here since the sums");
        assert_eq!(table.count(9, 1, start), 1, "not in the sums yet");
        table.replace(totals(&[(2, 4)]), start);
        assert_eq!(table.count(1, 0, start), 0, "a replacement, not a merge");
    }

    #[test]
    fn stale_totals_fall_back_to_the_local_count() {
        let start = Instant::now();
        let mut table = Totals::new(Duration::from_secs(5));
        table.replace(totals(&[(1, 10)]), start);
        assert_eq!(table.count(1, 2, start + Duration::from_secs(5)), 10);
        assert_eq!(table.count(1, 2, start + Duration::from_secs(6)), 2);
    }
}
