//! Counters kept as Prometheus metrics for operators and as atomics on the running gateway,
//! so in-process tests can assert exact counts. Per-delivery counts are added once per batch,
//! never once per member, to keep the fan-out loop free of metric calls.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

#[derive(Debug, Default)]
pub struct Stats {
    /// TLS and QUIC handshakes that did not complete
    /// (`danmu_gateway_tls_handshake_failures_total`).
    pub tls_handshake_failures: AtomicU64,
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    /// Connections refused at accept because the gateway held `max_connections`.
    pub connections_refused: AtomicU64,
    /// Reads of offline pushes that failed and were tried again.
    pub offline_read_retries: AtomicU64,
    /// Reads of offline pushes that succeeded (most find nothing waiting).
    pub offline_reads: AtomicU64,
    /// Connections closed because replies piled up unread (`reply_backlog`).
    pub reply_backlogs: AtomicU64,
    pub auth_ok: AtomicU64,
    pub auth_failed: AtomicU64,
    pub rooms: AtomicI64,
    pub batches_received: AtomicU64,
    /// Batches already delivered (a distributor published them again after a failover).
    pub batches_duplicate: AtomicU64,
    /// Batches that partly overlapped delivered ones and were cut down to the new messages.
    pub batches_trimmed: AtomicU64,
    pub batches_corrupt: AtomicU64,
    /// Derived encodings built from a batch: brotli decoded to raw, raw compressed to zlib.
    /// Once per batch per gateway at most, whatever the member count.
    pub brotli_decodes: AtomicU64,
    pub zlib_encodes: AtomicU64,
    /// Frames queued to members (one per member per batch).
    pub deliveries: AtomicU64,
    /// Messages queued to members (batch size × members).
    pub messages_delivered: AtomicU64,
    /// Connections cut off as slow consumers (queue overflow or a write stall).
    pub slow_consumers: AtomicU64,
    /// Times a connection's socket would not take the bytes it had waiting
    /// (`danmu_gateway_write_stalls_total`): its reader fell behind, for however short.
    pub write_stalls: AtomicU64,
    /// Connections write-blocked now (`danmu_gateway_write_blocked_connections`).
    pub write_blocked_connections: AtomicU64,
    /// Low-priority messages not delivered to a member, for any reason (see metrics for why).
    pub shed_messages: AtomicU64,
    /// Edge batches received from NATS that no member queued
    /// (`danmu_gateway_batches_dropped_total{reason="not_queued"}`): every member's queue was
    /// full or closed, or the group had just emptied.
    pub batches_dropped: AtomicU64,
    /// `-ERR`s from NATS on the edge links, of any kind (`danmu_gateway_nats_errors_total{kind}`).
    pub nats_errors: AtomicU64,
    /// Of those, permissions violations (the link is kept).
    pub nats_permission_errors: AtomicU64,
    /// Established edge links lost, for any reason (`danmu_gateway_nats_link_down_total{priority}`;
    /// failed connection attempts are not counted):
    /// nats-server usually cuts a slow consumer off by closing, without a `-ERR`, so this is
    /// where that shows.
    pub nats_links_down: AtomicU64,
    /// High reach: batches sent with a delivery id, acknowledged, sent again, given up on.
    pub reach_delivered: AtomicU64,
    pub reach_acked: AtomicU64,
    pub reach_retried: AtomicU64,
    pub reach_expired: AtomicU64,
    /// Enter and exit events handed to the publisher, and dropped because it fell behind.
    pub presence_events: AtomicU64,
    pub presence_events_dropped: AtomicU64,
    /// Upstream danmu by result (`danmu_gateway_upstream_total{result}`).
    pub upstream: UpstreamStats,
}

/// Registers every gateway metric's help text with the installed recorder (`promtool check
/// metrics` wants one per metric). Call after installing the exporter; a no-op without one.
pub fn describe() {
    describe_counter!(
        "danmu_gateway_tls_handshake_failures_total",
        "TLS and QUIC handshakes that did not complete, by transport and reason (incomplete: \
         closed before the end, e.g. by the auth timeout)."
    );
    describe_counter!(
        "danmu_gateway_tls_reloads_total",
        "Certificate files found changed and loaded (result=ok) or refused (result=error, the \
         previous certificates stay)."
    );
    describe_gauge!(
        "danmu_gateway_connections",
        "Open client connections, by transport."
    );
    describe_gauge!(
        "danmu_gateway_max_connections",
        "The configured max_connections (absent without a cap)."
    );
    describe_gauge!(
        "danmu_gateway_rooms",
        "Rooms with at least one member on this gateway."
    );
    describe_counter!(
        "danmu_gateway_connections_accepted_total",
        "Connections accepted, by transport."
    );
    describe_counter!(
        "danmu_gateway_connections_closed_total",
        "Connections closed, by transport and reason."
    );
    describe_counter!(
        "danmu_gateway_connections_refused_total",
        "Connections refused at accept, by transport and reason."
    );
    describe_counter!(
        "danmu_gateway_offline_reads_total",
        "Reads of a user's offline pushes on connect, by outcome."
    );
    describe_counter!("danmu_gateway_auth_total", "AUTH attempts, by result.");
    describe_counter!(
        "danmu_gateway_batches_received_total",
        "Edge batches received from NATS, by outcome (ok, duplicate, trimmed, corrupt)."
    );
    describe_counter!(
        "danmu_gateway_variant_encodes_total",
        "Derived encodings built from a batch, by variant (once per batch per gateway)."
    );
    describe_counter!(
        "danmu_gateway_deliveries_total",
        "Frames queued to members (one per member per batch), by priority."
    );
    describe_counter!(
        "danmu_gateway_messages_delivered_total",
        "Messages queued to members (batch size x members), by priority."
    );
    describe_counter!(
        "danmu_gateway_delivered_bytes_total",
        Unit::Bytes,
        "Bytes queued to members, by priority."
    );
    describe_histogram!(
        "danmu_gateway_publish_delay_seconds",
        Unit::Seconds,
        "Delay from publish to queueing at the gateway, once per message (at its batch's oldest message's delay), by priority and scope kind."
    );
    describe_histogram!(
        "danmu_gateway_edge_transit_seconds",
        Unit::Seconds,
        "Hop from the distributor publishing a batch to this gateway receiving it, by priority (hosts' clocks)."
    );
    describe_histogram!(
        "danmu_gateway_fanout_seconds",
        Unit::Seconds,
        "Time to queue one batch for every member of its group, by priority."
    );
    describe_histogram!(
        "danmu_gateway_queue_wait_seconds",
        Unit::Seconds,
        "From a batch queued for a connection to its connection task taking it for the socket (written at once unless the socket is full), sampled on 1 connection in 64."
    );
    describe_counter!(
        "danmu_gateway_reach_total",
        "High-reach delivery ids, by outcome (delivered, acked, retried, expired)."
    );
    describe_counter!(
        "danmu_gateway_batches_dropped_total",
        "Edge batches no member queued, by reason and priority."
    );
    describe_counter!(
        "danmu_gateway_nats_errors_total",
        "-ERR replies from NATS on the edge links, by kind."
    );
    describe_counter!(
        "danmu_gateway_shed_messages_total",
        "Low-priority messages not delivered to a member, by reason."
    );
    describe_counter!(
        "danmu_gateway_write_stalls_total",
        "Times a connection's socket would not take the bytes waiting for it (its reader fell behind)."
    );
    describe_gauge!(
        "danmu_gateway_write_blocked_connections",
        "Connections whose socket is full with bytes still waiting (cut off after write_stall_timeout without progress)."
    );
    describe_gauge!(
        "danmu_gateway_write_blocked_bytes",
        Unit::Bytes,
        "Bytes waiting in the queues of write-blocked connections (outbound queue and write queue)."
    );
    describe_counter!(
        "danmu_gateway_nats_link_down_total",
        "Established edge links to NATS lost, by priority (failed connection attempts are not counted)."
    );
    describe_counter!(
        "danmu_gateway_presence_events_total",
        "Enter and exit events handed to the publisher, by event."
    );
    describe_counter!(
        "danmu_gateway_presence_events_dropped_total",
        "Enter and exit events dropped because the publisher fell behind."
    );
    describe_counter!("danmu_gateway_upstream_total", "Upstream danmu, by result.");
    describe_counter!(
        "danmu_gateway_upstream_publish_errors_total",
        "Upstream danmu accepted but not published to NATS."
    );
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Stats {
    /// A TLS (or QUIC) handshake failed; `reason` from `transport::tls::failure_reason`.
    pub(crate) fn tls_handshake_failed(&self, transport: &'static str, reason: &'static str) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_tls_handshake_failures_total", "transport" => transport, "reason" => reason)
            .increment(1);
    }

    /// Certificate files changed: `result` is `ok` or `error`.
    pub(crate) fn tls_reload(result: &'static str) {
        counter!("danmu_gateway_tls_reloads_total", "result" => result).increment(1);
    }

    pub(crate) fn connection_opened(&self, transport: &'static str) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        gauge!("danmu_gateway_connections", "transport" => transport).increment(1.0);
        counter!("danmu_gateway_connections_accepted_total", "transport" => transport).increment(1);
    }

    /// A connection began to close; `reason` is its close reason's label. Counted when the
    /// decision is made, not when the last byte is flushed (that may take `close_linger`).
    pub(crate) fn connection_closing(&self, transport: &'static str, reason: &'static str) {
        match reason {
            "slow_consumer" => self.slow_consumers.fetch_add(1, Ordering::Relaxed),
            "reply_backlog" => self.reply_backlogs.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        counter!("danmu_gateway_connections_closed_total", "transport" => transport, "reason" => reason)
            .increment(1);
    }

    /// A connection accepted under one transport turned out to be another (QUIC whose ALPN
    /// is `h3`: WebTransport); the open-connections gauge moves, the accepted count stays.
    pub(crate) fn connection_relabeled(&self, from: &'static str, to: &'static str) {
        gauge!("danmu_gateway_connections", "transport" => from).decrement(1.0);
        gauge!("danmu_gateway_connections", "transport" => to).increment(1.0);
    }

    /// A connection's socket is gone.
    pub(crate) fn connection_ended(&self, transport: &'static str) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
        gauge!("danmu_gateway_connections", "transport" => transport).decrement(1.0);
    }

    /// A connection refused at accept (`reason`: `max_connections`).
    pub(crate) fn connection_refused(&self, transport: &'static str, reason: &'static str) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_connections_refused_total", "transport" => transport, "reason" => reason)
            .increment(1);
    }

    /// A read of a user's offline pushes on connect: `ok`, `retried` or `failed`.
    pub(crate) fn offline_read(&self, outcome: &'static str) {
        match outcome {
            "retried" => self.offline_read_retries.fetch_add(1, Ordering::Relaxed),
            "ok" => self.offline_reads.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        counter!("danmu_gateway_offline_reads_total", "outcome" => outcome).increment(1);
    }

    pub(crate) fn auth(&self, ok: bool) {
        let (counter, result) = if ok {
            (&self.auth_ok, "ok")
        } else {
            (&self.auth_failed, "failed")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_auth_total", "result" => result).increment(1);
    }

    pub(crate) fn room_count(&self, delta: i64) {
        let now = self.rooms.fetch_add(delta, Ordering::Relaxed) + delta;
        gauge!("danmu_gateway_rooms").set(now as f64);
    }

    pub(crate) fn batch_received(&self, outcome: &'static str) {
        counter!("danmu_gateway_batches_received_total", "outcome" => outcome).increment(1);
        let counter = match outcome {
            "duplicate" => &self.batches_duplicate,
            "trimmed" => &self.batches_trimmed,
            "corrupt" => &self.batches_corrupt,
            _ => &self.batches_received,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn variant_built(&self, variant: &'static str) {
        let counter = match variant {
            "zlib" => &self.zlib_encodes,
            _ => &self.brotli_decodes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_variant_encodes_total", "variant" => variant).increment(1);
    }

    /// One batch queued to `frames` members: `priority` is `hi` or `lo` (the subject tokens),
    /// `scope` the scope kind ([`scope_label`]). The publish-to-queue delay is the oldest
    /// message's (an upper bound for the others), recorded once per message of the batch so
    /// that quantiles are per message (a stall that delays 1,000 messages in one batch weighs
    /// 1,000), and never once per member.
    pub(crate) fn delivered(&self, delivery: Delivery, publish_delay_secs: Option<f64>) {
        let Delivery {
            frames,
            messages,
            batch_messages,
            bytes,
            priority,
            scope,
        } = delivery;
        self.deliveries.fetch_add(frames, Ordering::Relaxed);
        self.messages_delivered
            .fetch_add(messages, Ordering::Relaxed);
        counter!("danmu_gateway_deliveries_total", "priority" => priority).increment(frames);
        counter!("danmu_gateway_messages_delivered_total", "priority" => priority)
            .increment(messages);
        counter!("danmu_gateway_delivered_bytes_total", "priority" => priority).increment(bytes);
        if let Some(delay) = publish_delay_secs {
            histogram!("danmu_gateway_publish_delay_seconds", "priority" => priority, "scope" => scope)
                .record_many(delay, batch_messages as usize);
        }
    }

    /// A connection's write-blocked share changed: `bytes` queued (a delta) and `connections`
    /// (+1 when its socket filled, which also counts a stall; -1 when its queue emptied or it
    /// closed).
    pub(crate) fn write_blocked(&self, bytes: f64, connections: f64) {
        if connections > 0.0 {
            self.write_stalls.fetch_add(1, Ordering::Relaxed);
            self.write_blocked_connections
                .fetch_add(1, Ordering::Relaxed);
            counter!("danmu_gateway_write_stalls_total").increment(1);
        } else if connections < 0.0 {
            self.write_blocked_connections
                .fetch_sub(1, Ordering::Relaxed);
        }
        if connections != 0.0 {
            gauge!("danmu_gateway_write_blocked_connections").increment(connections);
        }
        if bytes != 0.0 {
            gauge!("danmu_gateway_write_blocked_bytes").increment(bytes);
        }
    }

    /// Exports the configured connection cap (`danmu_gateway_max_connections`), so that
    /// dashboards and the near-cap alert divide by it; nothing is exported without a cap.
    /// Called once at start.
    pub(crate) fn connection_cap(&self, max_connections: Option<usize>) {
        if let Some(max) = max_connections {
            gauge!("danmu_gateway_max_connections").set(max as f64);
        }
        // Series that change only when a reader falls behind exist from the start, at zero,
        // so a healthy gateway's panels show 0 rather than no data.
        counter!("danmu_gateway_write_stalls_total").absolute(0);
        gauge!("danmu_gateway_write_blocked_connections").set(0.0);
        gauge!("danmu_gateway_write_blocked_bytes").set(0.0);
    }

    /// The hop from the distributor publishing a batch to this gateway receiving it (unix
    /// micros of both ends; hosts' clocks differ by their NTP error).
    pub(crate) fn edge_transit(&self, priority: &'static str, sent_unix_micros: i64) {
        if sent_unix_micros <= 0 {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        histogram!("danmu_gateway_edge_transit_seconds", "priority" => priority)
            .record((now - sent_unix_micros).max(0) as f64 / 1e6);
    }

    /// How long a batch waited in a (timed) connection's queue for its connection task.
    pub(crate) fn queue_wait(&self, waited: std::time::Duration) {
        histogram!("danmu_gateway_queue_wait_seconds").record(waited.as_secs_f64());
    }

    /// How long queueing one batch for every member of its group took (the gateway's own hop,
    /// before each connection's socket write).
    pub(crate) fn fanout(&self, priority: &'static str, took: std::time::Duration) {
        histogram!("danmu_gateway_fanout_seconds", "priority" => priority)
            .record(took.as_secs_f64());
    }

    /// Adds a connection's reach counts since `before`.
    pub(crate) fn reach(&self, before: &ReachCounts, now: &ReachCounts) {
        for (counter, outcome, delta) in [
            (
                &self.reach_delivered,
                "delivered",
                now.delivered - before.delivered,
            ),
            (&self.reach_acked, "acked", now.acked - before.acked),
            (&self.reach_retried, "retried", now.retried - before.retried),
            (&self.reach_expired, "expired", now.expired - before.expired),
        ] {
            if delta > 0 {
                counter.fetch_add(delta, Ordering::Relaxed);
                counter!("danmu_gateway_reach_total", "outcome" => outcome).increment(delta);
            }
        }
    }

    /// One edge batch received and not queued to any member, by reason.
    pub(crate) fn batch_dropped(&self, reason: &'static str, priority: &'static str) {
        self.batches_dropped.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_batches_dropped_total", "reason" => reason, "priority" => priority)
            .increment(1);
    }

    /// A `-ERR` from NATS on an edge link; `kind` as `nats::client::ErrorKind::label` gives it
    /// (`slow_consumer` is NATS cutting this gateway off for reading too slowly).
    pub(crate) fn nats_error(&self, kind: &'static str) {
        self.nats_errors.fetch_add(1, Ordering::Relaxed);
        if kind == "permissions" {
            self.nats_permission_errors.fetch_add(1, Ordering::Relaxed);
        }
        counter!("danmu_gateway_nats_errors_total", "kind" => kind).increment(1);
    }

    /// Low-priority messages dropped for members, by reason.
    pub(crate) fn shed(&self, reason: &'static str, messages: u64) {
        self.shed_messages.fetch_add(messages, Ordering::Relaxed);
        counter!("danmu_gateway_shed_messages_total", "reason" => reason).increment(messages);
    }

    /// An edge link lost its connection (it reconnects on its own).
    pub(crate) fn nats_link_down(&self, priority: &'static str) {
        self.nats_links_down.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_nats_link_down_total", "priority" => priority).increment(1);
    }

    pub(crate) fn presence_event(&self, kind: &'static str) {
        self.presence_events.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_presence_events_total", "event" => kind).increment(1);
    }

    pub(crate) fn presence_event_dropped(&self) {
        self.presence_events_dropped.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_presence_events_dropped_total").increment(1);
    }
}

/// The results of upstream danmu, as `danmu_gateway_upstream_total{result}` labels; the
/// upstream decision (`crate::upstream::Outcome`) is indexed the same way.
pub const UPSTREAM_RESULTS: [&str; 10] = [
    "ok",
    "masked",
    "rate_limited",
    "denied_user",
    "denied_ip",
    "blocked_word",
    "bad_request",
    "too_long",
    "disabled",
    "unavailable",
];

/// Upstream results, as metrics and as atomics tests can read.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Indexed like [`UPSTREAM_RESULTS`].
    results: [AtomicU64; UPSTREAM_RESULTS.len()],
    /// Publishes to NATS that failed (the client had been told OK).
    pub publish_failed: AtomicU64,
}

impl UpstreamStats {
    /// Counts one result, by its index in [`UPSTREAM_RESULTS`].
    pub(crate) fn count(&self, index: usize) {
        self.results[index].fetch_add(1, Ordering::Relaxed);
        counter!("danmu_gateway_upstream_total", "result" => UPSTREAM_RESULTS[index]).increment(1);
    }

    /// Requests with this result label so far (`ok`, `masked`, `rate_limited`, ...).
    pub fn get(&self, label: &str) -> u64 {
        UPSTREAM_RESULTS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.results[i].load(Ordering::Relaxed))
    }
}

/// One batch's fan-out, as [`Stats::delivered`] counts it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivery {
    /// Frames queued (one per member that took the batch).
    pub frames: u64,
    /// Messages queued (batch size x frames).
    pub messages: u64,
    /// Messages in the batch (its size, at least 1).
    pub batch_messages: u32,
    /// Bytes queued, summed over members.
    pub bytes: u64,
    /// `hi` or `lo`, as every `priority` label (the subject tokens).
    pub priority: &'static str,
    /// The scope kind, from [`scope_label`].
    pub scope: &'static str,
}

/// The `scope` label of a scope: `room`, `user`, `device`, `region` or `all` (bounded: never
/// the room or user id).
pub(crate) fn scope_label(scope: &danmu_proto::subjects::Scope) -> &'static str {
    use danmu_proto::subjects::Scope;
    match scope {
        Scope::Room(_) => "room",
        Scope::User(_) => "user",
        Scope::Device(_) => "device",
        Scope::Region(_) => "region",
        Scope::All => "all",
    }
}

/// What happened to delivery ids, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReachCounts {
    pub delivered: u64,
    pub acked: u64,
    pub retried: u64,
    pub expired: u64,
}
