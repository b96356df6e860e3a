//! `danmu-distributor`: reads its config, runs until SIGINT or SIGTERM, then flushes.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "danmu distributor: aggregate, compress once, publish edge batches"
)]
struct Args {
    /// TOML configuration file; `DANMU_DISTRIBUTOR__<KEY>` variables override it.
    #[arg(long, short, env = "DANMU_DISTRIBUTOR_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    danmu_runtime::init_tracing();
    let args = Args::parse();
    let config = danmu_distributor::Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(addr) = config.metrics_listen {
        danmu_runtime::install_prometheus(addr, None)?;
    }
    Ok(danmu_distributor::run(config, danmu_runtime::shutdown_signal()).await?)
}
