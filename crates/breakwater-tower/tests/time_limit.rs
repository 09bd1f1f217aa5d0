//! `TimeLimitLayer` inside a server's breaker, on tokio's paused clock: a call over its limit
//! is cancelled between its limit and one resolution (1/64 of it) and a millisecond later,
//! counted as the breaker's failure, answered 504 `UPSTREAM_TIMEOUT` (its error is tower's
//! `Elapsed`, so the gRPC form of `tests/timeouts.rs` holds too) or handed to the fallback;
//! calls within it are answered; calls starting close together share a deadline.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodRouter, get};
use breakwater_core::{CircuitBreaker, Config, ManualClock, State};
use breakwater_tower::CircuitBreakerLayer;
use breakwater_tower::fallback::{FallbackLayer, StaleCache};
use breakwater_tower::time_limit::TimeLimitLayer;
use http::{Request, StatusCode};
use serde_json::Value;
use support::Cancelled;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

const LIMIT: Duration = Duration::from_secs(2);
/// 1/64 of the limit, in whole milliseconds: calls starting within it share a deadline.
const RESOLUTION: Duration = Duration::from_millis(32);
/// The latest a call over its limit is cancelled: one resolution and tokio's timer's
/// millisecond after its limit.
const LATEST: Duration = LIMIT
    .checked_add(RESOLUTION)
    .unwrap()
    .checked_add(Duration::from_millis(1))
    .unwrap();

fn three_in_a_row() -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(3)
        .minimum_number_of_calls(100)
        .wait_in_open(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A handler that answers after `after` (`None`: never), counting its cancellations.
fn handler(after: Option<Duration>, cancelled: &Cancelled) -> MethodRouter {
    let c = cancelled.clone();
    get(move || {
        let guard = c.guard();
        async move {
            match after {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
            std::mem::forget(guard);
            "answered"
        }
    })
}

/// `route` behind the breaker, with the time limit inside it.
fn app(cb: &CircuitBreaker, route: MethodRouter) -> Router {
    Router::new().route("/call", route).route_layer(
        ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(cb.clone()).for_axum())
            .layer(TimeLimitLayer::new(LIMIT)),
    )
}

async fn send(
    app: &Router,
    req: Request<axum::body::Body>,
) -> (StatusCode, http::HeaderMap, Value) {
    // Bounded: a time limit that never fires fails here instead of hanging.
    let res = tokio::time::timeout(LIMIT * 5, app.clone().oneshot(req))
        .await
        .expect("answered within five limits")
        .unwrap();
    support::answer(res).await
}

fn call() -> Request<axum::body::Body> {
    support::get("/call")
}

#[tokio::test(start_paused = true)]
async fn a_call_over_its_limit_is_cancelled_counted_and_answered_504() {
    let cb = CircuitBreaker::with_clock("api", three_in_a_row(), ManualClock::new());
    let cancelled = Cancelled::default();
    let app = app(&cb, handler(None, &cancelled));
    for i in 1..=3 {
        let started = Instant::now();
        let (status, _, json) = send(&app, call()).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(json["code"], "UPSTREAM_TIMEOUT");
        assert!(took >= LIMIT && took <= LATEST, "cancelled after {took:?}");
        assert_eq!(cancelled.count(), i, "the handler was dropped");
    }
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (3, 0));
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_call_within_its_limit_is_answered() {
    let cb = CircuitBreaker::with_clock("api", three_in_a_row(), ManualClock::new());
    let cancelled = Cancelled::default();
    let app = app(
        &cb,
        handler(Some(LIMIT - Duration::from_millis(1)), &cancelled),
    );
    let started = Instant::now();
    let (status, _, body) = send(&app, call()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, Some("answered")));
    assert_eq!(started.elapsed(), LIMIT - Duration::from_millis(1));
    assert_eq!(cancelled.count(), 0);
    assert_eq!(cb.snapshot().successes, 1);
}

#[tokio::test(start_paused = true)]
async fn calls_starting_within_a_resolution_share_a_deadline() {
    let cb = CircuitBreaker::with_clock("api", three_in_a_row(), ManualClock::new());
    let cancelled = Cancelled::default();
    let app = app(&cb, handler(None, &cancelled));
    let spawn = |app: &Router| {
        let app = app.clone();
        tokio::spawn(async move {
            send(&app, call()).await;
            Instant::now()
        })
    };
    let start = Instant::now();
    let first = spawn(&app);
    tokio::task::yield_now().await;
    tokio::time::advance(RESOLUTION / 2).await;
    let second = spawn(&app);
    tokio::task::yield_now().await;
    tokio::time::advance(RESOLUTION).await;
    let third = spawn(&app);
    let (first, second, third) = (
        first.await.unwrap(),
        second.await.unwrap(),
        third.await.unwrap(),
    );
    assert_eq!(first, second, "one deadline for the first two");
    assert!(first - start >= LIMIT + RESOLUTION && first - start <= LATEST);
    assert!(
        third > first,
        "the third started past the first deadline's resolution"
    );
    assert!(third - start <= LATEST + RESOLUTION * 2);
    assert_eq!(cancelled.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_fallback_outside_answers_a_call_over_its_limit_from_the_stale_cache() {
    let cb = CircuitBreaker::with_clock("api", three_in_a_row(), ManualClock::new());
    let fast = Arc::new(AtomicUsize::new(1));
    let f = fast.clone();
    let route = get(move || {
        let fast = f.load(Ordering::SeqCst) == 1;
        async move {
            if !fast {
                std::future::pending::<()>().await;
            }
            "[1,2,3]"
        }
    });
    let app = app(&cb, route).layer(
        FallbackLayer::new()
            .on_timeouts()
            .stale_if_error(StaleCache::new())
            .for_axum(),
    );
    assert_eq!(send(&app, call()).await.0, StatusCode::OK);
    fast.store(0, Ordering::SeqCst);
    let (status, headers, body) = send(&app, call()).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!([1, 2, 3]))
    );
    assert_eq!(headers["x-fallback"], "stale");
    assert_eq!(cb.snapshot().failures, 1, "the breaker counted the timeout");
}
