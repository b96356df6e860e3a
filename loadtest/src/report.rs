//! Reports as text tables: one run, or ours beside the peer's from the same invocation.

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::Report;

/// Both targets measured in one invocation, with the ratios the SPEC's bars are about.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub machine: String,
    pub nats_server: String,
    pub pinned: String,
    pub runs: Vec<Report>,
    /// peer edge CPU per delivery ÷ ours (gateway only); > 1 means we spend less.
    pub edge_cpu_ratio: Option<f64>,
    /// peer CPU per delivery ÷ ours with the distributor and nats-server counted too.
    pub total_cpu_ratio: Option<f64>,
}

impl Comparison {
    pub fn new(machine: String, nats_server: String, pinned: String, runs: Vec<Report>) -> Self {
        let ours = runs.iter().find(|r| r.target == "danmu");
        let peer = runs.iter().find(|r| r.target == "nats-ws");
        let (edge_cpu_ratio, total_cpu_ratio) = match (ours, peer) {
            (Some(ours), Some(peer)) => (
                Some(peer.edge_cpu_us_per_delivery / ours.edge_cpu_us_per_delivery.max(1e-9)),
                Some(peer.server_cpu_us_per_delivery / ours.server_cpu_us_per_delivery.max(1e-9)),
            ),
            _ => (None, None),
        };
        Comparison {
            machine,
            nats_server,
            pinned,
            runs,
            edge_cpu_ratio,
            total_cpu_ratio,
        }
    }
}

/// Rows of `name: value per run`.
pub fn table(comparison: &Comparison) -> String {
    let runs = &comparison.runs;
    let mut out = String::new();
    let first = &runs[0];
    let _ = writeln!(
        out,
        "workload: {} connections, {} rooms, {} msg/s of {} B for {} s ({} workers, {} sample connections each)",
        first.connections,
        first.rooms,
        first.rate,
        first.size,
        first.duration_secs,
        first.workers,
        first.sample_per_worker
    );
    let _ = writeln!(
        out,
        "machine: {}; nats-server {}; pinning: {}",
        comparison.machine, comparison.nats_server, comparison.pinned
    );
    let header: Vec<String> = runs
        .iter()
        .map(|r| format!("{} ({})", r.target, r.transport))
        .collect();
    let _ = write!(out, "{:<40}", "");
    for h in &header {
        let _ = write!(out, " {h:>20}");
    }
    let _ = writeln!(out);
    let mut row = |name: &str, f: &dyn Fn(&Report) -> String| {
        let _ = write!(out, "{name:<40}");
        for r in runs {
            let _ = write!(out, " {:>20}", f(r));
        }
        let _ = writeln!(out);
    };
    row("published messages", &|r| r.published.to_string());
    row("deliveries expected", &|r| r.expected.to_string());
    row("deliveries received", &|r| r.received.to_string());
    row("lost (loss %)", &|r| {
        format!("{} ({:.3}%)", r.lost, r.loss_pct)
    });
    row("extra (duplicates)", &|r| r.extra.to_string());
    row("connections complete / short / closed", &|r| {
        format!(
            "{}/{}/{}",
            r.connections_complete, r.connections_short, r.connections_closed
        )
    });
    row("sample: messages checked", &|r| {
        r.sample.messages.to_string()
    });
    row("sample: gaps / out of order", &|r| {
        format!("{}/{}", r.sample.gaps, r.sample.out_of_order)
    });
    row("window s (first publish..last delivery)", &|r| {
        format!("{:.2}", r.window_secs)
    });
    row("deliveries/s (offered)", &|r| {
        format!("{:.0}", r.offered_deliveries_per_sec)
    });
    row("deliveries/s (achieved)", &|r| {
        format!("{:.0}", r.deliveries_per_sec)
    });
    row("latency p50 ms", &|r| format!("{:.2}", r.latency.p50_ms));
    row("latency p90 ms", &|r| format!("{:.2}", r.latency.p90_ms));
    row("latency p99 ms", &|r| format!("{:.2}", r.latency.p99_ms));
    row("latency p99.9 ms", &|r| format!("{:.2}", r.latency.p999_ms));
    row("latency max ms", &|r| format!("{:.2}", r.latency.max_ms));
    row("bytes received per delivery", &|r| {
        format!("{:.1}", r.bytes_per_delivery)
    });
    row("  (uncompressed packet bytes)", &|r| {
        r.uncompressed_packet_bytes.to_string()
    });
    row("frames per delivery", &|r| {
        format!("{:.3}", r.units_per_delivery)
    });
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        for s in &r.servers {
            if !names.contains(&s.name.as_str()) {
                names.push(&s.name);
            }
        }
    }
    for name in names {
        row(&format!("{name} CPU s (cores)"), &|r| {
            r.servers
                .iter()
                .find(|s| s.name == name)
                .map_or("-".into(), |s| {
                    format!("{:.2} ({:.2})", s.cpu_secs, s.cores)
                })
        });
        row(&format!("{name} RSS MiB end (peak)"), &|r| {
            r.servers
                .iter()
                .find(|s| s.name == name)
                .map_or("-".into(), |s| {
                    format!(
                        "{:.0} ({:.0})",
                        s.rss_kib as f64 / 1024.0,
                        s.rss_peak_kib as f64 / 1024.0
                    )
                })
        });
    }
    row("gateway publish→queued mean ms", &|r| {
        let sum = r.metrics.get("danmu_gateway_publish_delay_seconds_sum");
        let count = r.metrics.get("danmu_gateway_publish_delay_seconds_count");
        match (sum, count) {
            (Some(sum), Some(count)) if *count > 0.0 => format!("{:.2}", sum / count * 1000.0),
            _ => "-".into(),
        }
    });
    // Without a watched server process (`danmu-load run` without `--watch`) there is no
    // server CPU to report: "-", not a measured 0.
    row("edge CPU µs per delivery", &|r| {
        if r.servers.is_empty() {
            "- (no --watch)".into()
        } else {
            format!("{} {:.3}", r.edge, r.edge_cpu_us_per_delivery)
        }
    });
    row("all servers CPU µs per delivery", &|r| {
        if r.servers.is_empty() {
            "-".into()
        } else {
            format!("{:.3}", r.server_cpu_us_per_delivery)
        }
    });
    row("client CPU µs per delivery", &|r| {
        format!("{:.3}", r.client_cpu_us_per_delivery)
    });
    row("machine busy (2 cores = 100%)", &|r| {
        format!("{:.0}%", 100.0 * r.machine_busy)
    });
    row("other processes, cores (disturbance)", &|r| {
        format!("{:.2}", r.other_cores)
    });
    if let Some(ratio) = comparison.edge_cpu_ratio {
        let _ = writeln!(
            out,
            "edge CPU per delivery, nats-server ÷ gateway: {ratio:.1}x"
        );
    }
    if let Some(ratio) = comparison.total_cpu_ratio {
        let _ = writeln!(
            out,
            "all servers CPU per delivery, nats-server ÷ (gateway + distributor + nats-server): {ratio:.1}x"
        );
    }
    for r in runs {
        if !r.errors.is_empty() {
            let _ = writeln!(
                out,
                "{} errors ({}), first: {:?}",
                r.target,
                r.error_count,
                &r.errors[..r.errors.len().min(3)]
            );
        }
        if !r.metrics.is_empty() {
            let _ = write!(out, "{} counters:", r.target);
            for (name, value) in &r.metrics {
                let _ = write!(out, " {name}={value}");
            }
            let _ = writeln!(out);
        }
    }
    out
}

/// A one-line description of this machine.
pub fn machine() -> String {
    let cpus = crate::procfs::online_cpus();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpus} CPUs ({model}), {mem_gib:.0} GiB")
}
