//! Control's HTTP/1.1 listener, with the bounds `axum::serve` lacks: there a client that opens
//! a socket and sends nothing, drips its headers or stops halfway through a body holds its
//! connection (and a file descriptor) for as long as it likes, so a few thousand of them
//! exhaust the process.
//!
//! - A semaphore caps open connections: a permit is taken before `accept`, so past
//!   [`HttpLimits::max_connections`] new clients wait in the kernel's backlog.
//! - hyper's header read timeout ([`HttpLimits::header_read_timeout`]) closes a connection whose
//!   request head is not complete in time. hyper starts that clock whenever it waits for a
//!   request head, so it also bounds an idle socket and an idle keep-alive connection.
//! - [`request_deadline`] bounds the rest of a request, body included
//!   ([`HttpLimits::request_timeout`]): past it the answer is 408 with `Connection: close`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{counter, gauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::error::ApiError;
use crate::metrics::{HTTP_CONNECTIONS, HTTP_REQUEST_TIMEOUTS};

/// Bounds on HTTP clients, from the `http_*` config keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a complete request head (request line and headers), counted from the
    /// moment the server waits for one: after accept, and after each response on a keep-alive
    /// connection. `http_header_timeout`, default 10 s.
    pub header_read_timeout: Duration,
    /// Longest time from a complete request head to the response, reading the body included.
    /// `http_request_timeout`, default 10 s.
    pub request_timeout: Duration,
    /// Most connections open at once. `http_max_connections`, default 10,000.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish (each still bounded by `limits`), and returns once
/// every connection has closed. Handlers see the peer address as `ConnectInfo<SocketAddr>`.
///
/// # Errors
/// None today: accept errors are logged and retried (a full file table clears as connections
/// close); the `Result` keeps the signature of `axum::serve`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        // The permit before the accept: at the cap, clients wait in the backlog rather than
        // being accepted and left hanging.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A connection reset before `accept` returned is that client's problem; anything else (no
/// file descriptors left) is retried after a pause so the loop does not spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    warn!(%error, "accepting an HTTP connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    gauge!(HTTP_CONNECTIONS).increment(1.0);
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, then close; an idle connection closes at once.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        // Timeouts, resets and malformed requests: the client's doing, not an incident.
        debug!(%peer, %error, "HTTP connection ended with an error");
    }
    gauge!(HTTP_CONNECTIONS).decrement(1.0);
}

/// Middleware bounding a request from its complete head to its response (the body read
/// included) by `timeout`: past it, 408 with `Connection: close`, so hyper closes the
/// connection instead of waiting for the rest of the body.
pub async fn request_deadline(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            counter!(HTTP_REQUEST_TIMEOUTS).increment(1);
            let mut response = ApiError::request_timeout(format!(
                "request not complete within {} ms",
                timeout.as_millis()
            ))
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}
