//! Control's HTTP listener against slow and idle clients, over real sockets: an idle socket,
//! dripped headers, a short body and an idle keep-alive connection are each closed within the
//! configured bound, and the connection cap holds clients back until a slot frees. Before
//! `serve::serve`, all of these stayed open as long as the client liked.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use danmu_control::serve::{HttpLimits, serve};
use danmu_control::{AppState, Config, SharedNodes, SigningKeys, app};
use danmu_proto::token::generate_keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The timeouts under test: short, so a test takes a fraction of a second.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How long a test waits for the close before failing: generous against a loaded machine,
/// far below "held forever".
const BOUND: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(limits: HttpLimits) -> Server {
    let config = Config {
        http_header_timeout: limits.header_read_timeout,
        http_request_timeout: limits.request_timeout,
        http_max_connections: limits.max_connections,
        ..Config::default()
    };
    let keys = SigningKeys::from_private_pem(&generate_keypair().private_pem).unwrap();
    let state = AppState::new(&config, keys, SharedNodes::new(config.node_ttl));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, app(state), limits, async {
        let _ = stopped.await;
    }));
    Server { addr, _stop: stop }
}

fn limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout: TIMEOUT,
        request_timeout: TIMEOUT,
        max_connections: 100,
    }
}

/// Reads until the server closes, failing if that takes longer than [`BOUND`]. Returns what
/// was read.
async fn closed_by_server(stream: &mut TcpStream) -> String {
    let start = Instant::now();
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = BOUND.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {BOUND:?} (read so far: {:?})",
                String::from_utf8_lossy(&read)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&read).into_owned(),
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until `expected` has arrived, within [`BOUND`].
async fn read_until(stream: &mut TcpStream, expected: &str) -> String {
    let start = Instant::now();
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&read).contains(expected) {
        let left = BOUND.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read.extend_from_slice(&buf[..n]),
            other => panic!(
                "no {expected:?} within {BOUND:?} ({other:?}); read {:?}",
                String::from_utf8_lossy(&read)
            ),
        }
    }
    String::from_utf8_lossy(&read).into_owned()
}

#[tokio::test]
async fn an_idle_socket_is_closed() {
    let server = start(limits()).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut socket).await;
}

#[tokio::test]
async fn dripped_headers_are_cut_off() {
    let server = start(limits()).await;
    let socket = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    // One header line every 50 ms: each read makes progress, the head never completes.
    let dripper = tokio::spawn(async move {
        let _ = write
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: c\r\n")
            .await;
        for i in 0.. {
            if write
                .write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = BOUND.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, read.read(&mut buf)).await {
            Err(_) => panic!("a client dripping headers still connected after {BOUND:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
        }
    }
    dripper.abort();
}

#[tokio::test]
async fn a_short_body_gets_408_and_a_close() {
    let server = start(HttpLimits {
        header_read_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(
            b"POST /v1/tokens HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"uid\":1,",
        )
        .await
        .unwrap();
    let answer = closed_by_server(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(limits()).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut socket, "ok\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    closed_by_server(&mut socket).await;
}

#[tokio::test]
async fn past_the_cap_clients_wait_for_a_free_slot() {
    let server = start(HttpLimits {
        header_read_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(30),
        max_connections: 1,
    })
    .await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: c\r\n\r\n";
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first.write_all(request).await.unwrap();
    read_until(&mut first, "ok\n").await;

    // The kernel completes the second handshake (backlog), but the server does not serve it
    // while the first connection holds the only slot.
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    second.write_all(request).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(TIMEOUT, second.read(&mut buf))
            .await
            .is_err(),
        "the second connection was served past a cap of 1"
    );
    drop(first);
    let answer = read_until(&mut second, "ok\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
