//! The SDK's TLS, wss and QUIC glue against real rustls and quinn servers on loopback, before
//! the gateway serves those transports: certificate trust (an extra CA file, the development
//! switch, refusal of an unknown CA), SNI, ALPN `danmu/1` on one client-opened stream, and the
//! same bytes as TCP on it. The server here is a stand-in that answers AUTH, one heartbeat and
//! sends one message; the real-fabric tests are `tests/tests/sdk.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use danmu_client::nodes::Node;
use danmu_client::transport::Connector;
use danmu_client::{Client, Config, Event, TlsOptions, TransportKind};
use danmu_proto::frame::{self, op};
use danmu_proto::websocket;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MESSAGE: &[u8] = br#"{"cmd":"DANMU_MSG","info":[[0,1,25,16777215],"over tls",[1,"x"]]}"#;

/// A CA, and a server certificate for `127.0.0.1` signed by it.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn server_tls(pki: &Pki, alpn: &[u8]) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    config
}

/// The stand-in: (WebSocket upgrade,) AUTH → `{"code":0}`, HEARTBEAT → online 3, one MESSAGE;
/// then it keeps the stream open until the client goes.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, ws: bool) -> anyhow::Result<()> {
    let mut buf = BytesMut::new();
    if ws {
        let (request, len) = loop {
            if let Some(parsed) = websocket::parse_upgrade_request(&buf, 8192)? {
                break parsed;
            }
            anyhow::ensure!(
                stream.read_buf(&mut buf).await? > 0,
                "closed in the upgrade"
            );
        };
        anyhow::ensure!(request.path == "/sub");
        let _ = buf.split_to(len);
        stream.write_all(&request.accept_response()).await?;
    }
    let mut decoder = websocket::Decoder::new(websocket::Role::Server, 1 << 20);
    let mut packets = BytesMut::new();
    let send = |bytes: bytes::Bytes| {
        if ws {
            websocket::server_binary(&bytes)
        } else {
            bytes
        }
    };
    loop {
        if ws {
            while let Some(websocket::Message::Binary(payload)) = decoder.decode(&mut buf)? {
                packets.extend_from_slice(&payload);
            }
        } else {
            packets.extend_from_slice(&buf.split());
        }
        while let Some(packet) = frame::decode(&mut packets, 1 << 20)? {
            match packet.op {
                op::AUTH => {
                    let auth: serde_json::Value = serde_json::from_slice(&packet.body)?;
                    anyhow::ensure!(auth["roomid"] == 5 && auth["key"] == "token", "{auth}");
                    stream.write_all(&send(frame::auth_reply(0))).await?;
                }
                op::HEARTBEAT => {
                    stream.write_all(&send(frame::heartbeat_reply(3))).await?;
                    stream.write_all(&send(frame::message(MESSAGE))).await?;
                }
                _ => {}
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn tcp_server(tls: Option<rustls::ServerConfig>, ws: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = match acceptor {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(tls) => serve(tls, ws).await,
                        Err(_) => Ok(()),
                    },
                    None => serve(tcp, ws).await,
                };
            });
        }
    });
    addr
}

async fn quic_server(pki: &Pki) -> SocketAddr {
    let tls = server_tls(pki, b"danmu/1");
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, ([127, 0, 0, 1], 0).into()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let connection = incoming.await?;
                let (send, recv) = connection.accept_bi().await?;
                serve(tokio::io::join(recv, send), false).await
            });
        }
    });
    addr
}

/// A client of room 5 on `kind` at `addr` only, trusting what `tls` says.
fn client(kind: TransportKind, addr: SocketAddr, tls: TlsOptions) -> Client {
    client_of(&[(kind, addr)], tls, Duration::from_secs(3))
}

/// A client of room 5 on one node offering `transports` (tried in that order).
fn client_of(
    transports: &[(TransportKind, SocketAddr)],
    tls: TlsOptions,
    connect_timeout: Duration,
) -> Client {
    let mut node = Node {
        node_id: "stand-in".into(),
        region: "A".into(),
        ..Default::default()
    };
    for (kind, addr) in transports {
        let addr = addr.to_string();
        match kind {
            TransportKind::Quic => node.quic = addr,
            TransportKind::Wss => node.wss = addr,
            TransportKind::Ws => node.ws = addr,
            TransportKind::Tls => node.tls = addr,
            TransportKind::Tcp => node.tcp = addr,
        }
    }
    let mut config = Config::new("http://control.invalid", 5, 1);
    config.nodes = Some(vec![node]);
    config.transports = transports.iter().map(|(kind, _)| *kind).collect();
    config.tls = tls;
    config.connect_timeout = connect_timeout;
    Client::start(config, || async {
        Ok::<_, std::io::Error>("token".to_owned())
    })
    .unwrap()
}

async fn next(client: &mut Client) -> Event {
    tokio::time::timeout(Duration::from_secs(10), client.next_event())
        .await
        .expect("an event in time")
        .expect("the client runs")
}

/// Connected over `kind`, the online count, the message: the whole path works.
async fn receives(mut client: Client, kind: TransportKind) {
    match next(&mut client).await {
        Event::Connected {
            transport, node, ..
        } => {
            assert_eq!((transport, node.as_str()), (kind, "stand-in"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next(&mut client).await,
        Event::Online { count: 3, .. }
    ));
    match next(&mut client).await {
        Event::Message(message) => assert_eq!(&message.body[..], MESSAGE),
        other => panic!("{other:?}"),
    }
}

fn trusting(pki: &Pki) -> (tempfile::NamedTempFile, TlsOptions) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &pki.ca_pem).unwrap();
    let options = TlsOptions {
        extra_ca_pem: Some(file.path().to_owned()),
        ..Default::default()
    };
    (file, options)
}

#[tokio::test]
async fn tls_wss_and_quic_with_an_extra_ca() {
    let pki = pki();
    let (_ca, tls) = trusting(&pki);
    let tls_addr = tcp_server(Some(server_tls(&pki, b"")), false).await;
    receives(
        client(TransportKind::Tls, tls_addr, tls.clone()),
        TransportKind::Tls,
    )
    .await;
    let wss_addr = tcp_server(Some(server_tls(&pki, b"http/1.1")), true).await;
    receives(
        client(TransportKind::Wss, wss_addr, tls.clone()),
        TransportKind::Wss,
    )
    .await;
    let quic_addr = quic_server(&pki).await;
    receives(
        client(TransportKind::Quic, quic_addr, tls),
        TransportKind::Quic,
    )
    .await;
}

#[tokio::test]
async fn the_development_switch_accepts_an_unknown_ca() {
    let pki = pki();
    let addr = tcp_server(Some(server_tls(&pki, b"")), false).await;
    let tls = TlsOptions {
        dangerous_accept_any_certificate: true,
        ..Default::default()
    };
    receives(client(TransportKind::Tls, addr, tls), TransportKind::Tls).await;
}

#[tokio::test]
async fn an_unknown_ca_is_refused() {
    let pki = pki();
    let addr = tcp_server(Some(server_tls(&pki, b"")), false).await;
    let (_ca, tls) = trusting(&self::pki()); // another CA, unrelated to the server's
    let connector = Connector::new(&tls).unwrap();
    let refused = connector
        .connect(
            TransportKind::Tls,
            &addr.to_string(),
            Duration::from_secs(5),
        )
        .await
        .err()
        .expect("no connection with an untrusted certificate");
    assert!(
        refused.to_string().contains("invalid peer certificate"),
        "{refused}"
    );
}

/// UDP blocked: the QUIC port swallows every datagram (a bound socket nobody reads). The next
/// transport starts after the 250 ms stagger and wins, long before QUIC's connect timeout.
#[tokio::test]
async fn with_quic_blocked_the_next_transport_wins_after_the_stagger() {
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let quic = black_hole.local_addr().unwrap();
    let tcp = tcp_server(None, false).await;
    let connect_timeout = Duration::from_secs(20);
    let mut client = client_of(
        &[(TransportKind::Quic, quic), (TransportKind::Tcp, tcp)],
        TlsOptions::default(),
        connect_timeout,
    );
    match next(&mut client).await {
        Event::Connected {
            transport, setup, ..
        } => {
            assert_eq!(transport, TransportKind::Tcp);
            assert!(
                setup >= Duration::from_millis(250),
                "QUIC had its head start: {setup:?}"
            );
            assert!(
                setup < connect_timeout,
                "TCP did not wait for QUIC to time out: {setup:?}"
            );
            eprintln!("QUIC blocked: on TCP after {setup:?}");
        }
        other => panic!("{other:?}"),
    }
}
