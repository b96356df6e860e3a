//! Counters kept twice on purpose: as Prometheus metrics for operators, and as atomics on the
//! running service so in-process tests can assert exact counts (metrics recorders are global
//! per process and tests run in parallel).

use std::sync::atomic::{AtomicU64, Ordering};

use danmu_proto::subjects::Priority;
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::encode::EncodeStats;

/// Registers every distributor metric's help text with the installed recorder (`promtool
/// check metrics` wants one per metric). A no-op without a recorder.
pub fn describe() {
    describe_counter!(
        "danmu_distributor_messages_in_total",
        "Messages taken from the push streams, by priority."
    );
    describe_counter!(
        "danmu_distributor_redeliveries_total",
        "Messages JetStream handed out again, by priority."
    );
    describe_counter!(
        "danmu_distributor_sampled_out_total",
        "Messages of targets past max_rate, acknowledged without delivery (big-room degrade), by priority."
    );
    describe_counter!(
        "danmu_distributor_messages_rejected_total",
        "Messages terminated as invalid, by priority and reason."
    );
    describe_histogram!(
        "danmu_distributor_stream_wait_seconds",
        Unit::Seconds,
        "Hop from JetStream storing a message to this distributor receiving it (first deliveries), by priority."
    );
    describe_histogram!(
        "danmu_distributor_batch_delay_seconds",
        Unit::Seconds,
        "From JetStream storing a batch's oldest message to the batch's publish on its edge subject, by priority."
    );
    describe_counter!(
        "danmu_distributor_batches_uncompressed_total",
        "Batches published as a plain version-0 packet (a lone short message), by priority."
    );
    describe_counter!(
        "danmu_distributor_offline_store_errors_total",
        "User pushes JetStream did not store in the offline stream (nak'ed, so redelivered)."
    );
    describe_gauge!(
        "danmu_distributor_window_max_seconds",
        Unit::Seconds,
        "The widest aggregation window a hot target's rate can reach, by priority."
    );
    describe_histogram!(
        "danmu_distributor_compress_seconds",
        Unit::Seconds,
        "Time to compress one batch, by priority."
    );
    describe_histogram!(
        "danmu_distributor_batch_messages",
        Unit::Count,
        "Messages per published batch, by priority."
    );
    describe_counter!(
        "danmu_distributor_batch_raw_bytes_total",
        Unit::Bytes,
        "Batch bytes before compression, by priority."
    );
    describe_counter!(
        "danmu_distributor_batch_compressed_bytes_total",
        Unit::Bytes,
        "Batch bytes after compression, by priority."
    );
    describe_histogram!(
        "danmu_distributor_compression_ratio",
        "Compressed over raw size per batch, by priority."
    );
    describe_counter!(
        "danmu_distributor_batches_out_total",
        "Batches published on edge subjects, by priority."
    );
    describe_counter!(
        "danmu_distributor_offline_stored_total",
        "User pushes stored for offline users."
    );
    describe_counter!(
        "danmu_distributor_ack_errors_total",
        "Acks to JetStream that could not be sent, by priority."
    );
    describe_gauge!(
        "danmu_distributor_consumer_pending_messages",
        "Messages in the push stream not yet delivered to a distributor (consumer lag), by priority."
    );
    describe_gauge!(
        "danmu_distributor_consumer_ack_pending_messages",
        "Messages delivered to a distributor and not yet acked, by priority."
    );
    describe_gauge!(
        "danmu_distributor_window_seconds",
        Unit::Seconds,
        "The configured aggregation window, by priority."
    );
    describe_gauge!(
        "danmu_distributor_window_max_messages",
        "Messages that close a window early, by priority."
    );
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Messages taken from the push streams.
    pub messages_in: AtomicU64,
    /// Messages JetStream handed out again (a previous consumer died before acking).
    pub redeliveries: AtomicU64,
    /// Messages terminated because their subject or size is invalid.
    pub messages_rejected: AtomicU64,
    /// Batches published on edge subjects.
    pub batches_out: AtomicU64,
    /// Batch compressions: one per published batch, never more (none for a lone short message,
    /// which leaves as a plain packet).
    pub compressions: AtomicU64,
    /// Acks that could not be sent.
    pub ack_errors: AtomicU64,
    /// User pushes stored for offline users.
    pub offline_stored: AtomicU64,
    /// User pushes JetStream did not store (negatively acknowledged, so redelivered and retried).
    pub offline_store_errors: AtomicU64,
    /// Messages of targets past `max_rate`, acknowledged without delivery.
    pub sampled_out: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Exports a priority's aggregation window bounds as configured
    /// (`danmu_distributor_window_seconds`, `danmu_distributor_window_max_messages`): the
    /// longest a hot room's message waits, and the batch size that closes a window early.
    pub(crate) fn window(&self, priority: Priority, window: crate::window::WindowConfig) {
        gauge!("danmu_distributor_window_seconds", "priority" => priority.token())
            .set(window.window.as_secs_f64());
        gauge!("danmu_distributor_window_max_seconds", "priority" => priority.token())
            .set(window.max_window.max(window.window).as_secs_f64());
        gauge!("danmu_distributor_window_max_messages", "priority" => priority.token())
            .set(window.max_messages as f64);
        // Present from the start, so the degrade panel shows 0 rather than no data.
        counter!("danmu_distributor_sampled_out_total", "priority" => priority.token()).absolute(0);
    }

    pub(crate) fn message_in(&self, priority: Priority, redelivered: bool) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_distributor_messages_in_total", "priority" => priority.token())
            .increment(1);
        if redelivered {
            self.redeliveries.fetch_add(1, Ordering::Relaxed);
            counter!("danmu_distributor_redeliveries_total", "priority" => priority.token())
                .increment(1);
        }
    }

    /// A message of a target past `max_rate` was dropped from delivery.
    pub(crate) fn sampled_out(&self, priority: Priority) {
        self.sampled_out.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_distributor_sampled_out_total", "priority" => priority.token())
            .increment(1);
    }

    pub(crate) fn message_rejected(&self, priority: Priority, reason: &'static str) {
        self.messages_rejected.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_distributor_messages_rejected_total", "priority" => priority.token(), "reason" => reason)
            .increment(1);
    }

    pub(crate) fn batch_encoded(
        &self,
        priority: Priority,
        messages: usize,
        encoded: EncodeStats,
        seconds: f64,
    ) {
        let prio = priority.token();
        if encoded.compressed {
            self.compressions.fetch_add(1, Ordering::Relaxed);
            histogram!("danmu_distributor_compress_seconds", "priority" => prio).record(seconds);
        } else {
            counter!("danmu_distributor_batches_uncompressed_total", "priority" => prio)
                .increment(1);
        }
        histogram!("danmu_distributor_batch_messages", "priority" => prio).record(messages as f64);
        counter!("danmu_distributor_batch_raw_bytes_total", "priority" => prio)
            .increment(encoded.raw_len as u64);
        counter!("danmu_distributor_batch_compressed_bytes_total", "priority" => prio)
            .increment(encoded.packet_len as u64);
        if encoded.raw_len > 0 {
            histogram!("danmu_distributor_compression_ratio", "priority" => prio)
                .record(encoded.packet_len as f64 / encoded.raw_len as f64);
        }
    }

    /// How long a message waited in its push stream: from JetStream storing it to this
    /// distributor receiving it (the first hop inside the fabric).
    pub(crate) fn stream_wait(&self, priority: Priority, seconds: f64) {
        histogram!("danmu_distributor_stream_wait_seconds", "priority" => priority.token())
            .record(seconds);
    }

    /// From JetStream storing a batch's oldest message to the batch's publish on its edge
    /// subject: the stream wait plus the aggregation window and the encoding.
    pub(crate) fn batch_delay(&self, priority: Priority, seconds: f64) {
        histogram!("danmu_distributor_batch_delay_seconds", "priority" => priority.token())
            .record(seconds);
    }

    pub(crate) fn batch_published(&self, priority: Priority) {
        self.batches_out.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_distributor_batches_out_total", "priority" => priority.token())
            .increment(1);
    }

    pub(crate) fn offline_stored(&self, messages: u64) {
        self.offline_stored.fetch_add(messages, Ordering::Relaxed);
        counter!("danmu_distributor_offline_stored_total").increment(messages);
    }

    pub(crate) fn offline_store_failed(&self, messages: u64) {
        self.offline_store_errors
            .fetch_add(messages, Ordering::Relaxed);
        counter!("danmu_distributor_offline_store_errors_total").increment(messages);
    }

    pub(crate) fn ack_error(&self, priority: Priority) {
        self.ack_errors.fetch_add(1, Ordering::Relaxed);
        counter!("danmu_distributor_ack_errors_total", "priority" => priority.token()).increment(1);
    }
}
