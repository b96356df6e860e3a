//! QUIC (quinn) on the gateway's UDP port: ALPN [`ALPN_DANMU`], one client-opened
//! bidirectional stream carrying exactly the bytes of the TCP transport (AUTH first), the same
//! pre-encoded fan-out bytes as TCP, never re-encoded per connection.
//!
//! quinn drives its streams from its own endpoint task, so a stream has no readiness of its own
//! to wait on. [`QuicSocket`] gives the connection task the same [`Socket`] interface as TCP
//! and TLS: a read that arrives while the task waits is kept (one chunk) until the task reads
//! it; bytes quinn cannot take now (its send window is full) wait in a buffer of at most
//! [`PENDING_LIMIT`] and the task waits for quinn to take them, as TLS records wait for the
//! socket. So the core, its queues, its slow-consumer cut-off and its metrics are the same for
//! every transport.
//!
//! Every quinn setting sized for bulk transfer is set for many mostly idle push connections in
//! [`transport_config`], each with its reason.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use danmu_runtime::config::duration;
use quinn::VarInt;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::Certificates;
use super::{Shared, Socket};
use crate::connection::Transport;

/// ALPN of GOIM packets on QUIC (`docs/protocol.md`, "QUIC").
pub const ALPN_DANMU: &[u8] = b"danmu/1";

/// Application error code of a QUIC close the gateway sends; the reason phrase is the
/// connection's close reason label (`docs/protocol.md`, "Close reasons").
pub const CLOSE_CODE: u32 = 0;
/// Application error code when the first stream opened is not bidirectional, or does not
/// come within the auth timeout.
pub const CLOSE_NO_STREAM: u32 = 1;
/// Application error code when the gateway is at `max_connections`.
pub const CLOSE_OVERLOADED: u32 = 2;
/// Application error code when a `danmu/1` client opens a unidirectional stream.
pub const CLOSE_EXTRA_STREAM: u32 = 3;

/// Bytes kept for quinn when its send window is full (the TLS record buffer's size).
pub const PENDING_LIMIT: usize = 64 * 1024;

/// The `[quic]` section of the gateway's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Bytes the gateway lets a client have in flight towards it, per stream and per
    /// connection (default 64 KiB: clients send small control packets, at most
    /// `max_packet_bytes` each).
    pub receive_window: u32,
    /// Bytes of a connection's outbound data quinn keeps unacknowledged (default 256 KiB):
    /// the member's own outbound queue (`outbound_queue_bytes`) is where backlog belongs.
    pub send_window: u64,
    /// A connection silent this long is dropped by QUIC itself (default 120s: longer than
    /// `heartbeat_timeout`, so the core's heartbeat rule decides first and says why).
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_idle_timeout: Duration,
    /// Above this many handshakes in progress, a new client must first prove its address
    /// with a Retry round trip (RFC 9000 8.1.2), so a spoofed flood costs one packet each.
    pub retry_above_handshakes: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            receive_window: 64 * 1024,
            send_window: 256 * 1024,
            max_idle_timeout: Duration::from_secs(120),
            retry_above_handshakes: 256,
        }
    }
}

/// quinn's transport settings for push connections. quinn's defaults are for bulk transfer:
/// 100 bidirectional and 100 unidirectional streams a peer may open (quinn allocates state
/// per allowed stream), megabyte windows, datagrams on.
pub fn transport_config(config: &QuicConfig) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // One stream per connection, opened by the client. A client that opens a second one
    // breaks the stream limit and quinn closes its connection (STREAM_LIMIT_ERROR): only that
    // connection. Unidirectional: 3, because the transport parameters are sent before the ALPN
    // is known and an HTTP/3 client (WebTransport, ALPN h3) needs 3 from the start (Chromium
    // refuses a server that allows fewer and raises it later); a `danmu/1` connection has its
    // limit set back to 0 after the handshake and is closed if it opens one anyway
    // (`CLOSE_EXTRA_STREAM`).
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1));
    transport.max_concurrent_uni_streams(VarInt::from_u32(super::webtransport::UNI_STREAMS));
    transport.stream_receive_window(VarInt::from_u32(config.receive_window));
    transport.receive_window(VarInt::from_u32(config.receive_window));
    transport.send_window(config.send_window);
    // No datagrams: without the transport parameter, a client's DATAGRAM frame is a protocol
    // violation and closes its connection.
    transport.datagram_receive_buffer_size(None);
    transport.datagram_send_buffer_size(0);
    // The client's heartbeats (every ~30 s) keep the path alive; the server sends no
    // keep-alives of its own, so an idle connection costs no packets from our side.
    transport.keep_alive_interval(None);
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(config.max_idle_timeout)
            .unwrap_or(quinn::IdleTimeout::from(VarInt::from_u32(120_000))),
    ));
    transport
}

/// A quinn server configuration on `certificates`: TLS 1.3 only (QUIC requires it), ALPN
/// [`ALPN_DANMU`], no 0-RTT (AUTH is not replay-safe), migration allowed (a client whose
/// address changes keeps its connection).
pub fn server_config(
    certificates: Arc<Certificates>,
    config: &QuicConfig,
) -> anyhow::Result<quinn::ServerConfig> {
    let alpn = [ALPN_DANMU, super::webtransport::ALPN_H3];
    let tls = super::tls::server_config_tls13(certificates, &alpn);
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(config)));
    server.migration(true);
    Ok(server)
}

/// Serves QUIC on `socket` until `stop`, then closes the endpoint once the connections are gone.
pub(crate) async fn accept_loop(
    endpoint: quinn::Endpoint,
    quic: QuicConfig,
    shared: Arc<Shared>,
    max_connections: Option<usize>,
    connections: TaskTracker,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(AtomicUsize::new(0));
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let label = Transport::Quic.label();
        let open = shared.stats.connections_open.load(Ordering::Relaxed);
        if max_connections.is_some_and(|max| open >= max as i64) {
            shared.stats.connection_refused(label, "overloaded");
            incoming.refuse();
            continue;
        }
        if handshakes.load(Ordering::Relaxed) >= quic.retry_above_handshakes
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            // Stateless: costs one packet; a client at a real address comes back validated.
            let _ = incoming.retry();
            continue;
        }
        let peer = incoming.remote_address();
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(error) => {
                tracing::debug!(%error, %peer, "QUIC handshake refused");
                shared.stats.tls_handshake_failed(label, "refused");
                continue;
            }
        };
        shared.stats.connection_opened(label);
        handshakes.fetch_add(1, Ordering::Relaxed);
        let guard = Counted(handshakes.clone());
        connections.spawn(serve(connecting, peer, shared.clone(), guard));
    }
    // Draining connections finish on this endpoint; it closes when the last handle drops.
    drop(endpoint);
}

/// Decrements the handshakes in progress when the handshake ends, however it ends.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One QUIC connection: the handshake and the stream within the auth timeout, then the
/// connection task on the stream, then an orderly end (the stream finished, its last bytes
/// acknowledged or `close_linger` passed, then a close with the reason).
async fn serve(
    connecting: quinn::Connecting,
    peer: SocketAddr,
    shared: Arc<Shared>,
    handshake: Counted,
) {
    let label = Transport::Quic.label();
    let limit = shared.limits.session.auth_timeout;
    let connection = match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%error, %peer, "QUIC handshake failed");
            shared
                .stats
                .tls_handshake_failed(label, handshake_reason(&error));
            return shared.stats.connection_ended(label);
        }
        Err(_) => {
            shared.stats.tls_handshake_failed(label, "incomplete");
            return shared.stats.connection_ended(label);
        }
    };
    drop(handshake);
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    if alpn.as_deref() == Some(super::webtransport::ALPN_H3) {
        // Accepted as QUIC before the ALPN was known; counted as WebTransport from here on.
        shared
            .stats
            .connection_relabeled(label, Transport::WebTransport.label());
        return super::webtransport::serve(connection, peer, shared).await;
    }
    // No new unidirectional credit; the 3 the transport parameters gave are watched below.
    connection.set_max_concurrent_uni_streams(VarInt::from_u32(0));
    let watched = connection.clone();
    tokio::spawn(async move {
        // Ends with the connection; a stream closes it, and the connection task ends on the
        // failed stream by itself.
        if watched.accept_uni().await.is_ok() {
            watched.close(
                VarInt::from_u32(CLOSE_EXTRA_STREAM),
                b"unidirectional stream",
            );
        }
    });
    let stream = tokio::time::timeout(limit, connection.accept_bi()).await;
    let Ok(Ok((send, recv))) = stream else {
        connection.close(
            VarInt::from_u32(CLOSE_NO_STREAM),
            b"no bidirectional stream",
        );
        shared.stats.connection_closing(label, "no_stream");
        return shared.stats.connection_ended(label);
    };
    let socket = QuicSocket::new(send, recv);
    let close = VarInt::from_u32(CLOSE_CODE);
    serve_stream(socket, &connection, close, peer, Transport::Quic, shared).await;
}

/// The connection task on `socket`, then an orderly end: the stream finished, its last bytes
/// acknowledged or `close_linger` passed, then `connection` closed with application error
/// `code` and the close reason as the reason phrase.
pub(crate) async fn serve_stream(
    socket: QuicSocket,
    connection: &quinn::Connection,
    code: VarInt,
    peer: SocketAddr,
    transport: Transport,
    shared: Arc<Shared>,
) {
    let handle = socket.clone();
    let linger = shared.limits.close_linger;
    let reason = super::task::serve(socket, peer, transport, shared, true).await;
    // The stream was finished by the task's orderly close; the connection's close would drop
    // what the client has not acknowledged yet, so wait for that first (bounded).
    let _ = tokio::time::timeout(linger, handle.acknowledged()).await;
    connection.close(code, reason.as_bytes());
}

fn handshake_reason(error: &quinn::ConnectionError) -> &'static str {
    use quinn::ConnectionError as E;
    match error {
        E::TransportError(_) => "bad_message",
        E::VersionMismatch => "incompatible",
        E::ConnectionClosed(_) | E::ApplicationClosed(_) => "alert_received",
        E::TimedOut => "incomplete",
        _ => "other",
    }
}

/// One QUIC bidirectional stream behind the readiness [`Socket`] interface. Cloning gives
/// another handle on the same stream.
#[derive(Clone)]
pub struct QuicSocket(Arc<Inner>);

struct Inner {
    recv: Mutex<Recv>,
    send: Mutex<Send>,
}

struct Recv {
    stream: quinn::RecvStream,
    /// Read while the task was waiting, not yet taken by it.
    ready: Option<Bytes>,
    /// The client finished its side (or the stream failed: the error comes with the next read).
    ended: Option<io::ErrorKind>,
}

struct Send {
    stream: quinn::SendStream,
    /// Bytes taken from the core that quinn could not take yet.
    pending: BytesMut,
    /// The close began: finish the stream once `pending` is in quinn's hands.
    finishing: bool,
}

impl QuicSocket {
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> QuicSocket {
        QuicSocket(Arc::new(Inner {
            recv: Mutex::new(Recv {
                stream: recv,
                ready: None,
                ended: None,
            }),
            send: Mutex::new(Send {
                stream: send,
                pending: BytesMut::new(),
                finishing: false,
            }),
        }))
    }

    fn recv(&self) -> std::sync::MutexGuard<'_, Recv> {
        self.0.recv.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self) -> std::sync::MutexGuard<'_, Send> {
        self.0.send.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the client acknowledged everything written (after `start_close`), or the
    /// stream failed.
    pub fn acknowledged(&self) -> impl Future<Output = ()> + 'static {
        let stopped = self.send().stream.stopped();
        async move {
            let _ = stopped.await;
        }
    }
}

/// Polls with a waker that wakes nobody: the "try" half of a readiness interface. The task
/// always polls again with its own waker (`poll_*_ready`) before it sleeps, which replaces
/// this one in quinn's stream state, so no wake-up is lost.
fn try_poll<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Option<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match f(&mut cx) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

impl Recv {
    /// Reads one chunk (at most 4 KiB: a stack buffer, so a waiting stream holds no heap).
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let mut chunk = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut chunk);
        match AsyncRead::poll_read(Pin::new(&mut self.stream), cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(None)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Some(Bytes::copy_from_slice(buf.filled())))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Send {
    /// Hands pending bytes to quinn; ready with `Ok` when none are left.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match AsyncWrite::poll_write(Pin::new(&mut self.stream), cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    let _ = self.pending.split_to(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Released, so an idle stream holds no buffer.
        self.pending = BytesMut::new();
        if self.finishing {
            // Idempotent in effect: a second finish only reports the stream closed.
            let _ = self.stream.finish();
        }
        Poll::Ready(Ok(()))
    }
}

impl Socket for QuicSocket {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut recv = self.recv();
        if recv.ready.is_some() || recv.ended.is_some() {
            return Poll::Ready(Ok(()));
        }
        match recv.poll_chunk(cx) {
            Poll::Ready(Ok(Some(chunk))) => recv.ready = Some(chunk),
            Poll::Ready(Ok(None)) => recv.ended = Some(io::ErrorKind::UnexpectedEof),
            Poll::Ready(Err(e)) => recv.ended = Some(e.kind()),
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.send().poll_pending(cx)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut recv = self.recv();
        if let Some(chunk) = recv.ready.take() {
            buf.extend_from_slice(&chunk);
            return Ok(chunk.len());
        }
        match recv.ended {
            Some(io::ErrorKind::UnexpectedEof) => return Ok(0),
            Some(kind) => return Err(kind.into()),
            None => {}
        }
        match try_poll(|cx| recv.poll_chunk(cx)) {
            Some(Ok(Some(chunk))) => {
                buf.extend_from_slice(&chunk);
                Ok(chunk.len())
            }
            Some(Ok(None)) => Ok(0),
            Some(Err(e)) => Err(e),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut send = self.send();
        match try_poll(|cx| send.poll_pending(cx)) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err(io::ErrorKind::WouldBlock.into()),
        }
        let mut taken = 0;
        for slice in bufs.iter().filter(|s| !s.is_empty()) {
            match try_poll(|cx| AsyncWrite::poll_write(Pin::new(&mut send.stream), cx, slice)) {
                Some(Ok(n)) => {
                    taken += n;
                    if n < slice.len() {
                        break;
                    }
                }
                Some(Err(e)) if taken == 0 => return Err(e),
                Some(Err(_)) => break,
                None => {
                    // quinn's window is full: keep up to the limit ourselves, so the core
                    // sees its bytes taken and the task waits for quinn like for a socket.
                    let room = PENDING_LIMIT.saturating_sub(send.pending.len());
                    let keep = room.min(slice.len());
                    send.pending.extend_from_slice(&slice[..keep]);
                    taken += keep;
                    break;
                }
            }
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn wants_flush(&self) -> bool {
        !self.send().pending.is_empty()
    }

    fn try_flush(&self) -> io::Result<()> {
        let mut send = self.send();
        match try_poll(|cx| send.poll_pending(cx)) {
            Some(result) => result,
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn start_close(&self) {
        let mut send = self.send();
        // The end of the stream goes after the pending bytes, whenever they leave.
        send.finishing = true;
        let _ = try_poll(|cx| send.poll_pending(cx));
    }
}
