//! The one interface between the connection task and a transport's byte stream. Readiness-based
//! (wait, then try without blocking) so an idle connection holds no buffer: a new byte stream
//! (TLS, a QUIC stream) is a new implementation in a file of its own, not a branch in the loop.

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
