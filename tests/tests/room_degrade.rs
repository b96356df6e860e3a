//! The big-room degrade (seed 002): with `low.max_rate` set, a room flooded past it receives a
//! sample of its low-priority messages, in order, and the rest is counted as sampled out (none
//! is lost uncounted), while its high-priority messages all arrive.

use std::time::Duration;

use danmu_distributor::stats::Stats;
use danmu_proto::subjects::{Priority, Scope};
use danmu_tests::client::Transport;
use danmu_tests::fabric::SingleRegion;
use danmu_tests::room::{self, danmu};

const ROOM: u64 = 60;
const LOW: u64 = 3_000;
const HIGH: u64 = 30;
/// High-priority messages carry sequences from here, low ones from 0.
const HIGH_BASE: u64 = 100_000;
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_past_max_rate_gets_a_sample_in_order_and_every_high_priority_message()
-> anyhow::Result<()> {
    let f = SingleRegion::start_with(|distributor, _| {
        distributor.low.max_rate = Some(100.0);
    })
    .await?;
    let mut member = f.join(Transport::Tcp, 1, ROOM, 3).await?;
    room::warm_up(&f.business, ROOM, &mut [&mut member], WAIT).await?;
    let stats = &f.distributor.stats;
    let sampled_before = Stats::get(&stats.sampled_out);

    for n in 0..LOW {
        room::publish(&f.business, ROOM, danmu(n)).await?;
        if n % (LOW / HIGH) == 0 {
            let high = danmu(HIGH_BASE + n / (LOW / HIGH));
            room::publish_to(&f.business, Priority::High, &Scope::Room(ROOM), high).await?;
        }
    }
    f.business.flush().await?;

    // Receive until every low-priority message is either received or counted as sampled out,
    // and every high-priority one is received.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut low, mut high) = (Vec::new(), Vec::new());
    loop {
        let sampled = Stats::get(&stats.sampled_out) - sampled_before;
        if low.len() as u64 + sampled == LOW && high.len() as u64 == HIGH {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "received {} low + {sampled} sampled out of {LOW}, {} high of {HIGH}",
            low.len(),
            high.len()
        );
        if let Ok(batch) = member.messages(1, Duration::from_millis(200)).await {
            for payload in batch {
                match room::sequence(&payload)? {
                    Some(n) if n >= HIGH_BASE => high.push(n - HIGH_BASE),
                    Some(n) => low.push(n),
                    None => {}
                }
            }
        }
    }
    let sampled = Stats::get(&stats.sampled_out) - sampled_before;
    eprintln!("kept {} of {LOW}, sampled out {sampled}", low.len());
    assert!(
        sampled > 0,
        "a flood of {LOW} past 100 msg/s was not sampled"
    );
    assert!(
        low.len() >= 100,
        "the room's first burst passes: {}",
        low.len()
    );
    assert!(low.windows(2).all(|w| w[0] < w[1]), "in order: {low:?}");
    assert_eq!(
        high,
        (0..HIGH).collect::<Vec<_>>(),
        "high priority: all, in order"
    );
    member.expect_silence(Duration::from_millis(300)).await?;
    Ok(())
}
