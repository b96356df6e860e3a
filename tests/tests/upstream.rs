//! Upstream danmu (op 1004) on real nats-server: refused requests (over the user's rate, denied
//! uid, denied IP, blocked word, bad body, too long) get their documented UPSTREAM_REPLY code
//! and never reach NATS; a masked one arrives masked; a clean one arrives on
//! `danmu.upstream.<room>` with its fields and, with the demo echo on, at every room member.
//!
//! Absence is proven without waiting: everything one gateway accepts goes through one publisher
//! queue and one NATS connection, in order, so when the clean message sent after the refused
//! ones is the next to arrive, none of the refused ones was published.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use danmu_gateway::upstream::{RateLimit, UpstreamConfig, WordAction};
use danmu_proto::frame::{Frame, op};
use danmu_proto::subjects;
use danmu_tests::client::{Client, Event, Transport};
use danmu_tests::fabric::{self, SingleRegion};
use danmu_tests::room::{self, WARMUP};
use futures::StreamExt as _;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const ROOM: u64 = 1;
/// The fixture gateway refuses danmu from this address; clients bind it as their source.
const DENIED_IP: &str = "127.0.0.2";

/// A room member that keeps the danmu it receives while waiting for a reply.
struct Member {
    client: Client,
    inbox: VecDeque<Value>,
}

impl Member {
    fn new(client: Client) -> Member {
        Member {
            client,
            inbox: VecDeque::new(),
        }
    }

    /// Sends UPSTREAM with `body` and returns the UPSTREAM_REPLY body.
    async fn send(&mut self, seq: u32, body: impl Into<String>) -> anyhow::Result<Value> {
        let frame = Frame::new(1, op::UPSTREAM, seq, body.into().into_bytes());
        self.client.send(&frame).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.next(left).await? {
                Event::Frame(f) if f.op == op::UPSTREAM_REPLY => {
                    ensure!(f.seq == seq, "the reply echoes the request's sequence");
                    ensure!(f.version == 1, "replies are control packets");
                    return Ok(serde_json::from_slice(&f.body)?);
                }
                Event::Frame(f) if f.op == op::MESSAGE => self.keep(&f)?,
                Event::Frame(_) => {}
                Event::Closed(why) => bail!("closed while waiting for UPSTREAM_REPLY: {why:?}"),
            }
        }
    }

    /// The next danmu the room delivered (warm-ups skipped).
    async fn next_danmu(&mut self) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.inbox.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.next(left).await? {
                Event::Frame(f) if f.op == op::MESSAGE => self.keep(&f)?,
                Event::Frame(_) => {}
                Event::Closed(why) => bail!("closed while waiting for a danmu: {why:?}"),
            }
        }
        Ok(self.inbox.pop_front().expect("not empty"))
    }

    fn keep(&mut self, f: &Frame) -> anyhow::Result<()> {
        for payload in self.client.unpack(f)? {
            let value: Value = serde_json::from_slice(&payload)?;
            if value["cmd"] != WARMUP {
                self.inbox.push_back(value);
            }
        }
        Ok(())
    }
}

/// The text and sender of a room `DANMU_MSG`.
fn text_and_uid(danmu: &Value) -> (String, u64) {
    (
        danmu["info"][1].as_str().unwrap_or_default().to_owned(),
        danmu["info"][2][0].as_u64().unwrap_or_default(),
    )
}

fn msg(text: &str) -> String {
    json!({ "msg": text }).to_string()
}

async fn next_upstream(sub: &mut async_nats::Subscriber) -> anyhow::Result<async_nats::Message> {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .context("waiting for a message on danmu.upstream.>")?
        .context("subscription ended")
}

fn body(message: &async_nats::Message) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&message.payload)?)
}

fn header(message: &async_nats::Message, name: &str) -> String {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

fn config(upstream: &mut UpstreamConfig) {
    upstream.echo_to_room = true;
    // Two danmu, then one every 1000 s: the third is refused for the whole test.
    upstream.user_limit = RateLimit {
        rate_per_sec: 0.001,
        burst: 2,
    };
    upstream.max_msg_chars = 20;
    upstream.deny_uids = vec![666];
    upstream.words.list = vec!["spam".into()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_danmu_are_answered_and_never_forwarded_and_clean_ones_reach_business_and_the_room()
-> anyhow::Result<()> {
    let f = SingleRegion::start_with(|_, gateway| {
        config(&mut gateway.upstream);
        gateway.upstream.deny_ips = vec![format!("{DENIED_IP}/32")];
    })
    .await?;
    // A second gateway in the same room whose word filter masks instead of rejecting.
    let mut masking = fabric::gateway_config(&f.url(), "A", &f.keys);
    config(&mut masking.upstream);
    masking.upstream.words.action = WordAction::Mask;
    let masking = fabric::start_gateway(masking).await?;

    let mut sub = f.business.subscribe(subjects::UPSTREAM_FILTER).await?;
    f.business.flush().await?;

    let mut sender = Member::new(f.join(Transport::WebSocket, 10, ROOM, 3).await?);
    let mut viewer = Member::new(f.join(Transport::Tcp, 11, ROOM, 0).await?);
    let mut denied = Member::new(f.join(Transport::Tcp, 666, ROOM, 2).await?);
    let mut careless = Member::new(f.join(Transport::WebSocket, 14, ROOM, 0).await?);
    let mut masker = Member::new(
        room::join(
            &f.keys,
            Transport::WebSocket,
            masking.ws_addr.unwrap(),
            12,
            ROOM,
            3,
        )
        .await?,
    );
    let mut from_denied_ip = {
        let mut client = Client::connect_from(
            Transport::Tcp,
            f.addr(Transport::Tcp),
            DENIED_IP.parse::<IpAddr>()?,
        )
        .await?;
        let token = f.keys.token(13, Some(vec![ROOM]), Duration::from_secs(600));
        ensure!(client.auth(13, ROOM, 3, &token).await? == 0);
        Member::new(client)
    };
    room::warm_up(
        &f.business,
        ROOM,
        &mut [&mut sender.client, &mut viewer.client, &mut masker.client],
        WAIT,
    )
    .await?;

    // A clean danmu: replied 0 with its id, published for business with every field, and
    // echoed to every member of the room, on both gateways.
    let before_ms = fabric::unix_now() * 1000;
    let reply = sender
        .send(1, r#"{"msg":"hello 弹幕","color":16711680,"mode":4}"#)
        .await?;
    assert_eq!(reply["code"], 0, "{reply}");
    let id = reply["id"].as_str().context("an ok reply carries the id")?;
    let message = next_upstream(&mut sub).await?;
    assert_eq!(message.subject.as_str(), "danmu.upstream.1");
    assert_eq!(header(&message, "Nats-Msg-Id"), id);
    assert_eq!(header(&message, "Danmu-Uid"), "10");
    assert_eq!(header(&message, "Danmu-Room"), "1");
    assert_eq!(header(&message, "Danmu-Ip"), "127.0.0.1");
    assert_eq!(header(&message, "Danmu-Gateway"), f.gateway.node_id);
    let danmu = body(&message)?;
    let ts_ms = danmu["ts_ms"].as_u64().context("ts_ms")?;
    assert!(ts_ms >= before_ms && ts_ms < before_ms + 60_000, "{danmu}");
    assert_eq!(
        danmu,
        json!({
            "cmd": "DANMU_MSG", "id": id, "uid": 10, "device": "device-10", "room": 1,
            "msg": "hello 弹幕", "color": 16711680, "mode": 4, "masked": false, "ts_ms": ts_ms,
            "gateway": f.gateway.node_id, "region": "A",
        })
    );
    for member in [&mut sender, &mut viewer, &mut masker] {
        let echoed = member.next_danmu().await?;
        assert_eq!(text_and_uid(&echoed), ("hello 弹幕".into(), 10));
        assert_eq!(echoed["info"][0], json!([0, 4, 25, 16711680, ts_ms]));
    }

    // The sender's second danmu uses its burst; the third is over the rate.
    assert_eq!(sender.send(2, msg("two")).await?["code"], 0);
    assert_eq!(body(&next_upstream(&mut sub).await?)?["msg"], "two");
    let limited = sender.send(3, msg("three")).await?;
    assert_eq!(limited["code"], -201, "{limited}");
    let retry = limited["retry_after_ms"].as_u64().context("retry hint")?;
    assert!(retry > 900_000, "one token per 1000 s: {retry}");

    assert_eq!(
        denied.send(4, msg("let me in")).await?,
        json!({"code": -202})
    );
    assert_eq!(
        from_denied_ip.send(5, msg("from a denied IP")).await?,
        json!({"code": -203})
    );
    assert_eq!(
        viewer.send(6, msg("buy SPAM now")).await?,
        json!({"code": -204})
    );
    // Bad bodies are answered, not closed (each spends one of the user's two tokens).
    assert_eq!(careless.send(7, "{not json").await?, json!({"code": -205}));
    assert_eq!(
        careless.send(8, msg("twenty-one characters")).await?,
        json!({"code": -206, "max_chars": 20})
    );

    // The next danmu to arrive, on NATS and in the room, is the clean one sent after them.
    assert_eq!(viewer.send(9, msg("after")).await?["code"], 0);
    let next = body(&next_upstream(&mut sub).await?)?;
    assert_eq!(
        (next["msg"].as_str(), next["uid"].as_u64()),
        (Some("after"), Some(11))
    );
    for member in [&mut sender, &mut viewer, &mut masker] {
        assert_eq!(
            text_and_uid(&member.next_danmu().await?),
            ("two".into(), 10)
        );
        assert_eq!(
            text_and_uid(&member.next_danmu().await?),
            ("after".into(), 11)
        );
    }

    // Masked: forwarded and echoed with a star per character of the blocked word.
    let reply = masker.send(10, msg("SPAM or Spam?")).await?;
    assert_eq!(reply["code"], 1, "{reply}");
    assert_eq!(reply["msg"], "**** or ****?");
    let message = next_upstream(&mut sub).await?;
    assert_eq!(header(&message, "Danmu-Gateway"), masking.node_id);
    let masked = body(&message)?;
    assert_eq!(masked["msg"], "**** or ****?");
    assert_eq!(masked["masked"], true);
    assert_eq!(masked["uid"], 12);
    for member in [&mut sender, &mut viewer, &mut masker] {
        let (text, uid) = text_and_uid(&member.next_danmu().await?);
        assert_eq!(uid, 12);
        assert_eq!(text, "**** or ****?");
    }

    let stats = &f.gateway.stats.upstream;
    for (label, n) in [
        ("ok", 3),
        ("rate_limited", 1),
        ("denied_user", 1),
        ("denied_ip", 1),
        ("blocked_word", 1),
        ("bad_request", 1),
        ("too_long", 1),
        ("disabled", 0),
        ("unavailable", 0),
        ("masked", 0),
    ] {
        assert_eq!(stats.get(label), n, "{label}");
    }
    assert_eq!(masking.stats.upstream.get("masked"), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_while_rate_limited_is_closed_for_flooding()
-> anyhow::Result<()> {
    let f = SingleRegion::start_with(|_, gateway| {
        gateway.upstream.user_limit = RateLimit {
            rate_per_sec: 0.001,
            burst: 1,
        };
        gateway.upstream.flood_close_after = 3;
    })
    .await?;
    let mut flooder = Member::new(f.join(Transport::WebSocket, 20, ROOM, 3).await?);
    let mut bystander = f.join(Transport::WebSocket, 21, ROOM, 3).await?;
    assert_eq!(flooder.send(1, msg("first")).await?["code"], 0);
    for seq in 2..4 {
        assert_eq!(flooder.send(seq, "garbage").await?["code"], -201);
    }
    let frame = Frame::new(1, op::UPSTREAM, 4, msg("again").into_bytes());
    flooder.client.send(&frame).await?;
    let mut replies = Vec::new();
    let close = loop {
        match flooder.client.next(WAIT).await? {
            Event::Frame(f) if f.op == op::UPSTREAM_REPLY => {
                replies.push(serde_json::from_slice::<Value>(&f.body)?)
            }
            Event::Frame(_) => {}
            Event::Closed(why) => break why,
        }
    };
    assert_eq!(replies.len(), 1, "one reply, then the close: {replies:?}");
    assert_eq!(replies[0]["code"], -201);
    assert_eq!(close, Some((1008, "flood".into())));
    // Nobody else notices.
    assert_eq!(bystander.heartbeat().await?, 1);
    assert_eq!(f.gateway.stats.upstream.get("rate_limited"), 3);
    Ok(())
}
