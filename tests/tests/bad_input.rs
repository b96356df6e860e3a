//! Bad tokens and bad frames get the documented reply or close, for that connection alone:
//! another member of the room keeps receiving throughout.

use std::time::Duration;

use bytes::Bytes;
use danmu_proto::frame::{Frame, op};
use danmu_proto::websocket::opcode;
use danmu_tests::client::{Client, Event, Transport};
use danmu_tests::fabric::{self, Keys};
use danmu_tests::room::{self, danmu, receive_sequences};

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    _server: danmu_tests::NatsServer,
    _distributor: danmu_distributor::Distributor,
    gateway: danmu_gateway::Gateway,
    keys: Keys,
    business: async_nats::Client,
    witness: Client,
    next: u64,
}

const ROOM: u64 = 5;

impl Fixture {
    /// A gateway that takes packets up to 4 KiB (so "too large" is cheap to provoke).
    async fn start() -> anyhow::Result<Fixture> {
        Self::start_with(|config| config.max_packet_bytes = 4096).await
    }

    async fn start_with(
        configure: impl FnOnce(&mut danmu_gateway::Config),
    ) -> anyhow::Result<Fixture> {
        let server = danmu_tests::single().await?;
        let url = server.client_url();
        let keys = Keys::generate();
        let distributor = danmu_distributor::start(fabric::distributor_config(&url, "A")).await?;
        let mut config = fabric::gateway_config(&url, "A", &keys);
        configure(&mut config);
        let gateway = fabric::start_gateway(config).await?;
        let mut witness = room::join(
            &keys,
            Transport::WebSocket,
            gateway.ws_addr.unwrap(),
            1,
            ROOM,
            3,
        )
        .await?;
        let business = danmu_tests::nats::connect_publisher(&url).await?;
        room::warm_up(&business, ROOM, &mut [&mut witness], WAIT).await?;
        Ok(Fixture {
            _server: server,
            _distributor: distributor,
            gateway,
            keys,
            business,
            witness,
            next: 0,
        })
    }

    /// The witness still gets the room's next message.
    async fn room_still_flows(&mut self) -> anyhow::Result<()> {
        room::publish(&self.business, ROOM, danmu(self.next)).await?;
        let got = receive_sequences(&mut self.witness, 1, WAIT).await?;
        assert_eq!(got, [self.next]);
        self.next += 1;
        Ok(())
    }

    async fn connect(&self, transport: Transport) -> anyhow::Result<Client> {
        let addr = match transport {
            Transport::WebSocket => self.gateway.ws_addr.unwrap(),
            Transport::Tcp => self.gateway.tcp_addr.unwrap(),
        };
        Client::connect(transport, addr).await
    }

    async fn joined(&self, transport: Transport) -> anyhow::Result<Client> {
        let mut client = self.connect(transport).await?;
        let token = self
            .keys
            .token(77, Some(vec![ROOM]), Duration::from_secs(60));
        assert_eq!(client.auth(77, ROOM, 3, &token).await?, 0);
        Ok(client)
    }
}

/// Asserts the AUTH_REPLY code, then a WebSocket close with `ws_code` (or a plain close on TCP).
async fn rejected(
    client: &mut Client,
    uid: u64,
    room: u64,
    key: &str,
    code: i32,
    ws_code: Option<u16>,
) -> anyhow::Result<()> {
    assert_eq!(client.auth(uid, room, 3, key).await?, code);
    let closed = client.closed(WAIT).await?;
    assert_eq!(closed.map(|(c, _)| c), ws_code);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_their_auth_code_and_a_close() -> anyhow::Result<()> {
    let mut f = Fixture::start().await?;
    for transport in [Transport::WebSocket, Transport::Tcp] {
        let ws_code = (transport == Transport::WebSocket).then_some(1008);
        let mut c = f.connect(transport).await?;
        rejected(&mut c, 9, ROOM, "not-a-token", -101, ws_code).await?;
        f.room_still_flows().await?;

        let forged = Keys::generate().token(9, Some(vec![ROOM]), Duration::from_secs(60));
        let mut c = f.connect(transport).await?;
        rejected(&mut c, 9, ROOM, &forged, -101, ws_code).await?;

        let expired = f.keys.expired_token(9);
        let mut c = f.connect(transport).await?;
        rejected(&mut c, 9, ROOM, &expired, -102, ws_code).await?;
        f.room_still_flows().await?;

        let other_room = f
            .keys
            .token(9, Some(vec![ROOM + 1]), Duration::from_secs(60));
        let mut c = f.connect(transport).await?;
        rejected(&mut c, 9, ROOM, &other_room, -103, ws_code).await?;

        let someone_else = f.keys.token(10, Some(vec![ROOM]), Duration::from_secs(60));
        let mut c = f.connect(transport).await?;
        rejected(&mut c, 9, ROOM, &someone_else, -105, ws_code).await?;
        f.room_still_flows().await?;
    }
    assert_eq!(f.gateway.online(ROOM), 1, "only the witness is in the room");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_that_connection_alone() -> anyhow::Result<()> {
    let mut f = Fixture::start().await?;
    for transport in [Transport::WebSocket, Transport::Tcp] {
        let is_ws = transport == Transport::WebSocket;

        // A header length other than 16.
        let mut c = f.joined(transport).await?;
        let mut bad = Frame::new(1, op::HEARTBEAT, 1, Bytes::new())
            .to_bytes()
            .to_vec();
        bad[5] = 99;
        c.send_bytes(&bad).await?;
        assert_eq!(
            c.closed(WAIT).await?.map(|(code, _)| code),
            is_ws.then_some(1002)
        );
        f.room_still_flows().await?;

        // A packet larger than the gateway accepts (only its header is sent).
        let mut c = f.joined(transport).await?;
        let mut header = Frame::new(1, op::HEARTBEAT, 1, Bytes::new())
            .to_bytes()
            .to_vec();
        header[..4].copy_from_slice(&(1u32 << 20).to_be_bytes());
        c.send_bytes(&header).await?;
        assert_eq!(
            c.closed(WAIT).await?.map(|(code, _)| code),
            is_ws.then_some(1009)
        );
        f.room_still_flows().await?;

        // An operation nobody defined.
        let mut c = f.joined(transport).await?;
        c.send(&Frame::new(1, 4242, 1, Bytes::new())).await?;
        assert_eq!(
            c.closed(WAIT).await?.map(|(code, _)| code),
            is_ws.then_some(1002)
        );

        // Anything but AUTH first.
        let mut c = f.connect(transport).await?;
        c.send(&Frame::new(1, op::HEARTBEAT, 1, Bytes::new()))
            .await?;
        assert_eq!(
            c.closed(WAIT).await?.map(|(code, _)| code),
            is_ws.then_some(1002)
        );
        f.room_still_flows().await?;
    }

    // WebSocket text messages are refused: the protocol is binary.
    let mut c = f.joined(Transport::WebSocket).await?;
    c.send_ws(opcode::TEXT, br#"{"cmd":"hi"}"#).await?;
    assert_eq!(c.closed(WAIT).await?.map(|(code, _)| code), Some(1003));

    // A WebSocket message larger than the limit (64 KiB, as docs/protocol.md says).
    let mut c = f.joined(Transport::WebSocket).await?;
    c.send_ws(opcode::BINARY, &vec![0u8; 64 * 1024 + 1]).await?;
    assert_eq!(c.closed(WAIT).await?.map(|(code, _)| code), Some(1009));

    // An upgrade on another path is refused with an HTTP error.
    let err = Client::connect_path(Transport::WebSocket, f.gateway.ws_addr.unwrap(), "/pub")
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("404"), "{err}");

    f.room_still_flows().await?;
    assert_eq!(f.gateway.online(ROOM), 1);
    // The witness saw nothing but the room's messages and is still in good health.
    match f.witness.next(Duration::from_millis(300)).await {
        Err(_) => {}
        Ok(Event::Frame(frame)) => panic!("unexpected frame {frame:?}"),
        Ok(Event::Closed(why)) => panic!("witness closed: {why:?}"),
    }
    Ok(())
}

/// Field cases of the edge-core issue, each reproduced on a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_edge_keeps_the_documented_promises() -> anyhow::Result<()> {
    // The default limits, as documented.
    let mut f = Fixture::start_with(|_| {}).await?;

    // A client's Close (1000) is answered with a Close echoing the code (RFC 6455 5.5.1).
    let mut c = f.joined(Transport::WebSocket).await?;
    c.send_ws(opcode::CLOSE, &1000u16.to_be_bytes()).await?;
    assert_eq!(c.closed(WAIT).await?.map(|(code, _)| code), Some(1000));

    // A message whose packet claims 1000 bytes in a 20-byte message: closed at once with 1002,
    // not left to swallow the messages after it.
    let mut c = f.joined(Transport::WebSocket).await?;
    let lying = [
        0, 0, 3, 0xe8, 0, 0x10, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0x61, 0x62, 0x63, 0x64,
    ];
    c.send_ws(opcode::BINARY, &lying).await?;
    let closed = c.closed(WAIT).await?;
    assert_eq!(
        closed.as_ref().map(|(code, _)| *code),
        Some(1002),
        "{closed:?}"
    );
    f.room_still_flows().await?;

    // The documented packet limit is 64 KiB: a 20,000-byte AUTH is accepted on both transports.
    for transport in [Transport::WebSocket, Transport::Tcp] {
        let mut c = f.connect(transport).await?;
        let token = f.keys.token(78, Some(vec![ROOM]), Duration::from_secs(60));
        let pad = "x".repeat(20_000);
        let code = c
            .auth_with(78, ROOM, 3, &token, serde_json::json!({ "pad": pad }))
            .await?;
        assert_eq!(code, 0, "{transport:?}");
    }

    // A subprotocol offered is echoed.
    let c = Client::connect_with_headers(
        f.gateway.ws_addr.unwrap(),
        "/sub",
        &[("Sec-WebSocket-Protocol", "goim")],
    )
    .await?;
    let response = c.handshake_response().to_ascii_lowercase();
    assert!(
        response.contains("sec-websocket-protocol: goim"),
        "{response}"
    );

    // A wrong WebSocket version gets 426 with the version the gateway speaks.
    let err = Client::connect_with_headers(
        f.gateway.ws_addr.unwrap(),
        "/sub",
        &[("Sec-WebSocket-Version", "8")],
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("426"), "{err}");

    f.room_still_flows().await?;
    Ok(())
}

/// Past `max_connections`, a new WebSocket gets close 1013 and a TCP connection a plain close;
/// the ones already there notice nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_counted() -> anyhow::Result<()> {
    let mut f = Fixture::start_with(|config| config.max_connections = Some(2)).await?;
    // The witness is one; one more fits.
    let _second = f.joined(Transport::Tcp).await?;
    let mut refused = f.connect(Transport::WebSocket).await?;
    assert_eq!(
        refused.closed(WAIT).await?.map(|(code, _)| code),
        Some(1013)
    );
    let mut refused = f.connect(Transport::Tcp).await?;
    assert_eq!(refused.closed(WAIT).await?, None);
    assert_eq!(
        danmu_gateway::stats::get(&f.gateway.stats.connections_refused),
        2
    );
    f.room_still_flows().await?;
    Ok(())
}

/// The kernel send buffer of a client socket is bounded by default (64 KiB asked, which Linux
/// doubles), measured on the gateway's side of a real connection with `ss`: without the bound,
/// the kernel starts at `tcp_wmem`'s default and autotunes to megabytes for a slow reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_send_buffer_per_socket_is_bounded_by_default() -> anyhow::Result<()> {
    let f = Fixture::start_with(|_| {}).await?;
    let _client = f.joined(Transport::Tcp).await?;
    let port = f.gateway.tcp_addr.unwrap().port();
    let output = std::process::Command::new("ss")
        .args([
            "-tmnH",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let send_buffer: u64 = text
        .split([',', '('])
        .find_map(|field| field.strip_prefix("tb")?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no send buffer in ss output: {text:?}"))?;
    assert_eq!(send_buffer, 2 * 64 * 1024, "{text}");
    Ok(())
}
