//! Health: breaker checks, active probes and the health layer, on real servers on 127.0.0.1.
#![cfg(feature = "health")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use breakwater_core::{Config, HealthMode, ManualClock, Registry, State, Trigger};
use breakwater_tower::health::{
    CheckResult, HEALTH_JSON, HealthLayer, HealthRegistry, Probe, Status,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Empty;
use support::*;
use tokio::sync::mpsc;

fn config(health: HealthMode) -> Config {
    Config::builder().health(health).build().unwrap()
}

async fn get_json(
    client: &HttpClient,
    url: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let res = client.request(request(url)).await.unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = body_bytes(res.into_body()).await;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, ct, json)
}

#[tokio::test]
async fn health_layer_answers_from_breakers_and_passes_everything_else() {
    let registry = Registry::builder().clock(ManualClock::new()).build();
    let db = registry.breaker_with("db", config(HealthMode::Critical));
    let cache = registry.breaker_with("cache", config(HealthMode::Report));
    let audit = registry.breaker_with("audit", config(HealthMode::Ignore));
    let health = HealthRegistry::new(&registry);
    health.add_check("disk", false, || {
        CheckResult::pass().with_observed(42, Some("percent"))
    });
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "app" }
            }),
        )
        .route("/health", post(|| async { "posted" }))
        .layer(HealthLayer::new(health.clone()));
    let addr = serve(app).await;
    let client = client();
    let url = |p: &str| format!("http://{addr}{p}");

    let (status, ct, v) = get_json(&client, &url("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some(HEALTH_JSON));
    assert_eq!(v["status"], "pass");
    assert_eq!(
        v["checks"]["db:circuitBreaker"][0]["observedValue"],
        "CLOSED"
    );
    assert_eq!(v["checks"]["db:circuitBreaker"][0]["critical"], true);
    assert_eq!(v["checks"]["disk:custom"][0]["observedValue"], 42);
    assert!(v["checks"]["uptime"][0]["observedValue"].is_number());
    assert!(v["checks"].get("audit:circuitBreaker").is_none());

    // A non-critical breaker open: degraded, still 200, ready.
    cache.force_open();
    audit.force_open();
    let (status, _, v) = get_json(&client, &url("/health")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("warn"))
    );
    assert_eq!(v["checks"]["cache:circuitBreaker"][0]["status"], "warn");
    let (status, _, v) = get_json(&client, &url("/health/ready")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("pass"))
    );
    assert!(v["checks"].get("cache:circuitBreaker").is_none());

    // A critical one open: fail, 503, not ready; live all the same.
    db.transition_to(State::Open).unwrap();
    let (status, _, v) = get_json(&client, &url("/health")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("fail"))
    );
    let (status, _, v) = get_json(&client, &url("/health/ready")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("fail"))
    );
    assert_eq!(v["checks"]["db:circuitBreaker"][0]["status"], "fail");
    let (status, _, v) = get_json(&client, &url("/health/live")).await;
    assert_eq!(
        (status, v["status"].as_str()),
        (StatusCode::OK, Some("pass"))
    );

    // Disabled passes with a note.
    db.disable();
    let (_, _, v) = get_json(&client, &url("/health/ready")).await;
    assert_eq!(v["status"], "pass");
    assert!(
        v["checks"]["db:circuitBreaker"][0]["output"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );

    // Everything else reaches the app, a POST to /health included.
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let res = client.request(request(&url("/"))).await.unwrap();
    assert_eq!(body_bytes(res.into_body()).await, "app");
    let post = Request::builder()
        .method(Method::POST)
        .uri(url("/health"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = client.request(post).await.unwrap();
    assert_eq!(body_bytes(res.into_body()).await, "posted");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// A check that fails while `down` is set, announcing each run.
fn switchable(
    down: Arc<AtomicBool>,
    runs: mpsc::UnboundedSender<()>,
) -> impl Fn() -> std::future::Ready<Result<(), String>> + Send + Sync + 'static {
    move || {
        let _ = runs.send(());
        std::future::ready(if down.load(Ordering::SeqCst) {
            Err("refused".to_owned())
        } else {
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn probe_thresholds_decide_its_status_and_it_feeds_the_breaker() {
    let registry = Registry::new();
    let breaker = registry.breaker_with("inventory", config(HealthMode::Critical));
    let down = Arc::new(AtomicBool::new(false));
    let (tx, _rx) = mpsc::unbounded_channel();
    let probe = Probe::builder("inventory", switchable(down.clone(), tx))
        .failure_threshold(3)
        .success_threshold(2)
        .history(4)
        .breaker(breaker.clone())
        .critical(true)
        .build()
        .unwrap();
    assert_eq!(probe.status(), Status::Warn, "no result yet");

    assert!(probe.run_once().await.ok);
    assert_eq!(probe.status(), Status::Pass);
    down.store(true, Ordering::SeqCst);
    for expected in [Status::Warn, Status::Warn, Status::Fail] {
        let r = probe.run_once().await;
        assert_eq!(r.error.as_deref(), Some("refused"));
        assert_eq!(probe.status(), expected);
    }
    assert_eq!(
        breaker.state(),
        State::Open,
        "a failing probe opens its breaker"
    );
    let counts = breaker.transition_counts();
    assert_eq!(counts[0].trigger, Trigger::Probe);

    down.store(false, Ordering::SeqCst);
    probe.run_once().await;
    assert_eq!(probe.status(), Status::Fail, "one success is not enough");
    probe.run_once().await;
    assert_eq!(probe.status(), Status::Pass);
    assert_eq!(
        breaker.state(),
        State::HalfOpen,
        "a passing probe lets real calls probe"
    );

    let view = probe.view();
    assert_eq!(view.history.len(), 4, "bounded history");
    assert_eq!(view.consecutive_successes, 2);

    // Run-time settings: validated, a refused change changes nothing.
    let err = probe.set_thresholds(0, 1).unwrap_err();
    assert_eq!(err.field(), "failure_threshold");
    assert_eq!(probe.settings().failure_threshold, 3);
    probe.set_timeout(Duration::from_millis(250)).unwrap();
    assert_eq!(probe.settings().timeout, Duration::from_millis(250));
    let err = Probe::builder("x", || async { Ok(()) })
        .interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "interval");
}

#[tokio::test(start_paused = true)]
async fn slow_successes_warn() {
    let probe = Probe::builder("slow", || async {
        // Paused tokio time: a 300 ms check, measured exactly, no wall time spent.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    })
    .slow_threshold(Duration::from_millis(100))
    .build()
    .unwrap();
    let r = probe.run_once().await;
    assert!(r.ok && r.slow);
    assert_eq!(r.latency, Duration::from_millis(300));
    assert_eq!(probe.status(), Status::Warn);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_target_times_out_without_delaying_requests() {
    let up = Upstream::start().await;
    up.set_mode(HANG);
    let health = HealthRegistry::new(&Registry::new());
    let target = up.url("/ping");
    let probe = Probe::http("upstream", client(), move || request(&target))
        .interval(Duration::from_secs(5))
        .timeout(Duration::from_secs(1))
        .failure_threshold(2)
        .critical(true)
        .build()
        .unwrap();
    let mut changes = health.probe_changes();
    health.add_probe(probe.clone());
    let app = Router::new()
        .route("/", get(|| async { "app" }))
        .layer(HealthLayer::new(health.clone()));
    let addr = serve(app).await;

    // The probe's request is held by the upstream; requests are answered meanwhile.
    up.arrived(1).await;
    let c = client();
    let (status, _, v) = get_json(&c, &format!("http://{addr}/health/ready")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["checks"]["upstream:probe"][0]["output"], "no result yet");
    let res = c
        .request(request(&format!("http://{addr}/")))
        .await
        .unwrap();
    assert_eq!(body_bytes(res.into_body()).await, "app");

    // Two timeouts in a row: failed.
    while probe.status() != Status::Fail {
        changes.changed().await.unwrap();
    }
    let view = probe.view();
    assert_eq!(view.history.len(), 2);
    for r in &view.history {
        assert!(!r.ok);
        assert_eq!(r.latency, Duration::from_secs(1));
        assert_eq!(r.error.as_deref(), Some("timed out after 1000 ms"));
    }
    let (status, _, v) = get_json(&c, &format!("http://{addr}/health/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["checks"]["upstream:probe"][0]["status"], "fail");
    up.release(10);
}

#[tokio::test(start_paused = true)]
async fn runs_never_overlap_and_stop_start_work() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (tx, mut runs) = mpsc::unbounded_channel();
    let (f, m) = (in_flight.clone(), max.clone());
    let probe = Probe::builder("overlap", move || {
        let (f, m, tx) = (f.clone(), m.clone(), tx.clone());
        async move {
            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let _ = tx.send(());
            // Longer than the interval (paused tokio time: no wall time spent).
            tokio::time::sleep(Duration::from_secs(3)).await;
            f.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
    .interval(Duration::from_secs(1))
    .timeout(Duration::from_secs(10))
    .build()
    .unwrap();
    let health = HealthRegistry::new(&Registry::new());
    health.add_probe(probe.clone());
    for _ in 0..5 {
        runs.recv().await.unwrap();
    }
    assert_eq!(max.load(Ordering::SeqCst), 1);

    probe.stop();
    // Let the run in progress finish, then a minute of virtual time: no new run.
    tokio::time::sleep(Duration::from_secs(60)).await;
    while runs.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(runs.try_recv().is_err());
    assert!(!probe.is_running());

    probe.start();
    runs.recv().await.unwrap();
    assert!(probe.is_running());
    assert!(health.remove_probe("overlap").is_some());
    assert!(health.probe("overlap").is_none());
}

#[cfg(feature = "grpc-health")]
#[tokio::test]
async fn grpc_health_follows_critical_breakers() {
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let registry = Registry::new();
    let orders = registry.breaker_with("orders-db", config(HealthMode::Critical));
    let health = HealthRegistry::new(&registry);
    let (reporter, service) = tonic_health::server::health_reporter();
    let task = breakwater_tower::health::sync_grpc_health(&health, reporter, "shop.Orders");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "shop.Orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // The wire values of grpc.health.v1's ServingStatus.
    const SERVING: i32 = 1;
    const NOT_SERVING: i32 = 2;
    let mut next = async || watch.next().await.unwrap().unwrap().status;
    while next().await != SERVING {}
    orders.force_open();
    assert_eq!(next().await, NOT_SERVING);
    orders.reset();
    assert_eq!(next().await, SERVING);
    task.abort();
}
