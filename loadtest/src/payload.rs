//! The business payloads the load tool publishes: danmu-shaped JSON carrying what the clients
//! verify (room, per-room sequence, publish time in unix nanoseconds), padded to an exact size.
//!
//! ```text
//! {"cmd":"DANMU_MSG","seq":41,"room":100001,"ts":1761234567891234567,"uid":10000041,"text":"666666 前方高能 ~"}
//! ```
//!
//! Field order is fixed so that a client finds `seq`, `room` and `ts` without a JSON parser
//! ([`Fields::parse`]), and warm-up messages are told apart by their first bytes
//! ([`is_warmup`]), which is what the counting-only connections look at.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// `cmd` of the messages that only prove a room's path is live; never counted.
pub const WARMUP_CMD: &str = "WARMUP";
/// What every warm-up payload starts with.
pub const WARMUP_PREFIX: &[u8] = b"{\"cmd\":\"WARMUP\"";

/// Danmu texts the padding is made of: what real rooms repeat, so that compression sees the
/// redundancy of real danmu rather than random bytes (or a run of one byte, which would flatter
/// it).
const TEXTS: [&str; 12] = [
    "666666",
    "哈哈哈哈哈",
    "前方高能",
    "awsl",
    "up主太强了",
    "这操作可以",
    "妙啊",
    "打卡",
    "2333333",
    "kksk",
    "好家伙",
    "来了来了",
];

/// Unix time in nanoseconds.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// A measured message: `size` bytes when `size` leaves room for the fixed fields (about 80
/// bytes), otherwise just the fixed fields.
pub fn message(room: u64, seq: u64, ts_nanos: u64, size: usize) -> Vec<u8> {
    let uid = 10_000_000 + seq % 1_000_003;
    let mut out = String::with_capacity(size.max(128));
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{{\"cmd\":\"DANMU_MSG\",\"seq\":{seq},\"room\":{room},\"ts\":{ts_nanos},\"uid\":{uid},\"text\":\""
    );
    let closing = "\"}";
    let budget = size.saturating_sub(out.len() + closing.len());
    let mut text_len = 0;
    let mut k = seq as usize;
    // Whole texts separated by spaces while they fit, then ASCII to hit the size exactly.
    loop {
        let text = TEXTS[k % TEXTS.len()];
        k += 1;
        let need = text.len() + usize::from(text_len > 0);
        if text_len + need > budget {
            break;
        }
        if text_len > 0 {
            out.push(' ');
        }
        out.push_str(text);
        text_len += need;
    }
    for _ in text_len..budget {
        out.push('~');
    }
    out.push_str(closing);
    out.into_bytes()
}

/// A warm-up message for `room`.
pub fn warmup(room: u64) -> Vec<u8> {
    format!("{{\"cmd\":\"{WARMUP_CMD}\",\"room\":{room}}}").into_bytes()
}

/// Whether a payload is a warm-up message (looks at the first bytes only).
pub fn is_warmup(payload: &[u8]) -> bool {
    payload.starts_with(WARMUP_PREFIX)
}

/// What a sample connection checks in every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub seq: u64,
    pub room: u64,
    pub ts_nanos: u64,
}

impl Fields {
    /// Reads `seq`, `room` and `ts` from a payload made by [`message`]; `None` for anything else.
    pub fn parse(payload: &[u8]) -> Option<Fields> {
        let rest = payload.strip_prefix(b"{\"cmd\":\"DANMU_MSG\",\"seq\":")?;
        let (seq, rest) = number(rest)?;
        let rest = rest.strip_prefix(b",\"room\":")?;
        let (room, rest) = number(rest)?;
        let rest = rest.strip_prefix(b",\"ts\":")?;
        let (ts_nanos, rest) = number(rest)?;
        rest.starts_with(b",\"uid\":").then_some(Fields {
            seq,
            room,
            ts_nanos,
        })
    }
}

fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in &bytes[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_exact_size_and_parse_back() {
        for size in [100, 101, 150, 500, 1000] {
            for seq in [0, 7, 123_456_789] {
                let payload = message(100_001, seq, 1_761_234_567_891_234_567, size);
                assert_eq!(payload.len(), size, "{}", String::from_utf8_lossy(&payload));
                let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(value["cmd"], "DANMU_MSG");
                assert_eq!(
                    Fields::parse(&payload),
                    Some(Fields {
                        seq,
                        room: 100_001,
                        ts_nanos: 1_761_234_567_891_234_567
                    })
                );
                assert!(!is_warmup(&payload));
            }
        }
    }

    #[test]
    fn too_small_a_size_keeps_the_fields() {
        let payload = message(1, 2, 3, 10);
        assert_eq!(
            Fields::parse(&payload).map(|f| f.seq),
            Some(2),
            "{payload:?}"
        );
    }

    #[test]
    fn warmups_are_recognised_and_not_parsed_as_messages() {
        let payload = warmup(5);
        assert!(is_warmup(&payload));
        assert_eq!(Fields::parse(&payload), None);
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["cmd"], WARMUP_CMD);
    }
}
