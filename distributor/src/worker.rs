//! One priority's pipeline: pull from the push stream, aggregate per target, encode each batch
//! once, publish it on the target's edge subject, then ack its messages.
//!
//! Acks go out on the same NATS connection right after the batch, so the server sees the batch
//! before the acks: a message JetStream considers delivered was always published first. If this
//! process dies in between, the messages are redelivered and gateways drop what they already
//! wrote (they track stream sequences per room).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use bytes::Bytes;
use danmu_proto::internal;
use danmu_proto::subjects::{self, Priority, Scope};
use futures::StreamExt;
use prost::Message as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::confirm::Confirmations;
use crate::encode::{Pending, encode_batch};
use crate::redelivery::Redeliveries;
use crate::stats::Stats;
use crate::window::{Aggregator, Batch, Pushed};

/// Longest time redelivered messages wait for the first new message before leaving sorted.
const REDELIVERY_HOLD: Duration = Duration::from_millis(100);

type Acker = jetstream::message::Acker;
/// A message waiting in the pipeline, with what acknowledges it.
pub type PendingMessage = Pending<Acker>;

pub struct Worker {
    pub client: async_nats::Client,
    pub consumer: consumer::Consumer<consumer::pull::Config>,
    pub priority: Priority,
    pub region: String,
    pub stream: String,
    pub config: WorkerConfig,
    pub brotli_quality: u32,
    /// Set for the high-priority worker when offline messages are on: user pushes wait for a
    /// gateway's confirmation, or are stored for the user's next connect.
    pub confirmations: Option<Confirmations<Pending<Acker>>>,
    pub stats: Arc<Stats>,
    /// Offline stores waiting for JetStream's publish acks (see `store_offline`).
    pub offline_stores: JoinSet<()>,
}

/// Why a worker stopped before its shutdown.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The pull on the consumer could not start.
    #[error("starting the pull on {stream}: {source}")]
    Pull {
        stream: String,
        source: async_nats::jetstream::consumer::StreamError,
    },
    /// The pull stream ended, which it only does when the connection is gone for good.
    #[error("the pull stream on {0} ended")]
    PullEnded(String),
    /// The subscription for gateways' delivery confirmations was refused.
    #[error("subscribing to delivery confirmations: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// An edge batch could not be handed to the NATS connection.
    #[error("publishing an edge batch: {0}")]
    Publish(#[source] async_nats::PublishError),
    /// JetStream did not store an offline push.
    #[error("storing an offline push: {0}")]
    StoreOffline(#[source] async_nats::jetstream::context::PublishError),
    /// The last batches could not be flushed at shutdown.
    #[error("flushing at shutdown: {0}")]
    Flush(#[source] async_nats::client::FlushError),
}

impl Worker {
    /// Runs until `shutdown` turns true, then flushes what is batched and returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut aggregator: Aggregator<Scope, Pending<Acker>> =
            Aggregator::new(self.config.window());
        // Pulls must expire well within the failover time, or the pin lapses between pulls
        // (config validation relies on this being a third of it).
        let expires = self.config.failover / 3;
        let mut messages = self
            .consumer
            .stream()
            .group(crate::streams::PRIORITY_GROUP)
            .max_messages_per_batch(self.config.pull_batch)
            .expires(expires)
            .heartbeat(expires / 4)
            .messages()
            .await
            .map_err(|source| WorkerError::Pull {
                stream: self.stream.clone(),
                source,
            })?;

        let mut redeliveries = Redeliveries::new(REDELIVERY_HOLD);
        let mut answers = match &self.confirmations {
            Some(confirmations) => Some(
                self.client
                    .subscribe(confirmations.subscription())
                    .await
                    .map_err(WorkerError::Subscribe)?,
            ),
            None => None,
        };

        loop {
            let deadline = aggregator.next_deadline();
            let release = redeliveries.deadline();
            let unanswered = self
                .confirmations
                .as_mut()
                .and_then(Confirmations::deadline);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    for batch in aggregator.take_due(Instant::now()) {
                        self.publish(batch).await?;
                    }
                }
                _ = sleep_until(release), if release.is_some() => {
                    self.aggregate(redeliveries.release(), &mut aggregator).await?;
                }
                Some(answer) = next_answer(&mut answers) => self.settle(answer).await?,
                _ = sleep_until(unanswered), if unanswered.is_some() => {
                    let timed_out = self
                        .confirmations
                        .as_mut()
                        .map(|c| c.timed_out(Instant::now()))
                        .unwrap_or_default();
                    for (uid, messages) in timed_out {
                        tracing::warn!(uid, "no gateway confirmed a user push in time: storing it");
                        self.store_offline(uid, messages).await?;
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        let Some((pending, redelivered)) = self.accept(message).await else {
                            continue;
                        };
                        if redelivered {
                            redeliveries.hold(pending.1.stream_seq, pending, Instant::now());
                        } else {
                            // New messages come after every due redelivery: release those first.
                            self.aggregate(redeliveries.release(), &mut aggregator).await?;
                            self.aggregate([pending], &mut aggregator).await?;
                        }
                    }
                    Some(Err(error)) => {
                        // Missed heartbeats and pin changes are reported here; the stream
                        // re-pulls by itself.
                        tracing::debug!(%error, priority = %self.priority, "pull stream notice");
                    }
                    None => return Err(WorkerError::PullEnded(self.stream.clone())),
                },
            }
        }
        self.aggregate(redeliveries.release(), &mut aggregator)
            .await?;
        for batch in aggregator.take_all() {
            self.publish(batch).await?;
        }
        self.client.flush().await.map_err(WorkerError::Flush)?;
        // Offline stores in flight finish (or fail and are redelivered to the next instance)
        // before the worker reports that it stopped.
        while self.offline_stores.join_next().await.is_some() {}
        Ok(())
    }

    /// Adds messages to the aggregator in the given order, publishing batches that close.
    async fn aggregate(
        &mut self,
        messages: impl IntoIterator<Item = (Scope, Pending<Acker>)>,
        aggregator: &mut Aggregator<Scope, Pending<Acker>>,
    ) -> Result<(), WorkerError> {
        for (scope, pending) in messages {
            match aggregator.push(scope, pending, Instant::now()) {
                Pushed::Closed(batch) => self.publish(batch).await?,
                Pushed::Waiting => {}
                Pushed::SampledOut(message) => {
                    self.stats.sampled_out(self.priority);
                    self.ack_all(std::slice::from_ref(&message)).await;
                }
            }
        }
        Ok(())
    }

    /// Reads one JetStream message: its target, the message, and whether it is a redelivery.
    /// Messages on subjects that are not ours or not in canonical form (`bad_subject`), and
    /// messages with an empty payload (`empty_payload`), are terminated (never redelivered) and
    /// counted in `danmu_distributor_messages_rejected_total{reason}`.
    async fn accept(&self, message: jetstream::Message) -> Option<((Scope, Pending<Acker>), bool)> {
        let (stream_seq, published_micros, redelivered) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                (info.published.unix_timestamp_nanos() / 1_000) as i64,
                info.delivered > 1,
            ),
            Err(error) => {
                tracing::warn!(%error, "message without JetStream metadata");
                return None;
            }
        };
        let (message, acker) = message.split();
        self.stats.message_in(self.priority, redelivered);
        if !redelivered {
            self.stats
                .stream_wait(self.priority, seconds_since(published_micros));
        }
        let scope = match subjects::parse_ingest(message.subject.as_str()) {
            Ok(ingest) => ingest.scope,
            Err(error) => {
                tracing::warn!(%error, "terminating a message on an invalid subject");
                self.stats.message_rejected(self.priority, "bad_subject");
                if acker.ack_with(AckKind::Term).await.is_err() {
                    self.stats.ack_error(self.priority);
                }
                return None;
            }
        };
        // A push with no payload would reach clients as a bare 16-byte packet, which clients
        // that parse every message body as JSON fail on: it is no message, so it is refused.
        if message.payload.is_empty() {
            tracing::debug!(subject = %message.subject, "terminating a push with an empty payload");
            self.stats.message_rejected(self.priority, "empty_payload");
            if acker.ack_with(AckKind::Term).await.is_err() {
                self.stats.ack_error(self.priority);
            }
            return None;
        }
        let pending = Pending {
            payload: message.payload,
            stream_seq,
            published_micros,
            ack: acker,
        };
        Some(((scope, pending), redelivered))
    }

    async fn publish(&mut self, batch: Batch<Scope, Pending<Acker>>) -> Result<(), WorkerError> {
        let started = Instant::now();
        let priority = match self.priority {
            Priority::Low => internal::Priority::Low,
            Priority::High => internal::Priority::High,
        };
        let (edge, encoded) = encode_batch(
            &batch.messages,
            &self.region,
            &self.stream,
            priority,
            self.brotli_quality,
        );
        self.stats.batch_encoded(
            self.priority,
            batch.messages.len(),
            encoded,
            started.elapsed().as_secs_f64(),
        );
        let sent_unix_micros = unix_micros();
        let edge = internal::EdgeBatch {
            sent_unix_micros,
            ..edge
        };
        if edge.oldest_publish_unix_micros > 0 {
            let delay = (sent_unix_micros - edge.oldest_publish_unix_micros).max(0);
            self.stats.batch_delay(self.priority, delay as f64 / 1e6);
        }
        let payload = Bytes::from(edge.encode_to_vec());
        let subject = subjects::edge(self.priority, &batch.target);
        if let (Some(confirmations), Scope::User(uid)) = (&mut self.confirmations, &batch.target) {
            // Acked once a gateway confirms, or once stored for the user's next connect.
            let reply = confirmations.expect(*uid, batch.messages, Instant::now());
            self.client
                .publish_with_reply(subject, reply, payload)
                .await
                .map_err(WorkerError::Publish)?;
            self.stats.batch_published(self.priority);
            return Ok(());
        }
        self.client
            .publish(subject, payload)
            .await
            .map_err(WorkerError::Publish)?;
        self.stats.batch_published(self.priority);
        self.ack_all(&batch.messages).await;
        Ok(())
    }

    async fn ack_all(&self, messages: &[Pending<Acker>]) {
        for message in messages {
            if message.ack.ack().await.is_err() {
                self.stats.ack_error(self.priority);
            }
        }
    }

    /// A gateway confirmed a user push (acked), or NATS said nobody holds the user (stored).
    async fn settle(&mut self, answer: async_nats::Message) -> Result<(), WorkerError> {
        let Some((uid, messages)) = self
            .confirmations
            .as_mut()
            .and_then(|c| c.answered(answer.subject.as_str()))
        else {
            return Ok(());
        };
        if answer.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            self.store_offline(uid, messages).await
        } else {
            self.ack_all(&messages).await;
            Ok(())
        }
    }
}

impl Worker {
    /// Stores a user's pushes in the offline stream for the next connect, acking them once
    /// JetStream has stored them all.
    ///
    /// The publishes go out here, in order, on the worker's connection (handing a message to the
    /// client does not wait for the server); only the wait for JetStream's publish acks moves to
    /// a task of `offline_stores`. So the high-priority loop never waits a round trip per offline
    /// user, and one user's pushes are still stored in the order they came. A store that fails
    /// is negatively acknowledged: JetStream redelivers it and it is tried again.
    async fn store_offline(
        &mut self,
        uid: u64,
        messages: Vec<Pending<Acker>>,
    ) -> Result<(), WorkerError> {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stored = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                crate::PUBLISHED_HEADER,
                message.published_micros.to_string().as_str(),
            );
            let ack = js
                .publish_with_headers(subjects::offline(uid), headers, message.payload.clone())
                .await
                .map_err(WorkerError::StoreOffline)?;
            stored.push(ack.into_future());
        }
        let (stats, priority) = (self.stats.clone(), self.priority);
        self.offline_stores.spawn(async move {
            let count = messages.len() as u64;
            match futures::future::try_join_all(stored).await {
                Ok(_) => {
                    stats.offline_stored(count);
                    for message in &messages {
                        if message.ack.ack().await.is_err() {
                            stats.ack_error(priority);
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(uid, %error, "JetStream did not store an offline push: it will be redelivered");
                    stats.offline_store_failed(count);
                    for message in &messages {
                        if message.ack.ack_with(AckKind::Nak(None)).await.is_err() {
                            stats.ack_error(priority);
                        }
                    }
                }
            }
        });
        // Reap finished stores so the set stays as small as what is in flight.
        while self.offline_stores.try_join_next().is_some() {}
        Ok(())
    }
}

async fn next_answer(answers: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match answers {
        Some(answers) => answers.next().await,
        None => std::future::pending().await,
    }
}

/// Now, in unix microseconds (0 if the clock is before 1970).
fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Seconds from `unix_micros` to now, 0 if that is in the future (clocks of two hosts).
fn seconds_since(unix_micros_then: i64) -> f64 {
    (unix_micros() - unix_micros_then).max(0) as f64 / 1e6
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}
