//! What the coordinator and its worker processes say to each other: one JSON object per line,
//! the plan and commands on the worker's stdin, reports on its stdout.
//!
//! ```text
//! coordinator → worker   {"worker":0,"target":"danmu",...}          the plan (first line)
//! worker → coordinator   {"Ready":{"connected":7500,"secs":3.1}}
//! worker → coordinator   {"Progress":{"received":123,"warm":7500,...}}   every 100 ms
//! coordinator → worker   {"Stop":{"expected_per_room":[1000]}}
//! worker → coordinator   {"Final":{...}}                            then the worker exits
//! ```

use std::net::SocketAddr;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Which server the clients talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Our gateway (GOIM framing), messages published through the distributor.
    Danmu,
    /// nats-server's own WebSocket listener: clients speak NATS over WebSocket and subscribe to
    /// the room subject; the publisher publishes on that subject directly.
    NatsWs,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Danmu => "danmu",
            Target::NatsWs => "nats-ws",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Ws,
    Tcp,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Tcp => "tcp",
        }
    }
}

/// Where clients get their tokens (our gateway only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TokenSource {
    /// Sign them locally with control's private key (PEM text).
    Key { private_pem: String },
    /// Ask control's `POST /v1/tokens`.
    Control {
        url: String,
        api_key: Option<String>,
    },
    /// The peer needs none.
    None,
}

/// The subject the peer's clients subscribe to and the publisher publishes on, per room.
pub fn peer_subject(room: u64) -> String {
    format!("bench.room.{room}")
}

/// Everything a worker needs to know.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker: usize,
    pub target: Target,
    pub transport: Transport,
    /// The gateway's WebSocket or TCP address, or nats-server's WebSocket address.
    pub addr: SocketAddr,
    /// Global index of this worker's first connection, and how many it opens.
    pub first_conn: u64,
    pub conns: u64,
    pub rooms: u64,
    pub first_room: u64,
    pub first_uid: u64,
    pub protover: u16,
    /// Connections (this worker's first ones) that decode and verify everything.
    pub sample: u64,
    pub token: TokenSource,
    pub connect_concurrency: usize,
    /// Counting-only connections are read at most this often (0: as soon as data arrives).
    pub bulk_interval_ms: u64,
    /// Heartbeat period for our gateway (0: none).
    pub heartbeat_secs: u64,
}

impl WorkerPlan {
    /// Room id of global connection `conn` (round-robin).
    pub fn room_of(&self, conn: u64) -> u64 {
        self.first_room + conn % self.rooms
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Measurement over: report and exit. Published messages per room index.
    Stop { expected_per_room: Vec<u64> },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromWorker {
    Ready {
        connected: u64,
        secs: f64,
    },
    Failed {
        error: String,
    },
    Progress {
        received: u64,
        warm: u64,
        closed: u64,
        errors: u64,
        /// Room ids where some connection has not seen a message yet (at most 2,000).
        cold_rooms: Vec<u64>,
    },
    Final(Box<WorkerFinal>),
}

/// What the sample connections found.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SampleStats {
    pub connections: u64,
    /// Messages decoded and checked.
    pub messages: u64,
    /// Places where sequence numbers jumped forward, and how many numbers were skipped.
    pub gaps: u64,
    pub skipped: u64,
    /// Messages whose sequence was not above the last one (duplicates or reordering).
    pub out_of_order: u64,
    pub wrong_room: u64,
    /// Payloads that were not ours.
    pub unparsed: u64,
}

impl SampleStats {
    pub fn merge(&mut self, other: &SampleStats) {
        self.connections += other.connections;
        self.messages += other.messages;
        self.gaps += other.gaps;
        self.skipped += other.skipped;
        self.out_of_order += other.out_of_order;
        self.wrong_room += other.wrong_room;
        self.unparsed += other.unparsed;
    }

    pub fn clean(&self) -> bool {
        self.gaps == 0 && self.out_of_order == 0 && self.wrong_room == 0 && self.unparsed == 0
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerFinal {
    pub connections: u64,
    /// Messages (not warm-ups) received by all connections: deliveries.
    pub received: u64,
    pub expected: u64,
    /// Connections that got exactly what their room was sent, fewer, more.
    pub complete: u64,
    pub short: u64,
    pub over: u64,
    /// Sum over short connections of what they missed; over ones of what they had extra.
    pub missing: u64,
    pub extra: u64,
    pub max_missing: u64,
    pub warmups: u64,
    /// Bytes read from the sockets (everything: framing, headers, warm-ups, replies).
    pub bytes: u64,
    /// Transport units read: WebSocket frames, or GOIM packets on TCP.
    pub units: u64,
    pub closed: u64,
    pub error_count: u64,
    pub errors: Vec<String>,
    pub sample: SampleStats,
    /// Publish-to-client latency of sample messages, µs: `(value, count)` pairs.
    pub latency_us: Vec<(u64, u64)>,
    /// Worst sample latency (µs) per second of publishing: `(unix second of the publish, µs)`.
    pub worst_per_second: Vec<(u64, u64)>,
    /// Batches decompressed by counting-only connections, and counted from the memo.
    pub batches_decoded: u64,
    pub batches_memo: u64,
    pub cpu_secs: f64,
    pub rss_kib: u64,
}
