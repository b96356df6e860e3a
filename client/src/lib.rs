//! The Rust client SDK of danmu: ask control where to connect, connect over QUIC, WebSocket
//! (`ws`, `wss`) or TCP (plain, TLS) in a preference order, join a room, and hand the
//! application typed [`Event`]s: [`Event::Connected`], [`Event::Message`], [`Event::Online`],
//! [`Event::Disconnected`]. Heartbeats, high reach (ACK, duplicates dropped), reconnects with
//! backoff and full jitter across the node list, and DRAIN are handled inside.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use danmu_client::{Client, Config, Event};
//!
//! let config = Config::new("http://127.0.0.1:8080", 1001, 42);
//! // Your backend hands out tokens (control's POST /v1/tokens); fetch one here.
//! let mut client = Client::start(config, || async { Ok::<_, std::io::Error>("<token>".to_owned()) })?;
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Message(message) => println!("{}", String::from_utf8_lossy(&message.body)),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`wire`]: the server's bytes as WebSocket frames or a packet stream, split into whole
//!   GOIM packets (the part fuzzed as `client_wire`).
//! - [`connection`]: one connection's protocol as a plain state machine with an explicit clock
//!   (upgrade, AUTH, heartbeat, batches of every protover, ACK and duplicates, DRAIN,
//!   upstream), unit-tested without sockets.
//! - [`backoff`]: exponential backoff with full jitter, plain code.
//! - [`nodes`]: control's node list and the order nodes are tried in, plain code.
//! - [`control`]: control's HTTP API (node list; tokens for development).
//! - [`tls`]: rustls settings: system roots, an extra CA file, or (development only) none.
//! - [`transport`]: making a TCP, TLS or QUIC connection into a byte stream.
//! - [`client`]: the tokio driver: choosing nodes and transports, reconnecting, events.
//!
//! The `danmu` command-line client (`src/bin/danmu.rs`) is built on this crate alone.

#![warn(missing_docs)]

pub mod backoff;
pub mod client;
pub mod connection;
pub mod control;
pub mod nodes;
pub mod tls;
pub mod transport;
pub mod wire;

pub use client::{Client, Config, Event, SendError, StartError};
pub use connection::{CloseReason, Message, Timing};
pub use danmu_proto::upstream::{UpstreamReply, UpstreamRequest};
pub use nodes::TransportKind;
pub use tls::TlsOptions;
