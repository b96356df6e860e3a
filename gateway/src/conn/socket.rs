//! The one interface between the connection task and a transport's byte stream. Readiness-based
//! (wait, then try without blocking) so an idle connection holds no buffer: a new byte stream
//! (TLS, a QUIC stream) is a new implementation in a file of its own, not a branch in the loop.

use std::future::Future;
use std::io::{self, IoSlice};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// A client byte stream the connection task can wait on and use without blocking.
pub trait Socket: Send + Sync + 'static {
    /// Resolves when a read may make progress (or the stream failed).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Resolves when a write may make progress (or the stream failed).
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads what is there into `buf`; `Ok(0)` is end of stream, `WouldBlock` means wait.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Writes what the stream takes now; `WouldBlock` means wait.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl Socket for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::readable(self)
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
        TcpStream::writable(self)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}
