//! `danmu-control`: tracing, configuration, metrics exporter, bind, run until SIGINT/SIGTERM.
//! `danmu-control keygen --out-dir DIR` writes the token key pair; `danmu-control nkey --out
//! FILE` writes a NATS user's nkey seed and prints its public key (for the Helm chart's
//! `natsAuth`, docs/deploy.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use danmu_control::Config;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "danmu-control",
    version,
    about = "danmu control: tokens and node lists"
)]
struct Args {
    /// TOML configuration file; `DANMU_CONTROL__<KEY>` variables override it.
    #[arg(long, short, env = "DANMU_CONTROL_CONFIG")]
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
    /// Write a new NATS user nkey seed (SU...) to FILE (mode 0600, never overwritten) and print
    /// its public key (U...), which the NATS server config names.
    Nkey {
        #[arg(long)]
        out: PathBuf,
    },
}

/// Gauges are refreshed every second or so; one untouched this long is gone.
const GAUGE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9102);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    danmu_runtime::init_tracing();
    let args = Args::parse();
    match args.command {
        Some(Command::Keygen { out_dir }) => return keygen(&out_dir),
        Some(Command::Nkey { out }) => {
            let (seed, public) = danmu_runtime::nats::generate_user()?;
            write_private(&out, &format!("{seed}\n"))?;
            println!("{public}");
            return Ok(());
        }
        None => {}
    }
    let config = Config::load(args.config.as_deref(), std::env::vars())?;
    let metrics_listen = config.metrics_listen.unwrap_or(DEFAULT_METRICS_LISTEN);
    danmu_runtime::install_prometheus(metrics_listen, Some(GAUGE_IDLE_TIMEOUT))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    Ok(danmu_control::run(listener, config, danmu_runtime::shutdown_signal()).await?)
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
