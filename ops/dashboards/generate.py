#!/usr/bin/env python3
"""Builds danmu's Grafana dashboards with grafanalib and writes them as JSON.

    python3 ops/dashboards/generate.py            write charts/danmu/dashboards/<name>.json
    python3 ops/dashboards/generate.py --check    exit 1 if a committed file differs or has a
                                                  panel without a description

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


# Units, as Grafana shows them: durations and bytes scale themselves ("ms", "kB/s"); rates carry
# the word of what is counted ("suffix:" is Grafana's custom unit, shown after the value).
SECONDS, BYTES, BYTES_PER_S, RATIO, COUNT = "s", "bytes", "Bps", "percentunit", "short"


def per_s(what):
    return f"suffix: {what}/s"


# Runbook links: the alert rules' placeholder base, which the chart replaces with
# metrics.prometheusRule.runbookBaseUrl in the dashboards as in the rules.
RUNBOOKS = "https://example.invalid/danmu/blob/main/docs/operations.md"


def runbook(alert):
    return f" Alert: {alert}, runbook: {RUNBOOKS}#{alert.lower()}"


def panel(title, unit, queries, description):
    """One time-series panel. `description` says what it shows, what is normal and what to do
    when it is not (Grafana shows it in the panel's info tooltip); required."""
    if not description.strip():
        raise ValueError(f"panel {title!r} has no description")
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
        panel("Connections", COUNT,
              [q(f"sum by (region) (danmu_gateway_connections{{{SEL}}})", "{{region}}")],
              "Client connections held by the region's gateways, every transport. Normal: follows "
              "the audience, smoothly. A sudden drop is a gateway or load-balancer loss (clients "
              "move to other regions): check the Gateway dashboard's closes by reason and the "
              "region's gateway pods." + runbook("DanmuRegionGatewaysGone")),
        panel("Deliveries/s (frames to members)", per_s("frames"),
              [q(rate("danmu_gateway_deliveries_total", "region"), "{{region}}")],
              "Frames queued to client connections per second: one per member per batch. Normal: "
              "rooms' members x batches; it moves with traffic and audience. Flat zero while "
              "messages are published means the gateways receive no edge batches: check the "
              "distributor dashboard and NATS."),
        panel("Messages delivered/s", per_s("msg"),
              [q(rate("danmu_gateway_messages_delivered_total", "region, priority"),
                 "{{region}} {{priority}}")],
              "Business messages reaching members per second (a batch of 20 counts 20 per "
              "member), by priority. Normal: high priority far below low. Low falling while "
              "shedding rises is congestion: see Shed messages/s."),
        panel("Publish-to-client latency p50/p99 by priority", SECONDS, [
            q(quantile(0.5, LATENCY, "region, priority"), "p50 {{region}} {{priority}}"),
            q(quantile(0.99, LATENCY, "region, priority"), "p99 {{region}} {{priority}}"),
        ], "From the publish to queueing on the gateway, per message (each at its batch's oldest "
           "message's delay, an upper bound). Normal: p99 within 50 ms for high priority and "
           "200 ms for low (hot rooms batch up to the window). Over budget: see the hops on the "
           "Gateway and Distributor dashboards to find the slow one." + runbook("DanmuLatencyP99OverBudget")),
        panel("Shed messages/s", per_s("msg"),
              [q(rate("danmu_gateway_shed_messages_total", "region, reason"),
                 "{{region}} {{reason}}")],
              "Low-priority messages a gateway dropped for a connection that could not keep up, "
              "by reason. Normal: zero or near it; high priority is never shed. Sustained: slow "
              "clients or an overloaded gateway; check write stalls and CPU on the Gateway "
              "dashboard."),
        panel("Bytes delivered/s", BYTES_PER_S,
              [q(rate("danmu_gateway_delivered_bytes_total", "region"), "{{region}}")],
              "Bytes written to clients per second (compressed where clients asked for it). "
              "Normal: follows deliveries; this is the egress bill. A jump without more "
              "deliveries means less compression: see the compression ratio."),
        panel("Compression ratio (compressed / raw)", RATIO, [q(
            f"sum by (region) (rate(danmu_distributor_batch_compressed_bytes_total{{{SEL}}}[{RI}]))"
            f" / sum by (region) (rate(danmu_distributor_batch_raw_bytes_total{{{SEL}}}[{RI}]))",
            "{{region}}")],
              "Compressed batch bytes over raw, lower is better. Normal: 20-50% for danmu-shaped "
              "text in busy rooms; near 100% when rooms are quiet (one message per batch is sent "
              "plain). Rising in busy rooms: payloads changed shape (already compressed, binary)."),
        panel("Consumer lag (pending messages)", COUNT,
              [q(f"sum by (region, priority) (danmu_distributor_consumer_pending_messages{{{SEL}}})",
                 "{{region}} {{priority}}")],
              "Messages stored in the push streams and not yet taken by the distributor. Normal: "
              "near zero. Growing: the distributor is down, stalled or too slow; check its pods "
              "and the Distributor dashboard." + runbook("DanmuConsumerLagGrowing")),
        panel("Reach rate (acked / settled)", RATIO, [q(
            f'sum by (region) (rate(danmu_gateway_reach_total{{outcome="acked", {SEL}}}[{RI}]))'
            f' / sum by (region) (rate(danmu_gateway_reach_total{{outcome=~"acked|expired", {SEL}}}[{RI}]))',
            "{{region}}")],
              "High-priority deliveries with an id that clients acknowledged, of those "
              "acknowledged or expired after the last retry. Normal: 99.9% or more (the "
              "objective); no data when no client acknowledges. Below: clients on bad networks "
              "or gateways cutting slow readers." + runbook("DanmuReachRateBelowObjective")),
    ]),
    ("NATS (prometheus-nats-exporter of the NATS chart)", [
        panel("NATS connections", COUNT,
              [q('sum by (region) (nats_varz_connections{region=~"$region"})', "{{region}}")],
              "Client connections to the region's NATS servers (services, publishers). Normal: "
              "steady, a few per service pod plus the business publishers. A drop: services "
              "lost NATS (their /readyz fails); check the NATS pods."),
        panel("NATS messages in/out per second", per_s("msg"), [
            q(f'sum by (region) (rate(nats_varz_in_msgs{{region=~"$region"}}[{RI}]))', "in {{region}}"),
            q(f'sum by (region) (rate(nats_varz_out_msgs{{region=~"$region"}}[{RI}]))', "out {{region}}"),
        ], "Messages into and out of the region's NATS servers. Normal: out above in (edge "
           "batches reach every gateway with members). In without out: subscribers are gone."),
        panel("NATS slow consumers", COUNT,
              [q('sum by (region) (nats_varz_slow_consumers{region=~"$region"})', "{{region}}")],
              "Connections NATS cut off for not reading fast enough, a running total since each "
              "server started. Normal: flat. A step: a gateway or distributor fell behind NATS; "
              "find which in the gateway's NATS errors." + runbook("DanmuNatsSlowConsumers")),
    ]),
]

GATEWAY = [
    ("Connections", [
        panel("Connections by transport", COUNT,
              [q(f"sum by (region, instance, transport) (danmu_gateway_connections{{{SEL}}})",
                 "{{region}} {{instance}} {{transport}}")],
              "Connections each gateway holds, per transport. Normal: even across instances of a "
              "region (node lists send clients to the least loaded). One instance far above the "
              "others: clients bypass node lists, or it restarted last and fills up."),
        panel("Connections / cap", RATIO, [q(
            f"sum by (region, instance) (danmu_gateway_connections{{{SEL}}})"
            f" / on (region, instance) max by (region, instance) (danmu_gateway_max_connections{{{SEL}}})",
            "{{region}} {{instance}}")],
              "Connections against max_connections; gateways without a cap show nothing. Normal: "
              "below 70%. Above 90%: new clients are refused soon; add replicas (the autoscaler "
              "should) or raise the cap." + runbook("DanmuGatewayNearConnectionCap")),
        panel("Rooms with members", COUNT,
              [q(f"sum by (region, instance) (danmu_gateway_rooms{{{SEL}}})", "{{region}} {{instance}}")],
              "Rooms with at least one member on each gateway: each is one NATS subscription. "
              "Normal: follows the audience. Far more rooms than expected: clients join rooms "
              "they do not watch."),
        panel("Accepts/s by transport", per_s("conn"),
              [q(rate("danmu_gateway_connections_accepted_total", "region, transport"),
                 "{{region}} {{transport}}")],
              "New connections per second. Normal: steady churn. A spike: a reconnect storm "
              "(another gateway or region drained or died) or a client bug."),
        panel("Closes/s by reason", per_s("conn"),
              [q(rate("danmu_gateway_connections_closed_total", "region, reason"),
                 "{{region}} {{reason}}")],
              "Connections closed per second, by reason. Normal: mostly client closes. "
              "slow_consumer rising: clients cannot keep up (see write stalls); auth or "
              "protocol reasons: a broken client release or an attack."),
        panel("Auth results/s", per_s("auth"),
              [q(rate("danmu_gateway_auth_total", "region, result"), "{{region}} {{result}}")],
              "AUTH attempts per second by result. Normal: almost all ok. Expired or bad tokens "
              "rising: clients reuse old tokens, or control's signing key differs from the "
              "gateways' public key."),
    ]),
    ("Delivery", [
        panel("Deliveries/s by priority", per_s("frames"),
              [q(rate("danmu_gateway_deliveries_total", "region, priority"), "{{region}} {{priority}}")],
              "Frames queued to connections per second, by priority. Normal: moves with traffic. "
              "Zero while messages are published: no edge batches arrive (check the distributor)."),
        panel("Bytes/s by priority", BYTES_PER_S,
              [q(rate("danmu_gateway_delivered_bytes_total", "region, priority"), "{{region}} {{priority}}")],
              "Bytes written to clients per second, by priority: the gateways' egress. Normal: "
              "follows deliveries. Watch it against the nodes' network capacity."),
        panel("Latency p99 by priority and scope", SECONDS,
              [q(quantile(0.99, LATENCY, "region, priority, scope"), "{{region}} {{priority}} {{scope}}")],
              "Publish to queueing at the gateway, p99, by priority and push scope. Normal: high "
              "within 50 ms, low within 200 ms. One scope alone slow points at its path (e.g. "
              "user scope: offline store); all slow: the distributor or NATS." + runbook("DanmuLatencyP99OverBudget")),
        panel("Latency p50 by priority and scope", SECONDS,
              [q(quantile(0.5, LATENCY, "region, priority, scope"), "{{region}} {{priority}} {{scope}}")],
              "The median of the same delay. Normal: a few ms for high priority; up to the "
              "aggregation window for low priority in hot rooms. A rising median with a flat "
              "p99 is the window widening under load, which is by design."),
        panel("Edge batches received/s by outcome", per_s("batches"),
              [q(rate("danmu_gateway_batches_received_total", "region, outcome"), "{{region}} {{outcome}}")],
              "Batches the gateways received from the distributor, by outcome. Normal: mostly "
              "delivered. Rejected or undecodable batches: the distributor and gateway versions "
              "disagree on the edge format; roll them to one version."),
        panel("Encodings built/s by variant", per_s("encodings"),
              [q(rate("danmu_gateway_variant_encodes_total", "region, variant"), "{{region}} {{variant}}")],
              "Batch encodings a gateway builds for clients that asked for another compression "
              "(once per batch, never per connection). Normal: low; high when many clients ask "
              "for zlib or raw instead of brotli."),
    ]),
    ("Hops and slow readers", [
        panel("Hop: distributor to gateway, p99", SECONDS,
              [q(quantile(0.99, "danmu_gateway_edge_transit_seconds", "region, priority"), "{{region}} {{priority}}")],
              "From the distributor publishing a batch to this gateway receiving it (the hosts' "
              "clocks: skew shows here). Normal: a few ms inside a region. High: NATS is "
              "congested or the gateway's NATS link is slow (see NATS slow consumers)."),
        panel("Hop: one batch's fan-out, p99", SECONDS,
              [q(quantile(0.99, "danmu_gateway_fanout_seconds", "region, priority"), "{{region}} {{priority}}")],
              "Queueing one batch for every member of its group. Normal: well under a ms per "
              "thousand members. High: the gateway is CPU-bound; add replicas."),
        panel("Hop: queued to the connection task, p99", SECONDS,
              [q(quantile(0.99, "danmu_gateway_queue_wait_seconds", "region, instance"), "{{region}} {{instance}}")],
              "A batch queued for a connection until its task takes it for the socket (sampled, "
              "1 connection in 64). Normal: under a few ms. High: the gateway's threads are "
              "saturated; check CPU."),
        panel("Write stalls/s", per_s("stalls"),
              [q(f"sum by (region, instance) (rate(danmu_gateway_write_stalls_total{{{SEL}}}[{RI}]))",
                 "{{region}} {{instance}}")],
              "A connection's socket would not take what was waiting: its reader fell behind. "
              "Normal: low, from clients on bad networks. Rising everywhere: the gateways' "
              "network is saturated."),
        panel("Write-blocked connections", COUNT,
              [q(f"sum by (region, instance) (danmu_gateway_write_blocked_connections{{{SEL}}})",
                 "{{region}} {{instance}}")],
              "Connections waiting for their socket now. They are cut off after "
              "write_stall_timeout without progress, or when the queue overflows. Normal: a "
              "handful. Many: see write stalls."),
        panel("Bytes waiting in write-blocked connections", BYTES,
              [q(f"sum by (region, instance) (danmu_gateway_write_blocked_bytes{{{SEL}}})",
                 "{{region}} {{instance}}")],
              "Memory held for blocked connections' queues. Normal: kilobytes. Growing toward "
              "the pod's memory limit: lower the queue bounds or write_stall_timeout."),
    ]),
    ("High reach", [
        panel("Reach outcomes/s", per_s("deliveries"),
              [q(rate("danmu_gateway_reach_total", "region, outcome"), "{{region}} {{outcome}}")],
              "High-priority deliveries with an id, by outcome: delivered, acked, retried, "
              "expired. Normal: acked close to delivered, expired zero. Expired next to retried: "
              "clients stop acknowledging (network or client bug)." + runbook("DanmuHighPriorityLoss")),
        panel("Presence events/s", per_s("events"),
              [q(rate("danmu_gateway_presence_events_total", "region, event"), "{{region}} {{event}}")],
              "Enter and exit events published for business. Normal: follows joins and leaves. "
              "Enters far above exits for long: connections are not closing (heartbeat timeouts "
              "too long)."),
        panel("Upstream danmu/s by result", per_s("msg"),
              [q(rate("danmu_gateway_upstream_total", "region, result"), "{{region}} {{result}}")],
              "Danmu sent by clients, by result (passed, rate-limited, denied, filtered). "
              "Normal: mostly passed. Rate-limited or denied spiking: a flood or spam wave; the "
              "limits are doing their job."),
        panel("Offline reads/s by outcome", per_s("reads"),
              [q(rate("danmu_gateway_offline_reads_total", "region, outcome"), "{{region}} {{outcome}}")],
              "Reads of a connecting user's waiting user-scope messages. Normal: one per user "
              "connect, mostly found or empty. Errors: the offline stream is unavailable (check "
              "JetStream)."),
    ]),
]

DISTRIBUTOR = [
    ("Throughput", [
        panel("Messages in/s by priority", per_s("msg"),
              [q(rate("danmu_distributor_messages_in_total", "region, priority"), "{{region}} {{priority}}")],
              "Messages the distributor takes from the push streams. Normal: what business "
              "publishes. Below the publish rate: the distributor falls behind (see consumer lag)."),
        panel("Batches out/s by priority", per_s("batches"),
              [q(rate("danmu_distributor_batches_out_total", "region, priority"), "{{region}} {{priority}}")],
              "Edge batches published to gateways. Normal: at most one per room per window for "
              "low priority; one per message for high priority (not aggregated)."),
        panel("Batch size p50/p99 (messages)", COUNT, [
            q(quantile(0.5, "danmu_distributor_batch_messages", "region, priority"), "p50 {{region}} {{priority}}"),
            q(quantile(0.99, "danmu_distributor_batch_messages", "region, priority"), "p99 {{region}} {{priority}}"),
        ], "Messages per batch. Normal: 1 for quiet rooms and high priority; tens in hot rooms. "
           "Always 1 under heavy traffic: the window is 0 or rooms are all quiet."),
        panel("Aggregation window", SECONDS,
              [q(f"max by (region, priority) (danmu_distributor_window_seconds{{{SEL}}})", "{{region}} {{priority}}")],
              "The configured aggregation window: a hot room's messages wait at most this long "
              "to share a batch. Normal: constant (configuration). It bounds the low-priority "
              "latency budget."),
    ]),
    ("Hops", [
        panel("Hop: stream to distributor, p99", SECONDS,
              [q(quantile(0.99, "danmu_distributor_stream_wait_seconds", "region, priority"), "{{region}} {{priority}}")],
              "From JetStream storing a message to this distributor receiving it. Normal: a few "
              "ms. High: consumer lag, or JetStream is slow (disk, replicas)." + runbook("DanmuConsumerLagGrowing")),
        panel("Stored to batch published, p99", SECONDS,
              [q(quantile(0.99, "danmu_distributor_batch_delay_seconds", "region, priority"), "{{region}} {{priority}}")],
              "From JetStream storing a batch's oldest message to the batch's publish. Normal: "
              "the window plus a few ms. Much more than the window: the distributor is CPU-bound."),
    ]),
    ("Compression", [
        panel("Compression ratio p50 by priority", RATIO,
              [q(quantile(0.5, "danmu_distributor_compression_ratio", "region, priority"), "{{region}} {{priority}}")],
              "Compressed size over raw, per compressed batch, median. Normal: 20-50% for "
              "danmu-shaped text. Near 100%: payloads are already compressed or random."),
        panel("Compression time p99", SECONDS,
              [q(quantile(0.99, "danmu_distributor_compress_seconds", "region, priority"), "{{region}} {{priority}}")],
              "Time to compress one batch (once, for every gateway). Normal: well under a ms. "
              "High: huge batches; lower the window's message cap."),
        panel("Raw and compressed bytes/s", BYTES_PER_S, [
            q(rate("danmu_distributor_batch_raw_bytes_total", "region, priority"), "raw {{region}} {{priority}}"),
            q(rate("danmu_distributor_batch_compressed_bytes_total", "region, priority"),
              "compressed {{region}} {{priority}}"),
        ], "Batch bytes before and after compression: the gap is what compression saves on "
           "every hop after the distributor. Normal: compressed well below raw in busy rooms."),
    ]),
    ("Consumers", [
        panel("Consumer pending (lag)", COUNT,
              [q(f"max by (region, priority) (danmu_distributor_consumer_pending_messages{{{SEL}}})",
                 "{{region}} {{priority}}")],
              "Messages waiting in the push streams for the distributor (sampled every 5 s). "
              "Normal: near zero. Growing: the distributor is down or too slow; a standby takes "
              "over if the active one dies." + runbook("DanmuConsumerLagGrowing")),
        panel("Consumer ack pending", COUNT,
              [q(f"max by (region, priority) (danmu_distributor_consumer_ack_pending_messages{{{SEL}}})",
                 "{{region}} {{priority}}")],
              "Messages delivered to the distributor and not yet acknowledged. Normal: up to a "
              "window's worth. At the consumer's max_ack_pending: JetStream stops delivering; "
              "check for ack errors."),
        panel("Sampled out/s (big-room degrade)", per_s("msg"),
              [q(rate("danmu_distributor_sampled_out_total", "region, priority"), "{{region}} {{priority}}")],
              "Messages of rooms past low.max_rate, acknowledged without delivery. Normal: 0 "
              "unless configured; with it, only in the hottest rooms during peaks."),
        panel("Offline stores/s", per_s("msg"),
              [q(f"sum by (region) (rate(danmu_distributor_offline_stored_total{{{SEL}}}[{RI}]))", "{{region}}")],
              "User-scope messages stored for users who are not connected. Normal: follows "
              "user-scope pushes. Zero while users are offline and pushed to: check the "
              "DANMU_OFFLINE stream."),
    ]),
]

CONTROL = [
    ("Routing", [
        panel("Node-list answers/s by region and outcome", per_s("req"),
              [q(rate("danmu_control_node_list_requests_total", "region, outcome"),
                 "{{region}} {{outcome}}")],
              "GET /v1/nodes answers by the client's region and outcome (nodes, no_nodes, "
              "polling, unknown_region). Normal: nodes. no_nodes: a region has no healthy "
              "gateway; unknown_region: clients ask for a region nobody serves." + runbook("DanmuRegionGatewaysGone")),
        panel("Healthy gateways by region (as control sees them)", COUNT,
              [q(f"max by (region) (danmu_control_nodes{{{SEL}}})", "{{region}}")],
              "Gateways with a fresh, non-draining report in the nodes bucket. Normal: the "
              "region's replica count. 0: clients of that region go to other regions; check the "
              "gateways and their NATS link." + runbook("DanmuRegionGatewaysGone")),
        panel("Routing rules in force", COUNT,
              [q(f"max by (region, instance, version) (danmu_control_routing_rules_info{{{SEL}}}"
                 f" * on (instance) group_left danmu_control_routing_rules{{{SEL}}})",
                 "{{region}} {{instance}} {{version}}")],
              "Rule count, labelled with the rules' version hash. Normal: one version on every "
              "instance. Two versions for long: a rollout is stuck; instances disagree on "
              "routing."),
    ]),
    ("Tokens and HTTP", [
        panel("Tokens issued and refused/s", per_s("tokens"), [
            q(f"sum by (region) (rate(danmu_control_tokens_issued_total{{{SEL}}}[{RI}]))", "{{region}} issued"),
            q(rate("danmu_control_token_requests_rejected_total", "region, reason"), "{{region}} refused: {{reason}}"),
        ], "Tokens control signed, and requests refused by reason. Normal: issued follows "
           "logins, refusals near zero. bad_key refusals: a backend uses a wrong or retired API "
           "key."),
        panel("HTTP p99 by route", SECONDS,
              [q(quantile(0.99, "danmu_control_http_request_duration_seconds", "region, route"),
                 "{{region}} {{route}}")],
              "Control's answer time per route, p99. Normal: a few ms (everything is in "
              "memory). High: the instance is CPU-bound; add replicas."),
        panel("HTTP requests/s by status", per_s("req"),
              [q(f"sum by (region, status) (rate(danmu_control_http_request_duration_seconds_count{{{SEL}}}[{RI}]))",
                 "{{region}} {{status}}")],
              "Requests per second by HTTP status. Normal: mostly 200. 401: bad API keys; 400 and "
              "404: malformed queries or unknown regions from clients; 5xx: look at control's logs."),
    ]),
    ("Presence", [
        panel("Online connections (summed reports)", COUNT,
              [q(f"max by (region) (danmu_control_online_connections{{{SEL}}})", "{{region}}")],
              "Connections as the gateways' online reports sum them. Normal: equals the Gateway "
              "dashboard's connections. Lower: some gateways' reports do not arrive."),
        panel("Gateways reporting online counts", COUNT,
              [q(f"max by (region) (danmu_control_online_gateways{{{SEL}}})", "{{region}}")],
              "Gateways whose online reports control holds. Normal: every running gateway. "
              "Fewer: a gateway cannot publish its reports (NATS permissions or link)."),
        panel("Top rooms by members", COUNT,
              [q(f"topk(10, max by (room) (danmu_control_room_online{{{SEL}}}))", "room {{room}}")],
              "The ten rooms with most members, fabric-wide. Normal: the events of the moment. "
              "A room far above the rest is a hot room: watch its latency and shedding."),
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


def undescribed_panels(path):
    """Titles of the panels (rows aside) of a dashboard file that have no description."""
    board = json.loads(path.read_text())
    return [p.get("title", "?") for p in board["panels"]
            if p.get("type") != "row" and not p.get("description", "").strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    stale, undescribed = [], []
    OUT.mkdir(parents=True, exist_ok=True)
    for uid, title, instance_metric, rows in DASHBOARDS:
        path = OUT / f"{uid.removeprefix('danmu-')}.json"
        rendered = build(uid, title, instance_metric, rows)
        if args.check:
            if not path.exists() or path.read_text() != rendered:
                stale.append(str(path))
            else:
                undescribed.extend(f"{path.name}: {title}" for title in undescribed_panels(path))
        else:
            path.write_text(rendered)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python3 ops/dashboards/generate.py):", *stale, sep="\n  ")
    if undescribed:
        print("panels without a description:", *undescribed, sep="\n  ")
    if stale or undescribed:
        sys.exit(1)


if __name__ == "__main__":
    main()
