//! The layer around a real hyper client and real axum servers on 127.0.0.1.

mod support;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use breakwater_core::{
    CircuitBreaker, Config, FamilyOptions, ManualClock, Registry, SlidingWindow, State,
};
use breakwater_tower::circuit_breaker::Single;
use breakwater_tower::{
    Authority, BoxError, CircuitBreakerLayer, CircuitBreakerService, CircuitOpen, ErrorOnOpen,
    HttpFailures, MethodAndRoute, RawPath,
};
use http::StatusCode;
use support::*;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::classify::SharedClassifier;

fn probe_config() -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(3)
        .wait_in_open(Duration::from_secs(10))
        .permitted_calls_in_half_open(2)
        .success_threshold(2)
        .build()
        .unwrap()
}

/// A service-level breaker: opens after five failures in a row.
fn five_in_a_row() -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(5)
        .build()
        .unwrap()
}

/// A flaky upstream, and a client with one breaker (on a manual clock) in front of it.
async fn guarded_client() -> (
    Upstream,
    ManualClock,
    CircuitBreaker,
    CircuitBreakerService<HttpClient, Single, SharedClassifier<HttpFailures>, ErrorOnOpen>,
) {
    let up = Upstream::start().await;
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("upstream", probe_config(), clock.clone());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .service(client());
    (up, clock, cb, svc)
}

fn open_error(e: &BoxError) -> &CircuitOpen {
    e.downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("not CircuitOpen: {e}"))
}

#[tokio::test]
async fn client_breaker_opens_rejects_without_io_probes_and_recovers() {
    let (up, clock, cb, svc) = guarded_client().await;

    // Three 500s open it.
    up.set_mode(FAIL);
    for _ in 0..3 {
        let res = svc.clone().oneshot(request(&up.url("/x"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(cb.state(), State::Open);
    assert_eq!(up.hits(), 3);

    // Open: refused at once (ready on the first poll, no I/O), upstream untouched.
    for _ in 0..50 {
        let mut s = svc.clone();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(s.poll_ready(&mut cx).is_ready());
        let mut fut = pin!(s.call(request(&up.url("/x"))));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => {
                let open = open_error(&e);
                assert_eq!(open.name(), "upstream");
                assert_eq!(open.state(), State::Open);
                assert_eq!(open.retry_after(), Some(Duration::from_secs(10)));
            }
            other => panic!(
                "expected an immediate rejection, got {:?}",
                other.map(|r| r.map(|_| ()))
            ),
        }
    }
    assert_eq!(up.hits(), 3);

    // After the wait exactly the permitted probes reach the upstream.
    clock.advance(Duration::from_secs(11));
    up.drain_arrivals().await;
    up.set_mode(HANG);
    let mut probes = Vec::new();
    for _ in 0..2 {
        probes.push(tokio::spawn(svc.clone().oneshot(request(&up.url("/x")))));
    }
    up.arrived(2).await;
    for _ in 0..5 {
        let e = svc
            .clone()
            .oneshot(request(&up.url("/x")))
            .await
            .unwrap_err();
        assert_eq!(open_error(&e).state(), State::HalfOpen);
    }
    assert_eq!(up.hits(), 5);
    up.release(2);
    for p in probes {
        assert_eq!(p.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(cb.state(), State::Closed);

    // And it re-opens when a probe fails.
    up.set_mode(FAIL);
    for _ in 0..3 {
        let _ = svc.clone().oneshot(request(&up.url("/x"))).await.unwrap();
    }
    assert_eq!(cb.state(), State::Open);
    clock.advance(Duration::from_secs(21));
    let res = svc.clone().oneshot(request(&up.url("/x"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(cb.state(), State::Open);
}

/// `s`, once `poll_ready` has said it is ready.
async fn ready<S>(mut s: S) -> S
where
    S: Service<http::Request<http_body_util::Empty<bytes::Bytes>>>,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| s.poll_ready(cx)).await.unwrap();
    s
}

/// One breaker for the service: `poll_ready` takes the next call's permit when the inner service
/// is ready, and a clone dropped unused gives it back.
#[tokio::test]
async fn readiness_holds_the_next_calls_permit() {
    let (up, clock, cb, svc) = guarded_client().await;

    // Made ready, dropped without a call: nothing counted.
    drop(ready(svc.clone()).await);
    assert_eq!(cb.snapshot().total_requests, 0);

    // A call made without `poll_ready` (against tower's contract) is still judged.
    up.set_mode(FAIL);
    let res = svc.clone().call(request(&up.url("/x"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(cb.snapshot().failures, 1);
    for _ in 0..2 {
        let mut s = ready(svc.clone()).await;
        let _ = s.call(request(&up.url("/x"))).await.unwrap();
    }
    assert_eq!(cb.state(), State::Open);
    assert_eq!(up.hits(), 3);

    // HALF_OPEN with two probes: two ready clones hold them, a third is refused.
    clock.advance(Duration::from_secs(11));
    let first = ready(svc.clone()).await;
    let mut second = ready(svc.clone()).await;
    let mut third = ready(svc.clone()).await;
    let e = third.call(request(&up.url("/x"))).await.unwrap_err();
    assert_eq!(open_error(&e).state(), State::HalfOpen);

    // The first is dropped unused: its probe goes to the next ready clone.
    drop(first);
    up.set_mode(OK);
    let mut fourth = ready(svc.clone()).await;
    for s in [&mut second, &mut fourth] {
        let res = s.call(request(&up.url("/x"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(up.hits(), 5);
}

#[tokio::test]
async fn open_circuit_fails_fast_even_when_the_inner_service_is_not_ready() {
    // A concurrency limit of one, taken by a request the upstream holds: the inner service is
    // not ready, and an open circuit must not wait for it.
    let up = Upstream::start().await;
    up.set_mode(HANG);
    let cb = CircuitBreaker::with_clock("limited", probe_config(), ManualClock::new());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .concurrency_limit(1)
        .service(client());
    let held = tokio::spawn(svc.clone().oneshot(request(&up.url("/"))));
    up.arrived(1).await;

    let mut cx = Context::from_waker(Waker::noop());
    let mut waiting = svc.clone();
    assert!(
        waiting.poll_ready(&mut cx).is_pending(),
        "closed: waits for the limit"
    );

    cb.force_open();
    let mut s = svc.clone();
    assert!(s.poll_ready(&mut cx).is_ready(), "open: ready at once");
    let mut fut = pin!(s.call(request(&up.url("/"))));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(open_error(&e).state(), State::ForcedOpen),
        _ => panic!("expected an immediate rejection"),
    }
    assert_eq!(up.hits(), 1);
    up.release(1);
    held.await.unwrap().unwrap();
}

/// A breaker (slow calls: 1 s, on a manual clock) in front of a concurrency limit of one, taken
/// by a request the upstream holds; and a clone of the service whose `poll_ready` waits for it.
/// The held request answers when the test releases it.
async fn waiting_for_readiness() -> (
    Upstream,
    ManualClock,
    CircuitBreaker,
    impl Service<
        http::Request<http_body_util::Empty<bytes::Bytes>>,
        Response = http::Response<hyper::body::Incoming>,
        Error = BoxError,
    >,
    tokio::task::JoinHandle<Result<http::Response<hyper::body::Incoming>, BoxError>>,
) {
    let up = Upstream::start().await;
    let clock = ManualClock::new();
    let config = Config::builder()
        .no_failure_rate_threshold()
        .slow_call_rate_threshold(100.0)
        .slow_call_duration_threshold(Duration::from_secs(1))
        .minimum_number_of_calls(10)
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("limited", config, clock.clone());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .concurrency_limit(1)
        .service(client());
    up.set_mode(HANG);
    let held = tokio::spawn(svc.clone().oneshot(request(&up.url("/"))));
    up.arrived(1).await;
    up.set_mode(OK);
    let mut waiting = svc.clone();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiting.poll_ready(&mut cx).is_pending());
    (up, clock, cb, waiting, held)
}

/// A call that waited for the inner service's readiness is judged by the state at the moment
/// it can go: a CLOSED permit taken while the inner service was not ready is given back.
#[tokio::test]
async fn a_call_that_waited_for_readiness_is_judged_when_it_can_go() {
    let (up, _clock, cb, waiting, held) = waiting_for_readiness().await;
    cb.force_open();
    up.release(1);
    held.await.unwrap().unwrap();
    let mut waiting = ready(waiting).await;
    let e = waiting.call(request(&up.url("/"))).await.unwrap_err();
    assert_eq!(open_error(&e).state(), State::ForcedOpen);
    assert_eq!(up.hits(), 1, "refused without being sent");
}

/// ... and timed from that moment: the wait for readiness is not the call's time.
#[tokio::test]
async fn a_call_that_waited_for_readiness_is_timed_from_when_it_can_go() {
    let (up, clock, cb, waiting, held) = waiting_for_readiness().await;
    clock.advance(Duration::from_secs(5));
    up.release(1);
    held.await.unwrap().unwrap();
    let slow_before = cb.snapshot().slow_calls;
    let mut waiting = ready(waiting).await;
    let res = waiting.call(request(&up.url("/"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(cb.snapshot().slow_calls, slow_before);
    assert_eq!(cb.snapshot().successes, 2);
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn transport_errors_are_failures() {
    // A port with nothing listening: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cb = CircuitBreaker::with_clock("gone", probe_config(), ManualClock::new());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .service(client());
    for _ in 0..3 {
        let e = svc
            .clone()
            .oneshot(request(&format!("http://{addr}/")))
            .await
            .unwrap_err();
        assert!(e.downcast_ref::<CircuitOpen>().is_none());
    }
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.snapshot().failures, 3);
}

#[tokio::test]
async fn timeouts_compose_and_count_as_failures() {
    let up = Upstream::start().await;
    up.set_mode(HANG);
    let cb = CircuitBreaker::with_clock("slow", probe_config(), ManualClock::new());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .timeout(Duration::from_millis(1))
        .service(client());
    for _ in 0..3 {
        let e = svc
            .clone()
            .oneshot(request(&up.url("/")))
            .await
            .unwrap_err();
        assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}");
    }
    assert_eq!(cb.state(), State::Open);
    up.release(3);
}

#[tokio::test(start_paused = true)]
async fn tower_http_timeout_answers_count_as_failures() {
    // A handler that never answers, behind tower-http's timeout (on tokio's paused clock): the
    // 408 the timeout answers is the handler's failure.
    let cb = CircuitBreaker::with_clock("handler", probe_config(), ManualClock::new());
    #[allow(deprecated)]
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .layer(tower_http::timeout::TimeoutLayer::new(Duration::from_secs(
            1,
        )))
        .layer(CircuitBreakerLayer::new(cb.clone()).respond_when_open());
    for _ in 0..3 {
        assert_eq!(send(&app, "/slow").await.0, StatusCode::REQUEST_TIMEOUT);
    }
    assert_eq!(cb.state(), State::Open);
    assert_eq!(send(&app, "/slow").await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn cancelled_half_open_calls_do_not_wedge_the_breaker() {
    let up = Upstream::start().await;
    let clock = ManualClock::new();
    let config = probe_config()
        .to_builder()
        .permitted_calls_in_half_open(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("cancel", config, clock.clone());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .service(client());
    cb.transition_to(State::Open).unwrap();
    clock.advance(Duration::from_secs(11));
    up.set_mode(HANG);
    for _ in 0..3 {
        // The probe reaches the upstream, then its caller gives up.
        let call = tokio::spawn(svc.clone().oneshot(request(&up.url("/"))));
        up.arrived(1).await;
        call.abort();
        let _ = call.await;
        assert_eq!(cb.state(), State::HalfOpen);
    }
    up.set_mode(OK);
    let res = svc.clone().oneshot(request(&up.url("/"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(cb.state(), State::Closed);
    up.release(3);
}

async fn send(app: &Router, path: &str) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let res = app
        .clone()
        .oneshot(
            http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body_bytes(body).await)
}

#[tokio::test]
async fn server_answers_503_json_with_retry_after_over_tcp() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("api", probe_config(), clock.clone());
    let app = Router::new()
        .route("/items", get(|| async { "[]" }))
        .layer(CircuitBreakerLayer::new(cb.clone()).respond_when_open());
    let addr = serve(app).await;
    let client = client();

    let res = client
        .request(request(&format!("http://{addr}/items")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    cb.open_for(Duration::from_millis(2_500)).unwrap();
    let res = client
        .request(request(&format!("http://{addr}/items")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3");
    assert_eq!(res.headers()["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(v["code"], "CIRCUIT_OPEN");
    assert_eq!(v["circuit"], "api");
    assert_eq!(v["state"], "OPEN");
    assert_eq!(v["retryAfterMs"], 2500);
    assert!(v["message"].as_str().unwrap().contains("api"));
}

fn failing_app(registry: &Registry, family_config: Config) -> Router {
    let family = registry.family("endpoints", FamilyOptions::new(family_config));
    Router::new()
        .route(
            "/a",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "a is down") }),
        )
        .route("/b", get(|| async { "b" }))
        .route("/items/{id}", get(|| async { "item" }))
        .route_layer(CircuitBreakerLayer::keyed(family, MethodAndRoute).respond_when_open())
}

#[tokio::test]
async fn per_endpoint_breakers_open_only_the_failing_route() {
    let registry = Registry::builder().clock(ManualClock::new()).build();
    let app = failing_app(&registry, probe_config());
    for _ in 0..3 {
        assert_eq!(send(&app, "/a").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let (status, headers, body) = send(&app, "/a").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["circuit"], "endpoints:GET /a");
    assert_eq!(send(&app, "/b").await.0, StatusCode::OK);
    // Keyed by the route template, never the raw path.
    for id in 0..20 {
        assert_eq!(send(&app, &format!("/items/{id}")).await.0, StatusCode::OK);
    }
    let names: Vec<String> = registry
        .breakers()
        .iter()
        .map(|b| b.name().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "endpoints:GET /a",
            "endpoints:GET /b",
            "endpoints:GET /items/{id}"
        ]
    );
    assert_eq!(
        registry.get("endpoints:GET /a").unwrap().state(),
        State::Open
    );
    assert_eq!(
        registry.get("endpoints:GET /b").unwrap().state(),
        State::Closed
    );
}

#[tokio::test]
async fn key_cap_holds_under_ten_thousand_distinct_paths() {
    let registry = Registry::new();
    let family = registry.family("raw", FamilyOptions::new(Config::default()).max_keys(100));
    let app = Router::new()
        .route("/{*rest}", get(|| async { "ok" }))
        .layer(CircuitBreakerLayer::keyed(family.clone(), RawPath).respond_when_open());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert_eq!(send(&app, &format!("/p/{x:x}")).await.0, StatusCode::OK);
    }
    assert!(family.len() <= 100, "{} keys", family.len());
    assert!(family.overflow().snapshot().successes > 9_000);
}

#[tokio::test]
async fn stacked_breakers_each_see_their_own_outcomes() {
    let clock = ManualClock::new();
    let registry = Registry::builder().clock(clock.clone()).build();
    let service = registry.breaker_with("service", five_in_a_row());
    let app = failing_app(&registry, probe_config())
        .layer(CircuitBreakerLayer::new(service.clone()).respond_when_open());

    // /a's breaker opens after 3 failures; its fast rejections are not the service's failures.
    for _ in 0..3 {
        send(&app, "/a").await;
    }
    for _ in 0..20 {
        assert_eq!(send(&app, "/a").await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    let s = service.snapshot();
    assert_eq!(service.state(), State::Closed);
    assert_eq!((s.failures, s.ignored_calls), (3, 20));

    // An open service breaker rejects before any endpoint breaker is consulted.
    service.force_open();
    let b = registry.get("endpoints:GET /b");
    let before = b.as_ref().map_or(0, |b| b.snapshot().total_requests);
    let (status, _, body) = send(&app, "/b").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["circuit"], "service");
    assert_eq!(v["state"], "FORCED_OPEN");
    let after = registry
        .get("endpoints:GET /b")
        .map_or(0, |b| b.snapshot().total_requests);
    assert_eq!(before, after);
}

#[tokio::test]
async fn client_rejection_of_an_inner_breaker_is_ignored_by_the_outer_one() {
    let up = Upstream::start().await;
    up.set_mode(FAIL);
    let clock = ManualClock::new();
    let outer = CircuitBreaker::with_clock(
        "outer",
        Config::builder()
            .sliding_window(SlidingWindow::Count(10))
            .minimum_number_of_calls(10)
            .build()
            .unwrap(),
        clock.clone(),
    );
    let inner = CircuitBreaker::with_clock("inner", probe_config(), clock);
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(outer.clone()))
        .layer(CircuitBreakerLayer::new(inner.clone()))
        .service(client());
    for _ in 0..30 {
        let _ = svc.clone().oneshot(request(&up.url("/"))).await;
    }
    assert_eq!(inner.state(), State::Open);
    assert_eq!(outer.state(), State::Closed);
    let s = outer.snapshot();
    assert_eq!((s.failures, s.ignored_calls), (3, 27));
}

#[tokio::test]
async fn for_axum_layers_inside_and_around_a_router_over_tcp() {
    // Endpoint breakers inside the router (`route_layer`), a service breaker around the whole
    // router (served as it is, which `for_axum`'s axum `Response` allows).
    let clock = ManualClock::new();
    let registry = Registry::builder().clock(clock.clone()).build();
    let endpoints = registry.family("endpoints", FamilyOptions::new(probe_config()));
    let service = registry.breaker_with("service", five_in_a_row());
    let router = Router::new()
        .route("/items", get(|| async { "[]" }))
        .route(
            "/a",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "a is down") }),
        )
        .route_layer(CircuitBreakerLayer::keyed(endpoints, MethodAndRoute).for_axum());
    let app = CircuitBreakerLayer::new(service.clone())
        .for_axum()
        .layer(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .await
        .unwrap()
    });
    let client = client();
    let get = |path: &str| client.request(request(&format!("http://{addr}{path}")));

    // The handler's body goes out as it is, its length known.
    let res = get("/items").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-length"], "2");
    assert_eq!(body_bytes(res.into_body()).await, "[]");

    // /a's breaker opens; its rejections are the endpoint's answer, not the service's failures.
    for _ in 0..3 {
        assert_eq!(
            get("/a").await.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let res = get("/a").await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(v["circuit"], "endpoints:GET /a");
    let s = service.snapshot();
    assert_eq!((s.failures, s.successes, s.ignored_calls), (3, 1, 1));

    // The service breaker open: the 503 contract, before the router is reached.
    service.open_for(Duration::from_millis(2_500)).unwrap();
    let res = get("/items").await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3");
    assert_eq!(res.headers()["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body_bytes(res.into_body()).await).unwrap();
    assert_eq!(
        (v["code"].as_str(), v["circuit"].as_str()),
        (Some("CIRCUIT_OPEN"), Some("service"))
    );
    assert_eq!(
        registry
            .get("endpoints:GET /items")
            .unwrap()
            .snapshot()
            .total_requests,
        1
    );
}

#[tokio::test]
async fn per_host_breakers_open_only_the_failing_upstream() {
    // Two upstreams behind one client with a breaker per host (the URI's authority).
    let (down, up) = (Upstream::start().await, Upstream::start().await);
    down.set_mode(FAIL);
    let registry = Registry::builder().clock(ManualClock::new()).build();
    let hosts = registry.family("hosts", FamilyOptions::new(probe_config()));
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::keyed(hosts.clone(), Authority))
        .service(client());
    for _ in 0..3 {
        let res = svc.clone().oneshot(request(&down.url("/x"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let err = svc
        .clone()
        .oneshot(request(&down.url("/x")))
        .await
        .unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
    assert_eq!(open.name(), format!("hosts:{}", down.addr));
    assert_eq!(down.hits(), 3);
    for _ in 0..5 {
        let res = svc.clone().oneshot(request(&up.url("/y"))).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(up.hits(), 5);
    let up_breaker = registry.get(&format!("hosts:{}", up.addr)).unwrap();
    assert_eq!(up_breaker.state(), State::Closed);
    assert_eq!(up_breaker.snapshot().successes, 5);
    // A request without an authority in its URI is keyed by its Host header.
    let mut req = request("/z");
    req.headers_mut()
        .insert(http::header::HOST, down.addr.to_string().parse().unwrap());
    let mut keyed = CircuitBreakerLayer::keyed(hosts, Authority).layer(tower::service_fn(
        |_req: http::Request<http_body_util::Empty<bytes::Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        },
    ));
    let err = keyed.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some());
}
