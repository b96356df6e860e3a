//! danmu control: the HTTP service clients and business backends ask before connecting. It
//! issues signed tokens that gateways verify locally, and answers "where do I connect" from the
//! health reports gateways keep in a NATS KV bucket. It holds no state of its own.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, `DANMU_CONTROL__*` overrides, validation naming the
//!   bad key.
//! - [`keys`]: the Ed25519 signing key and the public key derived from it.
//! - [`tokens`]: `POST /v1/tokens` and `GET /v1/public-key`.
//! - [`routing`]: pure node selection: the node table, freshness, region resolution (hint,
//!   CIDR table, default), ordering, routing rules. No IO, `now` passed in.
//! - [`nodes`]: `GET /v1/nodes`, the HTTP face of [`routing`].
//! - [`node_table`]: the task that mirrors the KV bucket into the shared node table.
//! - [`presence`]: online counts summed across gateways and regions, the online query over
//!   NATS, and exits for the connections of gateways that died (when `region` is set).
//! - [`metrics`]: metric names and the request-duration middleware.
//! - [`serve`]: the HTTP/1.1 listener with bounds on slow clients (header and request
//!   timeouts, a connection cap), and the request-deadline middleware.
//! - [`error`]: errors as `{"error": "..."}` JSON.
//!
//! [`app`] builds the router (tested with `oneshot`, no server); [`run`] connects to NATS and
//! serves a bound listener until its shutdown future completes, then stops its tasks ([`Tasks`])
//! and waits for them.

pub mod config;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod node_table;
pub mod nodes;
pub mod presence;
pub mod routing;
pub mod serve;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::routing::{get, post};
use danmu_runtime::origins::AllowedOrigins;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::{info, warn};

pub use config::{CidrRegion, Config, ConfigError, Secret};
pub use keys::SigningKeys;
pub use node_table::SharedNodes;

/// How often stale reports are pruned and the node gauge refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(1);

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

struct Inner {
    keys: SigningKeys,
    api_keys: Vec<Secret>,
    lifetimes: tokens::TokenLifetimes,
    routing: routing::Routing,
    trust_forwarded_for: bool,
    node_ttl: Duration,
    nodes: Arc<SharedNodes>,
    demo_page: bool,
    request_timeout: Duration,
    allowed_origins: AllowedOrigins,
}

impl AppState {
    /// State for `config`, signing with `keys`, reading gateways from `nodes`.
    pub fn new(config: &Config, keys: SigningKeys, nodes: Arc<SharedNodes>) -> Self {
        AppState {
            inner: Arc::new(Inner {
                keys,
                api_keys: config.api_keys.clone(),
                lifetimes: tokens::TokenLifetimes {
                    default_ttl: config.token_ttl,
                    max_ttl: config.token_max_ttl,
                },
                routing: routing::Routing::from_config(config),
                trust_forwarded_for: config.trust_forwarded_for,
                node_ttl: config.node_ttl,
                nodes,
                demo_page: config.demo_page,
                request_timeout: config.http_request_timeout,
                // `Config::validate` refuses a bad list before `run` gets here.
                allowed_origins: AllowedOrigins::new(&config.allowed_origins).unwrap_or_default(),
            }),
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Replaces the system clock (tests pin `now`).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// The node table the handlers read.
    pub fn nodes(&self) -> &Arc<SharedNodes> {
        &self.inner.nodes
    }
}

/// The HTTP API. Every request is bounded by `http_request_timeout` ([`serve::request_deadline`]);
/// with `allowed_origins` set, CORS answers preflights and names an allowed origin ([`cors`]).
pub fn app(state: AppState) -> Router {
    let router: Router<AppState> = if state.inner.demo_page {
        Router::new()
            .route("/demo/", get(demo_page))
            .route("/demo/demo.js", get(demo_script))
            // Without the slash the page's relative `demo.js` would resolve to `/demo.js`.
            .route("/demo", get(to_demo_page))
            .route("/", get(to_demo_page))
    } else {
        Router::new()
    };
    let router = router
        .route(
            "/v1/tokens",
            post(tokens::issue).layer(DefaultBodyLimit::max(tokens::MAX_BODY_BYTES)),
        )
        .route("/v1/public-key", get(tokens::public_key))
        .route("/v1/nodes", get(nodes::list))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::from_fn_with_state(
            state.inner.request_timeout,
            serve::request_deadline,
        ))
        .layer(axum::middleware::from_fn(metrics::track_duration));
    let router = match cors(&state.inner.allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

/// CORS (Fetch standard) for `origins`; none when the list is empty, so no page of another
/// origin can read an answer. A preflight (`OPTIONS` with `Access-Control-Request-Method`) is
/// answered here, for any path, with the methods and headers the API takes; an answer carries
/// `Access-Control-Allow-Origin` only when the request's `Origin` is allowed. No credentials
/// mode: the API authenticates with a bearer key, not cookies.
pub fn cors(origins: &AllowedOrigins) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins = origins.clone();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                origin.to_str().is_ok_and(|origin| origins.allows(origin))
            }))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(CORS_MAX_AGE),
    )
}

/// How long a browser may cache a preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The demo page, built into the binary so a local fabric needs no static file server.
async fn demo_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../web/demo/index.html"))
}

/// The demo page's script: `web/demo/demo.js`, bundled from `web/demo/src` and `web/client`
/// by `web/build.mjs` and committed, so building control needs no Node.
async fn demo_script() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        include_str!("../../web/demo/demo.js"),
    )
}

/// Redirects to `/demo/`, keeping the query (`/demo?room=7` → `/demo/?room=7`).
async fn to_demo_page(uri: axum::http::Uri) -> axum::response::Redirect {
    match uri.query() {
        Some(query) => axum::response::Redirect::temporary(&format!("/demo/?{query}")),
        None => axum::response::Redirect::temporary("/demo/"),
    }
}

/// Ready once the node table has caught up with the bucket: before that a node list could be
/// empty for no reason.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.inner.nodes.is_synced() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "node table not loaded yet\n",
        )
    }
}

/// Why control could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration or the signing key cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The `nats_*` settings cannot be used.
    #[error(transparent)]
    Nats(#[from] danmu_runtime::nats::NatsConfigError),
    /// NATS refused or never answered the connection.
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    /// The nodes bucket could neither be opened nor created.
    #[error(transparent)]
    NodesBucket(#[from] danmu_runtime::jetstream::BucketError),
    /// Presence (its stream or subscriptions) could not start.
    #[error("starting presence: {0}")]
    Presence(#[from] presence::StartError),
    /// The HTTP listener failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// Control's background tasks: spawned into one tracker, stopped by one token, waited for on
/// shutdown (never polled for).
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Spawns `task`; it is dropped at its next `.await` once [`Tasks::shutdown`] starts.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Stops every task and waits until all of them have ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Serves control on `listener` until `shutdown` completes.
///
/// Validates `config`, loads the signing key, connects to NATS, and opens (or creates) the
/// nodes bucket ([`danmu_runtime::jetstream::nodes_bucket`]). It then spawns the bucket watcher,
/// the node gauge refresher and, when `region` is set, presence's tasks ([`presence::start`]),
/// and serves HTTP. Once `shutdown` completes it stops taking connections, lets requests in
/// flight finish, stops every task it spawned and returns when all have ended. Dropping the
/// returned future (aborting its task) stops the spawned tasks too.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate()?;
    let keys = SigningKeys::load(&config)?;
    if config.api_keys.is_empty() {
        warn!("api_keys is empty: anyone can get a token from POST /v1/tokens (local demo only)");
    }
    metrics::describe();

    let (options, servers) = danmu_runtime::nats::connect_options("danmu-control", &config.nats())?;
    let client = options
        .connect(servers)
        .await
        .map_err(|source| Error::Connect {
            url: danmu_runtime::nats::redact(&config.nats_url),
            source,
        })?;
    let js = async_nats::jetstream::new(client.clone());
    let kv =
        danmu_runtime::jetstream::nodes_bucket(&js, &config.nodes_bucket, config.node_ttl).await?;

    let tasks = Tasks::default();
    // Whatever way this function ends (an error below, or its task aborted), the tasks stop.
    let _stop_tasks = tasks.stop.clone().drop_guard();
    let nodes = SharedNodes::new(config.node_ttl);
    tasks.spawn(node_table::watch(kv, nodes.clone()));
    if let Some(region) = &config.region {
        let settings = presence::Settings {
            region: region.clone(),
            publish_interval: config.online_publish_interval,
            top_rooms: config.top_rooms,
            max_age: config.presence_max_age,
            node_ttl: config.node_ttl,
        };
        presence::start(client, nodes.clone(), settings, &tasks).await?;
    }
    let known_regions = config
        .regions
        .iter()
        .chain([&config.default_region])
        .chain(config.cidr_regions.iter().map(|row| &row.region))
        .cloned()
        .collect::<Vec<_>>();
    tasks.spawn(node_table::publish_gauges(
        nodes.clone(),
        known_regions,
        GAUGE_PERIOD,
    ));
    // Re-set with the other gauges, or the exporter's idle timeout would drop them.
    let rules = config.rules.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_PERIOD);
        loop {
            tick.tick().await;
            metrics::routing_rules(&rules);
        }
    });
    let state = AppState::new(&config, keys, nodes);

    let addr = listener.local_addr().map_err(Error::Serve)?;
    info!(%addr, bucket = %config.nodes_bucket, "control serving");
    let served = serve::serve(listener, app(state), config.http_limits(), shutdown).await;
    tasks.shutdown().await;
    served.map_err(Error::Serve)?;
    info!("control stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
