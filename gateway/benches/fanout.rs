//! The gateway's fan-out: one edge batch queued for every member of a room
//! (`groups::Group::deliver`: de-duplication, the per-protover/per-framing encodings built
//! once, one reference-counted handle pushed on each member's `outbound::Outbound`), and the
//! member side taking it off again (`Outbound::drain_into`). The socket write itself is the
//! kernel's (see `docs/performance.md`: on loopback it dominates).
//!
//! `cargo bench -p danmu-gateway --bench fanout`

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use danmu_gateway::connection::Framing;
use danmu_gateway::fanout::groups::{DeliveryLimits, EdgeSource, Group, Groups, Member};
use danmu_gateway::fanout::outbound::Outbound;
use danmu_gateway::stats::Stats;
use danmu_proto::batch;
use danmu_proto::internal::{EdgeBatch, Priority};
use danmu_proto::subjects::Scope;

/// Delivers nothing: the benchmark calls `Group::deliver` itself.
struct NoEdge;

impl EdgeSource for NoEdge {
    fn subscribe(&self, _group: Arc<Group>) -> u64 {
        0
    }

    fn unsubscribe(&self, _id: u64) {}
}

/// A 20-message batch of 100-byte danmu, brotli as the distributor publishes it.
fn batch_packet() -> (Bytes, u32) {
    let payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let mut p = format!(
                r#"{{"cmd":"DANMU_MSG","seq":{i},"room":1,"ts":1761234567891234567,"uid":{},"text":""#,
                10_000_000 + i * 7
            );
            while p.len() < 98 {
                p.push('6');
            }
            p.push_str("\"}");
            p.into_bytes()
        })
        .collect();
    let raw = batch::encode_messages(payloads.iter().map(Vec::as_slice));
    let packet = batch::compressed_packet(3, &batch::brotli_compress(&raw, 5));
    (packet, raw.len() as u32)
}

fn limits() -> DeliveryLimits {
    DeliveryLimits {
        max_raw_batch: 4 << 20,
        brotli_quality: 5,
    }
}

struct Room {
    group: Arc<Group>,
    members: Vec<Arc<Member>>,
    stats: Arc<Stats>,
    _groups: Groups,
}

/// A room of `n` members; `mixed` spreads them over protover 3/2/0 and WebSocket/TCP (six
/// encodings per batch), otherwise all are protover 3 over WebSocket (one encoding).
fn room(n: u64, mixed: bool) -> Room {
    let stats = Arc::new(Stats::default());
    let groups = Groups::new(Box::new(NoEdge), stats.clone());
    let mut group = None;
    let mut members = Vec::new();
    for i in 0..n {
        let (protover, framing) = if mixed {
            (
                [3, 3, 3, 2, 0][i as usize % 5],
                if i % 2 == 0 {
                    Framing::Message
                } else {
                    Framing::Stream
                },
            )
        } else {
            (3, Framing::Message)
        };
        let member = Arc::new(Member {
            conn_id: i,
            framing,
            protover,
            outbound: Outbound::new(1 << 20),
        });
        group = Some(groups.join(Scope::Room(1), member.clone()));
        members.push(member);
    }
    Room {
        group: group.expect("at least one member"),
        members,
        stats,
        _groups: groups,
    }
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let (packet, raw_len) = batch_packet();
    let mut g = c.benchmark_group("deliver");
    g.sample_size(20);
    for (n, mixed) in [(1_000u64, false), (15_000, false), (15_000, true)] {
        let room = room(n, mixed);
        let mut seq = 0u64;
        let mut scratch = VecDeque::new();
        g.throughput(Throughput::Elements(n));
        let name = format!(
            "{n}_members_{}",
            if mixed {
                "mixed_6_variants"
            } else {
                "ws_brotli"
            }
        );
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    seq += 20;
                    let edge = EdgeBatch {
                        packet: packet.clone(),
                        origin: "A".into(),
                        stream: "PUSH_LO_A".into(),
                        first_stream_seq: seq - 19,
                        last_stream_seq: seq,
                        message_count: 20,
                        raw_body_len: raw_len,
                        priority: Priority::Low as i32,
                        stream_seqs: (seq - 19..=seq).collect(),
                        ..Default::default()
                    };
                    let started = Instant::now();
                    room.group.deliver(edge, limits(), &room.stats);
                    timed += started.elapsed();
                    // Untimed: empty the queues so none fills up and sheds.
                    for member in &room.members {
                        member
                            .outbound
                            .drain_into(0, usize::MAX, |b, _| scratch.push_back(b));
                        scratch.clear();
                    }
                }
                timed
            })
        });
    }
    g.finish();

    // The member side: taking one queued batch off the queue into the writer's list.
    let mut g = c.benchmark_group("outbound");
    let outbound = Outbound::new(1 << 20);
    let mut into = VecDeque::new();
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_then_drain_one", |b| {
        b.iter(|| {
            black_box(outbound.push(packet.clone(), false, 20));
            outbound.drain_into(0, 64 * 1024, |b, _| into.push_back(b));
            into.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
