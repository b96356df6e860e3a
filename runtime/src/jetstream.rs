//! JetStream buckets more than one service opens, defined once so they agree on the settings.

use std::time::Duration;

use async_nats::jetstream::context::CreateKeyValueError;
use async_nats::jetstream::{self, kv};

/// Why the nodes bucket could not be opened or created.
#[derive(Debug, thiserror::Error)]
#[error("opening KV bucket {bucket}: {source}")]
pub struct BucketError {
    pub bucket: String,
    pub source: CreateKeyValueError,
}

/// Opens the nodes bucket gateways report into and control reads, creating it when missing
/// with one history entry per key and `node_ttl` as the max age (a gateway that stops reporting
/// drops out). A bucket that exists already is used as it is, whatever its settings.
pub async fn nodes_bucket(
    js: &jetstream::Context,
    bucket: &str,
    node_ttl: Duration,
) -> Result<kv::Store, BucketError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.to_owned(),
            history: 1,
            max_age: node_ttl,
            description: "danmu gateways' health reports".into(),
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another service may have created it in between.
        Err(source) => js.get_key_value(bucket).await.map_err(|_| BucketError {
            bucket: bucket.to_owned(),
            source,
        }),
    }
}
