//! Health reports into the nodes KV bucket, which control reads to build node lists. The
//! bucket's TTL removes a gateway that stops reporting; a clean shutdown deletes its key at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use danmu_proto::internal::NodeReport;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

pub struct Reporter {
    pub store: kv::Store,
    pub node: NodeReport,
    pub capacity: u64,
    pub interval: Duration,
    pub stats: Arc<Stats>,
    /// The QUIC port's certificates, read at each report so `cert_sha256` follows a reload;
    /// `None` without a QUIC port.
    pub quic_certificates: Option<Arc<crate::transport::tls::Certificates>>,
}

/// Opens (or creates) the bucket with the TTL every reporter and control agree on
/// ([`danmu_runtime::jetstream::nodes_bucket`], the one definition).
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    ttl: Duration,
) -> anyhow::Result<kv::Store> {
    Ok(danmu_runtime::jetstream::nodes_bucket(js, bucket, ttl).await?)
}

impl Reporter {
    fn report(&self) -> NodeReport {
        let connections = self.stats.connections_open.load(Ordering::Relaxed).max(0) as u64;
        let cert_sha256 = self
            .quic_certificates
            .as_ref()
            .and_then(|certificates| certificates.first_sha256())
            .map(|digest| digest.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default();
        NodeReport {
            cert_sha256,
            connections,
            rooms: self.stats.rooms.load(Ordering::Relaxed).max(0) as u64,
            load: connections as f64 / self.capacity as f64,
            reported_unix_millis: crate::unix_millis() as i64,
            ..self.node.clone()
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let report = self.report();
            if let Err(error) = self
                .store
                .put(&self.node.node_id, report.encode_to_vec().into())
                .await
            {
                tracing::warn!(%error, "health report");
            }
        }
        if let Err(error) = self.store.delete(&self.node.node_id).await {
            tracing::warn!(%error, "removing the health report");
        }
    }
}
