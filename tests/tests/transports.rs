//! Every transport the gateway serves carries the same frames: a room message reaches plain
//! WebSocket, plain TCP, WebSocket on TLS (`wss`), GOIM on TLS over TCP, QUIC and WebTransport
//! over HTTP/3 alike; certificates
//! reload from their files without a restart; a client that speaks no TLS to a TLS port is
//! closed and counted, and nobody else notices.

use std::time::Duration;

use bytes::Bytes;
use danmu_gateway::stats::get;
use danmu_tests::client::{Client, Tls, Transport};
use danmu_tests::fabric::{Keys, SingleRegion};
use danmu_tests::room::{self, danmu};
use danmu_tests::tls::{
    TestCert, WebTransportSession, client_config_trusting, quic_client, quic_connect, with_tls,
};
use danmu_tests::{assert_eventually, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

fn tls(config: std::sync::Arc<rustls::ClientConfig>) -> Tls {
    Tls {
        config,
        server_name: "localhost".into(),
    }
}

async fn join_tls(
    keys: &Keys,
    transport: Transport,
    addr: std::net::SocketAddr,
    tls: &Tls,
    uid: u64,
    room: u64,
    protover: u16,
) -> anyhow::Result<Client> {
    let mut client = Client::connect_tls(transport, addr, tls).await?;
    let token = keys.token(uid, Some(vec![room]), Duration::from_secs(600));
    let code = client.auth(uid, room, protover, &token).await?;
    anyhow::ensure!(code == 0, "AUTH_REPLY code {code}");
    Ok(client)
}

/// Every transport's listener on `cert`, and a 1 s auth timeout (tests that wait for it).
async fn short_auth_fabric(cert: &TestCert) -> anyhow::Result<SingleRegion> {
    SingleRegion::start_with(|_, gateway| {
        with_tls(gateway, cert);
        gateway.auth_timeout = Duration::from_secs(1);
    })
    .await
}

/// Warms `room` up for `client`, publishes message `n` and checks the client decodes it.
async fn still_receives(
    fabric: &SingleRegion,
    room: u64,
    client: &mut Client,
    n: u64,
) -> anyhow::Result<()> {
    room::warm_up(&fabric.business, room, &mut [&mut *client], WAIT).await?;
    let sent = danmu(n);
    room::publish(&fabric.business, room, sent.clone()).await?;
    assert_eq!(next_payload(client).await?, sent);
    Ok(())
}

/// The next non-warm-up payload a client receives.
async fn next_payload(client: &mut Client) -> anyhow::Result<Bytes> {
    loop {
        for payload in client.messages(1, WAIT).await? {
            if room::sequence(&payload)?.is_some() {
                return Ok(payload);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_room_message_reaches_every_transport_identically() -> anyhow::Result<()> {
    let cert = TestCert::generate();
    let fabric = SingleRegion::start_with(|_, gateway| with_tls(gateway, &cert)).await?;
    let gateway = &fabric.gateway;
    let wss = tls(cert.client_config(&[b"http/1.1"]));
    let tcp_tls = tls(cert.client_config(&[]));
    let room = 3001;
    let mut clients = Vec::new();
    let mut quic_endpoints: Vec<(quinn::Endpoint, quinn::Connection)> = Vec::new();
    let mut sessions = Vec::new();
    for protover in [0, 3] {
        let uid = 10 + u64::from(protover);
        let keys = &fabric.keys;
        clients.push((
            "ws",
            room::join(
                keys,
                Transport::WebSocket,
                gateway.ws_addr.unwrap(),
                uid,
                room,
                protover,
            )
            .await?,
        ));
        clients.push((
            "tcp",
            room::join(
                keys,
                Transport::Tcp,
                gateway.tcp_addr.unwrap(),
                uid,
                room,
                protover,
            )
            .await?,
        ));
        clients.push((
            "wss",
            join_tls(
                keys,
                Transport::WebSocket,
                gateway.wss_addr.unwrap(),
                &wss,
                uid,
                room,
                protover,
            )
            .await?,
        ));
        clients.push((
            "tls",
            join_tls(
                keys,
                Transport::Tcp,
                gateway.tls_addr.unwrap(),
                &tcp_tls,
                uid,
                room,
                protover,
            )
            .await?,
        ));
        let (endpoint, connection) = quic_connect(gateway.quic_addr.unwrap(), &cert).await?;
        let mut quic = quic_client(&connection).await?;
        let token = keys.token(uid, Some(vec![room]), Duration::from_secs(600));
        assert_eq!(quic.auth(uid, room, protover, &token).await?, 0);
        quic_endpoints.push((endpoint, connection));
        clients.push(("quic", quic));
        let session =
            WebTransportSession::connect(gateway.quic_addr.unwrap(), &cert, "/sub").await?;
        assert_eq!(session.status, 200, "the CONNECT is accepted");
        let mut webtransport = session.open_stream(&session.stream_header()).await?;
        assert_eq!(webtransport.auth(uid, room, protover, &token).await?, 0);
        sessions.push(session);
        clients.push(("webtransport", webtransport));
    }
    for (_, client) in &clients {
        assert_eq!(
            client.peer_certificate.is_some(),
            client.peer_certificate.as_deref() == Some(&cert.der()[..]),
            "a TLS client sees the configured certificate"
        );
    }
    {
        let mut members: Vec<&mut Client> = clients.iter_mut().map(|(_, c)| c).collect();
        room::warm_up(&fabric.business, room, &mut members, WAIT).await?;
    }
    let sent = danmu(1);
    room::publish(&fabric.business, room, sent.clone()).await?;
    for (label, client) in &mut clients {
        let got = next_payload(client).await?;
        assert_eq!(got, sent, "{label} decoded the same message");
    }
    let open = gateway
        .stats
        .connections_open
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(open, clients.len() as i64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificate_files_serve_new_connections_and_a_bad_file_keeps_the_last_good_one()
-> anyhow::Result<()> {
    let mut cert = TestCert::generate();
    let fabric = SingleRegion::start_with(|_, gateway| {
        with_tls(gateway, &cert);
        gateway.tls.reload_interval = Duration::from_millis(100);
    })
    .await?;
    let gateway = &fabric.gateway;
    let certificates = gateway.certificates.clone().expect("TLS is configured");
    let addr = gateway.tls_addr.unwrap();
    let room = 3002;
    let old_der = cert.der();
    let mut old = join_tls(
        &fabric.keys,
        Transport::Tcp,
        addr,
        &tls(cert.client_config(&[])),
        1,
        room,
        0,
    )
    .await?;
    assert_eq!(old.peer_certificate.as_deref(), Some(&old_der[..]));

    cert.renew();
    let new_der = cert.der();
    let both = tls(client_config_trusting(
        &[old_der.clone(), new_der.clone()],
        &[],
    ));
    let mut renewed = eventually(
        "a handshake with the renewed certificate",
        WAIT,
        async || {
            let client = join_tls(&fabric.keys, Transport::Tcp, addr, &both, 2, room, 0).await?;
            anyhow::Ok((client.peer_certificate.as_deref() == Some(&new_der[..])).then_some(client))
        },
    )
    .await?;
    assert!(get(&certificates.reloads) >= 1);

    // The connection opened on the old certificate keeps receiving.
    {
        let mut members = [&mut old, &mut renewed];
        room::warm_up(&fabric.business, room, &mut members, WAIT).await?;
    }
    let sent = danmu(7);
    room::publish(&fabric.business, room, sent.clone()).await?;
    assert_eq!(next_payload(&mut old).await?, sent);
    assert_eq!(next_payload(&mut renewed).await?, sent);

    // A broken certificate file is refused; handshakes keep the last good certificate.
    std::fs::write(
        &cert.files.cert_file,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )?;
    assert_eventually!(
        WAIT,
        "the broken file refused",
        get(&certificates.reload_errors) >= 1
    );
    let client = join_tls(&fabric.keys, Transport::Tcp, addr, &both, 3, room, 0).await?;
    assert_eq!(client.peer_certificate.as_deref(), Some(&new_der[..]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_tls_on_a_tls_port_is_closed_and_counted_alone() -> anyhow::Result<()> {
    let cert = TestCert::generate();
    let fabric = short_auth_fabric(&cert).await?;
    let gateway = &fabric.gateway;
    let room = 3003;
    let config = tls(cert.client_config(&[b"http/1.1"]));
    let mut member = join_tls(
        &fabric.keys,
        Transport::WebSocket,
        gateway.wss_addr.unwrap(),
        &config,
        1,
        room,
        3,
    )
    .await?;

    // Plain HTTP where TLS is expected: an alert, then the close.
    let mut plain = tokio::net::TcpStream::connect(gateway.wss_addr.unwrap()).await?;
    plain
        .write_all(b"GET /sub HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await??;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "no HTTP answer in the clear: {answer:?}"
    );
    assert_eventually!(
        WAIT,
        "a failed handshake counted",
        get(&gateway.stats.tls_handshake_failures) >= 1
    );

    // A client that opens TCP and never starts the handshake is closed by the auth timeout.
    let mut silent = tokio::net::TcpStream::connect(gateway.tls_addr.unwrap()).await?;
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, silent.read_to_end(&mut rest)).await??;
    // Nothing but a TLS alert record (content type 21: close_notify) before the close.
    assert!(rest.is_empty() || rest[0] == 21, "{rest:?}");
    assert_eventually!(
        WAIT,
        "an incomplete handshake counted",
        get(&gateway.stats.tls_handshake_failures) >= 2
    );

    // The member on the same port never noticed.
    still_receives(&fabric, room, &mut member, 3).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_keeps_a_session_across_an_address_change_and_answers_bad_input_alone()
-> anyhow::Result<()> {
    let cert = TestCert::generate();
    let fabric = short_auth_fabric(&cert).await?;
    let gateway = &fabric.gateway;
    let addr = gateway.quic_addr.unwrap();
    let room = 3004;
    let token = |uid| {
        fabric
            .keys
            .token(uid, Some(vec![room]), Duration::from_secs(600))
    };
    let (endpoint, connection) = quic_connect(addr, &cert).await?;
    let mut member = quic_client(&connection).await?;
    assert_eq!(member.auth(1, room, 0, &token(1)).await?, 0);

    // Datagrams are not offered: the client's stack refuses to send one.
    assert!(
        matches!(
            connection.send_datagram(Bytes::from_static(b"x")),
            Err(quinn::SendDatagramError::UnsupportedByPeer)
        ),
        "the gateway advertises no datagram support"
    );

    // Migration: the client moves to another UDP port; the session (and its room) stays.
    endpoint.rebind(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
    still_receives(&fabric, room, &mut member, 11).await?;

    // Garbage on another connection's stream: that connection is closed with the reason.
    let (_bad_endpoint, bad) = quic_connect(addr, &cert).await?;
    let (mut send, _recv) = bad.open_bi().await?;
    send.write_all(&[0xff; 64]).await?;
    let closed = tokio::time::timeout(WAIT, bad.closed()).await?;
    match &closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0));
            assert_eq!(&close.reason[..], b"protocol_error", "{close:?}");
        }
        other => panic!("expected an application close, got {other:?}"),
    }

    // A unidirectional stream on a danmu/1 connection (the port allows 3 for HTTP/3 before
    // the ALPN is known): that connection is closed.
    let (_uni_endpoint, uni) = quic_connect(addr, &cert).await?;
    let mut stream = uni.open_uni().await?;
    stream.write_all(b"x").await?;
    let closed = tokio::time::timeout(WAIT, uni.closed()).await?;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(danmu_gateway::transport::quic::CLOSE_EXTRA_STREAM)),
        "{closed:?}"
    );

    // A connection that never opens its stream is closed when AUTH is overdue.
    let (_idle_endpoint, idle) = quic_connect(addr, &cert).await?;
    let closed = tokio::time::timeout(WAIT, idle.closed()).await?;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(1)),
        "{closed:?}"
    );

    // The member noticed none of it.
    let sent = danmu(12);
    room::publish(&fabric.business, room, sent.clone()).await?;
    assert_eq!(next_payload(&mut member).await?, sent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_refuses_what_is_not_a_session_and_the_node_list_names_it()
-> anyhow::Result<()> {
    let cert = TestCert::generate();
    let fabric = short_auth_fabric(&cert).await?;
    let gateway = &fabric.gateway;
    let addr = gateway.quic_addr.unwrap();
    let room = 3005;
    let rejected = |closed: &quinn::ConnectionError| {
        matches!(closed, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == quinn::VarInt::from_u32(danmu_gateway::transport::webtransport::H3_REQUEST_REJECTED))
    };
    let mut member = room::join(
        &fabric.keys,
        Transport::WebSocket,
        gateway.ws_addr.unwrap(),
        1,
        room,
        0,
    )
    .await?;

    // A CONNECT to another path: 404, then the connection is closed.
    let wrong_path = WebTransportSession::connect(addr, &cert, "/elsewhere").await?;
    assert_eq!(wrong_path.status, 404);
    let closed = tokio::time::timeout(WAIT, wrong_path.connection.closed()).await?;
    assert!(rejected(&closed), "{closed:?}");

    // A stream of another session: the connection is closed.
    let session = WebTransportSession::connect(addr, &cert, "/sub").await?;
    assert_eq!(session.status, 200);
    let _stream = session.open_stream(&[0x40, 0x41, 0x40, 0x04]).await?;
    let closed = tokio::time::timeout(WAIT, session.connection.closed()).await?;
    assert!(rejected(&closed), "{closed:?}");

    // A session that never opens its stream: closed when AUTH is overdue.
    let idle = WebTransportSession::connect(addr, &cert, "/sub").await?;
    let closed = tokio::time::timeout(WAIT, idle.connection.closed()).await?;
    assert!(rejected(&closed), "{closed:?}");

    // A member elsewhere noticed none of it.
    still_receives(&fabric, room, &mut member, 21).await?;

    // Control's node list: the WebTransport address and the certificate's hash (hex).
    let control = danmu_tests::fabric::start_control(danmu_tests::fabric::control_config(
        &fabric.url(),
        "A",
        &fabric.keys,
    ))
    .await?;
    let node = eventually("the gateway in the node list", WAIT, async || {
        let list = danmu_tests::http::get_json(control.addr, "/v1/nodes")
            .await
            .ok()?;
        list["nodes"].get(0).cloned()
    })
    .await?;
    assert_eq!(node["webtransport"], format!("127.0.0.1:{}", addr.port()));
    let hash: String = gateway
        .certificates
        .as_ref()
        .and_then(|c| c.first_sha256())
        .expect("a certificate")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(node["cert_sha256"], hash);
    Ok(())
}
