//! Group subscriptions on NATS: while a group has local members, one subscription per priority,
//! each priority on its own NATS connection (a link), delivering edge batches to the group's
//! fan-out straight from the link's task. High priority never waits behind a low-priority
//! flood, neither on the socket nor in a channel.
//!
//! Why not async-nats for the edge: every async-nats subscription owns a channel whose first
//! block (~11.5 KiB) is allocated up front, and the gateway holds a subscription per connected
//! user (user scope) and per device, per priority: that alone was ~24 KiB per idle connection.
//! Here a subscription is a map entry (sid → group).
//!
//! # Layout
//! - `wire`: the server operations parsed from bytes (check, then parse), client operations.
//! - `client`: the subscriber as a state machine with an explicit clock: handshake and
//!   credentials, server errors, INFO updates, PINGs, the server pool and reconnect backoff,
//!   and the subscriptions, which it sends again after every reconnect.
//! - `link`: the tokio task around one client: TCP, TLS (rustls), timers, delivery.
//! - `options`: server URLs, credentials (nkey, `.creds`) and TLS files, for the links and for
//!   the gateway's async-nats connections alike.
//!
//! Messages published while a link is down are lost to this gateway, as with any core NATS
//! subscriber.

pub mod client;
mod link;
pub mod options;
pub(crate) mod presence;
pub(crate) mod report;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use danmu_proto::subjects::Priority;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::fanout::groups::{DeliveryLimits, EdgeSource, Group};
use crate::stats::Stats;
use link::{Command, Link};
pub use options::NatsOptions;

/// The edge links, one per priority.
pub struct NatsEdge {
    high: mpsc::UnboundedSender<Command>,
    low: mpsc::UnboundedSender<Command>,
    next_sid: AtomicU64,
}

impl NatsEdge {
    /// Starts one link per priority; each connects (and reconnects) in the background.
    pub fn start(
        options: Arc<NatsOptions>,
        name: &str,
        limits: DeliveryLimits,
        stats: Arc<Stats>,
        stop: CancellationToken,
    ) -> anyhow::Result<NatsEdge> {
        let tls = if options.require_tls {
            Some(options.tls_config()?)
        } else {
            None
        };
        let start = |priority: Priority| {
            let (commands, receiver) = mpsc::unbounded_channel();
            let label = format!("{name} edge {priority}");
            let mut client_options = client::Options::new(label.clone());
            client_options.auth = options.auth.clone();
            client_options.require_tls = options.require_tls;
            let link = Link {
                client: client::Client::new(
                    client_options,
                    options.servers.clone(),
                    rand::random(),
                    std::time::Instant::now(),
                ),
                priority,
                label,
                tls: tls.clone(),
                options: options.clone(),
                limits,
                stats: stats.clone(),
                up: false,
            };
            tokio::spawn(link.run(receiver, stop.clone()));
            commands
        };
        Ok(NatsEdge {
            high: start(Priority::High),
            low: start(Priority::Low),
            next_sid: AtomicU64::new(1),
        })
    }
}

impl EdgeSource for NatsEdge {
    fn subscribe(&self, group: Arc<Group>) -> u64 {
        let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
        for link in [&self.high, &self.low] {
            let _ = link.send(Command::Subscribe {
                sid,
                group: group.clone(),
            });
        }
        sid
    }

    fn unsubscribe(&self, sid: u64) {
        for link in [&self.high, &self.low] {
            let _ = link.send(Command::Unsubscribe(sid));
        }
    }
}
