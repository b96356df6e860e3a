//! `danmu-load`: the fabric's load tool, and the same workload against nats-server's own
//! WebSocket listener (the peer a user would pick instead), measured in the same run.
//!
//! # Layout
//! - [`cli`]: the command line (`run`, `fabric`, `idle`, `corpus`, and the hidden `worker`).
//! - [`run`]: the coordinator of one measured run: worker processes, warm-up, publisher,
//!   counting, CPU and memory from `/proc`.
//! - [`worker`]: a worker process: opens its connections, then counts (and for a sample,
//!   verifies) everything on epoll loops.
//! - [`wire`]: incremental parsers of GOIM over TCP / WebSocket and NATS over WebSocket.
//! - [`count`]: exact, cheap message counts of compressed batches.
//! - [`payload`]: the published payloads (room, sequence, timestamp, padded to a size).
//! - [`fabric`]: nats-server, gateway and distributor started for a workload.
//! - [`corpus`]: the compression corpus (seed 001's table) and compression costs.
//! - [`idle`]: memory per idle connection, per transport and for the peer.
//! - [`report`], [`procfs`], [`http`], [`plan`]: tables, `/proc`, a tiny HTTP client, and
//!   the coordinator-worker protocol.

pub mod cli;
pub mod corpus;
pub mod count;
pub mod fabric;
pub mod floor;
pub mod http;
pub mod idle;
pub mod payload;
pub mod plan;
pub mod procfs;
pub mod report;
pub mod run;
pub mod wire;
pub mod worker;
