//! Presence for one region: online counts summed across every gateway of every region, the
//! online query business asks over NATS, and exits for the connections of gateways that died.
//!
//! - [`online`]: sums of the gateways' reports, plain code.
//! - [`sweeper`]: which connections each gateway still holds, and their exits once it is
//!   gone, plain code.
//!
//! This module is the IO around them: subscriptions, the totals ticker, the query responder and
//! the presence stream. All of it is soft state rebuilt from NATS, so control stays stateless:
//! the sums from the next round of reports (about a second), the sweeper from the stream.

pub mod online;
pub mod sweeper;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, stream};
use danmu_proto::internal::OnlineReport;
use danmu_proto::presence::{OnlineQuery, OnlineReply, PresenceEvent};
use danmu_proto::subjects;
use futures::StreamExt;
use metrics::{counter, gauge};
use prost::Message as _;
use tracing::{info, warn};

use crate::Tasks;
use crate::metrics::{
    ONLINE_CONNECTIONS, ONLINE_GATEWAYS, PRESENCE_EXITS_EMITTED, PRESENCE_LIVE_CONNECTIONS,
    ROOM_ONLINE,
};
use crate::node_table::SharedNodes;
use online::OnlineSums;
use sweeper::Sweeper;

/// Queue group of the online query responders: one control answers each query.
const QUERY_GROUP: &str = "danmu-control";
/// The presence stream's duplicate window: replicas' exits for the same connection collapse.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How often the sweeper looks for gateways that died.
const SWEEP_PERIOD: Duration = Duration::from_millis(500);

/// What presence needs from control's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub region: String,
    pub publish_interval: Duration,
    pub top_rooms: usize,
    pub max_age: Duration,
    /// A gateway silent this long is gone (the same TTL node lists use).
    pub node_ttl: Duration,
}

/// Why presence could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The region's presence stream could neither be opened nor created.
    #[error("creating stream {name}: {source}")]
    Stream {
        name: String,
        source: jetstream::context::CreateStreamError,
    },
    /// A subscription (online reports, online queries) was refused.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        subject: &'static str,
        source: async_nats::SubscribeError,
    },
}

/// Opens (or creates) the region's presence stream, subscribes to online reports and queries,
/// and spawns into `tasks` the report collector, the totals publisher, the query responder and
/// the sweeper. They run until `tasks` is shut down.
pub async fn start(
    client: async_nats::Client,
    nodes: Arc<SharedNodes>,
    settings: Settings,
    tasks: &Tasks,
) -> Result<(), StartError> {
    let js = jetstream::new(client.clone());
    let stream = ensure_stream(&js, &settings).await?;
    let subscribe_error = |subject| move |source| StartError::Subscribe { subject, source };
    let reports = client
        .subscribe(subjects::ONLINE_REPORTS)
        .await
        .map_err(subscribe_error(subjects::ONLINE_REPORTS))?;
    let queries = client
        .queue_subscribe(subjects::ONLINE_QUERY, QUERY_GROUP.into())
        .await
        .map_err(subscribe_error(subjects::ONLINE_QUERY))?;
    let sums = Arc::new(Mutex::new(OnlineSums::default()));
    tasks.spawn(collect_reports(reports, sums.clone()));
    tasks.spawn(publish_totals(
        client.clone(),
        sums.clone(),
        settings.clone(),
    ));
    tasks.spawn(answer_queries(
        client.clone(),
        queries,
        sums,
        settings.top_rooms,
    ));
    tasks.spawn(sweep(js, stream, nodes, settings.clone()));
    info!(region = %settings.region, "presence: online sums, queries and the sweeper running");
    Ok(())
}

/// The region's presence stream, created if missing.
async fn ensure_stream(
    js: &jetstream::Context,
    settings: &Settings,
) -> Result<stream::Stream, StartError> {
    let name = subjects::presence_stream(&settings.region);
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subjects::presence_filter(&settings.region)],
        max_age: settings.max_age,
        duplicate_window: DUPLICATE_WINDOW,
        description: Some("danmu enter/exit events of one region's gateways".into()),
        ..Default::default()
    })
    .await
    .map_err(|source| StartError::Stream { name, source })
}

fn lock(sums: &Mutex<OnlineSums>) -> std::sync::MutexGuard<'_, OnlineSums> {
    sums.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

async fn collect_reports(mut reports: async_nats::Subscriber, sums: Arc<Mutex<OnlineSums>>) {
    while let Some(message) = reports.next().await {
        match OnlineReport::decode(message.payload) {
            Ok(report) => lock(&sums).apply(report, Instant::now()),
            Err(error) => warn!(%error, subject = %message.subject, "undecodable online report"),
        }
    }
}

/// Every interval: drop silent gateways, sum, publish to this region's gateways, and export
/// the top rooms (rooms falling out of the top are set to 0 once, then expire from the
/// exporter, so the metric's cardinality stays bounded).
async fn publish_totals(
    client: async_nats::Client,
    sums: Arc<Mutex<OnlineSums>>,
    settings: Settings,
) {
    let subject = subjects::online_totals(&settings.region);
    let mut exported: Vec<u64> = Vec::new();
    let mut tick = tokio::time::interval(settings.publish_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (totals, top, total) = {
            let mut sums = lock(&sums);
            let totals = sums.recompute(Instant::now(), unix_millis() as i64);
            (totals, sums.top(settings.top_rooms), sums.total())
        };
        gauge!(ONLINE_CONNECTIONS).set(total as f64);
        gauge!(ONLINE_GATEWAYS).set(f64::from(totals.gateways));
        for &(room, count) in &top {
            gauge!(ROOM_ONLINE, "room" => room.to_string()).set(f64::from(count));
        }
        for room in exported
            .iter()
            .filter(|r| !top.iter().any(|(t, _)| t == *r))
        {
            gauge!(ROOM_ONLINE, "room" => room.to_string()).set(0.0);
        }
        exported = top.into_iter().map(|(room, _)| room).collect();
        if let Err(error) = client
            .publish(subject.clone(), totals.encode_to_vec().into())
            .await
        {
            warn!(%error, %subject, "publishing online totals");
        }
    }
}

async fn answer_queries(
    client: async_nats::Client,
    mut queries: async_nats::Subscriber,
    sums: Arc<Mutex<OnlineSums>>,
    max_top: usize,
) {
    while let Some(message) = queries.next().await {
        let Some(reply_to) = message.reply else {
            continue;
        };
        let reply = match serde_json::from_slice::<OnlineQuery>(&message.payload) {
            Ok(query) => lock(&sums).answer(&query, max_top, Instant::now()),
            Err(error) => OnlineReply {
                error: Some(format!(
                    "expected {{\"rooms\":[ids]}} or {{\"top\":n}}: {error}"
                )),
                ..OnlineReply::default()
            },
        };
        let body = serde_json::to_vec(&reply).expect("replies serialize");
        if let Err(error) = client.publish(reply_to, body.into()).await {
            warn!(%error, "answering an online query");
        }
    }
}

/// Follows the region's presence stream from its start and exits the connections of gateways
/// gone silent. Sweeps only once caught up with the stream (an exit may be further on) and
/// once the node table is loaded (else every gateway would look dead).
async fn sweep(
    js: jetstream::Context,
    mut stream: stream::Stream,
    nodes: Arc<SharedNodes>,
    settings: Settings,
) {
    let caught_up_at = match stream.info().await {
        Ok(info) => info.state.last_sequence,
        Err(error) => {
            warn!(%error, "presence stream info; the sweeper is off");
            return;
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects::presence_filter(&settings.region),
            ..Default::default()
        })
        .await;
    let mut events = match consumer {
        Ok(consumer) => match consumer.messages().await {
            Ok(events) => events,
            Err(error) => {
                warn!(%error, "reading the presence stream; the sweeper is off");
                return;
            }
        },
        Err(error) => {
            warn!(%error, "presence stream consumer; the sweeper is off");
            return;
        }
    };
    let mut sweeper = Sweeper::default();
    let mut read_up_to = 0;
    let silence = settings.node_ttl.as_millis() as u64;
    let mut tick = tokio::time::interval(SWEEP_PERIOD);
    loop {
        tokio::select! {
            message = events.next() => {
                let Some(message) = message else { return };
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        warn!(%error, "presence stream");
                        continue;
                    }
                };
                if let Ok(info) = message.info() {
                    read_up_to = info.stream_sequence;
                }
                match serde_json::from_slice::<PresenceEvent>(&message.payload) {
                    Ok(event) => sweeper.apply(&event),
                    Err(error) => warn!(%error, subject = %message.subject, "not a presence event"),
                }
            }
            _ = tick.tick() => {
                gauge!(PRESENCE_LIVE_CONNECTIONS).set(sweeper.live() as f64);
                if read_up_to < caught_up_at || !nodes.is_synced() {
                    continue;
                }
                let now_ms = unix_millis();
                let exits = {
                    let table = nodes.read();
                    sweeper.sweep(
                        |gateway| {
                            table
                                .get(gateway)
                                .is_some_and(|report| table.is_fresh(report, now_ms as i64))
                        },
                        now_ms,
                        silence,
                    )
                };
                for exit in exits {
                    publish_exit(&js, &exit).await;
                }
            }
        }
    }
}

async fn publish_exit(js: &jetstream::Context, exit: &PresenceEvent) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", exit.message_id().as_str());
    let body = serde_json::to_vec(exit).expect("events serialize");
    let stored = match js
        .publish_with_headers(exit.subject(), headers, body.into())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match stored {
        Ok(()) => counter!(PRESENCE_EXITS_EMITTED).increment(1),
        Err(error) => warn!(%error, conn = %exit.conn, "publishing a lost gateway's exit"),
    }
}
