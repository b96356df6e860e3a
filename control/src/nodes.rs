//! `GET /v1/nodes?region=A&uid=42&device=..&version=..`: where a client should connect.
//! Resolves the client and the clock, then hands over to [`routing::select_nodes`]. A region
//! hint that neither the configuration nor any gateway report names is a 404, not a list of
//! other regions' gateways: a mistyped region is the caller's error to see (the demo page says
//! so the same way).

use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::NODE_LIST_REQUESTS;
use crate::routing::{self, Client, NodeEntry, Policy, check_region_name, client_ip};

/// Query parameters; all optional, unknown ones ignored (clients add their own).
#[derive(Debug, Default, Deserialize)]
pub struct NodesQuery {
    /// Region hint; overrides the IP lookup.
    pub region: Option<String>,
    pub uid: Option<u64>,
    pub device: Option<String>,
    /// Client version, matched by routing rules.
    pub version: Option<String>,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NodesResponse {
    /// The region the client was placed in.
    pub region: String,
    /// What the routing rules decided; `{"mode": "long_connection"}` unless a rule matched.
    pub policy: Policy,
    /// Best first.
    pub nodes: Vec<NodeEntry>,
    /// How long the client may reuse this list before asking again.
    pub ttl_secs: u64,
}

/// `GET /v1/nodes`.
pub async fn list(
    State(state): State<AppState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let hint = query.region.as_deref().filter(|r| !r.is_empty());
    if let Some(hint) = hint {
        check_region_name(hint)
            .map_err(|reason| ApiError::bad_request(format!("region: {reason}")))?;
    }
    let inner = &state.inner;
    let ip = client_ip(
        &headers,
        peer.map(|axum::Extension(ConnectInfo(addr))| addr),
        inner.trust_forwarded_for,
    );
    let (region, source) = inner.routing.region_map.resolve(hint, ip);
    let hinted = matches!(source, routing::RegionSource::Hint);
    let client = Client {
        region,
        uid: query.uid,
        device: query.device,
        version: query.version,
    };
    let now = i64::try_from(
        state
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);

    let (selection, known) = {
        let table = inner.nodes.read();
        let known =
            inner.routing.is_configured_region(&client.region) || table.has_region(&client.region);
        (
            routing::select_nodes(&table, &client, &inner.routing, now),
            known,
        )
    };
    if hinted && !known {
        counter!(NODE_LIST_REQUESTS, "region" => "other", "outcome" => "unknown_region")
            .increment(1);
        return Err(ApiError::not_found(format!(
            "unknown region {:?}: the configuration names no such region and no gateway reports \
             it (configured regions: {})",
            client.region,
            inner.routing.order.join(", ")
        )));
    }
    let label = if known {
        client.region.clone()
    } else {
        "other".to_owned()
    };
    let outcome = match selection.policy.mode {
        routing::Mode::Polling => "polling",
        routing::Mode::LongConnection if selection.nodes.is_empty() => "no_nodes",
        routing::Mode::LongConnection => "nodes",
    };
    counter!(NODE_LIST_REQUESTS, "region" => label, "outcome" => outcome).increment(1);
    tracing::debug!(
        region = %client.region, ?source, ?ip, nodes = selection.nodes.len(),
        "node list"
    );

    let body = NodesResponse {
        region: client.region,
        policy: selection.policy,
        nodes: selection.nodes,
        ttl_secs: inner.node_ttl.as_secs(),
    };
    // Per-client answers: shared caches must not hand one client's list to another.
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response())
}
