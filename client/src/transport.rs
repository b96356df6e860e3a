//! Making a connection of each kind and the byte stream it gives: plain TCP, TLS over TCP
//! (`tls`, and `wss` before its WebSocket upgrade), and one bidirectional QUIC stream (quinn,
//! ALPN [`QUIC_ALPN`]). Everything above the stream is the same for all of them
//! ([`crate::connection`]); only [`framing`] differs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::nodes::TransportKind;
use crate::tls::{self, TlsError, TlsOptions};
use crate::wire::Framing;

/// The ALPN of danmu over QUIC (`docs/protocol.md`).
pub const QUIC_ALPN: &[u8] = b"danmu/1";

/// A connected byte stream of any kind.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Resolving, connecting, or the TLS handshake failed.
    #[error("{kind} {addr}: {source}")]
    Io {
        /// The transport.
        kind: TransportKind,
        /// The address tried.
        addr: String,
        /// The error.
        source: io::Error,
    },
    /// The QUIC handshake or stream failed.
    #[error("quic {addr}: {reason}")]
    Quic {
        /// The address tried.
        addr: String,
        /// The error.
        reason: String,
    },
    /// No answer within the connect timeout.
    #[error("{kind} {addr}: no connection within {timeout:?}")]
    Timeout {
        /// The transport.
        kind: TransportKind,
        /// The address tried.
        addr: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The node offers none of the transports allowed.
    #[error("node {0} offers none of the allowed transports")]
    NoTransport(String),
}

/// How packets travel on a transport kind.
pub fn framing(kind: TransportKind) -> Framing {
    match kind {
        TransportKind::Ws | TransportKind::Wss => Framing::WebSocket,
        TransportKind::Tcp | TransportKind::Tls | TransportKind::Quic => Framing::Stream,
    }
}

/// TLS settings built once per client.
#[derive(Clone)]
pub struct Connector {
    /// For `tls` (no ALPN: the GOIM stream has no registered name).
    tls: Arc<rustls::ClientConfig>,
    /// For `wss` (ALPN `http/1.1`, what the upgrade speaks).
    wss: Arc<rustls::ClientConfig>,
    /// For QUIC: TLS 1.3, ALPN `danmu/1`.
    quic: quinn::ClientConfig,
}

impl Connector {
    /// Builds the TLS settings for `options`.
    pub fn new(options: &TlsOptions) -> Result<Connector, TlsError> {
        let quic_tls = tls::client_config(options, &[QUIC_ALPN], true)?;
        let quic_tls = quinn::crypto::rustls::QuicClientConfig::try_from(quic_tls)
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(quic_tls));
        let mut transport = quinn::TransportConfig::default();
        // A push connection is one stream that is mostly idle: the server opens none, and a
        // keep-alive below the server's idle timeout keeps NAT bindings warm between our
        // 30 s heartbeats.
        transport
            .max_concurrent_bidi_streams(0u8.into())
            .max_concurrent_uni_streams(0u8.into())
            .keep_alive_interval(Some(Duration::from_secs(15)));
        quic.transport_config(Arc::new(transport));
        Ok(Connector {
            tls: Arc::new(tls::client_config(options, &[], false)?),
            wss: Arc::new(tls::client_config(options, &[b"http/1.1"], false)?),
            quic,
        })
    }

    /// Connects to `addr` (`host:port`) over `kind`, within `timeout`.
    pub async fn connect(
        &self,
        kind: TransportKind,
        addr: &str,
        timeout: Duration,
    ) -> Result<Box<dyn Stream>, ConnectError> {
        match tokio::time::timeout(timeout, self.connect_inner(kind, addr)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                kind,
                addr: addr.to_owned(),
                timeout,
            }),
        }
    }

    async fn connect_inner(
        &self,
        kind: TransportKind,
        addr: &str,
    ) -> Result<Box<dyn Stream>, ConnectError> {
        let io_error = |source: io::Error| ConnectError::Io {
            kind,
            addr: addr.to_owned(),
            source,
        };
        let tls_config = match kind {
            TransportKind::Quic => return self.connect_quic(addr).await,
            TransportKind::Tcp | TransportKind::Ws => None,
            TransportKind::Tls => Some(self.tls.clone()),
            TransportKind::Wss => Some(self.wss.clone()),
        };
        let tcp = TcpStream::connect(addr).await.map_err(io_error)?;
        // Heartbeats and ACKs are small and latency-bound.
        tcp.set_nodelay(true).map_err(io_error)?;
        let Some(config) = tls_config else {
            return Ok(Box::new(tcp));
        };
        let name = tls::server_name(host_of(addr))
            .map_err(|e| io_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(io_error)?;
        Ok(Box::new(stream))
    }

    async fn connect_quic(&self, addr: &str) -> Result<Box<dyn Stream>, ConnectError> {
        let quic_error = |reason: String| ConnectError::Quic {
            addr: addr.to_owned(),
            reason,
        };
        let remote: SocketAddr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| quic_error(e.to_string()))?
            .next()
            .ok_or_else(|| quic_error("no address".into()))?;
        let local: SocketAddr = if remote.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        // One endpoint (one UDP socket) per connection: a client holds one connection at a
        // time, and a fresh socket gives a reconnect a fresh path.
        let endpoint = quinn::Endpoint::client(local).map_err(|e| quic_error(e.to_string()))?;
        let host = host_of(addr).trim_start_matches('[').trim_end_matches(']');
        let connection = endpoint
            .connect_with(self.quic.clone(), remote, host)
            .map_err(|e| quic_error(e.to_string()))?
            .await
            .map_err(|e| quic_error(e.to_string()))?;
        // The server learns of the stream with its first bytes (AUTH).
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| quic_error(e.to_string()))?;
        Ok(Box::new(QuicStream {
            send,
            recv,
            _connection: connection,
            _endpoint: endpoint,
        }))
    }
}

/// The host of `host:port` (`[v6]:port` keeps its brackets, stripped where a name is needed).
fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// One QUIC bidirectional stream as a byte stream; holds its connection and endpoint so both
/// live as long as the stream.
struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send)
            .poll_write(cx, buf)
            .map_err(io::Error::other)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_framings() {
        assert_eq!(host_of("gw.example.com:443"), "gw.example.com");
        assert_eq!(host_of("[::1]:7000"), "[::1]");
        assert_eq!(framing(TransportKind::Wss), Framing::WebSocket);
        assert_eq!(framing(TransportKind::Quic), Framing::Stream);
    }
}
