//! An API gateway with the whole Breakwater stack, on embedded defaults.
//!
//! Run with `cargo run --example gateway --features full`: it starts a simulated upstream whose failure rate
//! and latency change at run time, and a gateway on 127.0.0.1:8080 in front of it, and prints
//! the URLs and the generated ops token. Flags (or environment): `--listen ADDR`
//! (`BREAKWATER_LISTEN`), `--upstream URL` (`BREAKWATER_UPSTREAM`: a real upstream instead of
//! the simulation), `--ops-token T` (`BREAKWATER_OPS_TOKEN`).
//!
//! Requests under `/api/` go to the upstream with `/api` stripped, through a fallback
//! (stale-if-error for GETs), a service breaker (`upstream`), and per-endpoint breakers keyed
//! by the matched route template: preset `read` for GET routes, `write` for the others, `auth`
//! for `/api/auth/...`; any other path under `/api/` shares one catch-all breaker. Health
//! (`/health`, `/health/live`, `/health/ready`), the ops API (`/v1/...`) and Prometheus
//! (`/metrics`) are at the root.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Json, Request, State as AxState};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use breakwater::ops::OpsApi;
use breakwater::tower::fallback::{FallbackLayer, StaleCache};
use breakwater::tower::health::{HealthRegistry, Probe};
use breakwater::tower::{CircuitBreakerLayer, MethodAndRoute};
use breakwater::{Config, FamilyOptions, HealthMode, KeyedFamily, Registry, SlidingWindow};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// What the gateway is started with.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Where the gateway listens.
    pub(crate) listen: SocketAddr,
    /// A real upstream; `None` starts the simulation.
    pub(crate) upstream: Option<Uri>,
    /// The ops token.
    pub(crate) ops_token: String,
}

impl Options {
    /// From the command line and the environment, with the defaults.
    pub(crate) fn from_args() -> Result<Self, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut listen = env("BREAKWATER_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        let mut upstream = env("BREAKWATER_UPSTREAM");
        let mut token = env("BREAKWATER_OPS_TOKEN");
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("`{flag}` needs a value"));
            match flag.as_str() {
                "--listen" => listen = value()?,
                "--upstream" => upstream = Some(value()?),
                "--ops-token" => token = Some(value()?),
                "-h" | "--help" => {
                    return Err(
                        "usage: gateway [--listen ADDR] [--upstream URL] [--ops-token TOKEN]"
                            .into(),
                    );
                }
                other => return Err(format!("unknown flag `{other}` (try --help)")),
            }
        }
        let listen = listen
            .parse()
            .map_err(|e| format!("invalid --listen `{listen}`: {e}"))?;
        let upstream = match upstream {
            Some(u) => {
                let uri: Uri = u
                    .parse()
                    .map_err(|e| format!("invalid --upstream `{u}`: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                    return Err(format!(
                        "--upstream must be an http://host:port URL, not `{u}`"
                    ));
                }
                Some(uri)
            }
            None => None,
        };
        Ok(Self {
            listen,
            upstream,
            ops_token: token.unwrap_or_else(generate_token),
        })
    }
}

/// 128 random bits as hex, from the standard library's OS-seeded hasher keys.
fn generate_token() -> String {
    let a = RandomState::new().hash_one(0u8);
    let b = RandomState::new().hash_one(1u8);
    format!("{a:016x}{b:016x}")
}

// ----- the simulated upstream -----

/// The simulation's knobs, changed at run time with `PUT /sim`.
#[derive(Debug, Default)]
pub(crate) struct Simulation {
    /// Per-mille of requests answered 500.
    failure_permille: AtomicU64,
    /// Added latency in ms.
    latency_ms: AtomicU64,
    /// Requests received.
    pub(crate) hits: AtomicU64,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimSettings {
    #[serde(default)]
    failure_rate: Option<f64>,
    #[serde(default)]
    latency_ms: Option<u64>,
}

impl Simulation {
    fn settings(&self) -> SimSettings {
        SimSettings {
            failure_rate: Some(self.failure_permille.load(Ordering::Relaxed) as f64 / 1000.0),
            latency_ms: Some(self.latency_ms.load(Ordering::Relaxed)),
        }
    }
}

async fn simulated(AxState(sim): AxState<Arc<Simulation>>, req: Request) -> Response {
    sim.hits.fetch_add(1, Ordering::Relaxed);
    let latency = sim.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let failure = sim.failure_permille.load(Ordering::Relaxed);
    if failure > 0 && fastrand::u64(0..1000) < failure {
        return (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response();
    }
    let path = req.uri().path().to_owned();
    let body = match (req.method().as_str(), path.as_str()) {
        ("GET", "/items") => {
            serde_json::json!([{"id": 1, "name": "anchor"}, {"id": 2, "name": "buoy"}])
        }
        ("GET", p) if p.starts_with("/items/") => {
            serde_json::json!({"id": &p["/items/".len()..], "name": "item"})
        }
        ("POST", "/orders") => {
            serde_json::json!({"order": fastrand::u32(..), "status": "accepted"})
        }
        (m, p) => serde_json::json!({"method": m, "path": p}),
    };
    Json(body).into_response()
}

/// Starts the simulated upstream on 127.0.0.1 (a free port).
pub(crate) async fn start_simulation() -> std::io::Result<(SocketAddr, Arc<Simulation>)> {
    let sim = Arc::new(Simulation::default());
    let app = Router::new().fallback(simulated).with_state(sim.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, sim))
}

async fn get_sim(AxState(sim): AxState<Arc<Simulation>>) -> Response {
    Json(sim.settings()).into_response()
}

async fn put_sim(
    AxState(sim): AxState<Arc<Simulation>>,
    body: Result<Json<SimSettings>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(s)) = body else {
        return breakwater::ops::ApiError::bad_request(
            "expected {\"failureRate\": 0..1, \"latencyMs\": n}",
        )
        .into_response();
    };
    if let Some(rate) = s.failure_rate {
        if !(0.0..=1.0).contains(&rate) {
            return breakwater::ops::ApiError::bad_request("`failureRate` must be within 0..1")
                .into_response();
        }
        sim.failure_permille
            .store((rate * 1000.0).round() as u64, Ordering::Relaxed);
    }
    if let Some(ms) = s.latency_ms {
        sim.latency_ms.store(ms.min(60_000), Ordering::Relaxed);
    }
    Json(sim.settings()).into_response()
}

// ----- the gateway -----

#[derive(Clone)]
struct Proxy {
    client: Client<HttpConnector, Body>,
    upstream: Uri,
}

async fn proxy(AxState(p): AxState<Proxy>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let base = p.upstream.to_string();
    let uri = format!("{}{pq}", base.trim_end_matches('/'));
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(_) => return breakwater::ops::ApiError::bad_request("bad path").into_response(),
    };
    parts.headers.remove(axum::http::header::HOST);
    match p.client.request(Request::from_parts(parts, body)).await {
        Ok(res) => res.map(Body::new).into_response(),
        Err(e) => breakwater::ops::ApiError::new(
            StatusCode::BAD_GATEWAY,
            "UPSTREAM_ERROR",
            format!("the upstream could not be reached: {e}"),
        )
        .into_response(),
    }
}

/// A running gateway.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
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
}

/// The upstream breaker's config: it trips on half the last 20 calls failing.
fn upstream_config() -> Config {
    Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(20))
        .minimum_number_of_calls(10)
        .wait_in_open(Duration::from_secs(5))
        .health(HealthMode::Critical)
        .build()
        .expect("valid config")
}

fn family(registry: &Registry, preset: &str) -> KeyedFamily {
    let config = Config::preset_named(preset).expect("a preset");
    registry.family(preset, FamilyOptions::new(config).max_keys(256))
}

/// The gateway's API routes without any layer: what the gateway would be without Breakwater
/// (the same router, handler and client), for comparisons.
pub(crate) async fn start_bare(upstream: Uri) -> std::io::Result<SocketAddr> {
    let proxy_state = Proxy {
        client: Client::builder(TokioExecutor::new()).build_http(),
        upstream,
    };
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
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// Builds and starts the gateway.
pub(crate) async fn start(options: Options) -> std::io::Result<Gateway> {
    let (upstream, simulation) = match options.upstream {
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

    let proxy_state = Proxy {
        client: Client::builder(TokioExecutor::new()).build_http(),
        upstream: upstream.clone(),
    };
    let endpoint =
        |f: &KeyedFamily| CircuitBreakerLayer::keyed(f.clone(), MethodAndRoute).for_axum();
    let reads = Router::new()
        .route("/items", get(proxy))
        .route("/items/{id}", get(proxy))
        .route_layer(endpoint(&read));
    let writes = Router::new()
        .route("/orders", post(proxy))
        .route_layer(endpoint(&write));
    let auths = Router::new()
        .route("/auth/{*rest}", any(proxy))
        .route_layer(endpoint(&auth));
    let api = reads
        .merge(writes)
        .merge(auths)
        .fallback_service(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new(catch_all).for_axum())
                .service(axum::routing::any(proxy).with_state(proxy_state.clone())),
        )
        .layer(
            ServiceBuilder::new()
                .layer(
                    FallbackLayer::new()
                        .events(&registry)
                        .named("gateway")
                        .on_failed_responses()
                        .stale_if_error(StaleCache::new())
                        .for_axum(),
                )
                .layer(CircuitBreakerLayer::new(service.clone()).for_axum()),
        )
        .with_state(proxy_state.clone());

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

    // The ops router answers `/health`, `/health/live` and `/health/ready` too, outside every
    // breaker: force-opening the service breaker never locks operators out.
    let mut app = Router::new()
        .nest("/api", api)
        .merge(
            OpsApi::new(&registry)
                .health(health.clone())
                .token(options.ops_token.clone())
                .router(),
        )
        .fallback(breakwater::ops::not_found);
    if let Some(sim) = &simulation {
        app = app.merge(
            Router::new()
                .route("/sim", get(get_sim).put(put_sim))
                .with_state(sim.clone()),
        );
    }

    let listener = TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Gateway {
        addr,
        registry,
        health,
        simulation,
        upstream,
        ops_token: options.ops_token,
    })
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
    let gw = match start(options).await {
        Ok(gw) => gw,
        Err(e) => {
            eprintln!("could not start the gateway: {e}");
            std::process::exit(1);
        }
    };
    let base = format!("http://{}", gw.addr);
    let token = &gw.ops_token;
    println!("Breakwater gateway on {base}, in front of {}", gw.upstream);
    if gw.simulation.is_some() {
        println!("  (a simulated upstream: change it with PUT {base}/sim)");
    }
    println!();
    println!("  API       {base}/api/items   {base}/api/items/1   POST {base}/api/orders");
    println!("  health    {base}/health   {base}/health/ready   {base}/health/live");
    println!("  metrics   {base}/v1/circuit-breaker/metrics   {base}/metrics");
    println!("  events    {base}/v1/circuit-breaker/events/stream");
    println!("  ops token {token}");
    println!();
    println!("Try:");
    println!("  curl -s {base}/api/items");
    if gw.simulation.is_some() {
        println!(
            "  curl -s -X PUT {base}/sim -H 'content-type: application/json' -d '{{\"failureRate\": 1}}'"
        );
    }
    println!("  for i in $(seq 5); do curl -s -i {base}/api/items/7 | head -1; done");
    println!("  curl -s {base}/v1/circuit-breaker/metrics");
    println!(
        "  curl -s -X POST {base}/v1/circuit-breaker/reset -H 'authorization: Bearer {token}'"
    );
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("cannot wait for ctrl-c: {e}");
    }
}
