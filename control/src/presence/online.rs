//! Online counts summed over every gateway of every region, as plain code: gateways' reports
//! in, totals and query answers out. The caller passes `now`.
//!
//! Each report replaces its gateway's previous one; a gateway not heard for
//! [`MISSED_REPORTS`] of its own intervals (it died, or lost its link) stops counting. A gateway
//! that shuts down cleanly sends an empty report and stops counting at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use danmu_proto::internal::{OnlineReport, OnlineTotals, RoomCount};
use danmu_proto::presence::{OnlineQuery, OnlineReply};

/// Report intervals a gateway may miss before its counts are dropped.
pub const MISSED_REPORTS: u32 = 3;

struct Latest {
    rooms: Vec<RoomCount>,
    received_at: Instant,
    interval: Duration,
}

/// The latest report of every gateway, and their sums.
#[derive(Default)]
pub struct OnlineSums {
    gateways: HashMap<String, Latest>,
    sums: HashMap<u64, u32>,
    computed_at: Option<Instant>,
}

impl OnlineSums {
    /// Takes a gateway's report in place of its previous one.
    pub fn apply(&mut self, report: OnlineReport, now: Instant) {
        if report.node_id.is_empty() {
            return;
        }
        let interval = Duration::from_millis(u64::from(report.interval_ms.max(100)));
        self.gateways.insert(
            report.node_id,
            Latest {
                rooms: report.rooms,
                received_at: now,
                interval,
            },
        );
    }

    /// Drops gateways gone silent and sums the rest; returns the totals to publish.
    pub fn recompute(&mut self, now: Instant, unix_millis: i64) -> OnlineTotals {
        self.gateways.retain(|_, latest| {
            now.saturating_duration_since(latest.received_at) <= latest.interval * MISSED_REPORTS
        });
        self.sums.clear();
        for latest in self.gateways.values() {
            for room in &latest.rooms {
                let sum = self.sums.entry(room.room).or_default();
                *sum = sum.saturating_add(room.count);
            }
        }
        self.sums.retain(|_, count| *count > 0);
        self.computed_at = Some(now);
        OnlineTotals {
            rooms: self
                .sums
                .iter()
                .map(|(&room, &count)| RoomCount { room, count })
                .collect(),
            gateways: self.gateways.len() as u32,
            computed_unix_millis: unix_millis,
        }
    }

    /// Members of `room` at the last recompute.
    pub fn count(&self, room: u64) -> u32 {
        self.sums.get(&room).copied().unwrap_or(0)
    }

    /// Connections in every room at the last recompute.
    pub fn total(&self) -> u64 {
        self.sums.values().map(|&count| u64::from(count)).sum()
    }

    /// The `n` most populated rooms, most first (ties: lower room id first).
    pub fn top(&self, n: usize) -> Vec<(u64, u32)> {
        let mut rooms: Vec<(u64, u32)> = self.sums.iter().map(|(&r, &c)| (r, c)).collect();
        rooms.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rooms.truncate(n);
        rooms
    }

    /// Answers a business query; `max_top` bounds a top-rooms answer.
    pub fn answer(&self, query: &OnlineQuery, max_top: usize, now: Instant) -> OnlineReply {
        let rooms = if query.rooms.is_empty() {
            self.top(query.top.unwrap_or(max_top).min(max_top))
        } else {
            query
                .rooms
                .iter()
                .map(|&room| (room, self.count(room)))
                .collect()
        };
        OnlineReply {
            rooms,
            total: self.total(),
            gateways: self.gateways.len() as u32,
            age_ms: self
                .computed_at
                .map_or(0, |at| now.saturating_duration_since(at).as_millis() as u64),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, rooms: &[(u64, u32)]) -> OnlineReport {
        OnlineReport {
            node_id: node.into(),
            region: "A".into(),
            rooms: rooms
                .iter()
                .map(|&(room, count)| RoomCount { room, count })
                .collect(),
            interval_ms: 1000,
            reported_unix_millis: 0,
        }
    }

    #[test]
    fn sums_the_latest_report_of_every_gateway() {
        let now = Instant::now();
        let mut sums = OnlineSums::default();
        sums.apply(report("a1", &[(1, 3), (2, 1)]), now);
        sums.apply(report("b1", &[(1, 4)]), now);
        sums.apply(report("a1", &[(1, 2)]), now); // replaces a1's first report
        let totals = sums.recompute(now, 7);
        assert_eq!((sums.count(1), sums.count(2), sums.total()), (6, 0, 6));
        assert_eq!(totals.gateways, 2);
        assert_eq!(totals.rooms, vec![RoomCount { room: 1, count: 6 }]);
        assert_eq!(totals.computed_unix_millis, 7);
    }

    #[test]
    fn a_silent_gateway_stops_counting_after_missed_reports() {
        let start = Instant::now();
        let mut sums = OnlineSums::default();
        sums.apply(report("a1", &[(1, 3)]), start);
        sums.apply(report("b1", &[(1, 4)]), start + Duration::from_secs(2));
        sums.recompute(start + Duration::from_secs(3), 0);
        assert_eq!(sums.count(1), 7, "3 s silent is within 3 intervals");
        sums.recompute(start + Duration::from_millis(3001), 0);
        assert_eq!(sums.count(1), 4);
    }

    #[test]
    fn an_empty_report_removes_the_gateway_at_once() {
        let now = Instant::now();
        let mut sums = OnlineSums::default();
        sums.apply(report("a1", &[(1, 3)]), now);
        sums.apply(report("a1", &[]), now);
        let totals = sums.recompute(now, 0);
        assert!(totals.rooms.is_empty());
        assert_eq!(sums.total(), 0);
    }

    #[test]
    fn queries_name_rooms_or_ask_for_the_top_ones() {
        let now = Instant::now();
        let mut sums = OnlineSums::default();
        sums.apply(report("a1", &[(1, 3), (2, 9), (3, 5), (4, 5)]), now);
        sums.recompute(now, 0);
        let named = sums.answer(
            &OnlineQuery {
                rooms: vec![2, 77],
                top: None,
            },
            20,
            now,
        );
        assert_eq!(named.rooms, vec![(2, 9), (77, 0)]);
        assert_eq!((named.total, named.gateways), (22, 1));
        let top = sums.answer(
            &OnlineQuery {
                rooms: vec![],
                top: Some(3),
            },
            20,
            now,
        );
        assert_eq!(top.rooms, vec![(2, 9), (3, 5), (4, 5)]);
        let capped = sums.answer(
            &OnlineQuery {
                rooms: vec![],
                top: Some(100),
            },
            2,
            now,
        );
        assert_eq!(capped.rooms.len(), 2);
    }
}
