//! TCP listeners (`ws`, `tcp`, and on TLS `wss`, `tls`) and the accept loop they share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use crate::Config;
use crate::connection::Transport;

/// Bound listeners; tests bind `127.0.0.1:0` and pass them in.
#[derive(Default)]
pub struct Listeners {
    pub ws: Option<TcpListener>,
    pub tcp: Option<TcpListener>,
    pub wss: Option<TcpListener>,
    pub tls: Option<TcpListener>,
    /// QUIC's UDP socket (WebTransport shares it).
    pub quic: Option<std::net::UdpSocket>,
}

impl Listeners {
    /// Binds what the configuration asks for.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            ws: bind(config.ws_listen).await?,
            tcp: bind(config.tcp_listen).await?,
            wss: bind(config.wss_listen).await?,
            tls: bind(config.tls_listen).await?,
            quic: config
                .quic_listen
                .map(|addr| {
                    std::net::UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))
                })
                .transpose()?,
        })
    }
}

/// Binds `addr` when it is set.
pub(crate) async fn bind(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("binding {addr}")),
        None => Ok(None),
    }
}

/// Accepts until stopped, handing each socket to `serve` (the connection task of the
/// transport). Past `max_connections` a connection is still served, but only to be told to go
/// (close 1013 on WebSocket, a plain close on a stream): existing ones notice nothing.
pub(crate) async fn accept_loop<F>(
    listener: TcpListener,
    transport: Transport,
    shared: Arc<Shared>,
    max_connections: Option<usize>,
    connections: TaskTracker,
    stop: CancellationToken,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<Shared>, bool, &TaskTracker),
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Counted here, before the task runs, so a burst of accepts sees every
                    // connection admitted before it.
                    let open = shared.stats.connections_open.load(std::sync::atomic::Ordering::Relaxed);
                    let admitted = max_connections.is_none_or(|max| open < max as i64);
                    if admitted {
                        shared.stats.connection_opened(transport.label());
                    }
                    let _ = stream.set_nodelay(true);
                    if let Some(bytes) = shared.limits.socket_send_buffer {
                        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
                    }
                    serve(stream, peer, shared.clone(), admitted, &connections);
                }
                Err(error) => {
                    // Out of file descriptors, mostly: back off instead of spinning.
                    tracing::warn!(%error, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
