//! Metric names (Prometheus conventions) and the request-duration middleware. The exporter is
//! installed by the binary; without one, recording is a no-op (as in tests).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const TOKENS_ISSUED: &str = "danmu_control_tokens_issued_total";
/// Label `reason`: `missing_key`, `bad_key`, `bad_request`, `internal`.
pub const TOKEN_REQUESTS_REJECTED: &str = "danmu_control_token_requests_rejected_total";
/// Labels `region`: the client's resolved region, or `other` when nothing configured or
/// reported names it (client hints must not mint label values); `outcome`: `nodes` (a list
/// of at least one gateway), `no_nodes` (an empty list: no healthy gateway anywhere the
/// client may go), `polling` (a routing rule sent the client to HTTP polling) or
/// `unknown_region` (a region hint nothing names: answered 404, counted under `other`).
pub const NODE_LIST_REQUESTS: &str = "danmu_control_node_list_requests_total";
/// Label `region`: healthy gateways per region.
pub const NODES: &str = "danmu_control_nodes";
/// Labels `route` (the matched route, or `unmatched`) and `status`.
pub const HTTP_REQUEST_DURATION: &str = "danmu_control_http_request_duration_seconds";
/// HTTP connections open (at most `http_max_connections`).
pub const HTTP_CONNECTIONS: &str = "danmu_control_http_connections";
/// Requests answered 408 because they were not complete within `http_request_timeout`.
pub const HTTP_REQUEST_TIMEOUTS: &str = "danmu_control_http_request_timeouts_total";
/// KV values that did not decode as a `NodeReport`.
pub const NODE_REPORTS_INVALID: &str = "danmu_control_node_reports_invalid_total";
/// Times the KV watch had to be re-established.
pub const NODE_WATCH_RESTARTS: &str = "danmu_control_node_watch_restarts_total";

/// Connections in every room of every gateway, from the summed online reports.
pub const ONLINE_CONNECTIONS: &str = "danmu_control_online_connections";
/// Gateways whose online reports are in the sums.
pub const ONLINE_GATEWAYS: &str = "danmu_control_online_gateways";
/// Label `room`: members of the most populated rooms only (`top_rooms`), bounded cardinality.
pub const ROOM_ONLINE: &str = "danmu_control_room_online";
/// Connections the sweeper knows to be open on this region's gateways.
pub const PRESENCE_LIVE_CONNECTIONS: &str = "danmu_control_presence_live_connections";
/// Exits emitted for connections of gateways that died.
pub const PRESENCE_EXITS_EMITTED: &str = "danmu_control_presence_lost_exits_total";

/// Routing rules in force (from the configuration, fixed for the process's life).
pub const ROUTING_RULES: &str = "danmu_control_routing_rules";
/// Always 1; label `version`: the first 16 hex digits of an FNV-1a hash of the rules in
/// force, so a rollout shows which instances answer with which rules.
pub const ROUTING_RULES_INFO: &str = "danmu_control_routing_rules_info";

/// Exports the routing rules in force: their count and a version hash ([`ROUTING_RULES_INFO`]).
pub fn routing_rules(rules: &[crate::routing::Rule]) {
    gauge!(ROUTING_RULES).set(rules.len() as f64);
    gauge!(ROUTING_RULES_INFO, "version" => rules_version(rules)).set(1.0);
}

/// FNV-1a (64 bit) of the rules' debug rendering: stable for the same rules and build.
fn rules_version(rules: &[crate::routing::Rule]) -> String {
    let rendered = format!("{rules:?}");
    let hash = rendered
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Registers help texts with whatever recorder is installed.
pub fn describe() {
    describe_counter!(TOKENS_ISSUED, "Tokens issued.");
    describe_counter!(
        TOKEN_REQUESTS_REJECTED,
        "Token requests refused, by reason."
    );
    describe_counter!(
        NODE_LIST_REQUESTS,
        "Node list answers, by client region and outcome."
    );
    describe_gauge!(ROUTING_RULES, "Routing rules in force.");
    describe_gauge!(
        ROUTING_RULES_INFO,
        "Always 1; the version label hashes the routing rules in force."
    );
    describe_gauge!(NODES, "Healthy (fresh, not draining) gateways, by region.");
    describe_gauge!(
        ONLINE_CONNECTIONS,
        "Connections in rooms, summed over every gateway of every region."
    );
    describe_gauge!(ONLINE_GATEWAYS, "Gateways whose online reports are summed.");
    describe_gauge!(ROOM_ONLINE, "Members of the most populated rooms, by room.");
    describe_gauge!(
        PRESENCE_LIVE_CONNECTIONS,
        "Connections open on this region's gateways, as the enter/exit events tell."
    );
    describe_counter!(
        PRESENCE_EXITS_EMITTED,
        "Exit events emitted for connections of gateways that stopped reporting."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request handling time, by route and status."
    );
    describe_gauge!(HTTP_CONNECTIONS, "HTTP connections open.");
    describe_counter!(
        HTTP_REQUEST_TIMEOUTS,
        "HTTP requests answered 408: body or handling not complete within http_request_timeout."
    );
    describe_counter!(
        NODE_REPORTS_INVALID,
        "Node reports in the KV bucket that failed to decode."
    );
    describe_counter!(
        NODE_WATCH_RESTARTS,
        "Re-subscriptions of the nodes KV watch."
    );
}

/// Records every request's duration under its route pattern (bounded label values).
pub async fn track_duration(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let start = Instant::now();
    let response = next.run(request).await;
    histogram!(
        HTTP_REQUEST_DURATION,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(start.elapsed().as_secs_f64());
    response
}
