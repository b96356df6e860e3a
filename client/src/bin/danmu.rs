//! `danmu`: the command-line client, on the SDK alone.
//!
//! ```sh
//! danmu watch --control http://127.0.0.1:8080 --room 1001          # human lines until Ctrl-C
//! danmu watch --control http://127.0.0.1:8080 --room 1001 --json   # JSON lines
//! danmu send  --control http://127.0.0.1:8080 --room 1001 "hello"  # one danmu, prints the reply
//! ```
//!
//! Tokens come from control's `POST /v1/tokens` with `--api-key` (or `DANMU_API_KEY`): a
//! development shortcut, since in production a viewer's app gets its token from its own
//! backend. Logs go to stderr (`RUST_LOG`, default `warn`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use danmu_client::control::Control;
use danmu_client::{Client, Config, Event, TlsOptions, TransportKind, UpstreamRequest};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "danmu",
    version,
    about = "Watch a danmu room, or send a danmu to it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a room and print what happens: connection, online count, messages.
    Watch {
        #[command(flatten)]
        common: Common,
        /// Exit after this many messages (default: run until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Join a room, send one danmu upstream, print the gateway's reply.
    Send {
        #[command(flatten)]
        common: Common,
        /// The text.
        text: String,
        /// Colour, 0xRRGGBB as a decimal number.
        #[arg(long, default_value_t = 0xffffff)]
        color: u32,
        /// 1 scrolling, 4 bottom, 5 top.
        #[arg(long, default_value_t = 1)]
        mode: u8,
    },
}

#[derive(Args)]
struct Common {
    /// Control's base URL.
    #[arg(long, env = "DANMU_CONTROL", default_value = "http://127.0.0.1:8080")]
    control: String,
    /// The room.
    #[arg(long)]
    room: u64,
    /// The user id (default: a random one, a new anonymous viewer).
    #[arg(long)]
    uid: Option<u64>,
    /// Region hint for the node list.
    #[arg(long)]
    region: Option<String>,
    /// API key for control's token endpoint (development: business backends issue tokens).
    #[arg(long, env = "DANMU_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Transports, most preferred first.
    #[arg(long, value_delimiter = ',', default_value = "quic,wss,ws,tls,tcp")]
    transports: Vec<TransportKind>,
    /// Protocol version to ask for: 0 raw, 2 zlib, 3 brotli.
    #[arg(long, default_value_t = 3)]
    protover: u16,
    /// A PEM file of CA certificates to trust besides the system's.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// DEVELOPMENT ONLY: accept any TLS certificate.
    #[arg(long)]
    insecure_accept_any_certificate: bool,
    /// Print JSON lines instead of human lines.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Watch { common, count } => watch(common, count).await,
        Command::Send {
            common,
            text,
            color,
            mode,
        } => {
            send(
                common,
                UpstreamRequest {
                    msg: text,
                    color,
                    mode,
                },
            )
            .await
        }
    }
}

fn start(common: &Common) -> anyhow::Result<Client> {
    let uid = common.uid.unwrap_or_else(|| rand::random::<u32>().into());
    let mut config = Config::new(&common.control, common.room, uid);
    config.region = common.region.clone();
    config.transports = common.transports.clone();
    config.protover = common.protover;
    config.device = format!("danmu-cli-{uid}");
    config.tls = TlsOptions {
        extra_ca_pem: common.ca_file.clone(),
        dangerous_accept_any_certificate: common.insecure_accept_any_certificate,
        ..TlsOptions::default()
    };
    let control = Control::new(&common.control, &config.tls, Duration::from_secs(10))?;
    let (api_key, room) = (common.api_key.clone(), common.room);
    Ok(Client::start(config, move || {
        let (control, api_key) = (control.clone(), api_key.clone());
        async move {
            control
                .token(api_key.as_deref(), uid, &[room])
                .await
                .map(|issued| issued.token)
        }
    })?)
}

async fn watch(common: Common, count: Option<u64>) -> anyhow::Result<()> {
    let mut client = start(&common)?;
    let mut messages = 0;
    while let Some(event) = client.next_event().await {
        let stop = matches!(event, Event::Stopped { .. });
        print_event(&event, common.json);
        if let Event::Message(_) = event {
            messages += 1;
            if count.is_some_and(|count| messages >= count) {
                return Ok(());
            }
        }
        if stop {
            anyhow::bail!("stopped");
        }
    }
    Ok(())
}

async fn send(common: Common, request: UpstreamRequest) -> anyhow::Result<()> {
    let mut client = start(&common)?;
    let joined = async {
        while let Some(event) = client.next_event().await {
            print_event(&event, common.json);
            match event {
                Event::Connected { .. } => return Ok(()),
                Event::Stopped { reason } => anyhow::bail!("stopped: {reason}"),
                _ => {}
            }
        }
        anyhow::bail!("the client stopped")
    };
    tokio::time::timeout(Duration::from_secs(30), joined)
        .await
        .context("not connected within 30 s")??;
    let reply = client.send_danmu(request).await?;
    if common.json {
        println!("{}", json!({"event": "upstream_reply", "reply": reply}));
    } else {
        let text = match reply.code {
            0 => format!("sent (id {})", reply.id.as_deref().unwrap_or("?")),
            1 => format!("sent masked: {}", reply.msg.as_deref().unwrap_or("")),
            code => format!("refused with code {code} (docs/protocol.md, Upstream danmu)"),
        };
        println!("{text}");
    }
    anyhow::ensure!(reply.code >= 0, "refused with code {}", reply.code);
    Ok(())
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn print_event(event: &Event, as_json: bool) {
    // Each event once, as (JSON line, human line).
    let (json_line, human) = match event {
        Event::Connected {
            transport,
            node,
            region,
            addr,
            setup,
        } => (
            json!({"event": "connected", "transport": transport.name(), "node": node,
                   "region": region, "addr": addr, "setup_ms": millis(*setup)}),
            format!(
                "connected    {transport} to {node} (region {region}, {addr}) in {} ms",
                millis(*setup)
            ),
        ),
        Event::Message(message) => {
            let body = serde_json::from_slice::<serde_json::Value>(&message.body)
                .unwrap_or_else(|_| String::from_utf8_lossy(&message.body).into());
            (
                json!({"event": "message", "delivery_id": message.delivery_id, "body": body}),
                human_message(&message.body),
            )
        }
        Event::Online { count, rtt } => (
            json!({"event": "online", "count": count, "rtt_ms": millis(*rtt)}),
            format!(
                "online       {count} (heartbeat round trip {} ms)",
                millis(*rtt)
            ),
        ),
        Event::Disconnected { reason } => (
            json!({"event": "disconnected", "reason": reason.to_string()}),
            format!("disconnected {reason}"),
        ),
        Event::Stopped { reason } => (
            json!({"event": "stopped", "reason": reason}),
            format!("stopped      {reason}"),
        ),
    };
    if as_json {
        println!("{json_line}");
    } else {
        println!("{human}");
    }
}

/// `DANMU_MSG` as `uid: text` (Bilibili's `info` layout: `[[..], text, [uid, name]]`), other
/// JSON as `CMD {json}`, anything else as text.
fn human_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return format!("message      {}", String::from_utf8_lossy(body));
    };
    let cmd = value["cmd"].as_str().unwrap_or("message");
    if cmd == "DANMU_MSG"
        && let Some(text) = value["info"][1].as_str()
    {
        let who = match &value["info"][2][1] {
            serde_json::Value::String(name) => name.clone(),
            _ => value["info"][2][0].to_string(),
        };
        return format!("danmu        {who}: {text}");
    }
    format!("{cmd:<12} {value}")
}
