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
    let js = jetstream::new(async_nats::connect(url.as_str()).await?);
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
    let js = jetstream::new(async_nats::connect(url.as_str()).await?);
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
