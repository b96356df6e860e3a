//! The one interface between the connection task and a byte stream: plain TCP, or TLS on TCP
//! (`super::tls`). Readiness-based (wait, then try without blocking) so an idle connection
//! holds no buffer. A stream with bytes of its own to write (TLS records, `close_notify`) says
//! so through `wants_flush`; plain TCP never has any. QUIC streams are driven by quinn's own
//! endpoint and have their own glue (`super::quic`), not an implementation of this trait.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// A client byte stream the connection task can wait on and use without blocking.
pub trait Socket: Send + Sync + 'static {
    /// Ready when a read may make progress (or the stream failed); otherwise registers `cx`'s
    /// waker. Poll-based rather than `async fn readable()` so a waiting connection stores no
    /// future per readiness (an idle connection's memory is the task's state).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Ready when a write may make progress (or the stream failed), as `poll_read_ready`.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what is there into `buf`; `Ok(0)` is end of stream, `WouldBlock` means wait.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Writes what the stream takes now; `WouldBlock` means wait.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether the stream holds bytes of its own not yet on the socket (TLS records made
    /// from plaintext already taken, handshake messages, alerts, `close_notify`).
    fn wants_flush(&self) -> bool {
        false
    }
    /// Writes those bytes as far as the socket takes them; `WouldBlock` means wait for
    /// write readiness.
    fn try_flush(&self) -> io::Result<()> {
        Ok(())
    }
    /// Begins an orderly close of the stream (TLS: queues `close_notify`); the bytes leave
    /// with the next flush. Plain TCP has nothing to say: the close is the FIN.
    fn start_close(&self) {}
}

impl Socket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}
