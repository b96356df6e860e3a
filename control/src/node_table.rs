//! Keeps the [`NodeTable`] in step with the nodes KV bucket: a watch over every key (Put,
//! Delete, Purge), re-established when it fails, and a periodic pass that prunes reports gone
//! stale (KV expiry leaves no marker) and publishes the per-region gauge.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use futures::StreamExt;
use metrics::{counter, gauge};
use tracing::{debug, info, warn};

use crate::metrics::{NODE_REPORTS_INVALID, NODE_WATCH_RESTARTS, NODES};
use crate::routing::NodeTable;

/// The table shared by the watcher (writer) and the HTTP handlers (readers).
#[derive(Debug)]
pub struct SharedNodes {
    table: RwLock<NodeTable>,
    synced: AtomicBool,
}

impl SharedNodes {
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(SharedNodes {
            table: RwLock::new(NodeTable::new(ttl)),
            synced: AtomicBool::new(false),
        })
    }

    /// Read access; hold it only for a lookup.
    pub fn read(&self) -> RwLockReadGuard<'_, NodeTable> {
        // A panic while writing leaves a table that is still a valid map: keep serving.
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the table under the write lock.
    pub fn update<R>(&self, change: impl FnOnce(&mut NodeTable) -> R) -> R {
        change(&mut self.table.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the bucket's current contents have been read once (`/readyz`).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    pub fn mark_synced(&self) {
        if !self.synced.swap(true, Ordering::Relaxed) {
            info!(
                nodes = self.read().len(),
                "node table in sync with the KV bucket"
            );
        }
    }
}

fn unix_millis(now: SystemTime) -> i64 {
    i64::try_from(
        now.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

/// Applies one KV entry to the table at `now_millis`. A value that does not decode is logged
/// and counted, and the gateway's previous report stays.
pub fn apply_entry(
    table: &mut NodeTable,
    key: &str,
    operation: kv::Operation,
    value: &[u8],
    now_millis: i64,
) {
    match operation {
        kv::Operation::Put => match table.put_encoded(key, value) {
            Ok(()) => {
                if let Some(report) = table.get(key)
                    && !table.is_fresh(report, now_millis)
                {
                    debug!(
                        key,
                        reported_unix_millis = report.reported_unix_millis,
                        now_millis,
                        "node report outside the TTL window (stale, or the gateway's clock is off)"
                    );
                }
            }
            Err(error) => {
                counter!(NODE_REPORTS_INVALID).increment(1);
                warn!(key, %error, "ignoring a node report that does not decode");
            }
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            if table.remove(key) {
                debug!(key, "node removed");
            }
        }
    }
}

/// Follows the bucket forever, re-subscribing with backoff when the watch ends or fails.
pub async fn watch(kv: kv::Store, nodes: Arc<SharedNodes>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        match watch_once(&kv, &nodes).await {
            Ok(()) => warn!(bucket = %kv.name, "nodes KV watch ended; re-subscribing"),
            Err(error) => warn!(bucket = %kv.name, %error, "nodes KV watch failed; re-subscribing"),
        }
        counter!(NODE_WATCH_RESTARTS).increment(1);
        if started.elapsed() > Duration::from_secs(30) {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn watch_once(
    kv: &kv::Store,
    nodes: &SharedNodes,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Nothing stored: no entry will ever say "caught up", so say it here.
    let empty = kv.stream.get_info().await?.state.messages == 0;
    // Last value per key first, then every change.
    let mut watch = kv.watch_with_history(">").await?;
    if empty {
        nodes.mark_synced();
    }
    while let Some(entry) = watch.next().await {
        let entry = entry?;
        let now = unix_millis(SystemTime::now());
        nodes.update(|table| apply_entry(table, &entry.key, entry.operation, &entry.value, now));
        if entry.delta == 0 {
            nodes.mark_synced();
        }
    }
    Ok(())
}

/// Every `period`: drops stale reports and sets `danmu_control_nodes{region}` for every
/// region configured or seen so far (0 when it has no healthy gateway, so a region that goes
/// dark shows as 0 rather than its last value).
pub async fn publish_gauges(
    nodes: Arc<SharedNodes>,
    regions: impl IntoIterator<Item = String>,
    period: Duration,
) {
    let mut seen: BTreeSet<String> = regions.into_iter().collect();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = unix_millis(SystemTime::now());
        let counts = nodes.update(|table| {
            let pruned = table.prune(now);
            if pruned > 0 {
                debug!(pruned, "stale node reports dropped");
            }
            table.healthy_per_region(now)
        });
        seen.extend(counts.keys().cloned());
        for region in &seen {
            let count = counts.get(region).copied().unwrap_or(0);
            gauge!(NODES, "region" => region.clone()).set(count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use danmu_proto::internal::NodeReport;
    use prost::Message;

    #[test]
    fn put_delete_purge_and_garbage() {
        let mut table = NodeTable::new(Duration::from_secs(15));
        let report = NodeReport {
            node_id: "g1".into(),
            region: "A".into(),
            reported_unix_millis: 1_000,
            ..NodeReport::default()
        };
        apply_entry(
            &mut table,
            "g1",
            kv::Operation::Put,
            &report.encode_to_vec(),
            1_000,
        );
        apply_entry(
            &mut table,
            "g2",
            kv::Operation::Put,
            &report.encode_to_vec(),
            1_000,
        );
        assert_eq!(table.len(), 2);
        // Garbage keeps the previous report.
        apply_entry(&mut table, "g1", kv::Operation::Put, b"\xff\xff", 1_000);
        assert_eq!(table.get("g1"), Some(&report));
        apply_entry(&mut table, "g1", kv::Operation::Delete, b"", 1_000);
        apply_entry(&mut table, "g2", kv::Operation::Purge, b"", 1_000);
        apply_entry(&mut table, "g3", kv::Operation::Delete, b"", 1_000);
        assert!(table.is_empty());
    }

    #[test]
    fn synced_flag() {
        let nodes = SharedNodes::new(Duration::from_secs(15));
        assert!(!nodes.is_synced());
        nodes.mark_synced();
        nodes.mark_synced();
        assert!(nodes.is_synced());
    }
}
