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
