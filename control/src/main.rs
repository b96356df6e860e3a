//! `danmu-control`: tracing, configuration, metrics exporter, bind, run until SIGINT/SIGTERM.
//! `danmu-control keygen --out-dir DIR` writes the token key pair.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use danmu_control::{Config, metrics};
use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "danmu-control",
    version,
    about = "danmu control: tokens and node lists"
)]
struct Args {
    /// TOML configuration file; `DANMU_CONTROL__<KEY>` variables override it.
    #[arg(long, env = "DANMU_CONTROL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new Ed25519 key pair: control.key.pem (control's) and control.pub.pem (gateways').
    Keygen {
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
}

/// Gauges are refreshed every second or so; one untouched this long is gone.
const GAUGE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9102);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    if let Some(Command::Keygen { out_dir }) = args.command {
        return keygen(&out_dir);
    }

    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let metrics_listen = config.metrics_listen.unwrap_or(DEFAULT_METRICS_LISTEN);
    PrometheusBuilder::new()
        .with_http_listener(metrics_listen)
        // Without buckets the exporter renders histograms as summaries.
        .set_buckets(metrics::HTTP_DURATION_BUCKETS)?
        // Gauges not set for a while go: rooms that left the top-rooms metric, regions gone.
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
        .install()
        .with_context(|| format!("starting the metrics listener on {metrics_listen}"))?;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    danmu_control::run(listener, config, shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received; draining HTTP requests");
}

fn keygen(out_dir: &Path) -> anyhow::Result<()> {
    let pair = danmu_proto::token::generate_keypair();
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let private = out_dir.join("control.key.pem");
    let public = out_dir.join("control.pub.pem");
    write_private(&private, &pair.private_pem)?;
    std::fs::write(&public, &pair.public_pem)
        .with_context(|| format!("writing {}", public.display()))?;
    println!(
        "wrote {} (control's private_key_pem_path) and {} (give it to gateways)",
        private.display(),
        public.display()
    );
    Ok(())
}

/// Creates the private key file readable by its owner only, refusing to overwrite a key.
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
