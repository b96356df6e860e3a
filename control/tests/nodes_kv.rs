//! Control against a real nats-server: gateways' reports put into the KV bucket show up in
//! `GET /v1/nodes` in load order, and a deleted key drops out.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use danmu_control::Config;
use danmu_control::nodes::NodesResponse;
use danmu_proto::internal::NodeReport;
use danmu_proto::token::generate_keypair;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(15);

/// A JetStream nats-server on a free loopback port; killed, and its store removed, on drop.
struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let store = tempfile::tempdir().unwrap();
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH");
        let server = NatsServer {
            child,
            port,
            _store: store,
        };
        let deadline = Instant::now() + DEADLINE;
        while StdStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over a fresh connection; the status and the body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP response");
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    Ok((status, response[split + 4..].to_vec()))
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn report(id: &str, load: f64, reported_unix_millis: i64) -> bytes::Bytes {
    NodeReport {
        node_id: id.into(),
        region: "A".into(),
        ws_addr: format!("{id}.local:8080"),
        tcp_addr: format!("{id}.local:7070"),
        connections: 10,
        load,
        reported_unix_millis,
        ..NodeReport::default()
    }
    .encode_to_vec()
    .into()
}

async fn node_ids(addr: SocketAddr) -> Option<Vec<String>> {
    let (status, body) = get(addr, "/v1/nodes?region=A&uid=42").await.ok()?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response: NodesResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(response.region, "A");
    Some(response.nodes.into_iter().map(|n| n.node_id).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_list_follows_the_kv_bucket() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // A gateway got there first, with a longer max age than control's node_ttl: control must
    // use the bucket as it is.
    let bucket = js
        .create_key_value(kv::Config {
            bucket: "danmu_nodes".into(),
            history: 1,
            max_age: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let now = now_millis();
    bucket
        .put("g-busy", report("g-busy", 0.7, now))
        .await
        .unwrap();
    bucket
        .put("g-idle", report("g-idle", 0.1, now))
        .await
        .unwrap();
    // Neither of these may be listed, nor stop the others being listed.
    bucket
        .put("g-stale", report("g-stale", 0.0, now - 60_000))
        .await
        .unwrap();
    bucket
        .put("junk", b"\xff\xff\xff".as_slice().into())
        .await
        .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        nats_url: nats.url(),
        private_key_pem: Some(generate_keypair().private_pem.into()),
        default_region: "A".into(),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(danmu_control::run(listener, config, async {
        let _ = stopped.await;
    }));

    eventually("readiness", || async {
        let (status, _) = get(addr, "/readyz").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    let ids = eventually("both gateways listed", || async {
        node_ids(addr).await.filter(|ids| ids.len() == 2)
    })
    .await;
    assert_eq!(ids, ["g-idle", "g-busy"]);

    bucket.delete("g-idle").await.unwrap();
    let ids = eventually("the deleted gateway gone", || async {
        node_ids(addr).await.filter(|ids| ids.len() == 1)
    })
    .await;
    assert_eq!(ids, ["g-busy"]);

    // A draining gateway is left out as soon as it says so.
    let draining = NodeReport {
        draining: true,
        ..NodeReport::decode(report("g-busy", 0.7, now_millis())).unwrap()
    };
    bucket
        .put("g-busy", draining.encode_to_vec().into())
        .await
        .unwrap();
    eventually("the draining gateway gone", || async {
        node_ids(addr).await.filter(|ids| ids.is_empty())
    })
    .await;

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("run stops on shutdown")
        .unwrap()
        .unwrap();
}
