//! Room subscriptions on NATS: one core subscription per room with local members, delivering
//! each edge batch to the room's fan-out.

use std::sync::Arc;

use danmu_proto::internal::EdgeBatch;
use danmu_proto::subjects::{self, Scope};
use futures::StreamExt;
use prost::Message as _;
use tokio::task::AbortHandle;

use crate::rooms::{DeliveryLimits, EdgeSource, Room};
use crate::stats::Stats;

pub struct NatsEdge {
    pub client: async_nats::Client,
    pub limits: DeliveryLimits,
    pub stats: Arc<Stats>,
}

impl EdgeSource for NatsEdge {
    fn subscribe(&self, room: Arc<Room>) -> AbortHandle {
        let client = self.client.clone();
        let limits = self.limits;
        let stats = self.stats.clone();
        let subject = subjects::edge(&Scope::Room(room.id));
        tokio::spawn(async move {
            // Dropping the subscriber (when the task is aborted) unsubscribes.
            let mut subscriber = match client.subscribe(subject.clone()).await {
                Ok(subscriber) => subscriber,
                Err(error) => {
                    tracing::error!(%error, %subject, "subscribing to a room");
                    return;
                }
            };
            while let Some(message) = subscriber.next().await {
                match EdgeBatch::decode(message.payload) {
                    Ok(batch) => room.deliver(batch, limits, &stats),
                    Err(error) => {
                        tracing::warn!(%error, %subject, "undecodable edge batch");
                        stats.batch_received("corrupt");
                    }
                }
            }
        })
        .abort_handle()
    }
}
