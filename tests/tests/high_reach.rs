//! High reach: a client that opted in and loses a share of its high-priority frames (loss
//! injected in the client, not the gateway) still ends with every message exactly once, through
//! the gateway's retries; the gateway's counters agree with what the client saw. A client that
//! did not opt in gets plain frames, once each.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use danmu_gateway::stats::get;
use danmu_proto::frame::{Frame, op};
use danmu_proto::subjects::{Priority, Scope};
use danmu_tests::client::{Client, Event, Transport};
use danmu_tests::eventually;
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room::{self, danmu, receive_sequences};

const COUNT: u64 = 200;
const WAIT: Duration = Duration::from_secs(30);

/// What the lossy client saw.
#[derive(Default)]
struct Seen {
    /// Times each delivery id arrived.
    arrivals: HashMap<u32, u32>,
    /// Frames thrown away to simulate loss.
    dropped: u64,
    /// Duplicates dropped by the client (an id already handed to the application).
    duplicates: u64,
    /// Business sequence numbers handed to the application.
    application: Vec<u64>,
}

/// Loses the first arrival of every third id and the second arrival of every ninth.
fn lose(id: u32, arrival: u32) -> bool {
    (id.is_multiple_of(3) && arrival == 1) || (id.is_multiple_of(9) && arrival == 2)
}

async fn lossy_reader(mut client: Client, seen: Arc<Mutex<Seen>>) -> anyhow::Result<()> {
    loop {
        let frame = match client.next(Duration::from_secs(3600)).await? {
            Event::Frame(frame) if frame.op == op::MESSAGE => frame,
            Event::Frame(_) => continue,
            Event::Closed(why) => anyhow::bail!("closed: {why:?}"),
        };
        let id = frame.seq;
        anyhow::ensure!(id != 0, "high-priority frames carry a delivery id");
        let payloads = client.unpack(&frame)?;
        {
            let mut seen = seen.lock().unwrap();
            let arrival = {
                let count = seen.arrivals.entry(id).or_default();
                *count += 1;
                *count
            };
            if lose(id, arrival) {
                seen.dropped += 1;
                continue;
            }
            if arrival > 1 && !lose(id, arrival - 1) {
                seen.duplicates += 1;
            } else {
                for payload in payloads {
                    if let Some(n) = room::sequence(&payload)? {
                        seen.application.push(n);
                    }
                }
            }
        }
        client
            .send(&Frame::new(1, op::ACK, id, Bytes::new()))
            .await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_clients_get_every_high_priority_message_once_through_retries() -> anyhow::Result<()>
{
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let _distributor = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;
    let mut config = fabric::gateway_config(&url, "A", &keys);
    config.reach_retry = Duration::from_millis(500);
    config.reach_max_retries = 3;
    let gateway = fabric::start_gateway(config).await?;

    let uid = 1;
    let mut reliable = Client::connect(Transport::Tcp, gateway.tcp_addr.unwrap()).await?;
    let token = keys.token(uid, Some(vec![60]), Duration::from_secs(600));
    assert_eq!(
        reliable
            .auth_with(uid, 60, 3, &token, serde_json::json!({"ack": true}))
            .await?,
        0
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = tokio::spawn(lossy_reader(reliable, seen.clone()));
    // Same user, no opt-in: it shares the user's subscription and warms the path up.
    let mut legacy = room::join(
        &keys,
        Transport::WebSocket,
        gateway.ws_addr.unwrap(),
        uid,
        60,
        3,
    )
    .await?;
    let business = danmu_tests::nats::connect_publisher(&url).await?;
    room::warm_up_scope(
        &business,
        Priority::High,
        &Scope::User(uid),
        &mut [&mut legacy],
        WAIT,
    )
    .await?;

    for n in 0..COUNT {
        room::publish_to(&business, Priority::High, &Scope::User(uid), danmu(n)).await?;
    }
    let got = receive_sequences(&mut legacy, COUNT as usize, WAIT).await?;
    assert_eq!(
        got,
        (0..COUNT).collect::<Vec<_>>(),
        "the legacy client gets each once, in order"
    );

    eventually(
        "every message reached the lossy client's application",
        WAIT,
        async || {
            let seen = seen.lock().unwrap();
            let unique: BTreeSet<u64> = seen.application.iter().copied().collect();
            (unique.len() as u64 == COUNT).then_some(())
        },
    )
    .await?;
    eventually("every delivery acknowledged", WAIT, async || {
        (get(&gateway.stats.reach_acked) == get(&gateway.stats.reach_delivered)).then_some(())
    })
    .await?;
    reader.abort();

    let seen = seen.lock().unwrap();
    let mut application = seen.application.clone();
    application.sort_unstable();
    assert_eq!(
        application,
        (0..COUNT).collect::<Vec<_>>(),
        "exactly once each"
    );
    assert!(
        seen.dropped >= COUNT / 3,
        "loss was injected ({})",
        seen.dropped
    );
    assert_eq!(seen.duplicates, 0, "every ack arrived before its retry");
    // The gateway's counters agree with the client: one retry per lost frame, nothing expired.
    assert_eq!(get(&gateway.stats.reach_retried), seen.dropped);
    assert_eq!(get(&gateway.stats.reach_expired), 0);
    assert_eq!(
        get(&gateway.stats.reach_delivered),
        seen.arrivals.len() as u64
    );
    Ok(())
}
