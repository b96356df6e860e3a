//! The gateways control knows of: the latest [`NodeReport`] per KV key, and which of them are
//! healthy at a given `now`.
//!
//! KV entries that expire by the bucket's max age vanish without a delete marker, so a watcher
//! never hears that a gateway died: freshness is judged here, from the report's own timestamp.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use danmu_proto::internal::NodeReport;
use prost::Message;

/// Latest report per gateway (keyed by KV key, which gateways set to their node id).
#[derive(Debug, Clone)]
pub struct NodeTable {
    ttl_millis: i64,
    reports: HashMap<String, NodeReport>,
}

/// A report control would not list however fresh it is.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The value is not a prost-encoded `NodeReport`.
    #[error("not a NodeReport: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl NodeTable {
    /// An empty table; reports older than `ttl` (or further than `ttl` in the future, a skewed
    /// clock) are not healthy.
    pub fn new(ttl: Duration) -> Self {
        NodeTable {
            ttl_millis: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            reports: HashMap::new(),
        }
    }

    /// Stores `report` under `key`, replacing the gateway's previous one.
    pub fn put(&mut self, key: &str, mut report: NodeReport) {
        if report.node_id.is_empty() {
            report.node_id = key.to_owned();
        }
        self.reports.insert(key.to_owned(), report);
    }

    /// Decodes a KV value and stores it; on a decode error the previous report stays.
    pub fn put_encoded(&mut self, key: &str, value: &[u8]) -> Result<(), ReportError> {
        let report = NodeReport::decode(value)?;
        self.put(key, report);
        Ok(())
    }

    /// Forgets `key` (KV delete or purge); whether it was known.
    pub fn remove(&mut self, key: &str) -> bool {
        self.reports.remove(key).is_some()
    }

    /// Drops reports no longer fresh at `now_millis`; how many went. Bounds memory: gateways
    /// that died leave nothing behind.
    pub fn prune(&mut self, now_millis: i64) -> usize {
        let before = self.reports.len();
        let ttl = self.ttl_millis;
        self.reports
            .retain(|_, report| is_fresh(report, now_millis, ttl));
        before - self.reports.len()
    }

    /// Whether the report's timestamp lies within the TTL of `now_millis`.
    pub fn is_fresh(&self, report: &NodeReport, now_millis: i64) -> bool {
        is_fresh(report, now_millis, self.ttl_millis)
    }

    /// Fresh and not draining: a gateway clients may be sent to.
    pub fn is_healthy(&self, report: &NodeReport, now_millis: i64) -> bool {
        !report.draining && self.is_fresh(report, now_millis)
    }

    /// Healthy gateways at `now_millis`, in no particular order.
    pub fn healthy(&self, now_millis: i64) -> impl Iterator<Item = &NodeReport> {
        self.reports
            .values()
            .filter(move |report| self.is_healthy(report, now_millis))
    }

    /// Healthy gateway count per region.
    pub fn healthy_per_region(&self, now_millis: i64) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for report in self.healthy(now_millis) {
            *counts.entry(report.region.clone()).or_default() += 1;
        }
        counts
    }

    /// Whether any gateway, healthy or not, reports `region`.
    pub fn has_region(&self, region: &str) -> bool {
        self.reports.values().any(|report| report.region == region)
    }

    /// Number of reports held, healthy or not.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&NodeReport> {
        self.reports.get(key)
    }
}

fn is_fresh(report: &NodeReport, now_millis: i64, ttl_millis: i64) -> bool {
    now_millis.saturating_sub(report.reported_unix_millis).abs() <= ttl_millis
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, at: i64) -> NodeReport {
        NodeReport {
            node_id: id.into(),
            region: "A".into(),
            reported_unix_millis: at,
            ..NodeReport::default()
        }
    }

    #[test]
    fn freshness_is_a_window_around_now() {
        let table = NodeTable::new(Duration::from_secs(15));
        let now = 1_000_000;
        assert!(table.is_fresh(&report("g", now - 15_000), now));
        assert!(!table.is_fresh(&report("g", now - 15_001), now));
        // A gateway whose clock runs far ahead would otherwise be listed long after it died.
        assert!(!table.is_fresh(&report("g", now + 60_000), now));
    }

    #[test]
    fn put_decode_remove_prune() {
        let mut table = NodeTable::new(Duration::from_secs(15));
        let encoded = report("", 100_000).encode_to_vec();
        table.put_encoded("g1", &encoded).unwrap();
        assert_eq!(table.get("g1").unwrap().node_id, "g1");
        assert!(table.put_encoded("g2", b"\xff\xff\xff").is_err());
        assert_eq!(table.len(), 1);
        table.put("g2", report("g2", 50_000));
        assert_eq!(table.prune(100_000), 1);
        assert!(table.get("g2").is_none());
        assert!(table.remove("g1"));
        assert!(!table.remove("g1"));
        assert!(table.is_empty());
    }

    #[test]
    fn draining_is_not_healthy() {
        let mut table = NodeTable::new(Duration::from_secs(15));
        table.put(
            "g",
            NodeReport {
                draining: true,
                ..report("g", 0)
            },
        );
        assert!(table.get("g").is_some_and(|r| table.is_fresh(r, 0)));
        assert_eq!(table.healthy(0).count(), 0);
        assert!(table.healthy_per_region(0).is_empty());
        assert!(table.has_region("A"));
    }
}
