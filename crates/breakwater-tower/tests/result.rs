//! The breaker around a service that is not HTTP, judged by its `Result`.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Config, ManualClock, Outcome, State};
use breakwater_tower::{BoxError, CircuitOpen, ResultBreakerLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

fn config() -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(2)
        .wait_in_open(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .success_threshold(1)
        .build()
        .unwrap()
}

#[tokio::test]
async fn errors_open_it_and_open_calls_never_reach_the_service() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("db", config(), clock.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(ResultBreakerLayer::new(cb.clone()))
        .service_fn(move |fail: bool| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { if fail { Err("down") } else { Ok(1u32) } }
        });
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), 1);
    for _ in 0..2 {
        let e = svc.clone().oneshot(true).await.unwrap_err();
        assert_eq!(e.to_string(), "down");
    }
    assert_eq!(cb.state(), State::Open);
    for _ in 0..5 {
        let e = svc.clone().oneshot(false).await.unwrap_err();
        let open = e.downcast_ref::<CircuitOpen>().expect("CircuitOpen");
        assert_eq!(open.retry_after(), Some(Duration::from_secs(10)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    clock.advance(Duration::from_secs(11));
    assert_eq!(svc.clone().oneshot(false).await.unwrap(), 1);
    assert_eq!(cb.state(), State::Closed);
}

#[tokio::test]
async fn open_circuit_is_ready_without_waiting_for_the_inner_service() {
    let cb = CircuitBreaker::with_clock("q", config(), ManualClock::new());
    // An inner service that is never ready.
    let never = tower::service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
    let mut svc = ServiceBuilder::new()
        .layer(ResultBreakerLayer::new(cb.clone()))
        .concurrency_limit(0)
        .service(never);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_pending());
    cb.force_open();
    let mut svc = svc.clone();
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = pin!(svc.call(()));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.is::<CircuitOpen>()),
        _ => panic!("expected an immediate rejection"),
    }
}

#[tokio::test]
async fn a_classifier_can_ignore_errors_and_inner_rejections_are_ignored() {
    let tolerant = config()
        .to_builder()
        .consecutive_failures(100)
        .build()
        .unwrap();
    let outer = CircuitBreaker::with_clock("outer", tolerant, ManualClock::new());
    let inner = CircuitBreaker::with_clock("inner", config(), ManualClock::new());
    let svc = ServiceBuilder::new()
        .layer(ResultBreakerLayer::new(outer.clone()))
        .layer(ResultBreakerLayer::new(inner.clone()).classify(
            |r: &Result<u32, BoxError>| match r {
                Err(e) if e.to_string() == "not found" => Outcome::Ignored,
                Err(_) => Outcome::Failure,
                Ok(_) => Outcome::Success,
            },
        ))
        .service_fn(|kind: &'static str| async move {
            match kind {
                "missing" => Err("not found"),
                "broken" => Err("down"),
                _ => Ok(7u32),
            }
        });
    for _ in 0..3 {
        let _ = svc.clone().oneshot("missing").await;
    }
    assert_eq!(inner.state(), State::Closed);
    assert_eq!(inner.snapshot().ignored_calls, 3);
    // Two real failures open the inner breaker; the outer one counts every error it sees as a
    // failure (its own classifier), and ignores the inner one's rejections.
    for _ in 0..2 {
        let _ = svc.clone().oneshot("broken").await;
    }
    assert_eq!(inner.state(), State::Open);
    for _ in 0..5 {
        let e = svc.clone().oneshot("ok").await.unwrap_err();
        assert!(e.is::<CircuitOpen>());
    }
    let s = outer.snapshot();
    assert_eq!((s.failures, s.ignored_calls), (5, 5));
}

/// A probe permit taken in `poll_ready` is kept while the inner service is not ready (as in
/// the HTTP layer); a CLOSED one is given back, so a call that waited is judged when it goes.
#[tokio::test]
async fn poll_ready_keeps_a_probe_permit_while_the_inner_service_is_busy() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("db", config(), clock.clone());
    let gate = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (gate.clone(), calls.clone());
    let svc = ServiceBuilder::new()
        .layer(ResultBreakerLayer::new(cb.clone()))
        .concurrency_limit(1)
        .service_fn(move |hold: bool| {
            c.fetch_add(1, Ordering::SeqCst);
            let g = g.clone();
            async move {
                if hold {
                    g.notified().await;
                }
                Ok::<u32, BoxError>(1)
            }
        });
    let mut cx = Context::from_waker(Waker::noop());

    // One call holds the only slot of the inner service.
    let held = tokio::spawn(svc.clone().oneshot(true));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }

    // CLOSED: the waiting clone gives its permit back; forced open meanwhile, it is refused.
    let mut waiting = svc.clone();
    assert!(waiting.poll_ready(&mut cx).is_pending());
    cb.force_open();
    assert!(matches!(waiting.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let e = waiting.call(false).await.unwrap_err();
    assert!(e.is::<CircuitOpen>());
    // Its inner service still waits in the limit's queue: dropping it leaves the queue.
    drop(waiting);
    cb.close();

    // Tripped and past the wait: the waiting clone holds the one probe permit.
    for _ in 0..2 {
        cb.try_acquire().unwrap().failure();
    }
    clock.advance(Duration::from_secs(11));
    let mut probe = svc.clone();
    assert!(probe.poll_ready(&mut cx).is_pending());
    assert_eq!(cb.state(), State::HalfOpen);
    let other = cb.try_acquire().unwrap_err();
    assert_eq!(other.state(), State::HalfOpen, "the probe permit is held");

    gate.notify_one();
    held.await.unwrap().unwrap();
    probe.ready().await.unwrap();
    assert_eq!(probe.call(false).await.unwrap(), 1);
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the refused call never reached it"
    );
}
