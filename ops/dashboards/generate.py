#!/usr/bin/env python3
"""Builds danmu's Grafana dashboards with grafanalib and writes them as JSON.

    python3 ops/dashboards/generate.py            write charts/danmu/dashboards/<name>.json
    python3 ops/dashboards/generate.py --check    exit 1 if a committed file differs

Every series carries `region` (attached at scrape time: the chart's ServiceMonitor relabeling,
or `labels:` in a static scrape config) and `instance` (Prometheus adds it). Metric names and
labels are the ones our services export; panels over `nats_*` metrics read the
prometheus-nats-exporter the official NATS chart ships (`-prefix=nats`), which no test here
runs: they are listed in docs/operations.md as not provable on this machine.
"""

import argparse
import json
import pathlib
import sys

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

OUT = pathlib.Path(__file__).resolve().parents[2] / "charts" / "danmu" / "dashboards"
DS = "${datasource}"
SEL = 'region=~"$region", instance=~"$instance"'
RSEL = 'region=~"$region"'
RI = "$__rate_interval"


def q(expr, legend=""):
    """One query; `legend` is Grafana's legend format."""
    return {"expr": expr, "legend": legend}


def rate(metric, by, sel=SEL):
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RI}]))"


def quantile(phi, metric, by, sel=SEL):
    return (
        f"histogram_quantile({phi}, sum by (le, {by}) "
        f"(rate({metric}_bucket{{{sel}}}[{RI}])))"
    )


def panel(title, unit, queries, description=""):
    return {"title": title, "unit": unit, "queries": queries, "description": description}


def variables(instance_metric):
    return g.Templating(
        list=[
            g.Template(
                name="datasource",
                label="Data source",
                type="datasource",
                query="prometheus",
            ),
            g.Template(
                name="region",
                label="Region",
                dataSource=DS,
                query=f"label_values({instance_metric}, region)",
                includeAll=True,
                multi=True,
                allValue=".*",
                refresh=2,
            ),
            g.Template(
                name="instance",
                label="Instance",
                dataSource=DS,
                query=f'label_values({instance_metric}{{{RSEL}}}, instance)',
                includeAll=True,
                multi=True,
                allValue=".*",
                refresh=2,
            ),
        ]
    )


# --- The dashboards, as data: (uid, title, metric that lists instances, rows of panels). ---

LATENCY = "danmu_gateway_publish_delay_seconds"

OVERVIEW = [
    ("Per region", [
        panel("Connections", "short",
              [q(f"sum by (region) (danmu_gateway_connections{{{SEL}}})", "{{region}}")]),
        panel("Deliveries/s (frames to members)", "ops",
              [q(rate("danmu_gateway_deliveries_total", "region"), "{{region}}")]),
        panel("Messages delivered/s", "ops",
              [q(rate("danmu_gateway_messages_delivered_total", "region, priority"),
                 "{{region}} {{priority}}")]),
        panel("Publish-to-client latency p50/p99 by priority", "s", [
            q(quantile(0.5, LATENCY, "region, priority"), "p50 {{region}} {{priority}}"),
            q(quantile(0.99, LATENCY, "region, priority"), "p99 {{region}} {{priority}}"),
        ], "From publish to queueing on the gateway, per message (each at its batch's oldest message's delay)."),
        panel("Shed messages/s", "ops",
              [q(rate("danmu_gateway_shed_messages_total", "region, reason"),
                 "{{region}} {{reason}}")]),
        panel("Bytes delivered/s", "Bps",
              [q(rate("danmu_gateway_delivered_bytes_total", "region"), "{{region}}")]),
        panel("Compression ratio (compressed / raw)", "percentunit", [q(
            f"sum by (region) (rate(danmu_distributor_batch_compressed_bytes_total{{{SEL}}}[{RI}]))"
            f" / sum by (region) (rate(danmu_distributor_batch_raw_bytes_total{{{SEL}}}[{RI}]))",
            "{{region}}")]),
        panel("Consumer lag (pending messages)", "short",
              [q(f"sum by (region, priority) (danmu_distributor_consumer_pending_messages{{{SEL}}})",
                 "{{region}} {{priority}}")]),
        panel("Reach rate (acked / settled)", "percentunit", [q(
            f'sum by (region) (rate(danmu_gateway_reach_total{{outcome="acked", {SEL}}}[{RI}]))'
            f' / sum by (region) (rate(danmu_gateway_reach_total{{outcome=~"acked|expired", {SEL}}}[{RI}]))',
            "{{region}}")], "High-priority deliveries with an id that clients acknowledged, of those "
            "acknowledged or expired after the last retry (the alert's objective: 99.9%)."),
    ]),
    ("NATS (prometheus-nats-exporter of the NATS chart)", [
        panel("NATS connections", "short",
              [q('sum by (region) (nats_varz_connections{region=~"$region"})', "{{region}}")]),
        panel("NATS messages in/out per second", "ops", [
            q(f'sum by (region) (rate(nats_varz_in_msgs{{region=~"$region"}}[{RI}]))', "in {{region}}"),
            q(f'sum by (region) (rate(nats_varz_out_msgs{{region=~"$region"}}[{RI}]))', "out {{region}}"),
        ]),
        panel("NATS slow consumers", "short",
              [q('sum by (region) (nats_varz_slow_consumers{region=~"$region"})', "{{region}}")]),
    ]),
]

GATEWAY = [
    ("Connections", [
        panel("Connections by transport", "short",
              [q(f"sum by (instance, transport) (danmu_gateway_connections{{{SEL}}})",
                 "{{instance}} {{transport}}")]),
        panel("Connections / cap", "percentunit", [q(
            f"sum by (instance) (danmu_gateway_connections{{{SEL}}})"
            f" / on (instance) max by (instance) (danmu_gateway_max_connections{{{SEL}}})",
            "{{instance}}")], "Against max_connections; gateways without a cap show nothing."),
        panel("Rooms with members", "short",
              [q(f"sum by (instance) (danmu_gateway_rooms{{{SEL}}})", "{{instance}}")]),
        panel("Accepts/s by transport", "ops",
              [q(rate("danmu_gateway_connections_accepted_total", "transport"), "{{transport}}")]),
        panel("Closes/s by reason", "ops",
              [q(rate("danmu_gateway_connections_closed_total", "reason"), "{{reason}}")]),
        panel("Auth results/s", "ops",
              [q(rate("danmu_gateway_auth_total", "result"), "{{result}}")]),
    ]),
    ("Delivery", [
        panel("Deliveries/s by priority", "ops",
              [q(rate("danmu_gateway_deliveries_total", "priority"), "{{priority}}")]),
        panel("Bytes/s by priority", "Bps",
              [q(rate("danmu_gateway_delivered_bytes_total", "priority"), "{{priority}}")]),
        panel("Latency p99 by priority and scope", "s",
              [q(quantile(0.99, LATENCY, "priority, scope"), "{{priority}} {{scope}}")]),
        panel("Latency p50 by priority and scope", "s",
              [q(quantile(0.5, LATENCY, "priority, scope"), "{{priority}} {{scope}}")]),
        panel("Edge batches received/s by outcome", "ops",
              [q(rate("danmu_gateway_batches_received_total", "outcome"), "{{outcome}}")]),
        panel("Encodings built/s by variant", "ops",
              [q(rate("danmu_gateway_variant_encodes_total", "variant"), "{{variant}}")]),
    ]),
    ("Hops and slow readers", [
        panel("Hop: distributor to gateway, p99", "s",
              [q(quantile(0.99, "danmu_gateway_edge_transit_seconds", "priority"), "{{priority}}")],
              "From the distributor publishing a batch to this gateway receiving it (hosts' clocks)."),
        panel("Hop: one batch's fan-out, p99", "s",
              [q(quantile(0.99, "danmu_gateway_fanout_seconds", "priority"), "{{priority}}")],
              "Queueing one batch for every member of its group."),
        panel("Hop: queued to the connection task, p99", "s",
              [q(quantile(0.99, "danmu_gateway_queue_wait_seconds", "instance"), "{{instance}}")],
              "A batch queued for a connection until its task takes it for the socket (1 connection in 64)."),
        panel("Write stalls/s", "ops",
              [q(f"sum by (instance) (rate(danmu_gateway_write_stalls_total{{{SEL}}}[{RI}]))",
                 "{{instance}}")],
              "A connection's socket would not take what was waiting: its reader fell behind."),
        panel("Write-blocked connections", "short",
              [q(f"sum by (instance) (danmu_gateway_write_blocked_connections{{{SEL}}})",
                 "{{instance}}")],
              "Cut off after write_stall_timeout without progress, or when the queue overflows."),
        panel("Bytes waiting in write-blocked connections", "bytes",
              [q(f"sum by (instance) (danmu_gateway_write_blocked_bytes{{{SEL}}})",
                 "{{instance}}")]),
    ]),
    ("High reach", [
        panel("Reach outcomes/s", "ops",
              [q(rate("danmu_gateway_reach_total", "outcome"), "{{outcome}}")]),
        panel("Presence events/s", "ops",
              [q(rate("danmu_gateway_presence_events_total", "event"), "{{event}}")]),
        panel("Upstream danmu/s by result", "ops",
              [q(rate("danmu_gateway_upstream_total", "result"), "{{result}}")]),
        panel("Offline reads/s by outcome", "ops",
              [q(rate("danmu_gateway_offline_reads_total", "outcome"), "{{outcome}}")]),
    ]),
]

DISTRIBUTOR = [
    ("Throughput", [
        panel("Messages in/s by priority", "ops",
              [q(rate("danmu_distributor_messages_in_total", "priority"), "{{priority}}")]),
        panel("Batches out/s by priority", "ops",
              [q(rate("danmu_distributor_batches_out_total", "priority"), "{{priority}}")]),
        panel("Batch size p50/p99 (messages)", "short", [
            q(quantile(0.5, "danmu_distributor_batch_messages", "priority"), "p50 {{priority}}"),
            q(quantile(0.99, "danmu_distributor_batch_messages", "priority"), "p99 {{priority}}"),
        ]),
        panel("Aggregation window", "s",
              [q(f"max by (priority) (danmu_distributor_window_seconds{{{SEL}}})", "{{priority}}")]),
    ]),
    ("Hops", [
        panel("Hop: stream to distributor, p99", "s",
              [q(quantile(0.99, "danmu_distributor_stream_wait_seconds", "priority"), "{{priority}}")],
              "From JetStream storing a message to this distributor receiving it."),
        panel("Stored to batch published, p99", "s",
              [q(quantile(0.99, "danmu_distributor_batch_delay_seconds", "priority"), "{{priority}}")],
              "From JetStream storing a batch's oldest message to the batch's publish."),
    ]),
    ("Compression", [
        panel("Compression ratio p50 by priority", "percentunit",
              [q(quantile(0.5, "danmu_distributor_compression_ratio", "priority"), "{{priority}}")]),
        panel("Compression time p99", "s",
              [q(quantile(0.99, "danmu_distributor_compress_seconds", "priority"), "{{priority}}")]),
        panel("Raw and compressed bytes/s", "Bps", [
            q(rate("danmu_distributor_batch_raw_bytes_total", "priority"), "raw {{priority}}"),
            q(rate("danmu_distributor_batch_compressed_bytes_total", "priority"),
              "compressed {{priority}}"),
        ]),
    ]),
    ("Consumers", [
        panel("Consumer pending (lag)", "short",
              [q(f"max by (priority) (danmu_distributor_consumer_pending_messages{{{SEL}}})",
                 "{{priority}}")]),
        panel("Consumer ack pending", "short",
              [q(f"max by (priority) (danmu_distributor_consumer_ack_pending_messages{{{SEL}}})",
                 "{{priority}}")]),
        panel("Sampled out/s (big-room degrade)", "ops",
              [q(rate("danmu_distributor_sampled_out_total", "priority"), "{{priority}}")],
              "Messages of rooms past low.max_rate, acknowledged without delivery (0 unless configured)."),
        panel("Offline stores/s", "ops",
              [q(f"sum(rate(danmu_distributor_offline_stored_total{{{SEL}}}[{RI}]))", "stored")]),
    ]),
]

CONTROL = [
    ("Routing", [
        panel("Node-list answers/s by region and outcome", "ops",
              [q(rate("danmu_control_node_list_requests_total", "region, outcome"),
                 "{{region}} {{outcome}}")]),
        panel("Healthy gateways by region (as control sees them)", "short",
              [q(f"max by (region) (danmu_control_nodes{{{SEL}}})", "{{region}}")]),
        panel("Routing rules in force", "short",
              [q(f"max by (instance, version) (danmu_control_routing_rules_info{{{SEL}}}"
                 f" * on (instance) group_left danmu_control_routing_rules{{{SEL}}})",
                 "{{instance}} {{version}}")], "Rule count, labelled with the rules' version hash."),
    ]),
    ("Tokens and HTTP", [
        panel("Tokens issued and refused/s", "ops", [
            q(f"sum(rate(danmu_control_tokens_issued_total{{{SEL}}}[{RI}]))", "issued"),
            q(rate("danmu_control_token_requests_rejected_total", "reason"), "refused: {{reason}}"),
        ]),
        panel("HTTP p99 by route", "s",
              [q(quantile(0.99, "danmu_control_http_request_duration_seconds", "route"),
                 "{{route}}")]),
        panel("HTTP requests/s by status", "reqps",
              [q(f"sum by (status) (rate(danmu_control_http_request_duration_seconds_count{{{SEL}}}[{RI}]))",
                 "{{status}}")]),
    ]),
    ("Presence", [
        panel("Online connections (summed reports)", "short",
              [q(f"max(danmu_control_online_connections{{{SEL}}})", "online")]),
        panel("Gateways reporting online counts", "short",
              [q(f"max(danmu_control_online_gateways{{{SEL}}})", "gateways")]),
        panel("Top rooms by members", "short",
              [q(f"topk(10, max by (room) (danmu_control_room_online{{{SEL}}}))", "room {{room}}")]),
    ]),
]

DASHBOARDS = [
    ("danmu-overview", "danmu / Fabric overview", "danmu_gateway_connections", OVERVIEW),
    ("danmu-gateway", "danmu / Gateway", "danmu_gateway_connections", GATEWAY),
    ("danmu-distributor", "danmu / Distributor", "danmu_distributor_messages_in_total", DISTRIBUTOR),
    ("danmu-control", "danmu / Control and routing", "danmu_control_tokens_issued_total", CONTROL),
]


def build(uid, title, instance_metric, rows):
    panels, y, next_id = [], 0, 1
    for row_title, row_panels in rows:
        panels.append(g.RowPanel(title=row_title, gridPos=g.GridPos(h=1, w=24, x=0, y=y), id=next_id))
        next_id += 1
        y += 1
        for i, spec in enumerate(row_panels):
            x = (i % 3) * 8
            if i and i % 3 == 0:
                y += 8
            panels.append(g.TimeSeries(
                id=next_id,
                title=spec["title"],
                description=spec["description"],
                dataSource=DS,
                unit=spec["unit"],
                gridPos=g.GridPos(h=8, w=8, x=x, y=y),
                targets=[
                    g.Target(expr=t["expr"], legendFormat=t["legend"], refId=chr(ord("A") + n),
                             datasource=DS)
                    for n, t in enumerate(spec["queries"])
                ],
            ))
            next_id += 1
        y += 8
    dashboard = g.Dashboard(
        title=title,
        uid=uid,
        tags=["danmu"],
        timezone="utc",
        refresh="30s",
        panels=panels,
        templating=variables(instance_metric),
    ).auto_panel_ids()
    return json.dumps(dashboard.to_json_data(), cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for uid, title, instance_metric, rows in DASHBOARDS:
        path = OUT / f"{uid.removeprefix('danmu-')}.json"
        rendered = build(uid, title, instance_metric, rows)
        if args.check:
            if not path.exists() or path.read_text() != rendered:
                stale.append(str(path))
        else:
            path.write_text(rendered)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python3 ops/dashboards/generate.py):", *stale, sep="\n  ")
        sys.exit(1)


if __name__ == "__main__":
    main()
