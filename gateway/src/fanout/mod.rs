//! The fan-out: from one edge batch read off NATS to the outbound queue of every member it
//! concerns, encoded once per gateway.
//!
//! - [`groups`]: which connections each push target (room, user, device, region, everyone)
//!   reaches here, and the fan-out of a batch to them.
//! - [`edge`]: a batch's per-protover, per-framing encodings (built once) and de-duplication.
//! - [`outbound`]: the bounded per-connection queue between the fan-out and the connection.
//! - [`offline`]: a user's waiting offline pushes, read and removed on connect.

pub mod edge;
pub mod groups;
pub mod offline;
pub mod outbound;
