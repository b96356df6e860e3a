//! Benchmark: high-priority publish-to-client latency on loopback while low priority is
//! saturated (SPEC bar: p99 ≤ 5 ms at 1,000 msg/s).
//!
//! ```text
//! cargo build --release -p danmu-tests --bin priority-latency
//! target/release/priority-latency --seconds 10 --high-rate 1000 --members 50
//! target/release/priority-latency --seconds 10 --high-rate 1000 --members 50 --stalled 5
//! ```
//!
//! One real nats-server; distributor and gateway in this process. `--members` clients sit in one
//! room that a publisher floods with low priority as fast as NATS takes it; one more client (same
//! room) receives high-priority pushes addressed to its user at `--high-rate`. Latency is from
//! the publisher's clock (in the payload) to the client having decoded the message, on the same
//! machine. Everything shares this machine's two cores, so the figure includes CPU contention
//! with the flood, the load clients and the services.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use danmu_proto::frame::op;
use danmu_proto::subjects::{Priority, Scope};
use danmu_tests::client::{Event, Transport};
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room;
use hdrhistogram::Histogram;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 1000)]
    high_rate: u64,
    /// Low-priority room members (each decodes everything).
    #[arg(long, default_value_t = 50)]
    members: u64,
    /// Low-priority flood rate, msg/s (more than the distributor drains saturates it).
    #[arg(long, default_value_t = 20_000)]
    low_rate: u64,
    /// Extra room members that stop reading after warm-up (tiny receive buffers): run once with
    /// 0 and once with some to see whether stalled readers slow anyone else.
    #[arg(long, default_value_t = 0)]
    stalled: u64,
    /// The gateway's `write_stall_timeout`, in milliseconds: how soon a stalled reader is cut off.
    #[arg(long, default_value_t = 2_000)]
    write_stall_ms: u64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let distributor = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;
    let mut config = fabric::gateway_config(&url, "A", &keys);
    config.write_stall_timeout = Duration::from_millis(args.write_stall_ms);
    config.socket_send_buffer_bytes = Some(16 * 1024);
    let gateway = fabric::start_gateway(config).await?;
    let room_id = 1;
    let business = danmu_tests::nats::connect_publisher(&url).await?;

    let low_received = Arc::new(AtomicU64::new(0));
    let mut members = Vec::new();
    for uid in 0..args.members {
        let mut client = room::join(
            &keys,
            Transport::Tcp,
            gateway.tcp_addr.unwrap(),
            1000 + uid,
            room_id,
            3,
        )
        .await?;
        room::warm_up(
            &business,
            room_id,
            &mut [&mut client],
            Duration::from_secs(20),
        )
        .await?;
        let counter = low_received.clone();
        members.push(tokio::spawn(async move {
            while let Ok(Event::Frame(frame)) = client.next(Duration::from_secs(3600)).await {
                if frame.op == op::MESSAGE
                    && let Ok(payloads) = client.unpack(&frame)
                {
                    counter.fetch_add(payloads.len() as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    // Kept (not read) until the end, so their sockets stay open until the gateway cuts them off.
    let mut stalled = Vec::new();
    for uid in 0..args.stalled {
        let uid = 5000 + uid;
        let mut client = danmu_tests::client::Client::connect_slow(
            Transport::Tcp,
            gateway.tcp_addr.unwrap(),
            4096,
        )
        .await?;
        let token = keys.token(uid, Some(vec![room_id]), Duration::from_secs(3600));
        anyhow::ensure!(client.auth(uid, room_id, 3, &token).await? == 0, "auth");
        stalled.push(client);
    }
    let target_uid = 1;
    let mut target = room::join(
        &keys,
        Transport::Tcp,
        gateway.tcp_addr.unwrap(),
        target_uid,
        room_id,
        3,
    )
    .await?;
    room::warm_up_scope(
        &business,
        Priority::High,
        &Scope::User(target_uid),
        &mut [&mut target],
        Duration::from_secs(20),
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let flood_sent = Arc::new(AtomicU64::new(0));
    // The flood has its own connection, as another business backend would.
    let flooder = danmu_tests::nats::connect_publisher(&url).await?;
    let flood = {
        let (stop, sent, rate) = (stop.clone(), flood_sent.clone(), args.low_rate);
        tokio::spawn(async move {
            let payload = room::danmu(0);
            if rate == 0 {
                return;
            }
            // Bursts of 100 every 100/rate seconds.
            let mut tick = tokio::time::interval(Duration::from_secs_f64(100.0 / rate as f64));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..100 {
                    let _ = room::publish(&flooder, room_id, payload.clone()).await;
                }
                sent.fetch_add(100, Ordering::Relaxed);
            }
        })
    };

    let total = args.seconds * args.high_rate;
    let receiver = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let mut received = 0;
        while received < total {
            let frame = match target.next(Duration::from_secs(30)).await {
                Ok(Event::Frame(frame)) if frame.op == op::MESSAGE => frame,
                Ok(Event::Frame(_)) => continue,
                _ => break,
            };
            let arrived = now_micros();
            for payload in target.unpack(&frame).unwrap_or_default() {
                let value: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                if let Some(sent) = value["sent_us"].as_u64() {
                    histogram.saturating_record(arrived.saturating_sub(sent));
                    received += 1;
                }
            }
        }
        histogram
    });

    let interval = Duration::from_secs_f64(1.0 / args.high_rate as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        tick.tick().await;
        let payload = serde_json::json!({"cmd": "PK_INVITE", "n": n, "sent_us": now_micros()});
        room::publish_to(
            &business,
            Priority::High,
            &Scope::User(target_uid),
            Bytes::from(payload.to_string()),
        )
        .await?;
    }
    let histogram = receiver.await?;
    stop.store(true, Ordering::Relaxed);
    flood.await?;

    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!("high priority: {} of {total} received", histogram.len());
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        us(0.5),
        us(0.9),
        us(0.99),
        histogram.max() as f64 / 1000.0
    );
    println!(
        "low priority: {} published, {} delivered to {} members, {} shed, distributor took {}",
        flood_sent.load(Ordering::Relaxed),
        low_received.load(Ordering::Relaxed),
        args.members,
        danmu_gateway::stats::get(&gateway.stats.shed_messages),
        danmu_distributor::Stats::get(&distributor.stats.messages_in),
    );
    println!(
        "stalled readers: {}, cut off as slow consumers: {}",
        stalled.len(),
        danmu_gateway::stats::get(&gateway.stats.slow_consumers),
    );
    for member in members {
        member.abort();
    }
    Ok(())
}
