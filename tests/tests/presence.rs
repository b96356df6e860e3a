//! Presence: enter and exit events on NATS once per connection and room (room changes, closed
//! and silent clients, a killed gateway process), and online counts summed across gateways in
//! two regions, in HEARTBEAT_REPLY and in answers to business's NATS query.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use danmu_proto::presence::{EventKind, GATEWAY_LOST, OnlineReply, PresenceEvent};
use danmu_proto::subjects;
use danmu_tests::client::{Client, Transport};
use danmu_tests::fabric::{self, GatewayProcess, Keys, SingleRegion};
use danmu_tests::{eventually, room, supercluster};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

/// Every presence event seen on core NATS, with its `Nats-Msg-Id`.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(PresenceEvent, String)>>>);

impl Seen {
    async fn follow(nats: &async_nats::Client) -> anyhow::Result<Seen> {
        let mut events = nats.subscribe("danmu.presence.>").await?;
        nats.flush().await?;
        let seen = Seen::default();
        let sink = seen.0.clone();
        tokio::spawn(async move {
            while let Some(message) = events.next().await {
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let event: PresenceEvent =
                    serde_json::from_slice(&message.payload).expect("a presence event");
                assert_eq!(message.subject.as_str(), event.subject());
                sink.lock().unwrap().push((event, id));
            }
        });
        Ok(seen)
    }

    /// `(kind, seq, room, reason)` of every event of `uid`'s connections, in arrival order.
    fn of(&self, uid: u64) -> Vec<(EventKind, u64, u64, Option<String>)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(e, _)| e.uid == uid)
            .map(|(e, _)| (e.event, e.seq, e.room, e.reason.clone()))
            .collect()
    }

    async fn wait_for(&self, uid: u64, count: usize) -> anyhow::Result<()> {
        eventually(&format!("{count} events of uid {uid}"), WAIT, async || {
            (self.of(uid).len() >= count).then_some(())
        })
        .await
    }
}

fn enter(seq: u64, room: u64) -> (EventKind, u64, u64, Option<String>) {
    (EventKind::Enter, seq, room, None)
}

fn exit(seq: u64, room: u64, reason: &str) -> (EventKind, u64, u64, Option<String>) {
    (EventKind::Exit, seq, room, Some(reason.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enter_and_exit_events_come_once_per_connection_and_room() -> anyhow::Result<()> {
    let f = SingleRegion::start().await?;
    let seen = Seen::follow(&f.business).await?;
    // A second gateway declares silent connections dead after one second.
    let mut quick = fabric::gateway_config(&f.url(), "A", &f.keys);
    quick.heartbeat_timeout = Duration::from_secs(1);
    let quick = fabric::start_gateway(quick).await?;

    // Enters room 1, moves to room 2, then its socket goes away (as when the process dies).
    let mut mover = Client::connect(Transport::WebSocket, f.addr(Transport::WebSocket)).await?;
    let token = f.keys.token(11, Some(vec![1, 2]), Duration::from_secs(600));
    assert_eq!(mover.auth(11, 1, 3, &token).await?, 0);
    mover.change_room(2).await?;
    drop(mover);
    // Stops sending anything: the heartbeat timeout ends it.
    let silent = room::join(&f.keys, Transport::Tcp, quick.tcp_addr.unwrap(), 12, 1, 3).await?;
    let closed = f.join(Transport::Tcp, 13, 1, 3).await?;
    drop(closed);

    seen.wait_for(11, 4).await?;
    seen.wait_for(12, 2).await?;
    seen.wait_for(13, 2).await?;
    // Events of one gateway arrive in order: once this one's enter is here, any repeat of the
    // earlier ones would be too.
    let _last = f.join(Transport::Tcp, 14, 1, 3).await?;
    seen.wait_for(14, 1).await?;

    assert_eq!(
        seen.of(11),
        [
            enter(1, 1),
            exit(2, 1, "room_change"),
            enter(3, 2),
            exit(4, 2, "peer_closed")
        ]
    );
    assert_eq!(seen.of(12), [enter(1, 1), exit(2, 1, "heartbeat_timeout")]);
    assert_eq!(seen.of(13), [enter(1, 1), exit(2, 1, "peer_closed")]);
    assert_eq!(seen.of(14), [enter(1, 1)]);
    for (event, id) in seen.0.lock().unwrap().iter() {
        assert_eq!(id, &event.message_id(), "Nats-Msg-Id is conn#seq");
        assert_eq!(event.region, "A");
    }
    let silent_gateway = seen
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|(e, _)| e.uid == 12)
        .map(|(e, _)| e.gateway.clone());
    assert_eq!(silent_gateway, Some(quick.node_id.clone()));
    drop(silent);
    Ok(())
}

/// Every message of a stream, in order.
async fn stream_events(js: &async_nats::jetstream::Context) -> anyhow::Result<Vec<PresenceEvent>> {
    let mut stream = js.get_stream(subjects::presence_stream("A")).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut events = Vec::new();
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            events.push(serde_json::from_slice(&message.payload)?);
        }
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_process_exits_its_connections_once() -> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let mut config = fabric::control_config(&url, "A", &keys);
    config.node_ttl = Duration::from_secs(2);
    // Two replicas, as a production install runs: both see the gateway die, and the stream
    // keeps one exit per connection.
    let _control = fabric::start_control(config.clone()).await?;
    let _replica = fabric::start_control(config).await?;
    // Admin: the test reads the presence stream's messages one by one (inspection).
    let nats = danmu_tests::nats::connect_admin(&url).await?;
    let js = async_nats::jetstream::new(nats.clone());
    eventually("control created the presence stream", WAIT, async || {
        js.get_stream(subjects::presence_stream("A")).await.ok()
    })
    .await?;

    let mut gateway = GatewayProcess::start(
        &url,
        "doomed",
        &keys,
        "region = \"A\"\nreport_interval = \"500ms\"\nnode_ttl = \"2s\"",
    )
    .await?;
    let mut clients = Vec::new();
    for (uid, room) in [(21, 1), (22, 1), (23, 2)] {
        clients.push(room::join(&keys, Transport::Tcp, gateway.tcp_addr, uid, room, 3).await?);
    }
    eventually("three enters stored", WAIT, async || {
        let events = stream_events(&js).await.ok()?;
        (events.len() == 3).then_some(())
    })
    .await?;

    gateway.signal(libc::SIGKILL)?;
    eventually("the gateway process is gone", WAIT, async || {
        gateway.child.try_wait().ok().flatten()
    })
    .await?;
    let events = eventually("three exits stored", WAIT, async || {
        let events = stream_events(&js).await.ok()?;
        (events.len() >= 6).then_some(events)
    })
    .await?;
    assert_eq!(events.len(), 6, "{events:#?}");
    type History<'a> = Vec<(EventKind, u64, Option<&'a str>)>;
    let mut by_conn: BTreeMap<&str, History> = BTreeMap::new();
    for event in &events {
        assert_eq!(event.gateway, "doomed");
        by_conn.entry(&event.conn).or_default().push((
            event.event,
            event.seq,
            event.reason.as_deref(),
        ));
    }
    assert_eq!(by_conn.len(), 3);
    for history in by_conn.values() {
        assert_eq!(
            history,
            &[
                (EventKind::Enter, 1, None),
                (EventKind::Exit, 2, Some(GATEWAY_LOST))
            ]
        );
    }
    let exit_rooms: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e.event == EventKind::Exit)
        .map(|e| (e.uid, e.room))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(exit_rooms, [(21, 1), (22, 1), (23, 2)]);
    Ok(())
}

async fn query(nats: &async_nats::Client, body: &str) -> anyhow::Result<OnlineReply> {
    let reply = nats
        .request(subjects::ONLINE_QUERY, Bytes::from(body.to_owned()))
        .await?;
    Ok(serde_json::from_slice(&reply.payload)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_counts_add_up_across_gateways_and_regions() -> anyhow::Result<()> {
    let cluster = supercluster(&["A", "B"]).await?;
    let keys = Keys::generate();
    let mut gateways = Vec::new();
    let mut controls = Vec::new();
    for region in ["A", "B"] {
        let url = cluster.region(region).client_url();
        let mut config = fabric::gateway_config(&url, region, &keys);
        config.online_report_interval = Duration::from_millis(200);
        gateways.push(fabric::start_gateway(config).await?);
        controls.push(fabric::start_control(fabric::control_config(&url, region, &keys)).await?);
    }
    let join = async |gateway: &danmu_gateway::Gateway, uid, room| {
        room::join(
            &keys,
            Transport::Tcp,
            gateway.tcp_addr.unwrap(),
            uid,
            room,
            3,
        )
        .await
    };
    let mut on_a = [
        join(&gateways[0], 31, 7).await?,
        join(&gateways[0], 32, 7).await?,
    ];
    let mut on_b = vec![
        join(&gateways[1], 33, 7).await?,
        join(&gateways[1], 34, 7).await?,
        join(&gateways[1], 35, 7).await?,
    ];
    let mut alone = join(&gateways[1], 36, 8).await?;

    // The documented delay: a report interval plus an aggregation interval, and the links.
    for (name, client) in [("A", &mut on_a[0]), ("B", &mut on_b[0])] {
        eventually(
            &format!("5 online in room 7 seen on {name}"),
            WAIT,
            async || (client.heartbeat().await.ok()? == 5).then_some(()),
        )
        .await?;
    }
    assert_eq!(alone.heartbeat().await?, 1);

    drop(on_b.pop());
    eventually(
        "4 online after a leave in the other region",
        WAIT,
        async || (on_a[0].heartbeat().await.ok()? == 4).then_some(()),
    )
    .await?;

    let nats = cluster.region("B").connect_publisher().await?;
    let named = query(&nats, r#"{"rooms":[7,8,9]}"#).await?;
    assert_eq!(named.rooms, [(7, 4), (8, 1), (9, 0)]);
    assert_eq!((named.total, named.gateways), (5, 2));
    let top = query(&nats, r#"{"top":1}"#).await?;
    assert_eq!(top.rooms, [(7, 4)]);
    let bad = query(&nats, "not json").await?;
    assert!(bad.error.is_some_and(|e| e.contains("rooms")));
    Ok(())
}
