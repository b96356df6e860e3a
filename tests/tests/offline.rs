//! Offline messages: a user-scope high-priority push for a user with no connection waits in
//! JetStream and arrives on the user's next connect, once, in order; a push delivered live is not
//! stored; one older than the bound has expired and never arrives.

use std::time::Duration;

use async_nats::jetstream;
use danmu_distributor::Stats;
use danmu_proto::subjects::{self, Priority, Scope};
use danmu_tests::client::Transport;
use danmu_tests::eventually;
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room::{self, danmu, receive_sequences};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);

async fn publish_high(js: &jetstream::Context, uid: u64, n: u64) -> anyhow::Result<()> {
    js.publish(subjects::push(Priority::High, &Scope::User(uid)), danmu(n))
        .await?
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_users_pushes_arrive_on_connect_once_and_in_order() -> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let distributor = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;
    let gateway = fabric::start_gateway(fabric::gateway_config(&url, "A", &keys)).await?;
    let js = jetstream::new(danmu_tests::nats::connect_publisher(&url).await?);
    let uid = 7;
    let stored = || Stats::get(&distributor.stats.offline_stored);

    for n in 0..5 {
        publish_high(&js, uid, n).await?;
    }
    eventually("the five pushes stored for later", WAIT, async || {
        (stored() == 5).then_some(())
    })
    .await?;

    let addr = gateway.ws_addr.unwrap();
    let mut first = room::join(&keys, Transport::WebSocket, addr, uid, 70, 3).await?;
    assert_eq!(
        receive_sequences(&mut first, 5, WAIT).await?,
        [0, 1, 2, 3, 4]
    );
    first.expect_silence(QUIET).await?;

    // Online now: the next push is delivered live and not stored.
    publish_high(&js, uid, 5).await?;
    assert_eq!(receive_sequences(&mut first, 1, WAIT).await?, [5]);
    assert_eq!(stored(), 5);
    drop(first);

    // The next connect gets nothing again: each offline push is delivered once.
    let mut second =
        room::join(&keys, Transport::Tcp, gateway.tcp_addr.unwrap(), uid, 70, 2).await?;
    second.expect_silence(QUIET).await?;
    // Both connects read (the second found nothing, with one lookup).
    eventually("two offline reads", WAIT, async || {
        (danmu_gateway::stats::get(&gateway.stats.offline_reads) == 2).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_offline_pushes_never_arrive() -> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let mut config = fabric::distributor_config(&url, "A");
    config.offline.max_age = Duration::from_secs(1);
    let distributor = danmu_distributor::start(config).await?;
    let gateway = fabric::start_gateway(fabric::gateway_config(&url, "A", &keys)).await?;
    let js = jetstream::new(danmu_tests::nats::connect_publisher(&url).await?);
    let uid = 8;
    for n in 0..3 {
        publish_high(&js, uid, n).await?;
    }
    eventually("stored", WAIT, async || {
        (Stats::get(&distributor.stats.offline_stored) == 3).then_some(())
    })
    .await?;
    let mut stream = js.get_stream(subjects::OFFLINE_STREAM).await?;
    eventually("expired by the stream's max age", WAIT, async || {
        let info = stream.info().await.ok()?;
        (info.state.messages == 0).then_some(())
    })
    .await?;
    let mut client = room::join(
        &keys,
        Transport::WebSocket,
        gateway.ws_addr.unwrap(),
        uid,
        70,
        3,
    )
    .await?;
    client.expect_silence(QUIET).await?;
    Ok(())
}

/// The field case: 200 users, each with one push stored while away (published in region A),
/// reconnect at once to a gateway in region B. Every one gets its push on that connect; a read
/// JetStream refuses (it answered 503 to about one in ten of these reads before) is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_reconnecting_in_another_region_all_get_their_push() -> anyhow::Result<()>
{
    const USERS: u64 = 200;
    let cluster = danmu_tests::supercluster(&["A", "B"]).await?;
    let keys = Keys::generate();
    let mut distributors = Vec::new();
    for region in ["A", "B"] {
        let url = cluster.region(region).client_url();
        distributors
            .push(danmu_distributor::start(fabric::distributor_config(&url, region)).await?);
    }
    let url_b = cluster.region("B").client_url();
    let gateway_b = fabric::start_gateway(fabric::gateway_config(&url_b, "B", &keys)).await?;
    let js = jetstream::new(cluster.region("A").connect_publisher().await?);
    for uid in 1..=USERS {
        publish_high(&js, 1000 + uid, uid).await?;
    }
    eventually("every push stored for later", WAIT, async || {
        (Stats::get(&distributors[0].stats.offline_stored) == USERS).then_some(())
    })
    .await?;

    let addr = gateway_b.tcp_addr.unwrap();
    let joins = (1..=USERS).map(|uid| {
        let keys = &keys;
        async move {
            let mut client = room::join(keys, Transport::Tcp, addr, 1000 + uid, 71, 3).await?;
            let got = receive_sequences(&mut client, 1, WAIT).await?;
            anyhow::Ok((uid, got))
        }
    });
    let results = futures::future::join_all(joins).await;
    let mut missing = Vec::new();
    for result in results {
        match result {
            Ok((uid, got)) => assert_eq!(got, [uid], "user {uid} got another user's push"),
            Err(error) => missing.push(error.to_string()),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {USERS} users did not get their push: {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    // Reads JetStream refused and the gateway tried again (how often the field case happened).
    eprintln!(
        "offline reads retried: {}",
        danmu_gateway::stats::get(&gateway_b.stats.offline_read_retries)
    );
    Ok(())
}
