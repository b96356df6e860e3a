//! Consumer lag, sampled from JetStream: how far the distributor is behind the business.

use std::time::Duration;

use async_nats::jetstream::consumer;
use danmu_proto::subjects::Priority;
use metrics::gauge;
use tokio_util::sync::CancellationToken;

pub async fn sample(
    mut consumer: consumer::Consumer<consumer::pull::Config>,
    priority: Priority,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match consumer.info().await {
            Ok(info) => {
                let prio = priority.token();
                gauge!("danmu_distributor_consumer_pending_messages", "priority" => prio)
                    .set(info.num_pending as f64);
                gauge!("danmu_distributor_consumer_ack_pending_messages", "priority" => prio)
                    .set(info.num_ack_pending as f64);
            }
            Err(error) => tracing::debug!(%error, "consumer info"),
        }
    }
}
