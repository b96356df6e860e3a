//! `danmu-gateway`: reads its config, binds, serves until SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "danmu edge gateway: WebSocket and TCP clients, GOIM framing"
)]
struct Args {
    /// TOML configuration file; `DANMU_GATEWAY__<KEY>` variables override it.
    #[arg(long, short, env = "DANMU_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    danmu_runtime::init_tracing();
    let args = Args::parse();
    let config = danmu_gateway::Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(addr) = config.metrics_listen {
        danmu_runtime::install_prometheus(addr, None)?;
    }
    let listeners = danmu_gateway::Listeners::bind(&config).await?;
    danmu_gateway::run(listeners, config, danmu_runtime::shutdown_signal()).await
}
