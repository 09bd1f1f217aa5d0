//! Instruction counts per call, for `valgrind --tool=callgrind` (deterministic, unlike wall time
//! on a shared machine):
//!
//! ```text
//! cargo bench --bench instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='instructions::run_*' target/release/deps/instructions-<hash>
//! callgrind_annotate /tmp/cg.out | grep run_
//! ```
//!
//! Each `run_*` function makes 100,000 calls; divide its inclusive count by 100,000.
//! `run_map_response_only` is a layer that only changes the response body type, for scale;
//! `run_floor` and `run_floor_owned` are the least a breaker layer can do, `run_floor_keyed`
//! the least a keyed one can (`support/floor.rs`);
//! `run_layer_keyed` is the per-endpoint layer on one live key (the path, `GrpcMethod`,
//! compared in place), `run_layer_keyed_written` the same with the key written by a closure;
//! `run_engine_slow_call_timing` is acquire + success under a slow-call policy (coarse clock),
//! `run_engine_slow_call_learned` the same with the threshold learned (each call's duration
//! counted in a latency bucket), `run_engine_recorded_durations` the same with the duration
//! histogram (precise clock);
//! `run_engine_recorded_durations_otel` the same with OpenTelemetry's instruments registered
//! (built with `--features otel`); `run_*body*`, `run_fallback_and_breaker` (a fixed fallback)
//! and `run_fallback_stale` (stale-if-error, the answer kept and fresh) send GETs with an
//! `Empty` body; `run_time_limit` and `run_tower_timeout` are `TimeLimitLayer` and tower's
//! `Timeout` (2 s) around a call that is pending once before it answers (so each waits on its
//! timer), `run_pending_once` that call alone.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use breakwater::{CircuitBreaker, Config};
use breakwater_tower::CircuitBreakerLayer;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Empty;
use tower::{Layer, Service};

#[path = "support/floor.rs"]
mod floor;

const CALLS: usize = 100_000;

fn drive<S, B>(svc: &mut S, uri: &Uri) -> bool
where
    S: Service<Request<()>, Response = Response<B>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if !matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    let mut fut = pin!(svc.call(req));
    matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_)))
}

/// One `#[inline(never)]` function per path, so callgrind can count each on its own.
macro_rules! http_runs {
    ($($name:ident),*) => {$(
        #[inline(never)]
        fn $name<S, B>(svc: &mut S, uri: &Uri)
        where
            S: Service<Request<()>, Response = Response<B>>,
        {
            for _ in 0..CALLS {
                black_box(drive(svc, uri));
            }
        }
    )*};
}

/// Calls of a `u64` service, each polled `$pending` times while pending before it answers.
macro_rules! u64_runs {
    ($pending:literal: $($name:ident),*) => {$(
        #[inline(never)]
        fn $name<S: Service<u64, Response = u64>>(svc: &mut S) {
            let mut cx = Context::from_waker(Waker::noop());
            let pending: usize = $pending;
            for i in 0..CALLS as u64 {
                if svc.poll_ready(&mut cx).is_ready() {
                    let mut fut = pin!(svc.call(i));
                    for _ in 0..pending {
                        black_box(fut.as_mut().poll(&mut cx).is_pending());
                    }
                    black_box(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
                }
            }
        }
    )*};
}

http_runs!(
    run_bare_service,
    run_layer_single,
    run_layer_keyed,
    run_layer_keyed_written,
    run_map_response_only,
    run_floor,
    run_floor_owned,
    run_floor_keyed
);

/// As `http_runs!`, with an `Empty` request body (the fallback layer needs a `Body`).
macro_rules! body_runs {
    ($($name:ident),*) => {$(
        #[inline(never)]
        fn $name<S, B>(svc: &mut S)
        where
            S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
        {
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..CALLS {
                if svc.poll_ready(&mut cx).is_ready() {
                    let mut fut = pin!(svc.call(Request::new(Empty::new())));
                    black_box(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
                }
            }
        }
    )*};
}

body_runs!(
    run_bare_body_service,
    run_breaker_body,
    run_fallback_and_breaker,
    run_fallback_stale
);
u64_runs!(0: run_bare_u64_service, run_result_breaker);

/// A call that is pending at its first poll and answers at its second.
#[derive(Default)]
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = Result<u64, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(Ok(1))
        } else {
            Poll::Pending
        }
    }
}

u64_runs!(1: run_pending_once, run_time_limit, run_tower_timeout);

#[inline(never)]
fn run_engine_owned_permit(cb: &CircuitBreaker) {
    for _ in 0..CALLS {
        if let Ok(p) = cb.try_acquire_owned() {
            p.success();
        }
    }
}

#[inline(never)]
fn run_engine_permit(cb: &CircuitBreaker) {
    for _ in 0..CALLS {
        if let Ok(p) = cb.try_acquire() {
            p.success();
        }
    }
}

#[inline(never)]
fn run_engine_slow_call_timing(cb: &CircuitBreaker) {
    // A body of its own, so the linker does not fold it into `run_engine_permit`.
    black_box("slow-call timing");
    for _ in 0..CALLS {
        if let Ok(p) = cb.try_acquire() {
            p.success();
        }
    }
}

#[inline(never)]
fn run_engine_slow_call_learned(cb: &CircuitBreaker) {
    black_box("slow-call threshold learned");
    for _ in 0..CALLS {
        if let Ok(p) = cb.try_acquire() {
            p.success();
        }
    }
}

#[inline(never)]
fn run_engine_recorded_durations(cb: &CircuitBreaker) {
    black_box("recorded durations");
    for _ in 0..CALLS {
        if let Ok(p) = cb.try_acquire() {
            p.success();
        }
    }
}

/// The same as `run_engine_recorded_durations`, for a breaker of a registry with
/// OpenTelemetry's instruments registered: the SDK's histogram records each call too.
#[cfg(feature = "otel")]
#[inline(never)]
fn run_engine_recorded_durations_otel(cb: &CircuitBreaker) {
    black_box("recorded durations, otel");
    for _ in 0..CALLS {
        if let Ok(p) = cb.try_acquire() {
            p.success();
        }
    }
}

fn main() {
    let uri: Uri = "/k0".parse().unwrap();
    let inner = tower::service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())))
    });
    let cb = CircuitBreaker::new("bench", Config::default());
    let mut bare = inner;
    let mut single = CircuitBreakerLayer::new(cb.clone()).layer(inner);
    run_bare_service(&mut bare, &uri);
    let mut mapped = tower::util::MapResponseLayer::new(|res: Response<Empty<Bytes>>| {
        res.map(http_body_util::Either::<_, Empty<Bytes>>::Left)
    })
    .layer(inner);
    run_map_response_only(&mut mapped, &uri);
    run_layer_single(&mut single, &uri);
    run_floor(&mut floor::Floor::<_, false>::new(inner), &uri);
    run_floor_owned(&mut floor::Floor::<_, true>::new(inner), &uri);
    run_floor_keyed(&mut floor::FloorKeyed::new(inner, uri.path()), &uri);
    let registry = breakwater::Registry::new();
    let family = registry.family("bench", breakwater::FamilyOptions::new(Config::default()));
    let mut keyed =
        CircuitBreakerLayer::keyed(family.clone(), breakwater_tower::GrpcMethod).layer(inner);
    run_layer_keyed(&mut keyed, &uri);
    let path_key = |req: &Request<()>, buf: &mut String| buf.push_str(req.uri().path());
    let mut written = CircuitBreakerLayer::keyed(family, path_key).layer(inner);
    run_layer_keyed_written(&mut written, &uri);
    run_engine_permit(&cb);
    let slow = Config::builder()
        .slow_call_rate_threshold(100.0)
        .slow_call_duration_threshold(std::time::Duration::from_secs(60));
    run_engine_slow_call_timing(&CircuitBreaker::new("timed", slow.clone().build().unwrap()));
    let learned = slow
        .clone()
        .learn_slow_call_threshold(breakwater::LearnedThreshold {
            min_ms: 60_000,
            ..breakwater::LearnedThreshold::default()
        })
        .build()
        .unwrap();
    run_engine_slow_call_learned(&CircuitBreaker::new("learned", learned));
    let recorded = slow.record_call_durations(true).build().unwrap();
    run_engine_recorded_durations(&CircuitBreaker::new("recorded", recorded.clone()));
    #[cfg(feature = "otel")]
    {
        use opentelemetry::metrics::MeterProvider;
        let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .with_reader(
                opentelemetry_sdk::metrics::PeriodicReader::builder(
                    opentelemetry_sdk::metrics::InMemoryMetricExporter::default(),
                )
                .build(),
            )
            .build();
        let registry = breakwater::Registry::new();
        breakwater::otel::BreakerMetrics::builder(&registry).register(&provider.meter("bench"));
        run_engine_recorded_durations_otel(&registry.breaker_with("recorded", recorded));
    }
    let plain = tower::service_fn(|x: u64| std::future::ready(Ok::<u64, Infallible>(x)));
    let mut bare_u64 = plain;
    run_bare_u64_service(&mut bare_u64);
    let mut result = breakwater_tower::ResultBreakerLayer::new(cb.clone()).layer(plain);
    run_result_breaker(&mut result);
    run_engine_owned_permit(&cb);

    let inner_body = tower::service_fn(|_req: Request<Empty<Bytes>>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())))
    });
    let mut bare_body = inner_body;
    run_bare_body_service(&mut bare_body);
    let mut breaker_body = CircuitBreakerLayer::new(cb.clone()).layer(inner_body);
    run_breaker_body(&mut breaker_body);
    let mut fallback = breakwater_tower::FallbackLayer::new()
        .fixed(Response::new("[]"))
        .layer(CircuitBreakerLayer::new(cb.clone()).layer(inner_body));
    run_fallback_and_breaker(&mut fallback);

    let mut stale = breakwater_tower::FallbackLayer::new()
        .stale_if_error(
            // Fresh for the whole run (slowed down by callgrind): no answer is recorded again.
            breakwater_tower::fallback::StaleCache::builder()
                .ttl(std::time::Duration::from_secs(7200))
                .refresh_after(std::time::Duration::from_secs(3600))
                .build()
                .unwrap(),
        )
        // Its own inner service type: with the other's, the two runs would be one function.
        .layer(
            CircuitBreakerLayer::new(cb.clone()).layer(tower::service_fn(
                |_req: Request<Empty<Bytes>>| {
                    std::future::ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())))
                },
            )),
        );
    keep_one_answer(&mut stale);
    run_fallback_stale(&mut stale);

    // Timers need a runtime (entered, not driven: no deadline passes).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let pending = tower::service_fn(|_: u64| PendingOnce::default());
    run_pending_once(&mut { pending });
    let limit = std::time::Duration::from_secs(2);
    run_time_limit(&mut breakwater_tower::time_limit::TimeLimitLayer::new(limit).layer(pending));
    run_tower_timeout(&mut tower::timeout::TimeoutLayer::new(limit).layer(pending));
}

/// One GET through `svc`, its body read to the end (so a stale cache keeps the answer).
fn keep_one_answer<S, B>(svc: &mut S)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    B: http_body::Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = pin!(svc.call(Request::new(Empty::new())));
    let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else {
        panic!("the inner service answers at once")
    };
    let mut body = pin!(res.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
}
