//! Presence over NATS: enter/exit events out to business, this gateway's online counts out to
//! control, and control's totals back in.
//!
//! Connection tasks never wait on NATS: events go through a bounded channel to one publisher
//! task (a full channel drops the event and counts it), and totals are read from a table the
//! subscriber task replaces.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use danmu_proto::internal::{OnlineReport, OnlineTotals, RoomCount};
use danmu_proto::presence::PresenceEvent;
use danmu_proto::subjects;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::online::Totals;
use crate::stats::Stats;

/// Events waiting for the publisher at most; beyond that they are dropped and counted.
const EVENT_QUEUE: usize = 64 * 1024;

/// Where connection tasks hand their events.
pub struct EventSink {
    sender: mpsc::Sender<PresenceEvent>,
    /// Accepted into the channel; the publisher counts what it published, so shutdown can wait
    /// until the two agree.
    accepted: AtomicU64,
    published: Arc<AtomicU64>,
    stats: Arc<Stats>,
}

impl EventSink {
    /// The sink and its publisher task (to spawn).
    pub fn start(
        client: async_nats::Client,
        stats: Arc<Stats>,
    ) -> (EventSink, impl Future<Output = ()>) {
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        let published = Arc::new(AtomicU64::new(0));
        let sink = EventSink {
            sender,
            accepted: AtomicU64::new(0),
            published: published.clone(),
            stats,
        };
        (sink, publish_events(client, receiver, published))
    }

    pub fn emit(&self, event: PresenceEvent) {
        let kind = event.event.token();
        match self.sender.try_send(event) {
            Ok(()) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                self.stats.presence_event(kind);
            }
            Err(_) => self.stats.presence_event_dropped(),
        }
    }

    /// Waits (at most `limit`) until every accepted event has been handed to NATS.
    pub async fn flushed(&self, client: &async_nats::Client, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.published.load(Ordering::Relaxed) < self.accepted.load(Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = tokio::time::timeout_at(deadline, client.flush()).await;
    }
}

async fn publish_events(
    client: async_nats::Client,
    mut events: mpsc::Receiver<PresenceEvent>,
    published: Arc<AtomicU64>,
) {
    while let Some(event) = events.recv().await {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.message_id().as_str());
        let body = serde_json::to_vec(&event).expect("events serialize");
        if let Err(error) = client
            .publish_with_headers(event.subject(), headers, body.into())
            .await
        {
            tracing::warn!(%error, conn = %event.conn, "publishing a presence event");
        }
        published.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes this gateway's per-room member counts every `interval`, and an empty report on
/// shutdown so control stops counting it at once.
pub async fn report_online(
    client: async_nats::Client,
    room_counts: impl Fn() -> Vec<(u64, u32)>,
    node_id: String,
    region: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let subject = subjects::online_report(&region);
    let report = |rooms: Vec<(u64, u32)>| OnlineReport {
        node_id: node_id.clone(),
        region: region.clone(),
        rooms: rooms
            .into_iter()
            .map(|(room, count)| RoomCount { room, count })
            .collect(),
        interval_ms: interval.as_millis() as u32,
        reported_unix_millis: crate::unix_millis() as i64,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let body = report(room_counts()).encode_to_vec();
        if let Err(error) = client.publish(subject.clone(), body.into()).await {
            tracing::warn!(%error, "publishing online counts");
        }
    }
    // Connections drain after this; their exits keep the events exact, while the counts only
    // need to stop including this gateway.
    let _ = client
        .publish(subject, report(Vec::new()).encode_to_vec().into())
        .await;
}

/// Keeps `totals` at control's latest sums for this region.
pub async fn follow_totals(
    client: async_nats::Client,
    region: String,
    totals: Arc<RwLock<Totals>>,
) {
    let subject = subjects::online_totals(&region);
    let mut updates = match client.subscribe(subject.clone()).await {
        Ok(subscriber) => subscriber,
        Err(error) => {
            tracing::error!(%error, %subject, "subscribing to online totals");
            return;
        }
    };
    while let Some(message) = updates.next().await {
        match OnlineTotals::decode(message.payload) {
            Ok(update) => totals
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .replace(update, Instant::now()),
            Err(error) => tracing::warn!(%error, %subject, "undecodable online totals"),
        }
    }
}
