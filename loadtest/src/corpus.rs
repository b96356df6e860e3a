//! `danmu-load corpus`: seed 001's zlib-vs-brotli table (2, 10, 20, 40 messages per batch) on
//! our own danmu-shaped corpus, and what compressing costs per batch.
//!
//! The corpus imitates a busy Bilibili room: mostly `DANMU_MSG` in the layout Bilibili clients
//! parse (user, medal, text, colour, timestamps), some `SEND_GIFT` and `INTERACT_WORD`, with
//! users, texts and numbers drawn from a seeded generator, so batches repeat what real ones
//! repeat (keys, layout, common texts) and differ where real ones differ (ids, names, times).
//! Batches are consecutive runs of the corpus, as the distributor's window would cut them, and
//! are compressed exactly as the fabric does: the run of version-0 packets (16-byte header +
//! JSON each), brotli by `danmu_proto::batch::brotli_compress` (distributor), zlib by
//! `danmu_proto::batch::zlib_compress` (the gateway's protover-2 variant).

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use danmu_proto::batch::{self, DEFAULT_BROTLI_QUALITY, DEFAULT_ZLIB_LEVEL};
use serde::Serialize;

/// Seed 001's table: messages per batch, original, zlib and brotli sizes in bytes.
pub const SEED_001: [(usize, u64, u64, u64); 4] = [
    (2, 1126, 468, 390),
    (10, 4706, 1728, 1423),
    (20, 9505, 2674, 2172),
    (40, 19387, 3161, 2488),
];

const TEXTS: [&str; 24] = [
    "哈哈哈哈哈",
    "666666",
    "up主太强了",
    "前方高能",
    "awsl",
    "这操作可以",
    "妙啊",
    "打卡",
    "2333333",
    "好家伙",
    "来了来了",
    "主播晚上好",
    "这波不亏",
    "？？？",
    "泪目",
    "kksk",
    "下次一定",
    "太真实了",
    "笑死我了",
    "冲冲冲",
    "第一次来，关注了",
    "这个配乐是什么",
    "晚安",
    "爷青回",
];
const NAMES: [&str; 12] = [
    "夜猫子",
    "咸鱼",
    "快乐小狗",
    "momo",
    "阿伟",
    "tiger",
    "菜鸡一枚",
    "路人甲",
    "橘子汽水",
    "nana",
    "老王",
    "小透明",
];
const GIFTS: [(&str, u32); 5] = [
    ("辣条", 100),
    ("小心心", 0),
    ("牛哇牛哇", 100),
    ("粉丝团灯牌", 1000),
    ("这个好诶", 1000),
];

/// A small deterministic generator (xorshift64*), so the corpus is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `count` danmu-shaped messages of one room.
pub fn corpus(count: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let room = 21_452_505u64;
    let mut ts = 1_700_000_000_000u64;
    (0..count)
        .map(|_| {
            ts += rng.below(80);
            let uid = 1_000_000 + rng.below(400_000_000);
            let name = format!(
                "{}{}",
                NAMES[rng.below(NAMES.len() as u64) as usize],
                rng.below(10_000)
            );
            let kind = rng.below(10);
            let text = if kind < 8 {
                format!(
                    r#"{{"cmd":"DANMU_MSG","info":[[0,1,25,{colour},{ts},{rnd},0,"{hash:08x}",0,0,0,"",0,"{{}}","{{}}",{{"mode":0,"show_player_type":0,"extra":"{{\"send_from_me\":false,\"mode\":0,\"color\":{colour},\"dm_type\":0,\"font_size\":25,\"player_mode\":1,\"content\":\"{text}\",\"user_hash\":\"{hash}\",\"emoticon_unique\":\"\",\"recommend_score\":{score},\"id_str\":\"{id:x}\"}}"}}],"{text}",[{uid},"{name}",0,0,0,10000,1,""],[{medal},"{medal_name}","主播",{room},{medal_colour},"",0],[{ul},0,6406234,"\u003e50000"],["",""],0,0,null,{{"ts":{secs},"ct":"{ct:X}"}},0,0,null,null,0,{dmv}]}}"#,
                    colour = [16_777_215, 16_777_215, 16_777_215, 14_893_055, 5_566_168]
                        [rng.below(5) as usize],
                    rnd = rng.below(2_000_000_000),
                    hash = rng.next() as u32,
                    text = TEXTS[rng.below(TEXTS.len() as u64) as usize],
                    score = rng.below(10),
                    id = rng.next(),
                    medal = 1 + rng.below(30),
                    medal_name = ["粉丝团", "小可爱", "猫猫"][rng.below(3) as usize],
                    medal_colour = 6_067_854 + rng.below(4) * 1_000,
                    ul = 1 + rng.below(60),
                    secs = ts / 1000,
                    ct = rng.next() as u32,
                    dmv = 100 + rng.below(10),
                )
            } else if kind == 8 {
                let (gift, price) = GIFTS[rng.below(GIFTS.len() as u64) as usize];
                format!(
                    r#"{{"cmd":"SEND_GIFT","data":{{"action":"投喂","batch_combo_id":"batch:gift:combo_id:{uid}:{room}:{gid}:{ts}","coin_type":"{coin}","giftId":{gid},"giftName":"{gift}","num":{num},"price":{price},"timestamp":{secs},"uid":{uid},"uname":"{name}","face":"http://i0.hdslb.com/bfs/face/{face:016x}.jpg","medal_info":{{"medal_level":{medal},"medal_name":"粉丝团","target_id":{room}}},"total_coin":{total},"tid":"{tid}"}}}}"#,
                    gid = 31_000 + rng.below(500),
                    coin = if price == 0 { "silver" } else { "gold" },
                    num = 1 + rng.below(10),
                    secs = ts / 1000,
                    face = rng.next(),
                    medal = 1 + rng.below(30),
                    total = price as u64 * (1 + rng.below(10)),
                    tid = rng.next(),
                )
            } else {
                format!(
                    r#"{{"cmd":"INTERACT_WORD","data":{{"uid":{uid},"uname":"{name}","msg_type":1,"roomid":{room},"timestamp":{secs},"score":{score},"fans_medal":{{"medal_level":{medal},"medal_name":"粉丝团","target_id":{room}}},"identities":[1],"trigger_time":{trigger}}}}}"#,
                    secs = ts / 1000,
                    score = ts + rng.below(1_000_000),
                    medal = rng.below(30),
                    trigger = ts * 1_000_000 + rng.below(1_000_000),
                )
            };
            text.into_bytes()
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub messages: usize,
    pub batches: usize,
    /// Averages per batch, bytes: the run of version-0 packets, its zlib and brotli bodies.
    pub original: f64,
    pub zlib: f64,
    pub brotli: f64,
    pub zlib_ratio: f64,
    pub brotli_ratio: f64,
    /// 1 - brotli / zlib.
    pub brotli_saving: f64,
    /// On the wire per message for a protover-3 client: (16-byte outer header + brotli) / n,
    /// beside one uncompressed version-0 packet.
    pub wire_per_message: f64,
    pub uncompressed_per_message: f64,
    /// Microseconds per batch.
    pub brotli_us: f64,
    pub zlib_us: f64,
    pub brotli_decompress_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct QualityRow {
    pub quality: u32,
    pub brotli: f64,
    pub brotli_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CorpusReport {
    pub brotli_quality: u32,
    pub zlib_level: u32,
    pub rows: Vec<Row>,
    /// At 20 messages per batch.
    pub qualities: Vec<QualityRow>,
    pub message_bytes_mean: f64,
}

fn runs(messages: &[Vec<u8>], n: usize, batches: usize) -> Vec<Vec<u8>> {
    (0..batches)
        .map(|b| {
            let start = (b * n) % (messages.len() - n);
            batch::encode_messages(messages[start..start + n].iter().map(Vec::as_slice))
        })
        .collect()
}

/// Microseconds per call of `f` over `inputs`, repeated until at least `min_secs` passed.
fn time_per_call<T>(inputs: &[T], min_secs: f64, mut f: impl FnMut(&T) -> usize) -> f64 {
    let mut calls = 0u64;
    let started = Instant::now();
    loop {
        for input in inputs {
            black_box(f(input));
            calls += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed >= min_secs {
            return elapsed * 1e6 / calls as f64;
        }
    }
}

pub fn measure(batches: usize, min_secs: f64) -> CorpusReport {
    let messages = corpus(20_000);
    let message_bytes_mean =
        messages.iter().map(Vec::len).sum::<usize>() as f64 / messages.len() as f64;
    let mut rows = Vec::new();
    for n in [1, 2, 10, 20, 40, 100, 200] {
        let raws = runs(&messages, n, batches);
        let brotlis: Vec<Vec<u8>> = raws
            .iter()
            .map(|r| batch::brotli_compress(r, DEFAULT_BROTLI_QUALITY))
            .collect();
        let zlibs: Vec<Vec<u8>> = raws
            .iter()
            .map(|r| batch::zlib_compress(r, DEFAULT_ZLIB_LEVEL))
            .collect();
        let mean = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / v.len() as f64;
        let (original, zlib, brotli) = (mean(&raws), mean(&zlibs), mean(&brotlis));
        rows.push(Row {
            messages: n,
            batches,
            original,
            zlib,
            brotli,
            zlib_ratio: zlib / original,
            brotli_ratio: brotli / original,
            brotli_saving: 1.0 - brotli / zlib,
            wire_per_message: (brotli + 16.0) / n as f64,
            uncompressed_per_message: original / n as f64,
            brotli_us: time_per_call(&raws, min_secs, |r| {
                batch::brotli_compress(r, DEFAULT_BROTLI_QUALITY).len()
            }),
            zlib_us: time_per_call(&raws, min_secs, |r| {
                batch::zlib_compress(r, DEFAULT_ZLIB_LEVEL).len()
            }),
            brotli_decompress_us: time_per_call(&brotlis, min_secs, |b| {
                batch::brotli_decompress(b, 1 << 24).map_or(0, |v| v.len())
            }),
        });
    }
    let raws = runs(&messages, 20, batches);
    let qualities = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11]
        .into_iter()
        .map(|quality| {
            let sizes: usize = raws
                .iter()
                .map(|r| batch::brotli_compress(r, quality).len())
                .sum();
            QualityRow {
                quality,
                brotli: sizes as f64 / raws.len() as f64,
                brotli_us: time_per_call(&raws, min_secs, |r| {
                    batch::brotli_compress(r, quality).len()
                }),
            }
        })
        .collect();
    CorpusReport {
        brotli_quality: DEFAULT_BROTLI_QUALITY,
        zlib_level: DEFAULT_ZLIB_LEVEL,
        rows,
        qualities,
        message_bytes_mean,
    }
}

pub fn table(report: &CorpusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "corpus: {:.0} bytes per message on average (JSON); batch = run of version-0 packets; \
         brotli quality {}, zlib level {}",
        report.message_bytes_mean, report.brotli_quality, report.zlib_level
    );
    let _ = writeln!(
        out,
        "{:>4} {:>9} {:>8} {:>6} {:>8} {:>6} {:>7} | {:>26} | {:>9} {:>9} {:>6} | {:>9} {:>8} {:>10}",
        "msgs",
        "original",
        "zlib",
        "ratio",
        "brotli",
        "ratio",
        "saving",
        "seed 001: orig/zlib/brotli",
        "wire/msg",
        "raw/msg",
        "wire%",
        "brotli µs",
        "zlib µs",
        "unbrotli µs"
    );
    for row in &report.rows {
        let seed = SEED_001
            .iter()
            .find(|s| s.0 == row.messages)
            .map_or("-".to_string(), |s| {
                format!(
                    "{}/{}/{} ({:.0}%)",
                    s.1,
                    s.2,
                    s.3,
                    100.0 * (1.0 - s.3 as f64 / s.2 as f64)
                )
            });
        let _ = writeln!(
            out,
            "{:>4} {:>9.0} {:>8.0} {:>5.0}% {:>8.0} {:>5.0}% {:>6.0}% | {:>26} | {:>9.0} {:>9.0} {:>5.0}% | {:>9.1} {:>8.1} {:>10.1}",
            row.messages,
            row.original,
            row.zlib,
            100.0 * row.zlib_ratio,
            row.brotli,
            100.0 * row.brotli_ratio,
            100.0 * row.brotli_saving,
            seed,
            row.wire_per_message,
            row.uncompressed_per_message,
            100.0 * row.wire_per_message / row.uncompressed_per_message,
            row.brotli_us,
            row.zlib_us,
            row.brotli_decompress_us,
        );
    }
    let _ = writeln!(out, "\nbrotli quality at 20 messages per batch:");
    let _ = writeln!(out, "{:>7} {:>8} {:>10}", "quality", "bytes", "µs/batch");
    for q in &report.qualities {
        let _ = writeln!(
            out,
            "{:>7} {:>8.0} {:>10.1}",
            q.quality, q.brotli, q.brotli_us
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_valid_json_and_deterministic() {
        let a = corpus(200);
        assert_eq!(a, corpus(200));
        let mut cmds = std::collections::BTreeSet::new();
        for message in &a {
            let value: serde_json::Value = serde_json::from_slice(message)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(message)));
            cmds.insert(value["cmd"].as_str().unwrap().to_string());
        }
        assert_eq!(
            cmds.into_iter().collect::<Vec<_>>(),
            ["DANMU_MSG", "INTERACT_WORD", "SEND_GIFT"]
        );
    }
}
