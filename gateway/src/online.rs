//! Online counts summed over every gateway of every region, as control last published them
//! (`OnlineTotals` on `danmu.online.totals.<region>`), for HEARTBEAT_REPLY. Plain code: the
//! caller passes `now`.
//!
//! Totals lag the truth by up to a report interval plus an aggregation interval. This gateway's
//! own share is known exactly, so the count shown is the sum minus what this gateway last
//! reported plus its members right now: a viewer who just joined here is in their own first
//! HEARTBEAT_REPLY (the sums alone would leave them out until the next report round trip).
//! Totals older than `max_age` (control gone) fall back to the local count rather than freezing
//! a stale number.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use danmu_proto::internal::OnlineTotals;

#[derive(Debug)]
pub struct Totals {
    counts: HashMap<u64, u32>,
    /// This gateway's per-room counts as last reported to control.
    sent: HashMap<u64, u32>,
    /// `sent` as it was when `counts` arrived: the share of `counts` that is this gateway's
    /// (control sums the latest report of each gateway, and reports go out every interval, so
    /// the sums that arrive after a report are taken to include it).
    reported: HashMap<u64, u32>,
    received_at: Option<Instant>,
    max_age: Duration,
}

impl Totals {
    pub fn new(max_age: Duration) -> Self {
        Totals {
            counts: HashMap::new(),
            sent: HashMap::new(),
            reported: HashMap::new(),
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
        self.reported = self.sent.clone();
        self.received_at = Some(now);
    }

    /// Records the per-room counts this gateway just reported to control, so that `count` can
    /// swap its share of the sums for the live local count.
    pub fn set_reported(&mut self, rooms: &[(u64, u32)]) {
        self.sent = rooms.iter().copied().collect();
    }

    /// Members of `room` everywhere, given `local` members here: the sums with this gateway's
    /// reported share replaced by `local`, never below `local`.
    pub fn count(&self, room: u64, local: u32, now: Instant) -> u32 {
        let fresh = self
            .received_at
            .is_some_and(|at| now.saturating_duration_since(at) <= self.max_age);
        if !fresh {
            return local;
        }
        let total = self.counts.get(&room).copied().unwrap_or(0);
        let reported = self.reported.get(&room).copied().unwrap_or(0);
        let elsewhere = total.saturating_sub(reported);
        elsewhere.saturating_add(local).max(local)
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
        table.set_reported(&[(1, 3), (2, 4)]);
        table.replace(totals(&[(1, 10), (2, 4)]), start);
        assert_eq!(table.count(1, 3, start), 10);
        assert_eq!(
            table.count(2, 6, start),
            6,
            "all of room 2 is here, 2 joined since"
        );
        assert_eq!(table.count(9, 1, start), 1, "not in the sums yet");
        table.replace(totals(&[(2, 4)]), start);
        assert_eq!(table.count(1, 0, start), 0, "a replacement, not a merge");
    }

    #[test]
    fn a_join_here_counts_at_once_on_top_of_the_other_gateways() {
        let start = Instant::now();
        let mut table = Totals::new(Duration::from_secs(5));
        // 10 members: 3 here (reported), 7 on other gateways.
        table.set_reported(&[(1, 3)]);
        table.replace(totals(&[(1, 10)]), start);
        assert_eq!(table.count(1, 3, start), 10);
        assert_eq!(
            table.count(1, 4, start),
            11,
            "the viewer who just joined here"
        );
        assert_eq!(
            table.count(1, 2, start),
            9,
            "one left here since the report"
        );
        table.set_reported(&[(1, 4)]);
        assert_eq!(
            table.count(1, 4, start),
            11,
            "reported, the sums not back yet"
        );
        table.replace(totals(&[(1, 11)]), start);
        assert_eq!(table.count(1, 4, start), 11, "the sums with the join");
    }

    #[test]
    fn stale_totals_fall_back_to_the_local_count() {
        let start = Instant::now();
        let mut table = Totals::new(Duration::from_secs(5));
        table.set_reported(&[(1, 2)]);
        table.replace(totals(&[(1, 10)]), start);
        assert_eq!(table.count(1, 2, start + Duration::from_secs(5)), 10);
        assert_eq!(table.count(1, 2, start + Duration::from_secs(6)), 2);
    }
}
