//! An API gateway with the whole Breakwater stack, on embedded defaults.
//!
//! Run with `cargo run --example gateway --features full`: it starts a simulated upstream
//! whose failure rate and latency change at run time, and a gateway on 127.0.0.1:8080 in front
//! of it, and prints the URLs and the generated ops token. Flags and their environment
//! variables are in `options.rs` (`--help` lists them).
//!
//! Requests under `/api/` go to the upstream with `/api` stripped, through the guards (the
//! authentication-failure guard on `/api/auth/...` and, with `--rate-limit`, a per-client rate
//! limit per route group: a refused client gets 429 before any breaker sees the request), a
//! fallback
//! (stale-if-error for GETs, also on timeouts), a service breaker (`upstream`), per-endpoint
//! breakers keyed by the matched route template (preset `read` for GET routes, `write` for
//! `POST /api/orders`, `auth` for `/api/auth/...`; any other path under `/api/` shares one
//! `catch-all` breaker), and inside each a time limit: reads 2 s, writes 5 s, auth 3 s,
//! catch-all 2 s, or `--upstream-timeout-ms` for all (`TimeLimitLayer`: on deadlines shared by
//! the calls starting within 1/64 of the limit, rounded up to whole milliseconds, so cancelled
//! up to that and a millisecond late). A call over its limit is answered 504
//! `UPSTREAM_TIMEOUT` (or from the stale cache) and counts as its breaker's failure. Bodies over
//! `--max-body-bytes` (10 MiB) are refused 413 `PAYLOAD_TOO_LARGE`.
//!
//! Health (`/health`, `/health/live`, `/health/ready`) is on the public listener. The ops API
//! (`/v1/...`) and Prometheus (`/metrics`) are too, unless `--ops-listen ADDR` serves them on
//! a listener of their own (the production layout: keep it on loopback or a private network);
//! then the public listener answers 404 there. `--ops-read-token` closes the ops API's reads.
//!
//! Both listeners bound their clients (`serve.rs`): a header timeout, a cap on connections,
//! HTTP/2 limits, and a graceful shutdown on Ctrl-C or SIGTERM.
//!
//! Logs go to the console (`RUST_LOG`, default `info`): every breaker transition and alert
//! shows as it happens. With `--alert-webhook URL` alerts are also posted there as they fire
//! and resolve (`--alert-format generic|slack|pagerduty`). With `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set, metrics and request traces are pushed over OTLP/HTTP (`telemetry.rs`).
//!
//! With `--redis URL` the replicas of the gateway share their breakers: a trip, a reset or a
//! forced state on one reaches the others through Redis (keys under `--redis-namespace`,
//! this replica named by `--replica-id`), read before the gateway serves; `--redis-quorum K`
//! and `--redis-shared-window-s S` switch on the quorum and the shared window. With Redis
//! down each replica goes on alone, and `/health` warns (`redis:store`).
//!
//! History per minute of every breaker and probe (`/v1/circuit-breaker/{name}/history`,
//! `/v1/probes/{name}/history`) is kept for 24 h; with `--state-dir DIR` it is also written to
//! SQLite there, with the transitions, the alerts and every change operators make through the
//! ops API, all read back (the changes made again) at the next start.
//!
//! Abusive clients: on `/api/auth/...` each client's 401/403 answers are counted, and a
//! client with 10 of them in 60 s is refused 429 with `Retry-After` for 60 s
//! (`--auth-failures`, `--auth-window-s`, `--auth-block-s`); `--rate-limit RPS` limits each
//! client per route group (`--rate-limit-groups reads=100,auth=5` sets groups apart). The
//! client is the peer, or the one `X-Forwarded-For`/`Forwarded` names when the peer is one of
//! `--trusted-proxies`.
#![allow(dead_code)]

#[path = "options.rs"]
mod options;
#[path = "serve.rs"]
mod serve;
#[path = "sim.rs"]
mod sim;
#[path = "telemetry.rs"]
pub(crate) mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::handler::Handler;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, any_service, get, get_service, post, post_service};
use breakwater::fleet::Fleet;
use breakwater::guard::{
    AuthGuard, AuthGuardLayer, GuardCollector, RateLimit, RateLimitLayer, TrustedProxies,
};
use breakwater::history::History;
use breakwater::history::queue::{QueueLayer, WriteQueue};
use breakwater::ops::{ApiError, OpsApi};
use breakwater::redis::RedisStore;
use breakwater::tower::fallback::{FallbackLayer, StaleCache};
use breakwater::tower::health::{HealthLayer, HealthRegistry, Probe};
use breakwater::tower::time_limit::TimeLimitLayer;
use breakwater::tower::{CircuitBreakerLayer, MethodAndRoute};
use breakwater::{Config, FamilyOptions, HealthMode, KeyedFamily, Registry, SlidingWindow};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower::util::Either;
use tower_http::LatencyUnit;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};

pub(crate) use options::Options;
pub(crate) use serve::Limits;
pub(crate) use sim::{Simulation, start_simulation};

// ----- the proxy -----

/// The proxy handler's state, shared (a route's service is cloned for every request).
#[derive(Clone)]
struct Proxy(Arc<ProxyState>);

struct ProxyState {
    client: Client<HttpConnector, Body>,
    upstream: Uri,
    max_body_bytes: u64,
}

async fn proxy(AxState(Proxy(p)): AxState<Proxy>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("request bodies are limited to {} bytes", p.max_body_bytes),
        )
        .into_response()
    };
    // A declared length over the limit is refused before the upstream is called; a streamed
    // body is cut at the limit (the upstream never gets a whole body over it).
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > p.max_body_bytes) {
        return too_large();
    }
    let limit = usize::try_from(p.max_body_bytes).unwrap_or(usize::MAX);
    let body = Body::new(http_body_util::Limited::new(body, limit));
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let base = p.upstream.to_string();
    let uri = format!("{}{pq}", base.trim_end_matches('/'));
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(_) => return ApiError::bad_request("bad path").into_response(),
    };
    parts.headers.remove(header::HOST);
    match p.client.request(Request::from_parts(parts, body)).await {
        Ok(res) => res.map(Body::new).into_response(),
        Err(e) if over_limit(&e) => too_large(),
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "UPSTREAM_ERROR",
            format!("the upstream could not be reached: {e}"),
        )
        .into_response(),
    }
}

/// Whether the request failed because its body went over the limit.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(e);
    while let Some(err) = e {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        e = err.source();
    }
    false
}

// ----- the gateway -----

/// A running gateway; dropping it stops its listeners as [`shut_down`](Self::shut_down) does
/// (without waiting).
#[derive(Debug)]
pub(crate) struct Gateway {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Where the ops API listens, when it has a listener of its own.
    pub(crate) ops_addr: Option<SocketAddr>,
    /// The breakers.
    pub(crate) registry: Registry,
    /// Its health.
    pub(crate) health: HealthRegistry,
    /// The simulation, when there is no real upstream.
    pub(crate) simulation: Option<Arc<Simulation>>,
    /// The upstream's base URL.
    pub(crate) upstream: Uri,
    /// The ops token.
    pub(crate) ops_token: String,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// The OTLP metric export, when on.
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
    /// The breakers shared through Redis, when on (dropping it stops sharing).
    pub(crate) fleet: Option<Fleet>,
    /// The breakers' and probes' history (in the state dir, when one is given).
    pub(crate) history: History,
    /// The writes queued while the upstream's breaker is open (with a state dir).
    pub(crate) queue: Option<WriteQueue>,
}

impl Gateway {
    /// Stops accepting, lets the requests in flight finish (within the grace period), and
    /// returns once every listener is closed.
    pub(crate) async fn shut_down(self) {
        let _ = self.shutdown.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        // The minute so far, into the state dir, which is then free for the next start.
        self.history.close().await;
        if let Some(queue) = &self.queue {
            queue.close();
        }
        if let Some(meters) = self.meters {
            // A last export; the exporter blocks, so off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || meters.shutdown()).await;
        }
    }
}

/// The upstream breaker's config: it trips on half the last 20 calls failing, and keeps a
/// histogram of every call's duration (`resilience_circuit_breaker_call_duration_seconds`).
fn upstream_config() -> Config {
    Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(20))
        .minimum_number_of_calls(10)
        .wait_in_open(Duration::from_secs(5))
        .record_call_durations(true)
        .health(HealthMode::Critical)
        .build()
        .expect("valid config")
}

fn family(registry: &Registry, preset: &str) -> KeyedFamily {
    let config = Config::preset_named(preset).expect("a preset");
    registry.family(preset, FamilyOptions::new(config).max_keys(256))
}

/// The route groups' time limits (`--upstream-timeout-ms` replaces them all).
struct RouteLimits {
    reads: Duration,
    writes: Duration,
    auth: Duration,
    catch_all: Duration,
}

impl RouteLimits {
    fn new(all: Option<Duration>) -> Self {
        let or = |d: u64| all.unwrap_or(Duration::from_secs(d));
        Self {
            reads: or(2),
            writes: or(5),
            auth: or(3),
            catch_all: or(2),
        }
    }
}

/// The gateway's API routes without any layer: what the gateway would be without Breakwater
/// (the same router, handler, client and server), for comparisons.
pub(crate) async fn start_bare(upstream: Uri) -> std::io::Result<SocketAddr> {
    let proxy_state = Proxy(Arc::new(ProxyState {
        client: Client::builder(TokioExecutor::new()).build_http(),
        upstream,
        max_body_bytes: Options::default().max_body_bytes,
    }));
    let api = Router::new()
        .route("/items", get(proxy))
        .route("/items/{id}", get(proxy))
        .route("/orders", post(proxy))
        .route("/auth/{*rest}", any(proxy))
        .fallback(any(proxy))
        .with_state(proxy_state);
    let app = Router::new().nest("/api", api);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve::serve(
        listener,
        app,
        Limits::default(),
        std::future::pending(),
    ));
    Ok(addr)
}

/// Builds and starts the gateway.
pub(crate) async fn start(options: Options) -> std::io::Result<Gateway> {
    let (upstream, simulation) = match options.upstream.clone() {
        Some(u) => (u, None),
        None => {
            let (addr, sim) = start_simulation().await?;
            (
                format!("http://{addr}").parse().expect("a valid URI"),
                Some(sim),
            )
        }
    };
    let registry = Registry::new();
    let service = registry.breaker_with("upstream", upstream_config());
    let read = family(&registry, "read");
    let write = family(&registry, "write");
    let auth = family(&registry, "auth");
    let catch_all =
        registry.breaker_with("catch-all", Config::preset_named("read").expect("a preset"));
    let limits = RouteLimits::new(options.upstream_timeout);
    let fallback = FallbackLayer::new()
        .events(&registry)
        .named("gateway")
        .on_failed_responses()
        .on_timeouts()
        .stale_if_error(StaleCache::new())
        .for_axum();
    let fallback_stats = fallback.stats();

    let proxy_state = Proxy(Arc::new(ProxyState {
        client: Client::builder(TokioExecutor::new()).build_http(),
        upstream: upstream.clone(),
        max_body_bytes: options.max_body_bytes,
    }));
    let guards = Guards::new(&options).map_err(std::io::Error::other)?;
    // Each route's whole stack, outermost first: the group's rate limit (with `--rate-limit`)
    // and the auth guard (auth routes), which refuse a client before anything else runs (the
    // breakers never see a refused request), then the fallback, the upstream's breaker, the
    // route's own breaker (its family's member for the method and route template) and the
    // group's time limit inside it (a call over it is cancelled, counted as the breaker's
    // failure and answered 504; `TimeLimitLayer` rather than tower's `Timeout`: 331 against
    // 650 instructions per call in `benches/instructions.rs`), then the handler. Built once per route rather than layered
    // on the router: axum boxes each `layer`/`route_layer` level, and a request clones every
    // level's box below the one it enters (measured in `benches/gateway.rs`). The guards wrap
    // the stack rather than sit inside it as optional layers: an absent layer is
    // `Either::Right`, whose future, as large as the guarded one, every layer above it moves.
    let stack = |own, limit: Duration| {
        ServiceBuilder::new()
            .layer(fallback.clone())
            .layer(CircuitBreakerLayer::new(service.clone()).for_axum())
            .layer(own)
            .layer(TimeLimitLayer::new(limit))
            .service(proxy.with_state(proxy_state.clone()))
    };
    // A route's own breaker: its family's member (`Left`), or one breaker (`Right`).
    let keyed = |f: &KeyedFamily| {
        Either::Left(CircuitBreakerLayer::keyed(f.clone(), MethodAndRoute).for_axum())
    };
    // The group's rate limit, outermost (an `Either`, `Right` without `--rate-limit`: outside
    // the stack, so no layer of it moves the larger future).
    let limited = |group: &str| ServiceBuilder::new().option_layer(guards.layer(group));
    let auth_guard = AuthGuardLayer::new(guards.auth.clone()).trusted(guards.trusted.clone());
    let api = Router::new()
        .route(
            "/items",
            get_service(limited("reads").service(stack(keyed(&read), limits.reads))),
        )
        .route(
            "/items/{id}",
            get_service(limited("reads").service(stack(keyed(&read), limits.reads))),
        )
        .route(
            "/orders",
            post_service(limited("writes").service(stack(keyed(&write), limits.writes))),
        )
        // Authentication: each client's 401/403 answers counted, too many of them refused 429.
        .route(
            "/auth/{*rest}",
            any_service(
                limited("auth")
                    .layer(auth_guard)
                    .service(stack(keyed(&auth), limits.auth)),
            ),
        )
        .fallback_service(limited("catch-all").service(stack(
            Either::Right(CircuitBreakerLayer::new(catch_all).for_axum()),
            limits.catch_all,
        )));

    let health = HealthRegistry::new(&registry);
    let probe_target: Uri = format!("{}/", upstream.to_string().trim_end_matches('/'))
        .parse()
        .expect("a valid URI");
    let probe_client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build_http();
    health.add_probe(
        Probe::http("upstream", probe_client, move || {
            let mut req = Request::new(Body::empty());
            *req.uri_mut() = probe_target.clone();
            req
        })
        .interval(Duration::from_secs(5))
        .timeout(Duration::from_secs(2))
        .failure_threshold(3)
        .breaker(service)
        .build()
        .expect("valid probe settings"),
    );

    // The ops router, outside every breaker: force-opening the service breaker never locks
    // operators out. On the public listener, or (with `--ops-listen`) on its own.
    let mut ops = OpsApi::new(&registry)
        .health(health.clone())
        .fallback("gateway", fallback_stats.clone())
        .token(options.ops_token.clone());
    // Shared breakers: the fleet's states are read before the listeners open.
    let fleet = match &options.redis {
        Some(shared) => Some(share(&registry, shared).await?),
        None => None,
    };
    if let Some(fleet) = &fleet {
        ops = ops.store(fleet.stats().clone());
    }
    ops = ops.collector(Arc::new(guards.collector()));
    // History: in memory, and with `--state-dir` kept across restarts with operators' changes
    // (made again when the ops router is built below). An unusable dir is reported, not fatal.
    let mut history = History::builder(&registry).probes(&health);
    if let Some(dir) = &options.state_dir {
        history = history.state_dir(dir);
    }
    let history = history.start().map_err(std::io::Error::other)?;
    history.add_health_check(&health);
    ops = ops.history(history.clone());
    let queue = match &options.state_dir {
        Some(dir) => match WriteQueue::builder().open(dir) {
            Ok(queue) => Some(queue),
            Err(e) => {
                eprintln!("breakwater: no write queue ({e}); writes are refused while open");
                None
            }
        },
        None => None,
    };
    if let Some(queue) = &queue {
        ops = ops.queue(queue.clone());
    }
    if let Some(t) = &options.ops_read_token {
        ops = ops.read_token(t.clone());
    }
    if let Some((url, format)) = &options.alert_webhook {
        let hook = breakwater::ops::webhook::WebhookNotifier::builder(url.clone())
            .format(format.clone())
            .spawn();
        ops = ops.notifier(Arc::new(hook));
    }
    let ops = ops.router();
    let meters = match &options.otel {
        Some(otlp) => Some(
            telemetry::start_metrics(otlp, &registry, &health, fallback_stats.clone())
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    // Each API request in a span that shows the breaker and the fallback (exported as a trace
    // when OTLP is on), once a `tracing` subscriber listens (`main` sets one): without one the
    // layer would cost ~5 % of the gateway's throughput for nothing (`benches/gateway.rs`).
    // Answers the gateway gives on purpose (503 while open, 504 on a time limit) are not errors
    // of the gateway: failed responses are logged at debug.
    let api = if tracing::dispatcher::has_been_set() {
        api.layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::DEBUG)
                        .latency_unit(LatencyUnit::Micros),
                )
                .on_body_chunk(())
                .on_eos(())
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
    } else {
        api
    };
    // With a state dir, writes to `POST /api/orders` (and any write with an `Idempotency-Key`)
    // are queued while the upstream's breaker is open, and replayed through it once it closes.
    let api = match &queue {
        Some(queue) => {
            let upstream = registry.get("upstream").expect("the upstream breaker");
            api.layer(
                QueueLayer::<Body>::new(queue.clone(), upstream).deferrable(|parts| {
                    parts.method == http::Method::POST && parts.uri.path() == "/orders"
                }),
            )
        }
        None => api,
    };
    let mut app = Router::new().nest("/api", api);
    if let Some(sim) = &simulation {
        app = app.merge(sim::router(sim.clone()));
    }
    let mut ops_app = None;
    match options.ops_listen {
        None => app = app.merge(ops).fallback(breakwater::ops::not_found),
        Some(_) => {
            // Public: health only (every `/v1/...` and `/metrics` is the fallback's 404).
            app = app
                .fallback(breakwater::ops::not_found)
                .layer(HealthLayer::new(health.clone()).for_axum());
            ops_app = Some(ops.fallback(breakwater::ops::not_found));
        }
    }

    let serve_limits = Limits {
        header_timeout: options.header_timeout,
        max_connections: options.max_connections,
        ..Limits::default()
    };
    let (shutdown, stop) = watch::channel(false);
    let stopped = move || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let listener = TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let mut servers = vec![tokio::spawn(serve::serve(
        listener,
        app,
        serve_limits,
        stopped(),
    ))];
    let mut ops_addr = None;
    if let (Some(at), Some(ops_app)) = (options.ops_listen, ops_app) {
        let listener = TcpListener::bind(at).await?;
        ops_addr = Some(listener.local_addr()?);
        servers.push(tokio::spawn(serve::serve(
            listener,
            ops_app,
            serve_limits,
            stopped(),
        )));
    }
    Ok(Gateway {
        addr,
        ops_addr,
        registry,
        health,
        simulation,
        upstream,
        ops_token: options.ops_token,
        shutdown,
        servers,
        meters,
        fleet,
        history,
        queue,
    })
}

/// The guards against abusive clients: the authentication-failure circuit (always on the
/// auth routes) and, with `--rate-limit`, a per-client rate limit per route group.
struct Guards {
    auth: AuthGuard,
    trusted: TrustedProxies,
    limits: Vec<(&'static str, RateLimit)>,
}

impl Guards {
    fn new(options: &Options) -> Result<Self, String> {
        let a = &options.auth_guard;
        let auth = AuthGuard::builder()
            .failures(a.failures)
            .window(a.window)
            .block(a.block)
            .build()
            .map_err(|e| format!("--auth-{e}"))?;
        let mut limits = Vec::new();
        for (group, rps) in &options.rate_limits {
            let limit = RateLimit::builder(*rps)
                .build()
                .map_err(|e| format!("--rate-limit: {e}"))?;
            limits.push((*group, limit));
        }
        Ok(Self {
            auth,
            trusted: options.trusted_proxies.clone(),
            limits,
        })
    }

    fn layer(&self, group: &str) -> Option<RateLimitLayer> {
        self.limits
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, l)| RateLimitLayer::new(l.clone()).trusted(self.trusted.clone()))
    }

    fn collector(&self) -> GuardCollector {
        let mut c = GuardCollector::new().auth("auth", &self.auth);
        for (group, limit) in &self.limits {
            c = c.rate_limit(group, limit);
        }
        c
    }
}

/// Shares the registry's breakers through Redis. A Redis that is down is no error: the
/// gateway starts on its own state, and `/health` says so (`redis:store`, warn).
async fn share(registry: &Registry, shared: &options::Shared) -> std::io::Result<Fleet> {
    let invalid = |e: breakwater::ConfigError| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}"))
    };
    let store = RedisStore::builder(shared.url.clone())
        .namespace(shared.namespace.clone())
        .build()
        .map_err(invalid)?;
    let mut fleet = Fleet::builder(registry, Arc::new(store));
    if let Some(id) = &shared.replica_id {
        fleet = fleet.replica_id(id.clone());
    }
    if let Some(k) = shared.quorum {
        fleet = fleet.quorum(k);
    }
    if let Some(window) = shared.shared_window {
        fleet = fleet.shared_window(window);
    }
    let fleet = fleet.start().await.map_err(invalid)?;
    if !fleet.stats().is_healthy() {
        eprintln!(
            "Redis at {} is not answering: serving on local breaker state until it does",
            shared.url
        );
    }
    Ok(fleet)
}

/// The span of an API request: its method and path, and the fields the layers record.
fn request_span(req: &Request) -> tracing::Span {
    tracing::info_span!(
        "request",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        circuit_breaker.name = tracing::field::Empty,
        circuit_breaker.state = tracing::field::Empty,
        fallback.strategy = tracing::field::Empty,
    )
}

#[tokio::main]
async fn main() {
    let options = match Options::from_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let tracer = match telemetry::init_tracing(options.otel.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("could not start telemetry: {e}");
            std::process::exit(1);
        }
    };
    let otlp = options.otel.clone();
    let gw = match start(options).await {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("could not start the gateway: {e}");
            std::process::exit(1);
        }
    };
    let base = format!("http://{}", gw.addr);
    let ops = gw.ops_addr.map_or(base.clone(), |a| format!("http://{a}"));
    let token = gw.ops_token.clone();
    println!("Breakwater gateway on {base}, in front of {}", gw.upstream);
    if gw.simulation.is_some() {
        println!("  (a simulated upstream: change it with PUT {base}/sim)");
    }
    println!();
    println!("  API       {base}/api/items   {base}/api/items/1   POST {base}/api/orders");
    println!("  health    {base}/health   {base}/health/ready   {base}/health/live");
    println!("  metrics   {ops}/v1/circuit-breaker/metrics   {ops}/metrics");
    println!("  events    {ops}/v1/circuit-breaker/events/stream");
    println!("  ops token {token}");
    if let Some(o) = &otlp {
        println!(
            "  OTLP      {} (every {} ms)",
            o.endpoint,
            o.interval.as_millis()
        );
    }
    println!();
    println!("Try:");
    println!("  curl -s {base}/api/items");
    if gw.simulation.is_some() {
        println!(
            "  curl -s -X PUT {base}/sim -H 'content-type: application/json' -d '{{\"failureRate\": 1}}'"
        );
    }
    println!("  for i in $(seq 5); do curl -s -i {base}/api/items/7 | head -1; done");
    println!("  curl -s {ops}/v1/circuit-breaker/metrics");
    println!("  curl -s -X POST {ops}/v1/circuit-breaker/reset -H 'authorization: Bearer {token}'");
    stop_signal().await;
    println!("shutting down: finishing the requests in flight");
    gw.shut_down().await;
    if let Some(tracer) = tracer {
        let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
    }
}

/// Ctrl-C, or SIGTERM where there are signals.
async fn stop_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("cannot wait for ctrl-c: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
