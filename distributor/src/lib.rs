//! The distributor: consumes a region's push streams, aggregates per target (room, user, ...),
//! compresses each batch once with brotli and publishes it, pre-encoded, on the target's edge
//! subject for gateways to write as is.
//!
//! # Layout
//! - `config`: the configuration (loaded by [`danmu_runtime::config`]) and its validation.
//! - `window`: the adaptive aggregation window, plain state with an explicit clock.
//! - `confirm`: live-delivery confirmations of user pushes (else stored offline), plain state.
//! - `encode`: a closed batch to the `EdgeBatch` gateways receive (the one compression).
//! - `streams`: push stream and consumer definitions.
//! - `redelivery`: holds redelivered messages until they can leave in stream order.
//! - `worker`: one priority's pull → aggregate → publish → ack loop (the only IO).
//! - `lag`: consumer lag sampling for metrics.
//! - `stats`: counters, as metrics and as atomics tests can read.

pub mod config;
mod confirm;
pub mod encode;
mod lag;
mod redelivery;
pub mod stats;
pub mod streams;
pub mod window;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use danmu_proto::subjects::{self, Priority};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError};
pub use streams::StreamError;
pub use worker::WorkerError;

/// Header on offline pushes: when JetStream first stored the push (unix micros).
pub const PUBLISHED_HEADER: &str = "Danmu-Published-Micros";
pub use stats::Stats;

/// Why the distributor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `nats_url`, `nats_nkey_seed` or `nats_creds` cannot be used.
    #[error(transparent)]
    Nats(#[from] danmu_runtime::nats::NatsConfigError),
    /// NATS refused the connection.
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    /// The health listener could not be bound.
    #[error("binding health_listen {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// A push stream, the offline stream or a consumer could not be set up.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Why a running distributor stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It never started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A worker failed (NATS gone for good, a publish refused).
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A task panicked.
    #[error("a distributor task panicked: {0}")]
    Panicked(#[from] tokio::task::JoinError),
    /// A task ended on its own, which they only do on shutdown.
    #[error("a distributor task ended before shutdown")]
    Ended,
}

/// A running distributor: its tasks run until [`Distributor::shutdown`] (or
/// [`Distributor::kill`]); dropping it without either aborts them, as `kill` does.
pub struct Distributor {
    pub stats: Arc<Stats>,
    stop: CancellationToken,
    tasks: JoinSet<Result<(), WorkerError>>,
}

/// Validates `config`, then for each priority (high, low): connects to NATS (one connection
/// per priority, so a low-priority flood never queues ahead of a high-priority batch), creates
/// or updates the push stream when `ensure_streams` is set (and the offline stream, for high
/// priority with offline storage on), creates the durable consumer, and spawns two tasks: the
/// worker (pull, aggregate, publish, ack) and the consumer-lag sampler. Stop them with
/// [`Distributor::shutdown`], which flushes open batches first.
pub async fn start(config: Config) -> Result<Distributor, StartError> {
    config.validate()?;
    stats::describe();
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    for (priority, worker_config) in [(Priority::High, &config.high), (Priority::Low, &config.low)]
    {
        stats.window(priority, worker_config.window());
        // Each priority has its own NATS connection, so a low-priority flood queued on one
        // socket never delays a high-priority batch.
        let (options, servers) = danmu_runtime::nats::connect_options(
            format!("danmu-distributor {} {priority}", config.instance),
            &config.nats(),
        )?;
        let client = options
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .map_err(|source| StartError::Connect {
                url: danmu_runtime::nats::redact(&config.nats_url),
                source,
            })?;
        let js = async_nats::jetstream::new(client.clone());
        let consumer = streams::ensure(&js, &config, priority, worker_config).await?;
        let offline =
            (priority == Priority::High && config.offline.enabled).then(|| config.offline.clone());
        if offline.is_some() && config.ensure_streams {
            streams::ensure_offline(&js, &config).await?;
        }
        // Answers come back on a subject only this worker listens to.
        let confirmations = offline.map(|offline| {
            confirm::Confirmations::<worker::PendingMessage>::new(
                format!("_DANMU_CONFIRM.{}", client.new_inbox().replace('.', "_")),
                offline.live_timeout,
            )
        });
        let worker = worker::Worker {
            client,
            consumer: consumer.clone(),
            priority,
            region: config.region.clone(),
            stream: subjects::push_stream(&config.region, priority),
            config: worker_config.clone(),
            brotli_quality: config.brotli_quality,
            confirmations,
            stats: stats.clone(),
            offline_stores: tokio::task::JoinSet::new(),
        };
        tasks.spawn(worker.run(stop.clone()));
        let lag = lag::sample(consumer, priority, Duration::from_secs(5), stop.clone());
        tasks.spawn(async move {
            lag.await;
            Ok(())
        });
    }
    tracing::info!(region = %config.region, instance = %config.instance, "distributor started");
    Ok(Distributor { stats, stop, tasks })
}

impl Distributor {
    /// Tells every task to stop, and waits for each: workers flush and ack their open batches
    /// first. Returns the first task error.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        self.stop.cancel();
        while let Some(result) = self.tasks.join_next().await {
            result??;
        }
        Ok(())
    }

    /// Stops at once without flushing or acking anything, as a crash would.
    pub fn kill(mut self) {
        self.tasks.abort_all();
    }

    /// Resolves when a task ends on its own (an error: the workers only end on shutdown).
    pub async fn failed(&mut self) -> RunError {
        match self.tasks.join_next().await {
            Some(Ok(Err(error))) => error.into(),
            Some(Ok(Ok(()))) | None => RunError::Ended,
            Some(Err(error)) => error.into(),
        }
    }
}

/// Runs until `shutdown` resolves, then drains gracefully; ends early with the error of a task
/// that failed.
///
/// With `health_listen`, serves `/healthz` and `/readyz` (not ready until started, nor once
/// shutting down).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let health = danmu_runtime::health::Health::starting("connecting to NATS");
    if let Some(addr) = config.health_listen {
        health
            .serve(addr)
            .await
            .map_err(|source| StartError::Health { addr, source })?;
    }
    let mut distributor = start(config).await?;
    health.set_ready();
    tokio::select! {
        _ = shutdown => {
            health.set_not_ready("shutting down");
            distributor.shutdown().await
        }
        error = distributor.failed() => Err(error),
    }
}
