//! Demo traffic: danmu-shaped JSON published on a room's push subjects at a steady rate, as a
//! business backend would, until Ctrl-C or SIGTERM (or `--count` messages).
//!
//! ```text
//! demo-traffic                                         # 5 msg/s into room 1001 via nats://127.0.0.1:4222
//! demo-traffic --nats nats://127.0.0.1:4222,nats://127.0.0.1:4223 --rate 20
//! demo-traffic --count 1 --text "hello from Rust"      # one comment, then exit
//! ```
//!
//! Every kind of message the demo page (web/demo) draws: mostly `DANMU_MSG` comments with varied
//! texts, colours and senders (bullet comments), low priority; about one in ten a `SEND_GIFT`
//! and one in twenty a `SUPER_CHAT_MESSAGE` (gift cards), low priority; one in twenty a
//! `ROOM_NOTICE` with a title (notice card), on the room's high-priority subject, as a platform
//! sends notices (never shed, retried). Given several NATS URLs (one per region), messages alternate between them, so
//! both regions' ingest paths carry traffic. Each message carries a unique `Nats-Msg-Id`.
//!
//! Credentials: none by default, which `scripts/up`'s servers take as the business publisher
//! (`no_auth_user`); against servers that require a user (the Helm chart's), `--nkey-seed` names
//! a business publisher's seed file (`natsAuth.publishers`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use clap::Parser;
use danmu_proto::subjects::{self, Priority, Scope};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Publish danmu-shaped demo traffic into a room through NATS")]
struct Args {
    /// NATS server(s) to publish to, comma-separated or repeated; with several, messages
    /// alternate between them (one URL per region).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222",
        env = "DANMU_DEMO_NATS"
    )]
    nats: Vec<String>,
    /// Room the traffic goes to.
    #[arg(long, default_value_t = 1001)]
    room: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Stop after this many messages (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Send only comments with this text (no gifts) instead of the built-in variety.
    #[arg(long)]
    text: Option<String>,
    /// A business publisher's nkey seed file (`SU...`) to connect with; none: no credentials.
    #[arg(long, env = "DANMU_DEMO_NKEY_SEED")]
    nkey_seed: Option<std::path::PathBuf>,
    /// Publish through JetStream and wait for the stream's acknowledgement of each message.
    #[arg(long)]
    ack: bool,
    /// Where acknowledgements arrive: the publisher's own inbox prefix, the only one its NATS
    /// user may read (`_INBOX.<name>` for `natsAuth.publishers[].name`; `scripts/up`'s
    /// anonymous publisher is `business`).
    #[arg(long, default_value = "_INBOX.business")]
    inbox_prefix: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 100_000.0) {
        bail!("--rate must be in (0, 100000], got {}", args.rate);
    }
    let urls: Vec<&str> = args
        .nats
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        bail!("--nats needs at least one URL");
    }
    let seed = match &args.nkey_seed {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --nkey-seed {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let mut clients = Vec::with_capacity(urls.len());
    for url in &urls {
        let options = match &seed {
            Some(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            None => async_nats::ConnectOptions::new(),
        };
        let client = options
            .custom_inbox_prefix(args.inbox_prefix.clone())
            .name("danmu-demo-traffic")
            .connection_timeout(Duration::from_secs(5))
            .connect(*url)
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        clients.push(client);
    }
    let jetstreams: Vec<_> = clients
        .iter()
        .map(|c| async_nats::jetstream::new(c.clone()))
        .collect();

    let low = subjects::push(Priority::Low, &Scope::Room(args.room));
    let high = subjects::push(Priority::High, &Scope::Room(args.room));
    eprintln!(
        "demo-traffic: {} msg/s on {low} (notices on {high}) via {}{}",
        args.rate,
        urls.join(" and "),
        if args.count > 0 {
            format!(", {} message(s)", args.count)
        } else {
            "; Ctrl-C stops".into()
        }
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    let mut rng = Rng::seeded();
    let run_id = format!("{:x}", rng.next());
    let mut sent: u64 = 0;
    let mut failed: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = report.tick() => eprintln!("demo-traffic: {sent} published, {failed} failed"),
            _ = tick.tick() => {
                let (priority, payload) = match &args.text {
                    Some(text) => (Priority::Low, danmu(&mut rng, text)),
                    None => next_message(&mut rng),
                };
                let subject = match priority {
                    Priority::High => high.clone(),
                    Priority::Low => low.clone(),
                };
                let index = (sent + failed) as usize % clients.len();
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("demo-{run_id}-{}", sent + failed).as_str());
                let bytes = serde_json::to_vec(&payload)?.into();
                let outcome = if args.ack {
                    match jetstreams[index]
                        .publish_with_headers(subject.clone(), headers, bytes)
                        .await
                    {
                        Ok(ack) => ack.await.map(drop).map_err(anyhow::Error::from),
                        Err(e) => Err(e.into()),
                    }
                } else {
                    clients[index]
                        .publish_with_headers(subject.clone(), headers, bytes)
                        .await
                        .map_err(anyhow::Error::from)
                };
                match outcome {
                    Ok(()) => sent += 1,
                    Err(error) => {
                        failed += 1;
                        eprintln!("demo-traffic: publishing via {}: {error:#}", urls[index]);
                    }
                }
                if args.count > 0 && sent + failed >= args.count {
                    break;
                }
            }
        }
    }
    for client in &clients {
        client.flush().await.context("flushing to NATS")?;
    }
    eprintln!("demo-traffic: done, {sent} published, {failed} failed");
    if failed > 0 && sent == 0 {
        bail!("no message was published");
    }
    Ok(())
}

const TEXTS: &[&str] = &[
    "233333",
    "前方高能！！！",
    "hello from the demo",
    "666666",
    "这波操作太秀了",
    "awsl",
    "第一次来，主播好",
    "lol that was close",
    "弹幕护体",
    "好耶",
    "GG",
    "🎉🎉🎉",
    "up主加油 💪",
    "打卡",
    "this song slaps",
    "哈哈哈哈哈哈哈哈",
    "名场面 +1",
    "awesome stream, greetings from the other region",
    "keep going!",
    "妙啊",
];

const NAMES: &[&str] = &[
    "小明",
    "viewer_42",
    "夜猫子",
    "NightOwl",
    "路人甲",
    "danmu_fan",
    "阿狸",
    "quietwatcher",
    "momo",
    "旅行者",
];

/// Colours as Bilibili clients send them: 0xRRGGBB in decimal; white most of the time.
const COLORS: &[u32] = &[
    16777215, 16777215, 16777215, 16777215, 16738408, 6737151, 16772431, 14893055, 65532, 16746751,
    9920249,
];

const GIFTS: &[(&str, u32, u32)] = &[
    ("辣条", 1, 100),
    ("小心心", 30607, 0),
    ("B坷垃", 3, 9900),
    ("pizza", 20008, 1000),
    ("rocket", 20009, 100000),
];

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Of twenty messages, about: two gifts, one super chat, one notice (high priority), sixteen
/// comments.
fn next_message(rng: &mut Rng) -> (Priority, Value) {
    match rng.below(20) {
        0 | 1 => (Priority::Low, gift(rng)),
        2 => (Priority::Low, super_chat(rng)),
        3 => (Priority::High, notice(rng)),
        _ => {
            let text = TEXTS[rng.below(TEXTS.len())];
            (Priority::Low, danmu(rng, text))
        }
    }
}

/// `{"cmd":"DANMU_MSG","info":[[0,mode,fontsize,color,unix_ms],"text",[uid,"name"]]}`.
fn danmu(rng: &mut Rng, text: &str) -> Value {
    let color = COLORS[rng.below(COLORS.len())];
    let (uid, name) = sender(rng);
    json!({
        "cmd": "DANMU_MSG",
        "info": [[0, 1, 25, color, unix_millis()], text, [uid, name]],
    })
}

fn gift(rng: &mut Rng) -> Value {
    let (gift_name, gift_id, price) = GIFTS[rng.below(GIFTS.len())];
    let (uid, name) = sender(rng);
    let num = 1 + rng.below(5);
    json!({
        "cmd": "SEND_GIFT",
        "data": {
            "giftName": gift_name,
            "giftId": gift_id,
            "num": num,
            "price": price,
            "action": "投喂",
            "uid": uid,
            "uname": name,
            "timestamp": unix_millis() / 1000,
        },
    })
}

/// `{"cmd":"SUPER_CHAT_MESSAGE","data":{"message","price","user_info":{"uname"},"uid","time"}}`:
/// a paid comment pinned for `time` seconds.
fn super_chat(rng: &mut Rng) -> Value {
    let (uid, name) = sender(rng);
    let text = SUPER_CHATS[rng.below(SUPER_CHATS.len())];
    let price = [30, 50, 100, 500][rng.below(4)];
    json!({
        "cmd": "SUPER_CHAT_MESSAGE",
        "data": {
            "message": text,
            "price": price,
            "uid": uid,
            "user_info": { "uname": name },
            "time": 60,
            "start_time": unix_millis() / 1000,
        },
    })
}

/// `{"cmd":"ROOM_NOTICE","title":"...","msg":"..."}`: a platform or room notice.
fn notice(rng: &mut Rng) -> Value {
    let (title, msg) = NOTICES[rng.below(NOTICES.len())];
    json!({ "cmd": "ROOM_NOTICE", "title": title, "msg": msg })
}

const SUPER_CHATS: &[&str] = &[
    "主播今天状态太好了！",
    "greetings from the night shift",
    "点歌：晴天",
    "thanks for the stream 🙏",
];

const NOTICES: &[(&str, &str)] = &[
    ("公告", "直播间抽奖 20:00 开始"),
    ("Notice", "The stream moves to room 1002 after the break"),
    ("系统", "请文明发言，遵守社区规范"),
    ("Event", "Gift week: double points until Sunday"),
];

fn sender(rng: &mut Rng) -> (u64, &'static str) {
    let index = rng.below(NAMES.len());
    (10_000 + index as u64 * 7919, NAMES[index])
}

/// xorshift64*: plenty for picking demo texts, and no extra dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Rng((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_shape_clients_expect() {
        let mut rng = Rng(7);
        let (mut gifts, mut super_chats, mut notices) = (0, 0, 0);
        for _ in 0..400 {
            let (priority, message) = next_message(&mut rng);
            // Notices alone go out at high priority.
            assert_eq!(
                priority == Priority::High,
                message["cmd"] == "ROOM_NOTICE",
                "{message}"
            );
            match message["cmd"].as_str() {
                Some("DANMU_MSG") => {
                    let info = message["info"].as_array().unwrap();
                    assert_eq!(info[0].as_array().unwrap().len(), 5);
                    assert!(info[0][3].as_u64().unwrap() <= 0xFF_FFFF);
                    assert!(info[1].is_string());
                    assert!(info[2][0].is_u64() && info[2][1].is_string());
                }
                Some("SEND_GIFT") => {
                    gifts += 1;
                    assert!(message["data"]["giftName"].is_string());
                    assert!(message["data"]["num"].as_u64().unwrap() >= 1);
                }
                // What web/demo/src/cards.ts reads for its cards.
                Some("SUPER_CHAT_MESSAGE") => {
                    super_chats += 1;
                    assert!(message["data"]["message"].is_string());
                    assert!(message["data"]["user_info"]["uname"].is_string());
                    assert!(message["data"]["price"].is_u64());
                }
                Some("ROOM_NOTICE") => {
                    notices += 1;
                    assert!(message["title"].is_string() && message["msg"].is_string());
                }
                other => panic!("unexpected cmd {other:?}"),
            }
        }
        assert!((10..80).contains(&gifts), "{gifts} gifts in 400");
        assert!(
            (5..45).contains(&super_chats),
            "{super_chats} super chats in 400"
        );
        assert!((5..45).contains(&notices), "{notices} notices in 400");
    }
}
