//! Time limits the breaker sees: tower's `TimeoutLayer` inside a server's breaker (in an axum
//! router, by `route_layer`), on tokio's paused clock. A call over its limit is cancelled,
//! counted as a failure (and as slow), answered 504 `UPSTREAM_TIMEOUT` (gRPC DEADLINE_EXCEEDED)
//! or handed to the fallback; a hung half-open probe gives its permit back.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use breakwater_core::{CircuitBreaker, Config, ManualClock, State};
use breakwater_tower::fallback::{FallbackLayer, StaleCache};
use breakwater_tower::{CircuitBreakerLayer, DEFAULT_GRPC_FAILURE_CODES, grpc_failures};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use support::Cancelled;
use tower::{Layer, ServiceBuilder, ServiceExt};

const LIMIT: Duration = Duration::from_secs(2);

fn three_in_a_row() -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(3)
        .slow_call_rate_threshold(100.0)
        .slow_call_duration_threshold(Duration::from_secs(1))
        .minimum_number_of_calls(100)
        .wait_in_open(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap()
}

/// A route whose handler never answers, behind a time limit inside its breaker.
fn hanging_app(cb: &CircuitBreaker, cancelled: &Cancelled) -> Router {
    let c = cancelled.clone();
    let hang = move || {
        let guard = c.guard();
        async move {
            std::future::pending::<()>().await;
            drop(guard);
            "never"
        }
    };
    Router::new()
        .route("/slow", get(hang.clone()))
        .route("/pkg.Svc/Call", post(hang))
        .route_layer(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new(cb.clone()).for_axum())
                .timeout(LIMIT),
        )
}

async fn send(
    app: &Router,
    req: Request<axum::body::Body>,
) -> (StatusCode, http::HeaderMap, Value) {
    support::answer(app.clone().oneshot(req).await.unwrap()).await
}

fn get_slow() -> Request<axum::body::Body> {
    support::get("/slow")
}

#[tokio::test(start_paused = true)]
async fn a_call_over_its_limit_is_cancelled_counted_and_answered_504() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("api", three_in_a_row(), clock.clone());
    let cancelled = Cancelled::default();
    let app = hanging_app(&cb, &cancelled);

    for i in 1..=3 {
        let started = tokio::time::Instant::now();
        let (status, _, json) = send(&app, get_slow()).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(json["code"], "UPSTREAM_TIMEOUT");
        assert_eq!(
            started.elapsed(),
            LIMIT,
            "answered at the limit (paused clock)"
        );
        assert_eq!(cancelled.count(), i, "the handler's future was dropped");
    }
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (3, 0));
    assert_eq!(cb.state(), State::Open);
    // Then refused at once, without the handler.
    let started = tokio::time::Instant::now();
    let (status, headers, json) = send(&app, get_slow()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["code"], "CIRCUIT_OPEN");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(cancelled.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_is_also_slow() {
    // The breaker times calls on its own (manual) clock: the clock moves as tokio's does.
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("api", three_in_a_row(), clock.clone());
    let app = hanging_app(&cb, &Cancelled::default());
    let pending = tokio::spawn({
        let app = app.clone();
        async move { send(&app, get_slow()).await }
    });
    tokio::task::yield_now().await;
    clock.advance(LIMIT);
    let (status, _, _) = pending.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let s = cb.snapshot();
    assert_eq!((s.failures, s.slow_calls), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_grpc_call_over_its_limit_is_deadline_exceeded() {
    let cb = CircuitBreaker::with_clock("grpc", three_in_a_row(), ManualClock::new());
    let app = Router::new()
        .route(
            "/pkg.Svc/Call",
            post(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(
                    CircuitBreakerLayer::new(cb.clone())
                        .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES))
                        .for_axum(),
                )
                .timeout(LIMIT),
        );
    let req = Request::post("/pkg.Svc/Call")
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, headers, _) = send(&app, req).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "gRPC errors are trailers-only answers"
    );
    assert_eq!(headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(cb.snapshot().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_half_open_probe_gives_its_permit_back_at_its_limit() {
    let clock = ManualClock::new();
    let config = three_in_a_row()
        .to_builder()
        .success_threshold(1)
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("api", config, clock.clone());
    let cancelled = Cancelled::default();
    let app = hanging_app(&cb, &cancelled);
    cb.transition_to(State::Open).unwrap();
    let past_the_wait = Duration::from_millis(10_001);
    clock.advance(past_the_wait);
    // The only probe hangs; a second caller meanwhile is refused (the permit is held).
    let probe = tokio::spawn({
        let app = app.clone();
        async move { send(&app, get_slow()).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(cb.state(), State::HalfOpen);
    let (status, _, _) = send(&app, get_slow()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // At its limit the probe fails: the breaker re-opens instead of waiting for it forever.
    let (status, _, json) = probe.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json["code"], "UPSTREAM_TIMEOUT");
    assert_eq!(cb.state(), State::Open);
    clock.advance(past_the_wait);
    let next = tokio::spawn({
        let app = app.clone();
        async move { send(&app, get_slow()).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(cb.state(), State::HalfOpen, "a new probe was admitted");
    assert_eq!(next.await.unwrap().0, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(cancelled.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fallback_outside_answers_timeouts_when_asked() {
    let cb = CircuitBreaker::with_clock("api", three_in_a_row(), ManualClock::new());
    let fast = Arc::new(AtomicUsize::new(1));
    let f = fast.clone();
    let app = Router::new()
        .route(
            "/items",
            get(move || {
                let fast = f.load(Ordering::SeqCst) == 1;
                async move {
                    if !fast {
                        std::future::pending::<()>().await;
                    }
                    "[1,2,3]"
                }
            }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new(cb.clone()).for_axum())
                .timeout(LIMIT),
        )
        .layer(
            FallbackLayer::new()
                .on_timeouts()
                .stale_if_error(StaleCache::new())
                .for_axum(),
        );
    let items = || {
        Request::get("/items")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    assert_eq!(send(&app, items()).await.0, StatusCode::OK);
    fast.store(0, Ordering::SeqCst);
    let res = app.clone().oneshot(items()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-fallback"], "stale");
    assert_eq!(cb.snapshot().failures, 1, "the breaker counted the timeout");

    // Without `on_timeouts`, the breaker's 504 goes out as it is.
    let plain = Router::new()
        .route(
            "/items",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new(cb.clone()).for_axum())
                .timeout(LIMIT),
        )
        .layer(
            FallbackLayer::new()
                .stale_if_error(StaleCache::new())
                .for_axum(),
        );
    let (status, _, json) = send(&plain, items()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json["code"], "UPSTREAM_TIMEOUT");
}

#[tokio::test]
async fn an_inner_service_that_fails_to_get_ready_is_answered_502() {
    let cb = CircuitBreaker::new("api", Config::default());
    let broken = tower::service_fn(|_req: Request<axum::body::Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
    });
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()).respond_when_open())
        .service(NeverReady(broken));
    let res = svc
        .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["code"], "UPSTREAM_ERROR");
    assert_eq!(
        cb.snapshot().total_requests,
        0,
        "nothing was called, nothing recorded"
    );
}

/// A service whose `poll_ready` fails.
#[derive(Clone)]
struct NeverReady<S>(S);

impl<S, R> tower::Service<R> for NeverReady<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = std::future::Ready<Result<S::Response, tower::BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Err("the connection pool is closed".into()))
    }

    fn call(&mut self, _req: R) -> Self::Future {
        std::future::ready(Err("called while not ready".into()))
    }
}

#[tokio::test]
async fn an_axum_form_answers_an_inner_service_that_fails_to_get_ready_502() {
    let cb = CircuitBreaker::new("api", Config::default());
    let broken = tower::service_fn(|_req: Request<axum::body::Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
    });
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()).for_axum())
        .service(NeverReady(broken));
    let res = svc
        .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["code"], "UPSTREAM_ERROR");
}

#[tokio::test]
async fn a_call_made_without_poll_ready_answers_an_http_request_in_http_form() {
    // `call` without `poll_ready` first: the permit is taken in `call`, and an inner error of
    // a plain HTTP request is answered 502 JSON (a gRPC request would get a gRPC status).
    let cb = CircuitBreaker::new("api", Config::default());
    let failing = tower::service_fn(|_req: Request<axum::body::Body>| async {
        Err::<http::Response<axum::body::Body>, tower::BoxError>("refused by the upstream".into())
    });
    let mut svc = CircuitBreakerLayer::new(cb.clone())
        .respond_when_open()
        .layer(failing);
    let res = tower::Service::call(
        &mut svc,
        Request::get("/").body(axum::body::Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(res.headers().get("grpc-status").is_none());
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["code"], "UPSTREAM_ERROR");
    assert_eq!(cb.snapshot().failures, 1);
}

/// What a fallback's function strategy was told: the failure's kind, and its error if any.
fn describe(
    _: &http::request::Parts,
    failure: &breakwater_tower::fallback::Failure,
) -> http::Response<bytes::Bytes> {
    let error = failure.error().map(ToString::to_string).unwrap_or_default();
    http::Response::new(bytes::Bytes::from(format!(
        "{}|{error}",
        failure.kind().as_str()
    )))
}

async fn text(app: &Router, path: &str) -> (StatusCode, String) {
    let res = app
        .clone()
        .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn answering(status: u16) -> axum::routing::MethodRouter {
    get(move || async move { (StatusCode::from_u16(status).unwrap(), "upstream") })
}

#[tokio::test(start_paused = true)]
async fn a_breakers_timeout_answer_reaches_the_fallback_as_the_timeout_it_was() {
    let cb = CircuitBreaker::new("api", Config::default());
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                std::future::pending::<()>().await;
                "never"
            }),
        )
        .route_layer(
            ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new(cb.clone()).for_axum())
                .timeout(LIMIT),
        )
        .layer(
            FallbackLayer::new()
                .on_timeouts()
                .function(describe)
                .for_axum(),
        );
    let (status, body) = text(&app, "/slow").await;
    assert_eq!(status, StatusCode::OK);
    let (kind, error) = body.split_once('|').unwrap();
    assert_eq!(kind, "timeout");
    assert!(
        !error.is_empty(),
        "the breaker's error, carried over: {body}"
    );
}

#[tokio::test]
async fn on_timeouts_takes_408_and_504_answers_and_nothing_else() {
    let app = Router::new()
        .route("/408", answering(408))
        .route("/504", answering(504))
        .route("/500", answering(500))
        .layer(
            FallbackLayer::new()
                .on_timeouts()
                .function(describe)
                .for_axum(),
        );
    for path in ["/408", "/504"] {
        let (status, body) = text(&app, path).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "timeout|"),
            "{path}"
        );
    }
    let (status, body) = text(&app, "/500").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "upstream")
    );
}

#[tokio::test]
async fn without_on_timeouts_a_504_is_a_failed_response_not_a_timeout() {
    let app = Router::new().route("/504", answering(504)).layer(
        FallbackLayer::new()
            .on_failed_responses()
            .function(describe)
            .for_axum(),
    );
    let (status, body) = text(&app, "/504").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "failed_response|")
    );
}

#[test]
fn the_fallback_service_and_future_say_what_they_are() {
    let svc = FallbackLayer::new()
        .fixed(http::Response::new("[]"))
        .layer(tower::service_fn(|_req: Request<axum::body::Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
        }));
    assert!(format!("{svc:?}").contains("FallbackService"));
    let mut svc = svc;
    let future = tower::Service::call(&mut svc, Request::new(axum::body::Body::empty()));
    assert!(format!("{future:?}").contains("ResponseFuture"));
}

#[tokio::test]
async fn the_fallback_tells_its_strategy_what_failed_and_counts_each_strategy() {
    // A refusal: the strategy sees the circuit; the fixed answer is counted as fixed.
    let cb = CircuitBreaker::new("api", Config::default());
    cb.force_open();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let s = seen.clone();
    let fallback = FallbackLayer::new().function(move |_, failure| {
        *s.lock().unwrap() = format!(
            "{}|{:?}|{failure}|{failure:?}",
            failure.circuit_open().map_or("", |o| o.name()),
            failure.status()
        );
        http::Response::new(bytes::Bytes::from_static(b"from the function"))
    });
    let stats = fallback.stats();
    let app = Router::new()
        .route("/r", answering(200))
        .route_layer(CircuitBreakerLayer::new(cb.clone()).for_axum())
        .layer(fallback.for_axum());
    let (status, body) = text(&app, "/r").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "from the function")
    );
    let told = seen.lock().unwrap().clone();
    let parts: Vec<&str> = told.split('|').collect();
    assert_eq!(parts[0], "api", "{told}");
    assert_eq!(parts[1], "Some(503)", "{told}");
    assert!(
        parts[2].contains("api"),
        "Display names the circuit: {told}"
    );
    assert!(parts[3].starts_with("Failure"), "{told}");
    assert_eq!((stats.uses("function"), stats.uses("fixed")), (1, 0));

    // A failed response: its status; a fixed answer counted as fixed.
    let fallback = FallbackLayer::new()
        .on_failed_responses()
        .fixed(http::Response::new("[]"));
    let stats = fallback.stats();
    let app = Router::new()
        .route("/e", answering(502))
        .layer(fallback.for_axum());
    let (status, body) = text(&app, "/e").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
    assert_eq!(
        (stats.uses("fixed"), stats.uses("function"), stats.total()),
        (1, 0, 1)
    );
    let app = Router::new().route("/e", answering(502)).layer(
        FallbackLayer::new()
            .on_failed_responses()
            .function(describe)
            .for_axum(),
    );
    let (_, body) = text(&app, "/e").await;
    assert_eq!(body, "failed_response|");
}

#[tokio::test]
async fn a_replaying_fallback_asks_its_inner_service_to_be_ready() {
    let broken = tower::service_fn(|_req: Request<axum::body::Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty()))
    });
    let svc = FallbackLayer::new()
        .replay_bodies(1024)
        .on_errors()
        .function(describe)
        .layer(NeverReady(broken));
    let res = svc
        .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the function answered");
    assert_eq!(res.headers()["x-fallback"], "function");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(body.contains("the connection pool is closed"), "{body}");
}

#[tokio::test]
async fn failures_no_strategy_answers_are_counted_apart() {
    // A stale cache with nothing in it cannot answer: the failure goes out as it is, counted.
    let fallback = FallbackLayer::new()
        .on_failed_responses()
        .stale_if_error(StaleCache::new());
    let stats = fallback.stats();
    let app = Router::new()
        .route("/e", answering(502))
        .layer(fallback.for_axum());
    for _ in 0..2 {
        assert_eq!(text(&app, "/e").await.0, StatusCode::BAD_GATEWAY);
    }
    assert_eq!((stats.unanswered(), stats.total()), (2, 0));

    let fallback = FallbackLayer::new()
        .on_failed_responses()
        .fixed(http::Response::new("[]"));
    let stats = fallback.stats();
    let app = Router::new()
        .route("/e", answering(502))
        .layer(fallback.for_axum());
    for _ in 0..2 {
        assert_eq!(text(&app, "/e").await.0, StatusCode::OK);
    }
    assert_eq!(
        (stats.unanswered(), stats.total(), stats.uses("fixed")),
        (0, 2, 2)
    );
}

#[tokio::test]
async fn an_error_the_fallback_does_not_take_is_answered_and_counted() {
    let fallback = FallbackLayer::new().fixed(http::Response::new("[]"));
    let stats = fallback.stats();
    let failing = tower::service_fn(|_req: Request<axum::body::Body>| async {
        Err::<http::Response<axum::body::Body>, tower::BoxError>("reset by peer".into())
    });
    let res = fallback
        .layer(failing)
        .oneshot(Request::get("/").body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY, "without on_errors");
    assert_eq!((stats.unanswered(), stats.total()), (1, 0));
}

/// A backup service that answers `status`, or fails with a chained error when `status` is 0.
fn backup(
    status: u16,
) -> impl tower::Service<
    Request<http_body_util::Full<bytes::Bytes>>,
    Response = http::Response<http_body_util::Full<bytes::Bytes>>,
    Error = tower::BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(
        move |_req: Request<http_body_util::Full<bytes::Bytes>>| async move {
            if status == 0 {
                let cause = std::io::Error::other("connection refused");
                let err: tower::BoxError = Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    Chained("backup unreachable", cause),
                ));
                return Err(err);
            }
            let mut res =
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from("backup")));
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(res)
        },
    )
}

/// An error with a source, to see the whole chain reported.
#[derive(Debug)]
struct Chained(&'static str, std::io::Error);

impl std::fmt::Display for Chained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Chained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.1)
    }
}

async fn through_backup(status: u16, method: http::Method) -> (StatusCode, String, String) {
    let app = Router::new()
        .route(
            "/e",
            answering(503).post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "primary") }),
        )
        .layer(
            FallbackLayer::new()
                .on_failed_responses()
                .stale_if_error(StaleCache::new())
                .backup(backup(status))
                .for_axum(),
        );
    let res = app
        .oneshot(
            Request::builder()
                .method(method)
                .uri("/e")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let skipped = res
        .headers()
        .get(breakwater_tower::fallback::X_FALLBACK_SKIPPED)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, skipped, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn a_backups_failed_answer_is_not_taken_and_says_why() {
    let (status, skipped, body) = through_backup(200, http::Method::GET).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "backup"));
    // The backup answered 500, a failure by the classifier: the primary's own answer goes out,
    // and the header says why neither strategy answered.
    let (status, skipped_500, body) = through_backup(500, http::Method::GET).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "upstream")
    );
    assert!(
        skipped_500.contains("backup: it answered 500"),
        "{skipped_500}"
    );
    assert!(
        skipped_500.contains("stale: nothing fresh"),
        "{skipped_500}"
    );
    let _ = skipped;
    // The backup failed: its error, with its causes.
    let (_, skipped, _) = through_backup(0, http::Method::GET).await;
    assert!(
        skipped.contains("backup: backup unreachable: connection refused"),
        "{skipped}"
    );
    // A POST has no cache key: the stale cache is not even asked, so it says nothing.
    let (_, skipped, _) = through_backup(500, http::Method::POST).await;
    assert!(!skipped.contains("stale"), "{skipped}");
}

/// A body that knows from its size hint alone that it is empty (it has not said it ended).
struct SizedEmpty;

impl http_body::Body for SizedEmpty {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(0)
    }
}

#[tokio::test]
async fn a_body_known_empty_by_its_size_is_replayed_to_the_backup() {
    let primary = tower::service_fn(|_req: Request<SizedEmpty>| async {
        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from("primary")));
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Ok::<_, std::convert::Infallible>(res)
    });
    let svc = FallbackLayer::new()
        .on_failed_responses()
        .backup(backup(200))
        .layer(primary);
    let res = svc
        .oneshot(Request::get("/e").body(SizedEmpty).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"backup");
}
