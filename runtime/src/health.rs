//! Liveness and readiness for Kubernetes probes, served on their own listener (`health_listen`)
//! by the gateway and the distributor (control answers `/healthz` and `/readyz` on its API).
//!
//! - `GET /healthz`: 200 while the process serves HTTP at all (liveness: restart when this fails).
//! - `GET /readyz`: 200 `ready` once the service said so with [`Health::set_ready`], 503 with
//!   the reason otherwise: before NATS is connected, and from the start of a gateway's drain,
//!   so the load balancer stops sending new clients while the gateway tells its clients to
//!   reconnect elsewhere.
//!
//! A listener of its own rather than a route on `/metrics`: the Prometheus exporter owns its
//! listener, and a probe must not depend on rendering every metric.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// The readiness a service reports; clones share it.
#[derive(Clone, Debug)]
pub struct Health {
    /// `None`: ready; `Some(reason)`: not ready, and why.
    not_ready: Arc<Mutex<Option<String>>>,
}

impl Health {
    /// Not ready, for `reason` (e.g. "connecting to NATS"), until [`Health::set_ready`].
    pub fn starting(reason: impl Into<String>) -> Health {
        Health {
            not_ready: Arc::new(Mutex::new(Some(reason.into()))),
        }
    }

    /// Ready: `/readyz` answers 200.
    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    /// Not ready any more, for `reason` (e.g. "draining"): `/readyz` answers 503.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
    }

    /// `Ok` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.lock() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // The value is a plain Option: a panic elsewhere cannot leave it half-written.
        self.not_ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `/healthz` and `/readyz` routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self.clone())
    }

    /// Binds `addr` and serves [`Health::router`] in a background task for the life of the
    /// process. Must be called inside a Tokio runtime. Returns the bound address (for port 0).
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "health listener stopped");
            }
        });
        tracing::info!(addr = %bound, "health on http://{bound}/healthz and /readyz");
        Ok(bound)
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn readiness_follows_the_service_over_http() {
        let health = Health::starting("connecting to NATS");
        let addr = health.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        assert_eq!(
            get(addr, "/readyz").await,
            (503, "not ready: connecting to NATS\n".into())
        );
        health.set_ready();
        assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));
        health.clone().set_not_ready("draining");
        assert_eq!(
            get(addr, "/readyz").await,
            (503, "not ready: draining\n".into())
        );
        assert_eq!(get(addr, "/healthz").await.0, 200);
    }
}
