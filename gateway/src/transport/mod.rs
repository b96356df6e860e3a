//! The transports: the glue between a kind of listener and the one connection core
//! (`crate::connection::Connection`). Each module here only moves bytes, wake-ups and
//! timers; every decision about a connection is the core's.
//!
//! - [`socket`]: the readiness interface a byte stream offers the connection task.
//! - [`task`]: the connection task over any [`Socket`]: TCP, TLS on TCP, WebSocket on either.
//! - [`tcp`]: TCP listeners and their accept loop, plain or TLS.
//! - [`tls`]: rustls on TCP for `wss` and `tls`, certificates chosen by SNI and reloaded.
//! - [`quic`]: quinn on UDP, one bidirectional stream per connection behind the same
//!   [`Socket`] interface.
//! - [`webtransport`]: WebTransport over HTTP/3 on the same QUIC port (ALPN `h3`), its one
//!   stream on the same QUIC socket.

pub mod quic;
pub mod socket;
pub mod task;
pub mod tcp;
pub mod tls;
pub mod webtransport;

pub use socket::Socket;
pub use task::{MAX_OFFLINE, Shared, serve};
