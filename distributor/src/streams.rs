//! The push streams and the distributor's consumer on them.

use async_nats::jetstream::context::{CreateStreamError, GetStreamError};
use async_nats::jetstream::stream::ConsumerError;
use async_nats::jetstream::{self, consumer, stream};
use danmu_proto::subjects::{self, Priority};

use crate::config::{Config, WorkerConfig};

/// Durable consumer name, one per priority; every instance of a region shares it.
pub fn consumer_name(priority: Priority) -> String {
    format!("distributor-{}", priority.token())
}

/// The priority group instances pull in. With the pinned-client policy JetStream delivers to
/// one instance at a time, so a room's messages are never split across two instances (which
/// could reorder them); a standby takes over when the active one stops pulling.
pub const PRIORITY_GROUP: &str = "distributors";

pub fn stream_config(config: &Config, priority: Priority) -> stream::Config {
    let limits = &config.streams;
    stream::Config {
        name: subjects::push_stream(&config.region, priority),
        subjects: vec![subjects::ingest_filter(&config.region, priority)],
        max_age: limits.max_age,
        max_bytes: limits.max_bytes,
        max_messages: limits.max_messages,
        max_message_size: limits.max_message_bytes,
        duplicate_window: limits.duplicate_window,
        num_replicas: limits.replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        placement: config.place_in_region_cluster.then(|| stream::Placement {
            cluster: Some(config.region.clone()),
            tags: Vec::new(),
        }),
        description: Some(format!(
            "danmu {} priority pushes published in region {}",
            priority, config.region
        )),
        ..Default::default()
    }
}

pub fn consumer_config(priority: Priority, worker: &WorkerConfig) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(consumer_name(priority)),
        description: Some(
            "danmu distributor: aggregates, compresses, publishes edge batches".into(),
        ),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: worker.ack_wait,
        max_ack_pending: worker.max_ack_pending,
        deliver_policy: consumer::DeliverPolicy::All,
        priority_policy: consumer::PriorityPolicy::PinnedClient,
        priority_groups: vec![PRIORITY_GROUP.into()],
        priority_timeout: worker.failover,
        ..Default::default()
    }
}

/// Why a stream or the consumer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Creating or updating a stream was refused (e.g. its settings conflict with the existing
    /// stream's in a way JetStream cannot update).
    #[error("creating stream {name}: {source}")]
    Create {
        name: String,
        source: CreateStreamError,
    },
    /// The stream does not exist (with `ensure_streams = false`) or could not be read.
    #[error("opening stream {name}: {source}")]
    Open {
        name: String,
        source: GetStreamError,
    },
    /// The durable consumer could not be created or updated.
    #[error("creating consumer {consumer} on {stream}: {source}")]
    Consumer {
        consumer: String,
        stream: String,
        source: ConsumerError,
    },
}

/// The offline stream, shared by every region's distributors and read by gateways on connect.
pub async fn ensure_offline(js: &jetstream::Context, config: &Config) -> Result<(), StreamError> {
    let offline = &config.offline;
    js.create_or_update_stream(stream::Config {
        name: subjects::OFFLINE_STREAM.into(),
        subjects: vec![subjects::OFFLINE_FILTER.into()],
        max_age: offline.max_age,
        max_messages_per_subject: offline.max_per_user,
        num_replicas: config.streams.replicas,
        discard: stream::DiscardPolicy::Old,
        description: Some(
            "danmu: high-priority user pushes waiting for the user's next connect".into(),
        ),
        ..Default::default()
    })
    .await
    .map_err(|source| StreamError::Create {
        name: subjects::OFFLINE_STREAM.into(),
        source,
    })?;
    Ok(())
}

/// Creates (or updates) the stream and the durable consumer, returning the consumer.
pub async fn ensure(
    js: &jetstream::Context,
    config: &Config,
    priority: Priority,
    worker: &WorkerConfig,
) -> Result<consumer::Consumer<consumer::pull::Config>, StreamError> {
    let stream_config = stream_config(config, priority);
    let name = stream_config.name.clone();
    if config.ensure_streams {
        js.create_or_update_stream(stream_config)
            .await
            .map_err(|source| StreamError::Create {
                name: name.clone(),
                source,
            })?;
    }
    let stream = js
        .get_stream(&name)
        .await
        .map_err(|source| StreamError::Open {
            name: name.clone(),
            source,
        })?;
    stream
        .create_consumer(consumer_config(priority, worker))
        .await
        .map_err(|source| StreamError::Consumer {
            consumer: consumer_name(priority),
            stream: name,
            source,
        })
}
