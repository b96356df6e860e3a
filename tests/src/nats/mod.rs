//! Real nats-server processes for tests: a standalone server, or a supercluster of one server per
//! region joined by gateways, on free loopback ports, with the region mappings of the fabric.
//!
//! - `config`: [`ServerSpec`] and the pure [`server_config`] renderer shared with `local-nats`.
//! - `binary`: finding nats-server (`$NATS_SERVER_BIN` or `PATH`) and checking its version.
//! - `server`: [`NatsServer`], one process; killed and its store removed on Drop.
//! - `supercluster`: [`single`], [`supercluster`] and [`SuperclusterBuilder`], with readiness checks.
//! - `monitor`: a raw HTTP GET for the monitoring port.
//! - `permissions`: each role's publish/subscribe allow/deny lists, the chart's, per region.
//! - `users`: the nkey users of a fabric (tests' and `local-nats`'), rendered with those
//!   permissions into the `authorization` block every test server and `local-nats` runs with.
//! - `security`: certificates (rcgen), nkeys and JWTs for servers that require TLS and
//!   authentication, and the config blocks that say so.

mod binary;
mod config;
mod monitor;
pub mod permissions;
pub mod security;
mod server;
mod supercluster;
#[cfg(test)]
mod tests;
pub mod users;

pub use binary::{BINARY_ENV, MIN_VERSION, binary};
pub use config::{
    Gateway, INGEST_PREFIX, PUBLISH_SUBJECTS, ServerPorts, ServerSpec, ingest_subject,
    mappings_block, server_config,
};
pub use server::NatsServer;
pub use supercluster::{
    PortLayout, SINGLE_READY_TIMEOUT, SUPERCLUSTER_READY_TIMEOUT, Supercluster,
    SuperclusterBuilder, single, single_with, supercluster,
};
pub use users::{FabricUsers, NkeyUser, connect_admin, connect_publisher};
