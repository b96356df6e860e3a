//! The HTTP API through `oneshot`: no server, no NATS; the node table is filled by hand and the
//! clock pinned.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use danmu_proto::internal::NodeReport;
use danmu_proto::token::{TokenVerifier, generate_keypair};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::nodes::NodesResponse;
use crate::routing::Mode;
use crate::tokens::TokenResponse;

const NOW_SECS: u64 = 1_700_000_000;

struct Fixture {
    state: AppState,
    public_pem: String,
}

fn fixture(config: Config) -> Fixture {
    let pair = generate_keypair();
    let keys = SigningKeys::from_private_pem(&pair.private_pem).unwrap();
    let nodes = SharedNodes::new(config.node_ttl);
    let state = AppState::new(&config, keys, nodes)
        .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW_SECS));
    Fixture {
        state,
        public_pem: pair.public_pem,
    }
}

fn keyed() -> Config {
    Config {
        api_keys: vec!["secret-key".into()],
        token_ttl: Duration::from_secs(3600),
        token_max_ttl: Duration::from_secs(7200),
        ..Config::default()
    }
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.to_vec())
}

fn token_request(bearer: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post("/v1/tokens").header(header::CONTENT_TYPE, "application/json");
    if let Some(bearer) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn error_of(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).expect("errors are JSON");
    value["error"].as_str().expect("an error field").to_owned()
}

#[tokio::test]
async fn good_key_gets_a_token_gateways_can_verify() {
    let f = fixture(keyed());
    let (status, body) = send(
        &f.state,
        token_request(
            Some("secret-key"),
            r#"{"uid":42,"device":"buvid","rooms":[1001],"ttl_secs":600}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: TokenResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer.expires_at, NOW_SECS + 600);
    assert_eq!(answer.ttl_secs, 600);

    let verifier = TokenVerifier::from_public_pem(&f.public_pem).unwrap();
    let claims = verifier.verify(&answer.token, NOW_SECS + 1).unwrap();
    assert_eq!(claims.uid, 42);
    assert_eq!(claims.sub, "42");
    assert_eq!(claims.dev, "buvid");
    assert_eq!(claims.rooms, Some(vec![1001]));
    assert_eq!(claims.exp, NOW_SECS + 600);
    assert!(verifier.verify(&answer.token, NOW_SECS + 600).is_err());
}

#[tokio::test]
async fn ttl_is_capped_and_defaulted() {
    let f = fixture(keyed());
    let (_, body) = send(
        &f.state,
        token_request(Some("secret-key"), r#"{"uid":1,"ttl_secs":999999}"#),
    )
    .await;
    let answer: TokenResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer.expires_at, NOW_SECS + 7200);
    let (_, body) = send(&f.state, token_request(Some("secret-key"), r#"{"uid":1}"#)).await;
    let answer: TokenResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer.expires_at, NOW_SECS + 3600);
    let claims = TokenVerifier::from_public_pem(&f.public_pem)
        .unwrap()
        .verify(&answer.token, NOW_SECS)
        .unwrap();
    assert_eq!(claims.rooms, None);
}

#[tokio::test]
async fn missing_or_wrong_bearer_is_401() {
    let f = fixture(keyed());
    for bearer in [None, Some("wrong"), Some("")] {
        let (status, body) = send(&f.state, token_request(bearer, r#"{"uid":1}"#)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert!(!error_of(&body).is_empty());
    }
    // Authentication comes before the body is even read.
    let (status, _) = send(&f.state, token_request(Some("wrong"), "not json")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_bodies_are_400_with_a_json_error() {
    let f = fixture(keyed());
    for body in [
        "not json",
        "{}",
        r#"{"uid":"x"}"#,
        r#"{"uid":1,"room":[1]}"#,
        r#"{"uid":1,"rooms":[]}"#,
        r#"{"uid":1,"ttl_secs":0}"#,
    ] {
        let (status, answer) = send(&f.state, token_request(Some("secret-key"), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(!error_of(&answer).is_empty(), "{body}");
    }
}

/// Go marshals a nil slice as `null`: a backend whose user has no rooms must get a 400, not a
/// token valid in every room.
#[tokio::test]
async fn null_rooms_is_400_not_every_room() {
    let f = fixture(keyed());
    for body in [
        r#"{"uid":1,"rooms":null}"#,
        r#"{"uid":1,"rooms":"1001"}"#,
        r#"{"uid":1,"ttl_secs":null}"#,
    ] {
        let (status, answer) = send(&f.state, token_request(Some("secret-key"), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = error_of(&answer);
        assert!(error.contains("invalid type"), "{body}: {error}");
    }
}

#[tokio::test]
async fn no_api_keys_means_open_issuing() {
    let f = fixture(Config::default());
    let (status, _) = send(&f.state, token_request(None, r#"{"uid":7}"#)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn public_key_is_served_as_pem() {
    let f = fixture(keyed());
    let (status, body) = send(
        &f.state,
        Request::get("/v1/public-key").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8(body).unwrap().trim(), f.public_pem.trim());
}

fn report(id: &str, region: &str, load: f64, age_secs: u64) -> NodeReport {
    let at = (NOW_SECS - age_secs) * 1000;
    NodeReport {
        node_id: id.into(),
        region: region.into(),
        ws_addr: format!("{id}:8080"),
        tcp_addr: format!("{id}:7070"),
        reported_unix_millis: at as i64,
        load,
        ..NodeReport::default()
    }
}

fn nodes_request(query: &str, peer: Option<&str>, forwarded: Option<&str>) -> Request<Body> {
    let mut request = Request::get(format!("/v1/nodes{query}"));
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let mut request = request.body(Body::empty()).unwrap();
    if let Some(peer) = peer {
        let addr: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(addr));
    }
    request
}

fn routed(trust_forwarded_for: bool) -> Fixture {
    let f = fixture(Config {
        regions: vec!["A".into(), "B".into()],
        cidr_regions: vec![CidrRegion {
            cidr: "10.2.0.0/16".parse().unwrap(),
            region: "B".into(),
        }],
        default_region: "A".into(),
        trust_forwarded_for,
        ..Config::default()
    });
    f.state.nodes().update(|table| {
        for r in [
            report("a1", "A", 0.5, 1),
            report("a2", "A", 0.1, 1),
            report("a-stale", "A", 0.0, 60),
            report("b1", "B", 0.3, 1),
        ] {
            table.put(&r.node_id.clone(), r);
        }
    });
    f
}

async fn node_list(state: &AppState, request: Request<Body>) -> NodesResponse {
    let (status, body) = send(state, request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn ids(response: &NodesResponse) -> Vec<&str> {
    response.nodes.iter().map(|n| n.node_id.as_str()).collect()
}

#[tokio::test]
async fn nodes_by_hint_cidr_and_default() {
    let f = routed(false);
    let by_hint = node_list(
        &f.state,
        nodes_request("?region=B&uid=42", Some("10.9.9.9:1"), None),
    )
    .await;
    assert_eq!(by_hint.region, "B");
    assert_eq!(ids(&by_hint), ["b1", "a2", "a1"]);
    assert_eq!(by_hint.policy.mode, Mode::LongConnection);
    assert_eq!(by_hint.ttl_secs, 15);

    let by_ip = node_list(&f.state, nodes_request("", Some("10.2.1.1:5555"), None)).await;
    assert_eq!(by_ip.region, "B");

    let by_default = node_list(&f.state, nodes_request("", None, None)).await;
    assert_eq!(by_default.region, "A");
    assert_eq!(ids(&by_default), ["a2", "a1", "b1"]);
}

#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted() {
    let request = || nodes_request("", Some("127.0.0.1:1"), Some("10.2.3.4"));
    assert_eq!(node_list(&routed(false).state, request()).await.region, "A");
    assert_eq!(node_list(&routed(true).state, request()).await.region, "B");
}

#[tokio::test]
async fn node_list_json_shape() {
    let f = routed(false);
    let (_, body) = send(&f.state, nodes_request("?region=B", None, None)).await;
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["region"], "B");
    assert_eq!(value["policy"], json!({"mode": "long_connection"}));
    assert_eq!(
        value["nodes"][0],
        json!({"node_id": "b1", "region": "B", "ws": "b1:8080", "wss": "", "tcp": "b1:7070",
               "tls": "", "quic": "", "webtransport": "", "cert_sha256": "", "load": 0.3})
    );
}

#[tokio::test]
async fn bad_node_queries_are_400() {
    let f = routed(false);
    for query in ["?uid=abc", "?region=a%20b"] {
        let (status, body) = send(&f.state, nodes_request(query, None, None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(!error_of(&body).is_empty());
    }
}

#[tokio::test]
async fn an_unknown_region_hint_is_404_not_a_fallback_list() {
    let f = routed(false);
    let (status, body) = send(&f.state, nodes_request("?region=Z", None, None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        error_of(&body).contains(r#"unknown region "Z""#),
        "{}",
        error_of(&body)
    );
    // A region only a gateway report names is known; so is a configured one without gateways.
    f.state
        .nodes()
        .update(|table| table.put("c1", report("c1", "C", 0.1, 1)));
    assert_eq!(
        node_list(&f.state, nodes_request("?region=C", None, None))
            .await
            .region,
        "C"
    );
    f.state.nodes().update(|table| {
        table.remove("b1");
    });
    assert_eq!(
        node_list(&f.state, nodes_request("?region=B", None, None))
            .await
            .region,
        "B"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let f = fixture(Config::default());
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(send(&f.state, get("/healthz")).await.0, StatusCode::OK);
    assert_eq!(
        send(&f.state, get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    f.state.nodes().mark_synced();
    assert_eq!(send(&f.state, get("/readyz")).await.0, StatusCode::OK);
    assert_eq!(send(&f.state, get("/nope")).await.0, StatusCode::NOT_FOUND);
}

#[test]
fn clock_is_pinned_in_fixtures() {
    let f = fixture(Config::default());
    assert_eq!(
        f.state
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
        Duration::from_secs(NOW_SECS)
    );
}

#[tokio::test]
async fn the_demo_page_is_served_only_when_enabled() {
    let get = || Request::get("/demo/").body(Body::empty()).unwrap();
    let off = fixture(Config::default());
    assert_eq!(send(&off.state, get()).await.0, StatusCode::NOT_FOUND);

    let on = fixture(Config {
        demo_page: true,
        ..Config::default()
    });
    let (status, body) = send(&on.state, get()).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(body).unwrap();
    assert!(
        page.contains("src=\"demo.js\""),
        "the page loads its script"
    );

    let script = Request::get("/demo/demo.js").body(Body::empty()).unwrap();
    let response = app(on.state.clone()).oneshot(script).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let script = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&script).contains("/v1/tokens"),
        "the script asks control for a token"
    );

    // Without the slash: a redirect that keeps the query, not an empty 404.
    for (path, to) in [("/demo", "/demo/"), ("/demo?room=7", "/demo/?room=7")] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app(on.state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert_eq!(response.headers()[header::LOCATION], to, "{path}");
    }
}

/// Sets its flag when dropped: the task holding it has ended.
struct Ended(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_returns_once_every_task_has_ended() {
    let tasks = Tasks::default();
    let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..3 {
        let flag = Ended(ended.clone());
        tasks.spawn(async move {
            let _flag = flag;
            // Yield a few times before going quiet, so the task is mid-flight at shutdown.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            std::future::pending::<()>().await;
        });
    }
    tasks.shutdown().await;
    assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 3);
}

async fn answer(state: &AppState, request: Request<Body>) -> axum::response::Response {
    app(state.clone()).oneshot(request).await.unwrap()
}

fn with_origin(method: &str, path: &str, origin: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::ORIGIN, origin)
}

fn preflight(path: &str, origin: &str, method: &str) -> Request<Body> {
    with_origin("OPTIONS", path, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, method)
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap()
}

fn allow_origin(response: &axum::response::Response) -> Option<&str> {
    response
        .headers()
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn without_allowed_origins_no_page_of_another_origin_may_read() {
    let f = fixture(keyed());
    let get = with_origin("GET", "/v1/nodes", "https://live.example")
        .body(Body::empty())
        .unwrap();
    let response = answer(&f.state, get).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allow_origin(&response), None);
    let response = answer(
        &f.state,
        preflight("/v1/nodes", "https://live.example", "GET"),
    )
    .await;
    assert_eq!(allow_origin(&response), None);
}

#[tokio::test]
async fn an_allowed_origin_gets_preflight_and_cors_headers() {
    let f = fixture(Config {
        allowed_origins: vec!["https://live.example".into()],
        ..keyed()
    });
    for (path, method) in [("/v1/nodes", "GET"), ("/v1/tokens", "POST")] {
        let response = answer(&f.state, preflight(path, "https://live.example", method)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(allow_origin(&response), Some("https://live.example"));
        let headers = response.headers();
        let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap();
        assert!(methods.contains(method), "{methods}");
        let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert!(headers.contains_key(header::ACCESS_CONTROL_MAX_AGE));
    }
    let get = with_origin("GET", "/v1/nodes", "https://live.example")
        .body(Body::empty())
        .unwrap();
    let response = answer(&f.state, get).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allow_origin(&response), Some("https://live.example"));
    let vary = response.headers()[header::VARY].to_str().unwrap();
    assert!(vary.to_ascii_lowercase().contains("origin"), "{vary}");
}

#[tokio::test]
async fn a_foreign_origin_gets_no_cors_headers() {
    let f = fixture(Config {
        allowed_origins: vec!["https://live.example".into()],
        ..keyed()
    });
    for origin in ["https://evil.example", "https://live.example.evil", "null"] {
        let response = answer(&f.state, preflight("/v1/nodes", origin, "GET")).await;
        assert_eq!(allow_origin(&response), None, "{origin}");
        let get = with_origin("GET", "/v1/nodes", origin)
            .body(Body::empty())
            .unwrap();
        assert_eq!(allow_origin(&answer(&f.state, get).await), None, "{origin}");
    }
}
