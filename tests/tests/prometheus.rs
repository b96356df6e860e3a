//! Dashboards and alerts proven on a real Prometheus (Debian's `prometheus`, installed by
//! `scripts/install-deps`): a gateway, two distributors and control run as processes, each with
//! its metrics listener, against a real nats-server; a Prometheus started here scrapes them
//! every second and evaluates the committed rule file. With traffic:
//!
//! - every endpoint passes `promtool check metrics`;
//! - every dashboard panel's query (read from `charts/danmu/dashboards/*.json`, variables
//!   substituted) returns data through the HTTP API, except panels over the NATS exporter's
//!   `nats_*` metrics ([`NOT_PROVABLE_HERE`]);
//! - every alert expression (as Prometheus loaded it, `/api/v1/rules`) is empty while healthy,
//!   then returns data once its cause is made: connections near the cap, a client that opted
//!   into ACKs and never acknowledges (reach rate, high-priority expiry), the active distributor
//!   stopped with SIGSTOP (lag, target down) and resumed (latency over budget), the region's only
//!   gateway killed. `for:` is not waited out: the expression is evaluated directly.
//!   `DanmuNatsSlowConsumers` is not caused here ([`NOT_CAUSED`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use danmu_proto::frame::{Frame, op};
use danmu_proto::subjects::{Priority, Scope};
use danmu_tests::client::{Client, Event, Transport};
use danmu_tests::fabric::{self, GatewayProcess, Keys};
use danmu_tests::nats::permissions::Role;
use danmu_tests::ports::free_port;
use danmu_tests::{eventually, http, room};
use serde_json::Value;

const ROOM: u64 = 7001;
const FLOOD_ROOM: u64 = 7002;
const FILL_ROOM: u64 = 7003;
const ACK_UID: u64 = 71;
const SILENT_UID: u64 = 72;
const OFFLINE_UID: u64 = 79;
const MAX_CONNECTIONS: usize = 20;
const WAIT: Duration = Duration::from_secs(60);

/// Panels whose metrics come from the prometheus-nats-exporter the NATS chart ships: no
/// exporter runs here, so their queries cannot return data (their metric names are checked
/// by hand against the exporter's documentation; see docs/operations.md).
const NOT_PROVABLE_HERE: &str = "nats_";
/// Alerts whose cause this test does not make: NATS cutting a slow consumer off needs the
/// exporter (or a gateway starved of CPU long enough for nats-server to give up on it).
const NOT_CAUSED: &[&str] = &["DanmuNatsSlowConsumers"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// A service binary next to the test binary (`scripts/test` builds every bin first).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .filter(|path| path.exists());
    path.with_context(|| format!("build it first: cargo build --workspace --bins ({name})"))
}

/// A child process killed (after a SIGCONT, in case it was stopped) when dropped.
struct Process {
    child: Child,
}

impl Process {
    fn spawn(program: &Path, args: &[&str], log: &Path) -> anyhow::Result<Process> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Process { child })
    }

    fn signal(&self, signal: i32) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the pid of a child this process spawned and still owns.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        anyhow::ensure!(sent == 0, "kill({}, {signal}) failed", self.child.id());
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service started from a TOML config in `dir`.
fn service(dir: &Path, name: &str, config: &str) -> anyhow::Result<Process> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    let program = binary(if name.starts_with("distributor") {
        "danmu-distributor"
    } else {
        "danmu-control"
    })?;
    Process::spawn(
        &program,
        &["--config", path.to_str().context("utf-8 path")?],
        &dir.join(format!("{name}.log")),
    )
}

fn distributor_config(nats_url: &str, instance: &str, metrics: u16) -> String {
    // A long failover: the standby must not take over while the test holds the active
    // instance stopped, so that the lag is seen (by the standby's sampler) to grow.
    let worker = "ack_wait = \"2s\"\nfailover = \"60s\"\n";
    format!(
        "nats_url = \"{nats_url}\"\nregion = \"A\"\ninstance = \"{instance}\"\n\
         ensure_streams = true\nmetrics_listen = \"127.0.0.1:{metrics}\"\n{seed}\
         [low]\nwindow = \"20ms\"\n{worker}[high]\n{worker}",
        seed = fabric::seed_toml(Role::Distributor, "A"),
    )
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus on loopback, scraping `targets` (job -> addresses) every second and evaluating
/// the committed rule file every second.
struct Prometheus {
    addr: SocketAddr,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &BTreeMap<&str, Vec<SocketAddr>>) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let rules = repo_root().join("charts/danmu/rules/danmu-rules.yaml");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\nscrape_configs:\n",
            rules.display()
        );
        // Each target's `instance` is a pod-like name, as a cluster's would read, not a test
        // port: the dashboards' legends (and the previews drawn from them) show it.
        for (job, addrs) in targets {
            config.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
            let short = job.trim_start_matches("danmu-");
            for (n, addr) in addrs.iter().enumerate() {
                config.push_str(&format!(
                    "      - targets: ['{addr}']\n        labels:\n          region: A\n          \
                     instance: {short}-{n}\n"
                ));
            }
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let process = Process::spawn(
            Path::new("prometheus"),
            &[
                &format!("--config.file={}", config_path.display()),
                &format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                &format!("--web.listen-address={addr}"),
            ],
            &dir.path().join("prometheus.log"),
        )
        .context("run scripts/install-deps (it installs prometheus)")?;
        let prometheus = Prometheus {
            addr,
            _process: process,
            _dir: dir,
        };
        eventually("Prometheus is ready", WAIT, async || {
            http::get(prometheus.addr, "/-/ready")
                .await
                .map(|(status, _)| (status == 200).then_some(()))
        })
        .await?;
        Ok(prometheus)
    }

    async fn api(&self, path: &str) -> anyhow::Result<Value> {
        let body = get_json_http10(self.addr, path).await?;
        anyhow::ensure!(body["status"] == "success", "{path}: {body}");
        Ok(body["data"].clone())
    }

    /// The instant vector `expr` evaluates to now (an error if it is not a vector).
    async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await?;
        data["result"]
            .as_array()
            .cloned()
            .with_context(|| format!("{expr}: not a vector: {data}"))
    }

    /// Alert name -> expression, as Prometheus loaded them from the rule file.
    async fn alerts(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let data = self.api("/api/v1/rules?type=alert").await?;
        let mut alerts = BTreeMap::new();
        for group in data["groups"].as_array().context("groups")? {
            for rule in group["rules"].as_array().context("rules")? {
                alerts.insert(
                    rule["name"].as_str().context("name")?.to_owned(),
                    rule["query"].as_str().context("query")?.to_owned(),
                );
            }
        }
        Ok(alerts)
    }

    /// Waits until `alert`'s expression returns data.
    async fn fires(&self, alerts: &BTreeMap<String, String>, alert: &str) -> anyhow::Result<()> {
        let expr = alerts
            .get(alert)
            .with_context(|| format!("no alert {alert}"))?;
        let started = std::time::Instant::now();
        let result = eventually(format!("{alert} fires ({expr})"), WAIT, async || {
            self.query(expr).await.map(|r| (!r.is_empty()).then_some(r))
        })
        .await?;
        eprintln!(
            "{alert} fired after {:.1?}: {}",
            started.elapsed(),
            serde_json::to_string(&result)?
        );
        Ok(())
    }
}

/// Every panel's queries in the committed dashboards, with `$region`/`$instance` set to all
/// and `$__rate_interval` to 10s (four scrapes): (dashboard/panel title, expression).
fn panel_queries() -> anyhow::Result<Vec<(String, String)>> {
    let dir = repo_root().join("charts/danmu/dashboards");
    let mut queries = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    files.sort_by_key(|e| e.path());
    for entry in files {
        let dashboard: Value = serde_json::from_slice(&std::fs::read(entry.path())?)?;
        for panel in dashboard["panels"].as_array().context("panels")? {
            if panel["type"] == "row" {
                continue;
            }
            let unit = &panel["fieldConfig"]["defaults"]["unit"];
            anyhow::ensure!(
                unit.as_str().is_some_and(|u| !u.is_empty()),
                "{}: panel {} has no unit",
                entry.path().display(),
                panel["title"]
            );
            for target in panel["targets"].as_array().context("targets")? {
                let expr = target["expr"].as_str().context("expr")?;
                let expr = expr
                    .replace("$__rate_interval", "10s")
                    .replace("$region", ".*")
                    .replace("$instance", ".*");
                queries.push((format!("{} / {}", dashboard["title"], panel["title"]), expr));
            }
        }
    }
    anyhow::ensure!(queries.len() > 30, "only {} panel queries", queries.len());
    Ok(queries)
}

/// Reads and throws away whatever arrives, acknowledging high-priority deliveries when `ack`.
fn reader(mut client: Client, ack: bool) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        loop {
            match client.next(Duration::from_secs(3600)).await? {
                Event::Frame(frame) if frame.op == op::MESSAGE => {
                    client.unpack(&frame)?;
                    if ack && frame.seq != 0 {
                        client
                            .send(&Frame::new(1, op::ACK, frame.seq, Bytes::new()))
                            .await?;
                    }
                }
                Event::Frame(_) => {}
                Event::Closed(why) => anyhow::bail!("closed: {why:?}"),
            }
        }
    })
}

/// Sends an upstream danmu every second (whatever the verdict, it is counted by result) and
/// reads whatever arrives in between.
fn talker_task(mut client: Client) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        for seq in 1u32.. {
            let body = Bytes::from_static(br#"{"msg":"hello"}"#);
            client.send(&Frame::new(1, op::UPSTREAM, seq, body)).await?;
            let until = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                match client.next(left).await {
                    Ok(Event::Frame(frame)) if frame.op == op::MESSAGE => {
                        client.unpack(&frame)?;
                    }
                    Ok(Event::Frame(_)) => {}
                    Ok(Event::Closed(why)) => anyhow::bail!("closed: {why:?}"),
                    // Nothing more within the second.
                    Err(_) => break,
                }
            }
        }
        Ok(())
    })
}

async fn join_with(
    keys: &Keys,
    addr: SocketAddr,
    transport: Transport,
    uid: u64,
    room: u64,
    protover: u16,
    extra: Value,
) -> anyhow::Result<Client> {
    let mut client = Client::connect(transport, addr).await?;
    let token = keys.token(uid, Some(vec![room]), Duration::from_secs(600));
    let code = client.auth_with(uid, room, protover, &token, extra).await?;
    anyhow::ensure!(code == 0, "AUTH_REPLY code {code}");
    Ok(client)
}

/// `GET path` as HTTP/1.0, so that the answer is never chunked (Prometheus chunks large API
/// answers to HTTP/1.1 requests, which `danmu_tests::http` does not decode); the JSON body.
async fn get_json_http10(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the response has no end of headers")?;
    let head = String::from_utf8_lossy(&response[..split]);
    anyhow::ensure!(head.contains(" 200 "), "GET {path}: {head}");
    serde_json::from_slice(&response[split + 4..])
        .with_context(|| format!("GET {path}: the body is not JSON"))
}

/// `promtool check metrics` on one endpoint's output.
async fn promtool_check(name: &str, addr: SocketAddr) -> anyhow::Result<()> {
    let (status, body) = http::get(addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "{name} /metrics: {status}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool (scripts/install-deps installs it)")?;
    use std::io::Write as _;
    child.stdin.take().context("stdin")?.write_all(&body)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "promtool check metrics on {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `POST /v1/tokens` on control with `body`; the status.
async fn post_token(addr: SocketAddr, body: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: control\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_returns_data_and_every_alert_fires_on_its_cause() -> anyhow::Result<()> {
    let server = danmu_tests::single().await?;
    let url = server.client_url();
    let keys = Keys::generate();
    let dir = tempfile::tempdir()?;

    // Control, with its own metrics listener.
    let key_path = dir.path().join("control.key.pem");
    std::fs::write(&key_path, &keys.private_pem)?;
    let (control_addr, control_metrics): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse()?,
        format!("127.0.0.1:{}", free_port()).parse()?,
    );
    let _control = service(
        dir.path(),
        "control",
        &format!(
            "listen = \"{control_addr}\"\nmetrics_listen = \"{control_metrics}\"\n\
             nats_url = \"{url}\"\nprivate_key_pem_path = \"{}\"\napi_keys = []\n\
             regions = [\"A\"]\ndefault_region = \"A\"\nregion = \"A\"\nnode_ttl = \"3s\"\n\
             online_publish_interval = \"200ms\"\n{}",
            key_path.display(),
            fabric::seed_toml(Role::Control, "A"),
        ),
    )?;

    // The active distributor first (it pins the consumers), then the standby.
    let dist_metrics = [free_port(), free_port()];
    let active = service(
        dir.path(),
        "distributor-1",
        &distributor_config(&url, "dist-1", dist_metrics[0]),
    )?;
    let gateway_metrics = free_port();
    // `queue_wait_sample = 1`: every connection's queue is timed, so the queue-wait panel has
    // data whichever connections get traffic (by default one in 64 is).
    let gateway = GatewayProcess::start(
        &url,
        "gw-prom",
        &keys,
        &format!(
            "region = \"A\"\nmetrics_listen = \"127.0.0.1:{gateway_metrics}\"\n\
             max_connections = {MAX_CONNECTIONS}\nreport_interval = \"500ms\"\nnode_ttl = \"3s\"\n\
             reach_retry = \"200ms\"\nreach_max_retries = 2\noutbound_queue_bytes = 65536\n\
             socket_send_buffer_bytes = 4096\nqueue_wait_sample = 1\n[upstream]\nenabled = true\n"
        ),
    )
    .await?;
    let (ws, tcp) = (gateway.ws_addr, gateway.tcp_addr);
    let business = server.connect_publisher().await?;

    // Readers: brotli, raw and zlib clients (so the gateway builds both variants), one that
    // acknowledges high priority.
    let mut brotli = room::join(&keys, Transport::WebSocket, ws, 1, ROOM, 3).await?;
    let mut raw = room::join(&keys, Transport::Tcp, tcp, 2, ROOM, 0).await?;
    let mut zlib = room::join(&keys, Transport::WebSocket, ws, 3, ROOM, 2).await?;
    room::warm_up(
        &business,
        ROOM,
        &mut [&mut brotli, &mut raw, &mut zlib],
        WAIT,
    )
    .await?;
    let acker = join_with(
        &keys,
        tcp,
        Transport::Tcp,
        ACK_UID,
        ROOM,
        3,
        serde_json::json!({"ack": true}),
    )
    .await?;
    let talker = room::join(&keys, Transport::WebSocket, ws, 9, ROOM, 3).await?;
    let readers = [
        talker_task(talker),
        reader(brotli, false),
        reader(raw, false),
        reader(zlib, false),
        reader(acker, true),
    ];
    // A client that leaves (closes by reason) and a bad token (auth failed).
    drop(room::join(&keys, Transport::WebSocket, ws, 4, ROOM, 3).await?);
    let mut bad = Client::connect(Transport::WebSocket, ws).await?;
    let _ = bad.auth(5, ROOM, 3, "not-a-token").await;
    // Control: a token, a refused token request, node lists (below).
    anyhow::ensure!(
        post_token(control_addr, r#"{"uid":6}"#).await? == 200,
        "POST /v1/tokens"
    );
    let refused = post_token(control_addr, "not json").await?;
    anyhow::ensure!(refused == 400, "POST /v1/tokens with a bad body: {refused}");
    let standby = service(
        dir.path(),
        "distributor-2",
        &distributor_config(&url, "dist-2", dist_metrics[1]),
    )?;

    let localhost = |port: u16| -> SocketAddr { ([127, 0, 0, 1], port).into() };
    let targets = BTreeMap::from([
        ("danmu-gateway", vec![localhost(gateway_metrics)]),
        (
            "danmu-distributor",
            vec![localhost(dist_metrics[0]), localhost(dist_metrics[1])],
        ),
        ("danmu-control", vec![control_metrics]),
    ]);
    let prometheus = Prometheus::start(&targets).await?;

    // Steady traffic for the rest of the test: low and high priority into the room, high
    // priority to the acknowledging user and to a user who is offline (stored).
    let traffic = {
        let business = business.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                room::publish(&business, ROOM, room::danmu(n)).await?;
                if n % 4 == 0 {
                    for scope in [Scope::Room(ROOM), Scope::User(ACK_UID)] {
                        room::publish_to(&business, Priority::High, &scope, room::danmu(n)).await?;
                    }
                }
                if n % 20 == 0 {
                    room::publish_to(
                        &business,
                        Priority::High,
                        &Scope::User(OFFLINE_UID),
                        room::danmu(n),
                    )
                    .await?;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(())
        })
    };

    // Shedding: a reader with a tiny receive buffer that never reads, flooded in its own room.
    let _slow = {
        let mut slow = Client::connect_slow(Transport::Tcp, tcp, 4096).await?;
        let token = keys.token(8, Some(vec![FLOOD_ROOM]), Duration::from_secs(600));
        anyhow::ensure!(slow.auth(8, FLOOD_ROOM, 0, &token).await? == 0);
        slow
    };
    // Two waves, the second once Prometheus holds the shed counter, so that its rate (what
    // the panels show) is above zero, not only its first sample.
    for n in 0..400 {
        room::publish(&business, FLOOD_ROOM, room::bulky(n)).await?;
    }
    eventually("Prometheus has scraped some shedding", WAIT, async || {
        prometheus
            .query("danmu_gateway_shed_messages_total")
            .await
            .map(|r| (!r.is_empty()).then_some(()))
    })
    .await?;
    for n in 400..800 {
        room::publish(&business, FLOOD_ROOM, room::bulky(n)).await?;
    }

    // For previews (`scripts/dashboard-previews`), a minute of steady traffic first, so the
    // charts show more than the few seconds the checks need. Not an assertion: nothing waits
    // on it.
    let previews = std::env::var_os("DANMU_DASHBOARD_PREVIEWS");
    if previews.is_some() {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    // Every endpoint passes promtool's metric checks, with traffic.
    let endpoints = [
        ("gateway", localhost(gateway_metrics)),
        ("distributor-1", localhost(dist_metrics[0])),
        ("distributor-2", localhost(dist_metrics[1])),
        ("control", control_metrics),
    ];
    for (name, addr) in endpoints {
        promtool_check(name, addr).await?;
    }

    // Every dashboard panel's query returns data.
    let queries = panel_queries()?;
    let (provable, exporter): (Vec<_>, Vec<_>) = queries
        .iter()
        .partition(|(_, expr)| !expr.contains(NOT_PROVABLE_HERE));
    eprintln!(
        "{} panel queries; {} over the NATS exporter, not provable here: {:?}",
        queries.len(),
        exporter.len(),
        exporter.iter().map(|(title, _)| title).collect::<Vec<_>>()
    );
    let mut empty: BTreeSet<String> = provable.iter().map(|(t, e)| format!("{t}: {e}")).collect();
    eventually("every panel query returns data", WAIT, async || {
        for (title, expr) in &provable {
            let key = format!("{title}: {expr}");
            if empty.contains(&key) {
                // The control node list is asked again on each round: it is a rate.
                let _ = http::get(control_addr, "/v1/nodes?region=A").await;
                if !prometheus.query(expr).await?.is_empty() {
                    empty.remove(&key);
                }
            }
        }
        anyhow::ensure!(empty.is_empty(), "still empty: {empty:#?}");
        anyhow::Ok(Some(()))
    })
    .await?;

    // Healthy: every alert expression is empty, for a few evaluations in a row.
    let alerts = prometheus.alerts().await?;
    anyhow::ensure!(alerts.len() >= 8, "alerts loaded: {alerts:?}");
    for _ in 0..3 {
        for (alert, expr) in &alerts {
            let result = prometheus.query(expr).await?;
            anyhow::ensure!(result.is_empty(), "{alert} fires while healthy: {result:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let p99 = prometheus
        .query(
            "histogram_quantile(0.99, sum by (priority, le) \
             (rate(danmu_gateway_publish_delay_seconds_bucket[1m])))",
        )
        .await?;
    eprintln!(
        "healthy p99 publish delay: {}",
        serde_json::to_string(&p99)?
    );

    // Previews of the dashboards from this run's data, when asked for
    // (`scripts/dashboard-previews`): here, while the fabric is healthy under steady traffic,
    // before the incidents below are caused.
    if let Some(out) = &previews {
        let status = Command::new("python3")
            .arg(repo_root().join("ops/dashboards/preview.py"))
            .arg(format!("--prometheus=http://{}", prometheus.addr))
            .arg("--out")
            .arg(out)
            .status()?;
        anyhow::ensure!(status.success(), "preview.py: {status}");
    }

    // Near the connection cap: fill the gateway up to its last two places.
    let mut filler = Vec::new();
    let open = || async {
        let body = http::get(localhost(gateway_metrics), "/metrics").await?.1;
        let text = String::from_utf8(body)?;
        let open: f64 = text
            .lines()
            .filter(|l| l.starts_with("danmu_gateway_connections{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        anyhow::Ok(open as usize)
    };
    while open().await? < MAX_CONNECTIONS - 1 {
        filler.push(
            room::join(
                &keys,
                Transport::WebSocket,
                ws,
                100 + filler.len() as u64,
                FILL_ROOM,
                3,
            )
            .await?,
        );
    }
    prometheus
        .fires(&alerts, "DanmuGatewayNearConnectionCap")
        .await?;
    drop(filler);

    // A client that opted into ACKs and never sends one: its deliveries expire.
    let silent = join_with(
        &keys,
        tcp,
        Transport::Tcp,
        SILENT_UID,
        ROOM,
        3,
        serde_json::json!({"ack": true}),
    )
    .await?;
    for n in 0..20 {
        room::publish_to(
            &business,
            Priority::High,
            &Scope::User(SILENT_UID),
            room::danmu(n),
        )
        .await?;
    }
    prometheus.fires(&alerts, "DanmuHighPriorityLoss").await?;
    prometheus
        .fires(&alerts, "DanmuReachRateBelowObjective")
        .await?;
    drop(silent);

    // The active distributor stalls: its standby's sampler sees the lag grow, its scrape fails.
    active.signal(libc::SIGSTOP)?;
    prometheus.fires(&alerts, "DanmuTargetDown").await?;
    for n in 0..1000 {
        room::publish(&business, ROOM, room::danmu(100_000 + n)).await?;
    }
    prometheus.fires(&alerts, "DanmuConsumerLagGrowing").await?;
    // Resumed, it delivers the backlog seconds late: p99 over budget.
    active.signal(libc::SIGCONT)?;
    prometheus
        .fires(&alerts, "DanmuLatencyP99OverBudget")
        .await?;

    // The region's only gateway dies.
    drop(gateway);
    prometheus.fires(&alerts, "DanmuRegionGatewaysGone").await?;

    let caused = [
        "DanmuGatewayNearConnectionCap",
        "DanmuHighPriorityLoss",
        "DanmuReachRateBelowObjective",
        "DanmuTargetDown",
        "DanmuConsumerLagGrowing",
        "DanmuLatencyP99OverBudget",
        "DanmuRegionGatewaysGone",
    ];
    for alert in alerts.keys() {
        anyhow::ensure!(
            caused.contains(&alert.as_str()) || NOT_CAUSED.contains(&alert.as_str()),
            "{alert}: neither caused by this test nor listed as not caused"
        );
    }
    traffic.abort();
    for reader in readers {
        reader.abort();
    }
    drop(standby);
    Ok(())
}
