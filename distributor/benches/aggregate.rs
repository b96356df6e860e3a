//! The distributor's hot path per message and per batch: the adaptive window
//! (`window::Aggregator::push` / `take_due`) and encoding a closed batch once
//! (`encode::encode_batch`: run of packets + brotli + `EdgeBatch`).
//!
//! `cargo bench -p danmu-distributor --bench aggregate`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use danmu_distributor::encode::{Pending, encode_batch};
use danmu_distributor::window::{Aggregator, WindowConfig};
use danmu_proto::internal::Priority;

/// A 100-byte danmu-shaped payload.
fn payload(i: u64) -> Bytes {
    let mut text = format!(
        r#"{{"cmd":"DANMU_MSG","seq":{i},"room":1001,"ts":1761234567891234567,"uid":{},"text":""#,
        10_000_000 + i % 997
    );
    while text.len() < 98 {
        text.push('6');
    }
    text.push_str("\"}");
    Bytes::from(text)
}

fn pending(i: u64) -> Pending<()> {
    Pending {
        payload: payload(i),
        stream_seq: i + 1,
        published_micros: 1_761_234_567_891_234 + i as i64,
        ack: (),
    }
}

/// The low-priority worker's defaults.
fn config() -> WindowConfig {
    danmu_distributor::config::WorkerConfig::default().window()
}

/// `messages` messages over `rooms` rooms at `rate` msg/s in total, clock driven explicitly:
/// every message is pushed, and due batches are taken after each one (as the distributor's
/// loop does when a deadline passes). Returns the batches that closed.
fn drive(messages: u64, rooms: u64, rate: f64, input: Vec<Pending<()>>) -> usize {
    let mut aggregator: Aggregator<u64, Pending<()>> = Aggregator::new(config());
    let t0 = Instant::now();
    let step = Duration::from_secs_f64(1.0 / rate);
    let mut batches = 0;
    for (i, message) in input.into_iter().enumerate() {
        let now = t0 + step * i as u32;
        if aggregator.next_deadline().is_some_and(|d| d <= now) {
            batches += aggregator.take_due(now).len();
        }
        if aggregator
            .push(i as u64 % rooms, message, now)
            .batch()
            .is_some()
        {
            batches += 1;
        }
    }
    batches += aggregator.take_all().len();
    assert!(batches as u64 <= messages);
    batches
}

fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    // (name, messages, rooms, msg/s): one hot room (batches of 20), 1,000 quiet rooms
    // (every message leaves at once), and 1,000 rooms at 20 msg/s each.
    for (name, messages, rooms, rate) in [
        ("hot_room_1000msgps", 10_000u64, 1u64, 1_000.0),
        ("quiet_1000_rooms_2000msgps", 10_000, 1_000, 2_000.0),
        ("busy_1000_rooms_20000msgps", 10_000, 1_000, 20_000.0),
    ] {
        g.throughput(Throughput::Elements(messages));
        g.bench_function(name, |b| {
            b.iter_batched(
                || (0..messages).map(pending).collect::<Vec<_>>(),
                |input| black_box(drive(messages, rooms, rate, input)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_batch");
    for n in [1u64, 20, 200] {
        let messages: Vec<Pending<()>> = (0..n).map(pending).collect();
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("{n}x100B_brotli5"), |b| {
            b.iter(|| {
                let (edge, stats) = encode_batch(
                    black_box(&messages),
                    "A",
                    "PUSH_LO_A",
                    Priority::Low,
                    danmu_proto::batch::DEFAULT_BROTLI_QUALITY,
                );
                black_box((edge.packet.len(), stats.raw_len))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, window, encode);
criterion_main!(benches);
