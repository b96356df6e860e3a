//! A two-region NATS supercluster for development, on fixed ports, until Ctrl-C or SIGTERM.
//!
//! Region i (0 = A) listens on client 4222+i, monitor 8222+i, WebSocket 4242+i, route 6222+i and
//! gateway 7222+i; config, log and JetStream store of each region live under `<dir>/<region>` and
//! survive a restart. The configs come from the same renderer the tests use.
//!
//! Every server requires authentication, with the Helm chart's users and permissions
//! (`danmu_tests::nats::permissions`, checked against the chart by `tests/tests/chart_fabric.rs`):
//! per region, the nkey users of the gateway (`nats-gateway-<region>.nk`; the dev gateways run
//! the demo echo, so they use `nats-gateway-echo-<region>.nk`), distributor and control, and one
//! business publisher (`nats-publisher.nk`), their seeds read from `--keys` (`scripts/up` writes
//! them once with `danmu-control nkey --out`). Clients without credentials are taken as the
//! business publisher (`no_auth_user`), so the README's publish commands work as they are.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use danmu_tests::nats::{FabricUsers, PortLayout, Supercluster, SuperclusterBuilder};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Run a local NATS supercluster (one server per region) for development")]
struct Args {
    /// Where each region keeps its config, log and JetStream store.
    #[arg(long, default_value = ".dev/nats")]
    dir: PathBuf,
    /// Regions, in port order.
    #[arg(long, value_delimiter = ',', default_value = "A,B")]
    regions: Vec<String>,
    /// Where the NATS users' nkey seeds are (`nats-<role>-<region>.nk`, `nats-publisher.nk`).
    #[arg(long, default_value = ".dev/keys")]
    keys: PathBuf,
    /// Remove the directory first (a fresh JetStream).
    #[arg(long)]
    clean: bool,
    /// How long the supercluster may take to elect a JetStream meta leader.
    #[arg(long, default_value_t = 60)]
    ready_timeout_secs: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::path::absolute(&args.dir).context("resolving --dir")?;
    if args.clean && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let regions: Vec<&str> = args.regions.iter().map(String::as_str).collect();
    let users = FabricUsers::from_dir(&args.keys, &regions).with_context(|| {
        format!(
            "reading the NATS users' seeds in {} (scripts/up writes them with \
             `danmu-control nkey --out FILE`)",
            args.keys.display()
        )
    })?;
    eprintln!("starting regions {regions:?} under {}", dir.display());
    let mut cluster = SuperclusterBuilder::new(&regions)
        .ports(PortLayout::Dev)
        .store_root(&dir)
        .users(users)
        .ready_timeout(Duration::from_secs(args.ready_timeout_secs))
        .start()
        .await?;
    print_urls(&cluster);

    let outcome = run_until_signal(&mut cluster).await;
    eprintln!("stopping");
    cluster.stop();
    outcome
}

fn print_urls(cluster: &Supercluster) {
    for server in &cluster.regions {
        println!(
            "region {}: client {}  websocket {}  monitor {}  log {}",
            server.cluster(),
            server.client_url(),
            server.websocket_url(),
            server.monitor_url(),
            server.log_path().display()
        );
    }
    println!("all regions: {}", cluster.client_urls());
    println!("ready; Ctrl-C or SIGTERM stops the servers");
}

/// Returns on Ctrl-C or SIGTERM, or with an error if a server exits by itself.
async fn run_until_signal(cluster: &mut Supercluster) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = check.tick() => {
                if let Some(dead) = cluster.regions.iter_mut().find_map(|s| (!s.is_running()).then_some(s)) {
                    anyhow::bail!(
                        "nats-server {} exited; log tail:\n{}",
                        dead.name(),
                        dead.log_tail()
                    );
                }
            }
        }
    }
}
