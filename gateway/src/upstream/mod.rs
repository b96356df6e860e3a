//! Upstream danmu: a joined viewer sends UPSTREAM (op 1004); the gateway decides, answers
//! UPSTREAM_REPLY (op 1005) with the request's sequence, and forwards what passes to NATS for
//! business on `danmu.upstream.<room>` (and, in the demo configuration, into the room).
//!
//! # Layout
//! - `config`: the `[upstream]` configuration section.
//! - `limits`: token buckets per user and per room, with an explicit clock.
//! - `moderation`: deny lists (uids, IPs and CIDR blocks) and the word filter (aho-corasick).
//! - `decide`: the decision on one request, plain code: rules in, [`Outcome`] out.
//! - this file: the glue, which counts outcomes, builds the reply and the NATS messages, and
//!   hands them to one publisher task through a bounded queue, so a connection task never
//!   waits on NATS and one connection's danmu are published in order.

mod config;
mod decide;
mod limits;
pub(crate) mod moderation;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use danmu_proto::subjects::{self, Priority, Scope};
use danmu_proto::upstream::{UpstreamDanmu, UpstreamReply, UpstreamRequest, header};
use metrics::counter;
use tokio::sync::mpsc;

pub use config::{RateLimit, UpstreamConfig, WordAction, WordsConfig};
pub use decide::{Moderator, Outcome, Request};

use crate::connection::CloseReason;
use crate::error::ConfigError;
use crate::stats::Stats;

/// When the publish queue is full, clients are told to retry after this long.
const RETRY_WHEN_BUSY: Duration = Duration::from_millis(1000);

/// One gateway's upstream path.
pub struct Upstream {
    moderator: Moderator,
    queue: mpsc::Sender<Outgoing>,
    echo_to_room: bool,
    node_id: String,
    region: String,
    /// Message ids are `<node id>-<start time, unix ms, hex>-<n>`: unique across restarts of a
    /// gateway that keeps its node id, so a business de-duplicating on `Nats-Msg-Id` never drops
    /// a new message as a repeat.
    id_prefix: String,
    next_id: AtomicU64,
}

/// Messages for the publisher task: the business one, then the room echo if configured.
#[derive(Debug)]
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

pub use crate::connection::{Handled, Sender};

impl Upstream {
    /// Builds the rules and starts the publisher task on `nats`.
    pub fn start(
        config: &UpstreamConfig,
        node_id: &str,
        region: &str,
        nats: async_nats::Client,
        stats: std::sync::Arc<Stats>,
        now_unix_ms: u64,
    ) -> Result<Upstream, ConfigError> {
        let (queue, outgoing) = mpsc::channel(config.queue_len);
        let upstream = Upstream::new(config, node_id, region, queue, now_unix_ms)?;
        tokio::spawn(publish(nats, outgoing, stats));
        Ok(upstream)
    }

    /// The rules, publishing into `queue` (tests read the other end).
    pub fn new(
        config: &UpstreamConfig,
        node_id: &str,
        region: &str,
        queue: mpsc::Sender<Outgoing>,
        now_unix_ms: u64,
    ) -> Result<Upstream, ConfigError> {
        Ok(Upstream {
            moderator: Moderator::new(config, Instant::now())?,
            queue,
            echo_to_room: config.echo_to_room,
            node_id: node_id.into(),
            region: region.into(),
            id_prefix: format!("{node_id}-{now_unix_ms:x}"),
            next_id: AtomicU64::new(1),
        })
    }

    fn decide(&self, sender: &Sender, body: &[u8]) -> (Outcome, Option<String>) {
        let request = Request {
            uid: sender.uid,
            room: sender.room,
            ip: sender.ip,
            body,
        };
        let outcome = self.moderator.decide(&request, sender.now);
        let (Outcome::Ok(danmu) | Outcome::Masked(danmu)) = &outcome else {
            return (outcome, None);
        };
        let id = format!(
            "{}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let masked = matches!(outcome, Outcome::Masked(_));
        let messages = self.messages(sender, &id, danmu, masked);
        // Reserve room for all of them at once: an echo never goes out without its original.
        match self.queue.try_reserve_many(messages.len()) {
            Ok(permits) => {
                for (permit, message) in permits.zip(messages) {
                    permit.send(message);
                }
                (outcome, Some(id))
            }
            Err(_) => (
                Outcome::Unavailable {
                    retry_after: RETRY_WHEN_BUSY,
                },
                None,
            ),
        }
    }

    fn messages(
        &self,
        sender: &Sender,
        id: &str,
        danmu: &UpstreamRequest,
        masked: bool,
    ) -> Vec<Outgoing> {
        let danmu = UpstreamDanmu {
            cmd: "DANMU_MSG".into(),
            id: id.into(),
            uid: sender.uid,
            device: sender.device.into(),
            room: sender.room,
            msg: danmu.msg.clone(),
            color: danmu.color,
            mode: danmu.mode,
            masked,
            ts_ms: sender.now_unix_ms,
            gateway: self.node_id.clone(),
            region: self.region.clone(),
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert(header::UID, sender.uid.to_string().as_str());
        headers.insert(header::ROOM, sender.room.to_string().as_str());
        headers.insert(header::IP, sender.ip.to_canonical().to_string().as_str());
        headers.insert(header::GATEWAY, self.node_id.as_str());
        let mut out = vec![Outgoing {
            subject: subjects::upstream(sender.room),
            headers,
            payload: serde_json::to_vec(&danmu).expect("serializes").into(),
        }];
        if self.echo_to_room {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id);
            out.push(Outgoing {
                subject: subjects::push(Priority::Low, &Scope::Room(sender.room)),
                headers,
                payload: danmu.room_message().to_string().into(),
            });
        }
        out
    }
}

/// Decides on one UPSTREAM, counts it, queues what passes, and builds the reply. Without an
/// upstream path (`None`) every request is answered as disabled.
pub fn handle(
    upstream: Option<&Upstream>,
    stats: &Stats,
    sender: &Sender,
    seq: u32,
    body: &[u8],
) -> Handled {
    let (outcome, id) = match upstream {
        Some(upstream) => upstream.decide(sender, body),
        None => (Outcome::Disabled, None),
    };
    stats.upstream.count(outcome.index());
    let mut reply = UpstreamReply {
        code: outcome.code(),
        id,
        ..Default::default()
    };
    let mut close = None;
    match outcome {
        Outcome::Masked(danmu) => reply.msg = Some(danmu.msg),
        Outcome::RateLimited { retry_after, flood } => {
            reply.retry_after_ms = Some(retry_after.as_millis() as u64);
            if flood {
                close = Some(CloseReason::Flood);
            }
        }
        Outcome::Unavailable { retry_after } => {
            reply.retry_after_ms = Some(retry_after.as_millis() as u64)
        }
        Outcome::TooLong { max_chars } => reply.max_chars = Some(max_chars),
        _ => {}
    }
    Handled {
        reply: reply.to_frame(seq),
        close,
    }
}

/// The publisher task: core NATS publishes, in queue order, until the gateway is gone.
async fn publish(
    nats: async_nats::Client,
    mut outgoing: mpsc::Receiver<Outgoing>,
    stats: std::sync::Arc<Stats>,
) {
    while let Some(message) = outgoing.recv().await {
        let subject = message.subject.clone();
        if let Err(error) = nats
            .publish_with_headers(message.subject, message.headers, message.payload)
            .await
        {
            stats
                .upstream
                .publish_failed
                .fetch_add(1, Ordering::Relaxed);
            counter!("danmu_gateway_upstream_publish_errors_total").increment(1);
            tracing::warn!(%error, %subject, "publishing an upstream danmu");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(config: UpstreamConfig, queue_len: usize) -> (Upstream, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(queue_len);
        let upstream = Upstream::new(&config, "gw-t", "A", tx, 0x1234).unwrap();
        (upstream, rx)
    }

    fn sender(now: Instant) -> Sender<'static> {
        Sender {
            uid: 42,
            device: "dev-1",
            room: 1001,
            ip: "::ffff:192.0.2.1".parse().unwrap(),
            now,
            now_unix_ms: 1_700_000_000_123,
        }
    }

    fn reply_body(reply: &Bytes) -> serde_json::Value {
        let frame = danmu_proto::frame::decode(&mut bytes::BytesMut::from(&reply[..]), 1 << 16)
            .unwrap()
            .unwrap();
        assert_eq!(frame.op, danmu_proto::frame::op::UPSTREAM_REPLY);
        assert_eq!(frame.seq, 7, "the reply echoes the request's sequence");
        serde_json::from_slice(&frame.body).unwrap()
    }

    #[test]
    fn what_passes_is_queued_for_business_and_echoed_into_the_room() {
        let config = UpstreamConfig {
            echo_to_room: true,
            ..Default::default()
        };
        let (upstream, mut rx) = upstream(config, 8);
        let stats = Stats::default();
        let body = br#"{"msg":"hello","color":255,"mode":4}"#;
        let handled = handle(Some(&upstream), &stats, &sender(Instant::now()), 7, body);
        assert!(handled.close.is_none());
        assert_eq!(
            reply_body(&handled.reply),
            serde_json::json!({"code": 0, "id": "gw-t-1234-1"})
        );
        assert_eq!(stats.upstream.get("ok"), 1);

        let business = rx.try_recv().unwrap();
        assert_eq!(business.subject, "danmu.upstream.1001");
        let header = |name: &str| business.headers.get(name).unwrap().as_str().to_owned();
        assert_eq!(header("Nats-Msg-Id"), "gw-t-1234-1");
        assert_eq!(header("Danmu-Uid"), "42");
        assert_eq!(header("Danmu-Room"), "1001");
        assert_eq!(header("Danmu-Ip"), "192.0.2.1");
        assert_eq!(header("Danmu-Gateway"), "gw-t");
        let danmu: UpstreamDanmu = serde_json::from_slice(&business.payload).unwrap();
        assert_eq!(
            serde_json::to_value(&danmu).unwrap(),
            serde_json::json!({
                "cmd": "DANMU_MSG", "id": "gw-t-1234-1", "uid": 42, "device": "dev-1",
                "room": 1001, "msg": "hello", "color": 255, "mode": 4, "masked": false,
                "ts_ms": 1_700_000_000_123u64, "gateway": "gw-t", "region": "A",
            })
        );

        let echo = rx.try_recv().unwrap();
        assert_eq!(echo.subject, "danmu.push.lo.room.1001");
        let room: serde_json::Value = serde_json::from_slice(&echo.payload).unwrap();
        assert_eq!(
            room,
            serde_json::json!({"cmd": "DANMU_MSG",
                "info": [[0, 4, 25, 255, 1_700_000_000_123u64], "hello", [42, "42"]]})
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn refusals_are_answered_and_queue_nothing() {
        let mut config = UpstreamConfig {
            max_msg_chars: 4,
            flood_close_after: 2,
            user_limit: RateLimit {
                rate_per_sec: 2.0,
                burst: 2,
            },
            ..Default::default()
        };
        config.words.list = vec!["bad".into()];
        let (upstream, mut rx) = upstream(config, 8);
        let stats = Stats::default();
        let t0 = Instant::now();
        let ask = |body: &[u8]| handle(Some(&upstream), &stats, &sender(t0), 7, body);
        assert_eq!(
            reply_body(&ask(br#"{"msg":"toolong"}"#).reply),
            serde_json::json!({"code": -206, "max_chars": 4})
        );
        assert_eq!(
            reply_body(&ask(br#"{"msg":"bad"}"#).reply),
            serde_json::json!({"code": -204})
        );
        let limited = ask(br#"{"msg":"ok"}"#);
        assert_eq!(
            reply_body(&limited.reply),
            serde_json::json!({"code": -201, "retry_after_ms": 500})
        );
        assert!(limited.close.is_none());
        assert_eq!(ask(b"x").close, Some(CloseReason::Flood));
        assert!(rx.try_recv().is_err());
        for (label, n) in [("too_long", 1), ("blocked_word", 1), ("rate_limited", 2)] {
            assert_eq!(stats.upstream.get(label), n, "{label}");
        }

        let disabled = handle(None, &stats, &sender(t0), 7, b"{}");
        assert_eq!(
            reply_body(&disabled.reply),
            serde_json::json!({"code": -207})
        );
        assert_eq!(stats.upstream.get("disabled"), 1);
    }

    #[test]
    fn a_full_queue_is_answered_unavailable() {
        let (upstream, _rx) = upstream(
            UpstreamConfig {
                echo_to_room: true,
                ..Default::default()
            },
            1,
        );
        let stats = Stats::default();
        // The message and its echo need two places; the queue has one.
        let handled = handle(
            Some(&upstream),
            &stats,
            &sender(Instant::now()),
            7,
            br#"{"msg":"hi"}"#,
        );
        assert_eq!(
            reply_body(&handled.reply),
            serde_json::json!({"code": -208, "retry_after_ms": 1000})
        );
        assert_eq!(stats.upstream.get("unavailable"), 1);
    }
}
