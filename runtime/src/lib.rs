//! What every danmu binary shares, so each `main.rs` stays a dozen lines.
//!
//! # Layout
//! - [`config`]: the one configuration loader: a TOML file, `DANMU_<SERVICE>__<KEY>` environment
//!   overrides, durations as `"15s"`, errors that name the file, variable or key.
//! - [`jetstream`]: the JetStream bucket several services open (the nodes bucket), defined once.
//! - [`health`]: `/healthz` and `/readyz` for Kubernetes probes, on their own listener.
//! - [`nats`]: connection options from `nats_url` (comma-separated, credentials in the URL),
//!   `nats_nkey_seed` and `nats_creds`, for the services that use async-nats directly.
//! - [`origins`]: the `allowed_origins` list (browser origins a service accepts), one shape for
//!   control's CORS and the gateway's WebSocket upgrade.
//! - [`init_tracing`]: logs to stderr, filtered by `RUST_LOG` (default `info`).
//! - [`install_prometheus`]: the `/metrics` exporter, with histogram buckets set so latencies
//!   aggregate across instances (without buckets the exporter renders summaries).
//! - [`shutdown_signal`]: resolves on SIGINT or SIGTERM, handlers installed at the call.

pub mod config;
pub mod health;
pub mod jetstream;
pub mod nats;
pub mod origins;

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;

/// Latency buckets in seconds: sub-millisecond to seconds, dense where our bars are (5 ms
/// for high priority, 200 ms p99 for hot rooms).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Buckets for ratios in [0, 1] (compression ratio).
pub const RATIO_BUCKETS: &[f64] = &[0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5];
/// Buckets for counts per batch.
pub const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Serves Prometheus metrics on `addr` (`GET /metrics`). Must be called inside a Tokio runtime.
///
/// With `gauge_idle_timeout`, a gauge not set for that long is dropped from the output (labels
/// that went away: rooms that left a top list, regions gone); without, gauges stay forever.
pub fn install_prometheus(
    addr: SocketAddr,
    gauge_idle_timeout: Option<Duration>,
) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .idle_timeout(MetricKindMask::GAUGE, gauge_idle_timeout)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_ratio".into()), RATIO_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_messages".into()), COUNT_BUCKETS)?
        .install()
        .map_err(|error| anyhow::anyhow!("starting the metrics exporter on {addr}: {error}"))?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// service calls it first thing in `main` and awaits it once started, and a signal that comes in
/// between (a gateway already accepting clients while it opens its JetStream bucket, say) is
/// kept, so the service drains as soon as it awaits, instead of the signal's default action
/// killing the process with its clients connected. Must be called inside a tokio runtime.
///
/// # Panics
/// When the handlers cannot be installed (no tokio runtime, or the OS refuses).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    }
}
