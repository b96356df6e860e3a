//! Group subscriptions on NATS: while a group has local members, one subscription per priority,
//! each on its own NATS connection, delivering edge batches to the group's fan-out. High
//! priority never waits behind a low-priority flood, neither on the socket nor in a channel.

use std::sync::Arc;

use danmu_proto::internal::EdgeBatch;
use danmu_proto::subjects::{self, Priority};
use futures::StreamExt;
use prost::Message as _;
use tokio::task::AbortHandle;

use crate::groups::{DeliveryLimits, EdgeSource, Group};
use crate::stats::Stats;

pub struct NatsEdge {
    /// Connection carrying high-priority batches.
    pub high: async_nats::Client,
    /// Connection carrying low-priority batches.
    pub low: async_nats::Client,
    pub limits: DeliveryLimits,
    pub stats: Arc<Stats>,
}

impl EdgeSource for NatsEdge {
    fn subscribe(&self, group: Arc<Group>) -> AbortHandle {
        let (high, low) = (self.high.clone(), self.low.clone());
        let limits = self.limits;
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let high_subject = subjects::edge(Priority::High, &group.scope);
            let low_subject = subjects::edge(Priority::Low, &group.scope);
            // Dropping the subscribers (when the task is aborted) unsubscribes.
            let (mut high_batches, mut low_batches) = match tokio::try_join!(
                high.subscribe(high_subject.clone()),
                low.subscribe(low_subject.clone())
            ) {
                Ok(subscribers) => subscribers,
                Err(error) => {
                    tracing::error!(%error, %high_subject, "subscribing a group");
                    return;
                }
            };
            loop {
                let message = tokio::select! {
                    biased;
                    Some(message) = high_batches.next() => message,
                    Some(message) = low_batches.next() => message,
                    else => return,
                };
                match EdgeBatch::decode(message.payload) {
                    Ok(batch) => {
                        group.deliver(batch, limits, &stats);
                        // A user-scope high-priority batch is a request: confirming it tells the
                        // distributor the user is online, so it is not stored for later.
                        if let Some(reply) = message.reply {
                            let _ = high.publish(reply, bytes::Bytes::new()).await;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, subject = %message.subject, "undecodable edge batch");
                        stats.batch_received("corrupt");
                    }
                }
            }
        })
        .abort_handle()
    }
}
