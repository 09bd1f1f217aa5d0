//! Slow calls are timed to the response head by default, or to the end of the body.

use std::convert::Infallible;
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Config, ManualClock};
use breakwater_tower::CircuitBreakerLayer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceBuilder, ServiceExt};

fn timed() -> Config {
    Config::builder()
        .slow_call_rate_threshold(100.0)
        .slow_call_duration_threshold(Duration::from_secs(1))
        .build()
        .unwrap()
}

async fn slow_body_call(to_end: bool) -> u64 {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("t", timed(), clock.clone());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()).measure_to_end_of_body(to_end))
        .service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"data"))))
        });
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    // The body takes two seconds to read.
    clock.advance(Duration::from_secs(2));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"data");
    let s = cb.snapshot();
    assert_eq!(s.successes, 1);
    s.slow_calls
}

#[tokio::test]
async fn a_failed_head_timed_to_the_end_is_recorded_at_the_end_as_a_failure() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("t", timed(), clock.clone());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()).measure_to_end_of_body(true))
        .service_fn(|_req: http::Request<()>| async {
            let mut res = http::Response::new(Full::new(Bytes::from_static(b"oops")));
            *res.status_mut() = http::StatusCode::BAD_GATEWAY;
            Ok::<_, Infallible>(res)
        });
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    let s = cb.snapshot();
    assert_eq!((s.failures, s.slow_calls), (0, 0), "nothing before the end");
    clock.advance(Duration::from_secs(2));
    res.into_body().collect().await.unwrap();
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes, s.slow_calls), (1, 0, 1));
}

#[tokio::test]
async fn without_slow_calls_a_head_verdict_is_recorded_at_the_head_even_timed_to_the_end() {
    // No slow-call policy: there is nothing to time, so the end of the body is not awaited.
    let cb = CircuitBreaker::new("t", Config::default());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()).measure_to_end_of_body(true))
        .service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"data"))))
        });
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(cb.snapshot().successes, 1);
    drop(res);
    assert_eq!(cb.snapshot().successes, 1);
}

/// With a classifier that decides at the response head, a client-side layer hands back the
/// inner service's own body: nothing wraps it, nothing watches it.
#[test]
fn a_head_only_classifier_passes_the_inner_body_through() {
    fn body_is<S>(_: &S)
    where
        S: tower::Service<http::Request<()>, Response = http::Response<Full<Bytes>>>,
    {
    }
    let cb = CircuitBreaker::new("t", timed());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb))
        .service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
        });
    body_is(&svc);
}

#[tokio::test]
async fn slow_calls_are_measured_to_the_head_by_default() {
    assert_eq!(slow_body_call(false).await, 0);
}

#[tokio::test]
async fn slow_calls_can_be_measured_to_the_end_of_the_body() {
    assert_eq!(slow_body_call(true).await, 1);
}

/// A gRPC call whose verdict comes in the trailers, two seconds after its head: how many slow
/// calls the breaker counted. `to_end`: `None` for the layer as built, `Some(on)` for
/// `measure_to_end_of_body(on)`.
async fn slow_grpc_call(to_end: Option<bool>) -> u64 {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("g", timed(), clock.clone());
    let inner = tower::service_fn(|_req: http::Request<()>| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body =
            Full::new(Bytes::from_static(b"msg")).with_trailers(async { Some(Ok(trailers)) });
        let mut res = http::Response::new(body);
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        Ok::<_, Infallible>(res)
    });
    let layer = CircuitBreakerLayer::new(cb.clone())
        .classifier(breakwater_tower::classify::grpc_failures(&[]));
    let res = match to_end {
        None => layer.layer(inner).oneshot(http::Request::new(())).await,
        Some(on) => {
            let res = layer
                .measure_to_end_of_body(on)
                .layer(inner)
                .oneshot(http::Request::new(()))
                .await;
            clock.advance(Duration::from_secs(2));
            let collected = res.unwrap().into_body().collect().await.unwrap();
            assert!(collected.trailers().is_some());
            let s = cb.snapshot();
            assert_eq!(s.successes, 1, "grpc-status 0 is a success");
            return s.slow_calls;
        }
    };
    clock.advance(Duration::from_secs(2));
    let collected = res.unwrap().into_body().collect().await.unwrap();
    assert!(collected.trailers().is_some());
    let s = cb.snapshot();
    assert_eq!(s.successes, 1, "grpc-status 0 is a success");
    s.slow_calls
}

#[tokio::test]
async fn a_grpc_call_judged_at_its_trailers_is_timed_to_its_head_by_default() {
    assert_eq!(slow_grpc_call(None).await, 0);
    assert_eq!(slow_grpc_call(Some(false)).await, 0);
}

#[tokio::test]
async fn a_grpc_call_can_be_timed_to_its_trailers() {
    assert_eq!(slow_grpc_call(Some(true)).await, 1);
}

#[tokio::test]
async fn a_watched_body_that_fails_is_a_failure() {
    let cb = CircuitBreaker::new("b", timed());
    let svc = CircuitBreakerLayer::new(cb.clone())
        .classifier(breakwater_tower::classify::grpc_failures(&[]))
        .layer(tower::service_fn(|_req: http::Request<()>| async {
            let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"part"))),
                Err(std::io::Error::other("connection reset")),
            ];
            let body = http_body_util::StreamBody::new(tokio_stream::iter(frames));
            Ok::<_, Infallible>(http::Response::new(body))
        }));
    let res = svc.oneshot(http::Request::new(())).await.unwrap();
    assert!(
        format!("{:?}", res.body()).contains("tracked"),
        "{:?}",
        res.body()
    );
    assert!(res.into_body().collect().await.is_err());
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (1, 0));
}

#[tokio::test]
async fn a_body_judged_at_the_head_is_passed_on_unwatched() {
    let cb = CircuitBreaker::new("h", timed());
    let svc = CircuitBreakerLayer::new(cb.clone())
        .classifier(breakwater_tower::classify::grpc_failures(&[]))
        .layer(tower::service_fn(|_req: http::Request<()>| async {
            let mut res = http::Response::new(Full::new(Bytes::from_static(b"msg")));
            res.headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static("0"));
            Ok::<_, Infallible>(res)
        }));
    let mut svc = svc;
    let future = tower::Service::call(&mut svc, http::Request::new(()));
    assert!(format!("{future:?}").contains("ResponseFuture"));
    let res = future.await.unwrap();
    let shown = format!("{:?}", res.body());
    assert!(
        shown.contains("inner") && !shown.contains("tracked"),
        "{shown}"
    );
    assert_eq!(cb.snapshot().successes, 1, "recorded at the head");
    // The inner body's own hints, passed on.
    assert!(!http_body::Body::is_end_stream(res.body()));
    assert_eq!(http_body::Body::size_hint(res.body()).exact(), Some(3));
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "msg");
    assert!(http_body::Body::is_end_stream(&body), "read to its end");
}
