//! `danmu-gateway`: reads its config, binds, serves until SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Parser;

/// jemalloc rather than glibc malloc: measured with `danmu-load idle --connections 10000`
/// (docs/performance.md, Idle memory), glibc kept ~0.3 KiB per connection of fragments after a
/// burst of deliveries, mimalloc more; jemalloc with the options below returns them.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (the `malloc_conf` global; jemalloc(3), "TUNING"):
/// a background thread purges freed pages, dirty ones after 1 s (default 10 s, and only when
/// the allocator is called, which an idle gateway barely does), without a "muzzy" stage.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&'static std::ffi::c_char> =
    Some(unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() });

#[derive(Parser)]
#[command(
    version,
    about = "danmu edge gateway: WebSocket, TCP (plain or TLS) and QUIC clients, GOIM framing"
)]
struct Args {
    /// TOML configuration file; `DANMU_GATEWAY__<KEY>` variables override it.
    #[arg(long, short, env = "DANMU_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Writes a self-signed certificate (`tls.crt`) and its key (`tls.key`) for development:
    /// ECDSA P-256, valid at most 14 days (so browsers may pin it by hash for WebTransport).
    /// Prints the certificate's SHA-256 (base64).
    Cert {
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS names or IP addresses the certificate is for (repeat the flag).
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
        #[arg(long, default_value_t = 13)]
        days: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    danmu_runtime::init_tracing();
    let args = Args::parse();
    if let Some(Command::Cert {
        out_dir,
        names,
        days,
    }) = args.command
    {
        return write_certificate(&out_dir, &names, days);
    }
    let config = danmu_gateway::Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(addr) = config.metrics_listen {
        danmu_runtime::install_prometheus(addr, None)?;
    }
    let listeners = danmu_gateway::Listeners::bind(&config).await?;
    danmu_gateway::run(listeners, config, danmu_runtime::shutdown_signal()).await
}

fn write_certificate(dir: &std::path::Path, names: &[String], days: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (cert, key) = danmu_gateway::transport::tls::self_signed(names, days)
        .context("making the certificate (at most 14 days)")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_path = dir.join("tls.key");
    std::fs::write(&key_path, key).with_context(|| format!("writing {}", key_path.display()))?;
    std::fs::write(dir.join("tls.crt"), &cert)?;
    let files = danmu_gateway::transport::tls::CertificateFiles {
        cert_file: dir.join("tls.crt"),
        key_file: key_path,
    };
    let certificates = danmu_gateway::transport::tls::Certificates::load(&[files])?;
    let hash = certificates
        .first_sha256()
        .context("the certificate just written")?;
    use base64::Engine as _;
    println!("{}", base64::engine::general_purpose::STANDARD.encode(hash));
    Ok(())
}
