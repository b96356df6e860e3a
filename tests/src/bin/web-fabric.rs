//! A two-region fabric on free loopback ports for the browser tests (`scripts/test-web`): a NATS
//! supercluster (A, B), control per region (A's serves the demo page), a distributor and a
//! gateway per region, the gateways echoing upstream danmu into the room as in `dev/`.
//!
//! With `--webtransport`, the gateways also serve QUIC and WebTransport (and wss) on a
//! certificate a browser accepts by its hash (`danmu_tests::tls::short_lived_certificate`).
//!
//! Prints one JSON line on stdout once everything answers:
//! `{"control":"http://127.0.0.1:P","nats":{"A":"nats://...","B":"nats://..."},"ws":{"A":"127.0.0.1:P",...},"webtransport":{"A":"127.0.0.1:P",...}}`
//! (`webtransport` empty without the flag).
//! Then reads commands on stdin, one per line, answering each with one line:
//! - `restart A`: drains gateway A and starts a new one on the same ports → `restarted A`;
//! - `quit` (or end of input, or SIGTERM): stops everything.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use danmu_tests::fabric::{self, Keys};
use danmu_tests::nats::{FabricUsers, SuperclusterBuilder};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::signal::unix::{SignalKind, signal};

const REGIONS: [&str; 2] = ["A", "B"];

fn gateway_config(url: &str, region: &str, keys: &Keys) -> danmu_gateway::Config {
    let mut config = fabric::gateway_config(url, region, keys);
    // What the demo page shows: its own danmu back in the room, and fresh online counts.
    config.upstream.echo_to_room = true;
    config.online_report_interval = Duration::from_millis(250);
    config
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // The page tests publish as a business does on the dev fabric: without credentials, taken
    // as the business publisher (`no_auth_user`); the services connect as their own users.
    let mut users = FabricUsers::for_tests(&REGIONS)?;
    users.anonymous_publisher = true;
    let cluster = SuperclusterBuilder::new(&REGIONS)
        .users(users)
        .start()
        .await?;
    let keys = Keys::generate();
    let webtransport = std::env::args().any(|a| a == "--webtransport");
    let cert = webtransport.then(danmu_tests::tls::TestCert::generate);
    let mut controls = Vec::new();
    let mut distributors = Vec::new();
    let mut gateways: BTreeMap<&'static str, _> = BTreeMap::new();
    for region in REGIONS {
        let url = cluster.region(region).client_url();
        let mut control = fabric::control_config(&url, region, &keys);
        control.regions = REGIONS.iter().map(|r| r.to_string()).collect();
        control.default_region = "A".into();
        control.demo_page = true;
        controls.push(fabric::start_control(control).await?);
        distributors
            .push(danmu_distributor::start(fabric::distributor_config(&url, region)).await?);
        let mut config = gateway_config(&url, region, &keys);
        if let Some(cert) = &cert {
            danmu_tests::tls::with_tls(&mut config, cert);
        }
        gateways.insert(
            region,
            (fabric::start_gateway(config.clone()).await?, config),
        );
    }
    let control = format!("http://{}", controls[0].addr);
    // Ready when control lists both gateways.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = danmu_tests::http::get(controls[0].addr, "/v1/nodes")
            .await
            .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
            .unwrap_or_default();
        if REGIONS
            .iter()
            .all(|r| body.contains(&format!("\"region\":\"{r}\"")))
        {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "control did not list both gateways within 30 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = |g: &danmu_gateway::Gateway| g.ws_addr.map(|a| a.to_string()).unwrap_or_default();
    let quic = |g: &danmu_gateway::Gateway| g.quic_addr.map(|a| a.to_string()).unwrap_or_default();
    println!(
        "{}",
        json!({
            "control": control,
            "nats": REGIONS.iter().map(|r| (r.to_string(), cluster.region(r).client_url())).collect::<BTreeMap<_, _>>(),
            "ws": gateways.iter().map(|(r, (g, _))| (r.to_string(), addr(g))).collect::<BTreeMap<_, _>>(),
            "webtransport": gateways.iter().map(|(r, (g, _))| (r.to_string(), quic(g))).collect::<BTreeMap<_, _>>(),
        })
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            _ = term.recv() => break,
            line = lines.next_line() => line?,
        };
        let Some(line) = line else { break };
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["restart", name] => {
                let region: &'static str = REGIONS
                    .into_iter()
                    .find(|r| r == name)
                    .with_context(|| format!("no region {name}"))?;
                let (gateway, mut config) = gateways
                    .remove(region)
                    .with_context(|| format!("no gateway in region {region}"))?;
                // The same ports, so that the page finds it where control said.
                config.ws_listen = gateway.ws_addr;
                config.tcp_listen = gateway.tcp_addr;
                config.wss_listen = gateway.wss_addr;
                config.tls_listen = gateway.tls_addr;
                config.quic_listen = gateway.quic_addr;
                gateway.shutdown(Duration::from_secs(2)).await;
                gateways.insert(
                    region,
                    (fabric::start_gateway(config.clone()).await?, config),
                );
                println!("restarted {region}");
            }
            ["quit"] => break,
            other => eprintln!("web-fabric: unknown command {other:?}"),
        }
    }
    for (_, (gateway, _)) in gateways {
        gateway.shutdown(Duration::from_secs(1)).await;
    }
    for control in controls {
        control.stop().await?;
    }
    drop(distributors);
    drop(cluster);
    Ok(())
}
