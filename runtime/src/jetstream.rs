//! JetStream buckets more than one service opens, defined once so they agree on the settings.

use std::time::Duration;

use async_nats::jetstream::context::{CreateKeyValueError, CreateKeyValueErrorKind};
use async_nats::jetstream::{self, kv};

/// Why the nodes bucket could not be opened or created.
#[derive(Debug, thiserror::Error)]
#[error("opening KV bucket {bucket}: {source}")]
pub struct BucketError {
    pub bucket: String,
    pub source: CreateKeyValueError,
}

/// Waits between attempts at opening the nodes bucket: JetStream may refuse for a moment while
/// a server starts, elects its meta leader or enables JetStream for an account, and a service
/// starting beside it should not exit for that. About 3 s in all, then the last error stands.
pub const BUCKET_RETRY: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];

/// Opens the nodes bucket gateways report into and control reads, creating it when missing
/// with one history entry per key and `node_ttl` as the max age (a gateway that stops reporting
/// drops out). A bucket that exists already is used as it is, whatever its settings. Errors the
/// server may get over (see [`is_transient`]) are retried after each of [`BUCKET_RETRY`]; the
/// error returned is the last one.
pub async fn nodes_bucket(
    js: &jetstream::Context,
    bucket: &str,
    node_ttl: Duration,
) -> Result<kv::Store, BucketError> {
    retry_transient(&BUCKET_RETRY, || open_or_create(js, bucket, node_ttl)).await
}

async fn open_or_create(
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

/// Whether a failed bucket creation may succeed when tried again: a JetStream API error (the
/// server refused for now: storage not ready, no meta leader, the account's JetStream being
/// enabled), a failed create or a timeout. A bad name or history is the configuration's fault
/// and is not retried.
pub fn is_transient(kind: CreateKeyValueErrorKind) -> bool {
    matches!(
        kind,
        CreateKeyValueErrorKind::JetStream
            | CreateKeyValueErrorKind::BucketCreate
            | CreateKeyValueErrorKind::TimedOut
    )
}

/// Runs `attempt` until it succeeds, fails for good, or `waits` are used up (one wait before
/// each retry), logging each transient failure at `warn`.
async fn retry_transient<T, F, Fut>(waits: &[Duration], mut attempt: F) -> Result<T, BucketError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BucketError>>,
{
    let mut waits = waits.iter();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if is_transient(error.source.kind()) => match waits.next() {
                Some(wait) => {
                    tracing::warn!(%error, ?wait, "the nodes bucket is not available yet: retrying");
                    tokio::time::sleep(*wait).await;
                }
                None => return Err(error),
            },
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: CreateKeyValueErrorKind) -> BucketError {
        BucketError {
            bucket: "danmu_nodes".into(),
            source: CreateKeyValueError::new(kind),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_one_succeeds() {
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let result = retry_transient(&BUCKET_RETRY, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(failure(CreateKeyValueErrorKind::JetStream))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 4);
        // Three waits: 100 + 200 + 400 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_that_lasts_ends_with_the_last_error_after_every_wait() {
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let result: Result<(), _> = retry_transient(&BUCKET_RETRY, || {
            calls += 1;
            async { Err(failure(CreateKeyValueErrorKind::TimedOut)) }
        })
        .await;
        let error = result.unwrap_err();
        assert_eq!(error.source.kind(), CreateKeyValueErrorKind::TimedOut);
        assert!(error.to_string().contains("danmu_nodes"), "{error}");
        assert_eq!(calls, BUCKET_RETRY.len() + 1);
        assert_eq!(started.elapsed(), BUCKET_RETRY.iter().sum::<Duration>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_configuration_error_is_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = retry_transient(&BUCKET_RETRY, || {
            calls += 1;
            async { Err(failure(CreateKeyValueErrorKind::InvalidStoreName)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
