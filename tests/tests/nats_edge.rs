//! The gateway's own NATS edge subscriber against real nats-servers: it survives a restart of
//! its server without losing or doubling deliveries, keeps the other rooms when one room's
//! subscription is refused, and connects the way production NATS runs (TLS, nkey).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use danmu_gateway::stats::get;
use danmu_proto::internal::{self, EdgeBatch};
use danmu_proto::subjects::{self, Priority, Scope};
use danmu_tests::assert_eventually;
use danmu_tests::client::{Client, Transport};
use danmu_tests::fabric::{self, Keys, SingleRegion};
use danmu_tests::nats::permissions::Role;
use danmu_tests::nats::security::{self, Operator, Pki, User};
use danmu_tests::nats::single_with;
use danmu_tests::room::{self, danmu, receive_sequences};
use prost::Message as _;

const WAIT: Duration = Duration::from_secs(20);

/// Every edge link's subscriptions, from the server's `/connz`: (connection name, subjects).
async fn edge_subscriptions(
    server: &danmu_tests::NatsServer,
) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let connz = server.monitor_json("/connz?subs=1&limit=1000").await?;
    let mut links = Vec::new();
    for conn in connz["connections"].as_array().into_iter().flatten() {
        let name = conn["name"].as_str().unwrap_or_default();
        if name.contains(" edge ") {
            let subjects = conn["subscriptions_list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            links.push((name.to_owned(), subjects));
        }
    }
    Ok(links)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_keep_receiving_after_their_nats_server_restarts_and_nothing_twice()
-> anyhow::Result<()> {
    let mut region = SingleRegion::start().await?;
    let room = 31;
    let mut members = vec![
        region.join(Transport::Tcp, 1, room, 3).await?,
        region.join(Transport::WebSocket, 2, room, 0).await?,
    ];
    {
        let mut clients: Vec<&mut Client> = members.iter_mut().collect();
        room::warm_up(&region.business, room, &mut clients, WAIT).await?;
    }
    for n in 0..5 {
        room::publish(&region.business, room, danmu(n)).await?;
    }
    for member in &mut members {
        assert_eq!(receive_sequences(member, 5, WAIT).await?, [0, 1, 2, 3, 4]);
    }

    assert_eq!(get(&region.gateway.stats.nats_links_down), 0);
    // Killed and started again on the same port and store.
    region.server.restart().await?;

    // The links resubscribed: warm-up messages get through again.
    {
        let mut clients: Vec<&mut Client> = members.iter_mut().collect();
        room::warm_up(&region.business, room, &mut clients, WAIT).await?;
    }
    for n in 5..10 {
        room::publish(&region.business, room, danmu(n)).await?;
    }
    for member in &mut members {
        assert_eq!(receive_sequences(member, 5, WAIT).await?, [5, 6, 7, 8, 9]);
        member.expect_silence(Duration::from_millis(300)).await?;
    }
    assert_eq!(
        get(&region.gateway.stats.nats_links_down),
        2,
        "each link lost its connection once"
    );
    // Each link holds every subscription once: nothing can arrive twice through NATS.
    let links = edge_subscriptions(&region.server).await?;
    assert_eq!(links.len(), 2, "one link per priority: {links:?}");
    let room_subjects = [
        subjects::edge(Priority::High, &Scope::Room(room)),
        subjects::edge(Priority::Low, &Scope::Room(room)),
    ];
    for (name, subjects) in &links {
        let mut unique = subjects.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), subjects.len(), "{name}: {subjects:?}");
        assert!(
            subjects.iter().any(|s| room_subjects.contains(s)),
            "{name}: {subjects:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permissions_error_on_one_room_keeps_the_other_rooms_receiving() -> anyhow::Result<()> {
    let (open_room, denied_room) = (41, 42);
    let server = single_with(
        security::authorization(
            &[
                User::Password {
                    user: "admin".into(),
                    password: "adminpw".into(),
                    deny_subscribe: Vec::new(),
                },
                User::Password {
                    user: "gw".into(),
                    password: "gwpw".into(),
                    deny_subscribe: vec![format!("danmu.edge.*.room.{denied_room}")],
                },
            ],
            Some("admin"),
        ),
        false,
    )
    .await?;
    let port = server.ports().client;
    // The distributor and the business connect without credentials, as `admin` (this server
    // has its own users, not the test fabric's).
    let admin_url = server.client_url();
    let keys = Keys::generate();
    let mut distributor = fabric::distributor_config(&admin_url, "A");
    distributor.nats_nkey_seed = None;
    let distributor = danmu_distributor::start(distributor)
        .await
        .with_context(|| format!("nats-server log:\n{}", server.log_tail()))?;
    let mut gateway =
        fabric::gateway_config(&format!("nats://gw:gwpw@127.0.0.1:{port}"), "A", &keys);
    gateway.nats_nkey_seed = None;
    let gateway = fabric::start_gateway(gateway).await?;
    let business = async_nats::connect(admin_url.as_str()).await?;
    let tcp = gateway.tcp_addr.unwrap();
    let mut member = room::join(&keys, Transport::Tcp, tcp, 1, open_room, 3).await?;
    room::warm_up(&business, open_room, &mut [&mut member], WAIT).await?;

    // A member in the denied room: both links' subscriptions to it are refused.
    let _denied = room::join(&keys, Transport::Tcp, tcp, 2, denied_room, 3).await?;
    assert_eventually!(
        WAIT,
        "a permissions -ERR on each link",
        get(&gateway.stats.nats_permission_errors) == 2
    );
    for n in 0..20 {
        room::publish(&business, open_room, danmu(n)).await?;
    }
    assert_eq!(
        receive_sequences(&mut member, 20, WAIT).await?,
        (0..20).collect::<Vec<_>>()
    );
    // The links were kept: a reconnect would have sent the refused subscriptions again.
    assert_eq!(get(&gateway.stats.nats_permission_errors), 2);
    assert_eq!(get(&gateway.stats.nats_errors), 2);
    assert_eq!(get(&gateway.stats.nats_links_down), 0);
    distributor.shutdown().await?;
    Ok(())
}

/// Publishes edge batches for `room` (as the distributor would) until `member` gets one: the
/// room's subscription reaches the server a moment after the join.
async fn edge_batches_reach(
    publisher: &async_nats::Client,
    member: &mut Client,
    room: u64,
) -> anyhow::Result<()> {
    let subject = subjects::edge(Priority::Low, &Scope::Room(room));
    for seq in 1..200 {
        publisher
            .publish(subject.clone(), edge_batch(seq, &danmu(seq)))
            .await?;
        publisher.flush().await?;
        if let Ok(got) = member.messages(1, Duration::from_millis(100)).await {
            assert_eq!(room::sequence(&got[0])?, Some(seq));
            return Ok(());
        }
    }
    anyhow::bail!("no edge batch reached the member")
}

/// The gateway's connections as the server's `/connz?auth=1` lists them.
async fn gateway_connections(
    server: &danmu_tests::NatsServer,
    node_id: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let connz = server.monitor_json("/connz?auth=1").await?;
    Ok(connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.contains(node_id)))
        .cloned()
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reaches_an_operator_mode_server_with_a_creds_file() -> anyhow::Result<()> {
    let operator = Operator::generate();
    let server = single_with(operator.server_block()?, true)
        .await
        .context("starting nats-server in operator mode")?;
    let dir = tempfile::tempdir()?;
    let (gateway_user, gateway_creds) = operator.user_creds("gateway")?;
    let creds_path = dir.path().join("gateway.creds");
    std::fs::write(&creds_path, gateway_creds)?;
    let keys = Keys::generate();
    let mut config = fabric::gateway_config(&server.client_url(), "A", &keys);
    config.nats_nkey_seed = None;
    config.nats_creds = Some(creds_path.display().to_string());
    let gateway = fabric::start_gateway(config)
        .await
        .with_context(|| format!("nats-server log:\n{}", server.log_tail()))?;

    let (_, business_creds) = operator.user_creds("business")?;
    let business = async_nats::ConnectOptions::new()
        .credentials(&business_creds)?
        .connect(server.client_url())
        .await?;
    let room = 61;
    let mut member =
        room::join(&keys, Transport::Tcp, gateway.tcp_addr.unwrap(), 1, room, 3).await?;
    edge_batches_reach(&business, &mut member, room).await?;

    let mine = gateway_connections(&server, &gateway.node_id).await?;
    assert_eq!(
        mine.len(),
        4,
        "control, upstream and two edge links: {mine:?}"
    );
    for conn in mine {
        assert_eq!(conn["authorized_user"], gateway_user, "{conn}");
        assert_eq!(conn["account"], operator.account(), "{conn}");
    }
    Ok(())
}

/// An edge batch of one message, as the distributor publishes it.
fn edge_batch(seq: u64, payload: &[u8]) -> Bytes {
    let raw = danmu_proto::batch::encode_messages([payload]);
    let packet = danmu_proto::batch::compressed_packet(
        danmu_proto::frame::version::BROTLI,
        &danmu_proto::batch::brotli_compress(&raw, 5),
    );
    EdgeBatch {
        packet,
        priority: internal::Priority::Low as i32,
        stream: "PUSH_LO_A".into(),
        first_stream_seq: seq,
        last_stream_seq: seq,
        message_count: 1,
        stream_seqs: vec![seq],
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reaches_a_nats_server_requiring_tls_client_certificates_and_an_nkey()
-> anyhow::Result<()> {
    let pki = Pki::generate()?;
    let gateway_key = nkeys::KeyPair::new_user();
    let seed_path = pki.dir().join("gateway.nk");
    std::fs::write(&seed_path, gateway_key.seed()?)?;
    let server = single_with(
        pki.server_block(true)
            + &security::authorization(
                &[
                    User::Nkey {
                        public_key: gateway_key.public_key(),
                    },
                    User::Password {
                        user: "admin".into(),
                        password: "adminpw".into(),
                        deny_subscribe: Vec::new(),
                    },
                ],
                None,
            ),
        false,
    )
    .await?;
    let port = server.ports().client;
    let keys = Keys::generate();
    // `tls://`: TLS required by the URL as well as by the server and the CA setting.
    let mut config = fabric::gateway_config(&format!("tls://127.0.0.1:{port}"), "A", &keys);
    config.nats_nkey_seed = Some(seed_path.display().to_string());
    config.nats_tls_ca = Some(pki.ca.display().to_string());
    config.nats_tls_cert = Some(pki.client_cert.display().to_string());
    config.nats_tls_key = Some(pki.client_key.display().to_string());
    // Starting needs the async-nats connections too (the nodes bucket is opened at start).
    let gateway = fabric::start_gateway(config).await?;

    let business =
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "adminpw".into())
            .add_root_certificates(pki.ca.clone())
            .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone())
            .require_tls(true)
            .connect(format!("nats://127.0.0.1:{port}"))
            .await?;
    let room = 51;
    let mut member =
        room::join(&keys, Transport::Tcp, gateway.tcp_addr.unwrap(), 1, room, 3).await?;
    edge_batches_reach(&business, &mut member, room).await?;

    // Every connection of the gateway is TLS and authenticated by its nkey.
    let mine = gateway_connections(&server, &gateway.node_id).await?;
    assert_eq!(
        mine.len(),
        4,
        "control, upstream and two edge links: {mine:?}"
    );
    for conn in mine {
        assert!(
            conn["tls_version"].as_str().is_some_and(|v| !v.is_empty()),
            "{conn}"
        );
        assert_eq!(conn["authorized_user"], gateway_key.public_key(), "{conn}");
    }
    Ok(())
}

/// Which of `servers` (by index) hold the gateway's edge links.
async fn edge_link_hosts(servers: &[danmu_tests::NatsServer]) -> anyhow::Result<Vec<usize>> {
    let mut hosts = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        for _ in edge_subscriptions(server).await? {
            hosts.push(i);
        }
    }
    Ok(hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lame_duck_mode_moves_the_edge_links_to_another_server_before_it_closes()
-> anyhow::Result<()> {
    let cluster = danmu_tests::supercluster(&["A", "B"]).await?;
    let keys = Keys::generate();
    let gateway =
        fabric::start_gateway(fabric::gateway_config(&cluster.client_urls(), "A", &keys)).await?;
    let room = 71;
    let mut member =
        room::join(&keys, Transport::Tcp, gateway.tcp_addr.unwrap(), 1, room, 3).await?;
    // The links are on a server chosen at random: put the first link's server in lame duck.
    let hosts = eventually_two_links(&cluster.regions).await?;
    let (lame, other) = (hosts[0], 1 - hosts[0]);
    let status = std::process::Command::new(danmu_tests::nats::binary()?)
        .arg("--signal")
        .arg(format!("ldm={}", cluster.regions[lame].pid()))
        .status()?;
    anyhow::ensure!(status.success(), "nats-server --signal ldm failed");
    // nats-server waits a grace period (10 s) before it closes clients: the links must not.
    let moved = std::time::Instant::now();
    danmu_tests::eventually("both edge links on the other server", WAIT, async || {
        edge_link_hosts(&cluster.regions)
            .await
            .map(|hosts| (hosts == [other, other]).then_some(()))
    })
    .await?;
    assert!(
        moved.elapsed() < Duration::from_secs(8),
        "moved after {:?}: that is the server closing us, not lame-duck mode",
        moved.elapsed()
    );
    // Edge batches are the distributor's to publish: as its user.
    let as_distributor = danmu_tests::nats::users::test_user_of(Role::Distributor, "A")
        .connect(&cluster.regions[other].client_url())
        .await?;
    edge_batches_reach(&as_distributor, &mut member, room).await?;
    Ok(())
}

async fn eventually_two_links(servers: &[danmu_tests::NatsServer]) -> anyhow::Result<Vec<usize>> {
    danmu_tests::eventually("two edge links", WAIT, async || {
        edge_link_hosts(servers)
            .await
            .map(|hosts| (hosts.len() == 2).then_some(hosts))
    })
    .await
}
