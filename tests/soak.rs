//! Soak under faults: a load generator (a hyper client, 64 requests in flight, bounded in count
//! and time, loopback only) drives the gateway while its upstream cycles healthy → failing →
//! slow → hanging → flapping → healthy. Checked throughout and at the end: every request got an
//! answer; HALF_OPEN never had more calls at the upstream than its permits; the endpoint
//! breakers' lifetime counts equal the upstream's own; memory stays within a bound after
//! warm-up; no task outlives the gateway. `BREAKWATER_SOAK_SECS` sets the length (60 s by
//! default); the figures are printed.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use breakwater::{Registry, State};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const IN_FLIGHT: usize = 64;
const MAX_REQUESTS: u64 = 20_000_000;
const LIMIT: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Healthy,
    Failing,
    Slow,
    Hanging,
    Flapping,
}

const CYCLE: [Mode; 6] = [
    Mode::Healthy,
    Mode::Failing,
    Mode::Slow,
    Mode::Hanging,
    Mode::Flapping,
    Mode::Healthy,
];

/// The upstream's routes, as the gateway's endpoint breakers name them.
const ROUTES: [(&str, &str); 3] = [
    ("GET /items", "read:GET /api/items"),
    ("GET /items/", "read:GET /api/items/{id}"),
    ("POST /orders", "write:POST /api/orders"),
];

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    /// Requests received, per route.
    received: [AtomicU64; 3],
    /// Calls in flight that arrived while their endpoint's breaker was HALF_OPEN, and the most
    /// of them at once (per route); the same for the service breaker.
    half_open_now: [AtomicUsize; 3],
    half_open_max: [AtomicUsize; 3],
    service_half_open_now: AtomicUsize,
    service_half_open_max: AtomicUsize,
}

struct Upstream {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    flap: Arc<AtomicBool>,
    seen: Arc<Seen>,
}

fn route_of(method: &Method, path: &str) -> Option<usize> {
    match (method.as_str(), path) {
        ("GET", "/items") => Some(0),
        ("GET", p) if p.starts_with("/items/") => Some(1),
        ("POST", "/orders") => Some(2),
        _ => None,
    }
}

/// Decrements a gauge when the call ends, however it ends (a timeout drops it).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn enter<'a>(now: &'a AtomicUsize, max: &AtomicUsize) -> InFlight<'a> {
    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(n, Ordering::SeqCst);
    InFlight(now)
}

impl Upstream {
    async fn start(registry: Arc<Mutex<Option<Registry>>>) -> Self {
        let mode = Arc::new(AtomicU8::new(Mode::Healthy as u8));
        let flap = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let (m, f, s) = (mode.clone(), flap.clone(), seen.clone());
        let app = Router::new().fallback(any(move |req: axum::extract::Request| {
            let (m, f, s, registry) = (m.clone(), f.clone(), s.clone(), registry.clone());
            async move {
                let Some(route) = route_of(req.method(), req.uri().path()) else {
                    return (StatusCode::OK, "probe"); // the health probe
                };
                s.received[route].fetch_add(1, Ordering::SeqCst);
                let (endpoint, service) = {
                    let registry = registry.lock().unwrap();
                    let registry = registry.as_ref().expect("the gateway's registry");
                    let state = |name: &str| registry.get(name).map(|b| b.state());
                    (state(ROUTES[route].1), state("upstream"))
                };
                let _probe = (endpoint == Some(State::HalfOpen))
                    .then(|| enter(&s.half_open_now[route], &s.half_open_max[route]));
                let _service_probe = (service == Some(State::HalfOpen))
                    .then(|| enter(&s.service_half_open_now, &s.service_half_open_max));
                let _ = req.into_body().collect().await;
                let mode = m.load(Ordering::SeqCst);
                let fail = match mode {
                    x if x == Mode::Failing as u8 => true,
                    x if x == Mode::Slow as u8 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        false
                    }
                    x if x == Mode::Hanging as u8 => {
                        std::future::pending::<()>().await;
                        false
                    }
                    x if x == Mode::Flapping as u8 => f.load(Ordering::SeqCst),
                    _ => false,
                };
                if fail {
                    (StatusCode::INTERNAL_SERVER_ERROR, "down")
                } else {
                    (StatusCode::OK, "[1,2,3]")
                }
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            mode,
            flap,
            seen,
        }
    }
}

/// What the load generator got.
#[derive(Default)]
struct Got {
    statuses: Mutex<BTreeMap<u16, u64>>,
    errors: AtomicU64,
    refused_latencies: Mutex<Vec<Duration>>,
    sent: AtomicU64,
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn drive(
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    worker: usize,
    until: Instant,
    got: Arc<Got>,
) {
    let mut i = worker;
    while Instant::now() < until && got.sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS {
        i += IN_FLIGHT;
        let (method, path, body) = match i % 3 {
            0 => (Method::GET, "/api/items".to_owned(), Bytes::new()),
            1 => (Method::GET, format!("/api/items/{}", i % 10), Bytes::new()),
            _ => (
                Method::POST,
                "/api/orders".to_owned(),
                Bytes::from_static(b"{\"n\":1}"),
            ),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .body(Full::new(body))
            .unwrap();
        let started = Instant::now();
        let answer = match client.request(req).await {
            Ok(res) => {
                let status = res.status();
                res.into_body().collect().await.map(|_| status)
            }
            Err(e) => {
                eprintln!("request error: {e}");
                got.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match answer {
            Ok(status) => {
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    got.refused_latencies
                        .lock()
                        .unwrap()
                        .push(started.elapsed());
                }
                *got.statuses
                    .lock()
                    .unwrap()
                    .entry(status.as_u16())
                    .or_default() += 1;
            }
            Err(_) => {
                got.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The gateway's own time for each refused answer: tower-http's `on_response` event (from the
/// request reaching the router to its response head), for status 503.
#[derive(Clone, Default)]
struct ServerSide(Arc<Mutex<Vec<Duration>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ServerSide {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        #[derive(Default)]
        struct Fields {
            status: Option<u64>,
            latency_us: Option<u64>,
        }
        impl tracing::field::Visit for Fields {
            fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
                if field.name() == "status" {
                    self.status = u64::try_from(value).ok();
                }
            }
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "status" {
                    self.status = Some(value);
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "latency" {
                    // "123 μs"
                    let shown = format!("{value:?}");
                    self.latency_us = shown.split(' ').next().and_then(|n| n.parse().ok());
                }
            }
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let (Some(503), Some(us)) = (f.status, f.latency_us) {
            self.0.lock().unwrap().push(Duration::from_micros(us));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_holds_under_faults() {
    let secs: u64 = std::env::var("BREAKWATER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // Only tower-http's per-response events are listened to (the breakers' own stay off).
    let server_side = ServerSide::default();
    {
        use tracing_subscriber::layer::{Layer as _, SubscriberExt};
        let only = tracing_subscriber::filter::Targets::new()
            .with_target("tower_http::trace::on_response", tracing::Level::DEBUG);
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(server_side.clone().with_filter(only)),
        )
        .expect("the only subscriber of this test binary");
    }
    let registry_slot = Arc::new(Mutex::new(None));
    let up = Upstream::start(registry_slot.clone()).await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let gw = gateway::start(gateway::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: Some(format!("http://{}", up.addr).parse().unwrap()),
        upstream_timeout: Some(LIMIT),
        ..Default::default()
    })
    .await
    .unwrap();
    *registry_slot.lock().unwrap() = Some(gw.registry.clone());
    let base = format!("http://{}", gw.addr);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IN_FLIGHT)
        .build_http();

    // Warm-up: a healthy second, then the baseline of memory.
    let got = Arc::new(Got::default());
    let warm = Instant::now() + Duration::from_secs(1);
    let mut workers = Vec::new();
    for w in 0..IN_FLIGHT {
        workers.push(tokio::spawn(drive(
            client.clone(),
            base.clone(),
            w,
            warm,
            got.clone(),
        )));
    }
    for w in workers.drain(..) {
        w.await.unwrap();
    }
    let rss_warm = rss_bytes();

    // The run: the upstream's modes in turn, flapping every 100 ms in its phase.
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let got = Arc::new(Got::default());
    for w in 0..IN_FLIGHT {
        workers.push(tokio::spawn(drive(
            client.clone(),
            base.clone(),
            w,
            until,
            got.clone(),
        )));
    }
    let phase = Duration::from_secs(secs) / CYCLE.len() as u32;
    let mut rss_peak = rss_warm;
    let mut faults = 0u64;
    for mode in CYCLE {
        up.mode.store(mode as u8, Ordering::SeqCst);
        faults += u64::from(mode != Mode::Healthy);
        let end = Instant::now() + phase;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            up.flap.fetch_xor(true, Ordering::SeqCst);
            rss_peak = rss_peak.max(rss_bytes());
        }
    }
    for w in workers.drain(..) {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();
    up.mode.store(Mode::Healthy as u8, Ordering::SeqCst);

    // Every request got an answer.
    let statuses = got.statuses.lock().unwrap().clone();
    let answered: u64 = statuses.values().sum();
    let errors = got.errors.load(Ordering::Relaxed);
    assert_eq!(errors, 0, "connection errors; answers: {statuses:?}");
    assert!(
        statuses
            .keys()
            .all(|s| [200, 500, 502, 503, 504].contains(s)),
        "{statuses:?}"
    );
    // HALF_OPEN never let more calls through than its permits.
    let permits = |name: &str| {
        gw.registry
            .get(name)
            .map(|b| b.config().permitted_calls_in_half_open() as usize)
            .unwrap_or(0)
    };
    for (route, (_, name)) in ROUTES.iter().enumerate() {
        let max = up.seen.half_open_max[route].load(Ordering::SeqCst);
        assert!(
            max <= permits(name),
            "{name}: {max} calls in HALF_OPEN at once"
        );
    }
    let service_max = up.seen.service_half_open_max.load(Ordering::SeqCst);
    assert!(
        service_max <= permits("upstream"),
        "upstream: {service_max} in HALF_OPEN at once"
    );
    // The endpoint breakers counted what the upstream received.
    for (route, (_, name)) in ROUTES.iter().enumerate() {
        let s = gw
            .registry
            .get(name)
            .expect("the endpoint's breaker")
            .snapshot();
        let received = up.seen.received[route].load(Ordering::SeqCst);
        assert_eq!(s.successes + s.failures, received, "{name}: {s:?}");
    }
    // Memory after warm-up stays within a bound.
    let growth = rss_peak.saturating_sub(rss_warm);
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    let mut refused = got.refused_latencies.lock().unwrap().clone();
    refused.sort();
    let p99 = refused
        .get((refused.len() as f64 * 0.99) as usize)
        .copied()
        .unwrap_or_default();
    let mut served = server_side.0.lock().unwrap().clone();
    served.sort();
    let served_p99 = served
        .get((served.len() as f64 * 0.99) as usize)
        .copied()
        .unwrap_or_default();
    let opens: u64 = gw
        .registry
        .snapshots()
        .iter()
        .map(|s| s.circuit_opens)
        .sum();

    // No task outlives the gateway.
    gw.shut_down().await;
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks_after = usize::MAX;
    while Instant::now() < deadline {
        tasks_after = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if tasks_after <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tasks_after <= tasks_before,
        "{tasks_after} tasks alive, {tasks_before} before"
    );

    println!(
        "soak: {answered} requests in {elapsed:.1?} ({:.0}/s), {faults} fault phases, {opens} \
         circuit openings, answers {statuses:?}, 0 connection errors, 0 invariants violated; \
         RSS {} MiB after warm-up, peak {} MiB; refused p99 {p99:?} as the clients see it ({} \
         refused), {served_p99:?} in the gateway ({} timed); tasks {tasks_before} before, \
         {tasks_after} after",
        answered as f64 / elapsed.as_secs_f64(),
        rss_warm >> 20,
        rss_peak >> 20,
        refused.len(),
        served.len(),
    );
}
