//! The fallback layer's closed-path cost, and the ops API's cost, in one run:
//!
//! - `fallback`: an HTTP `tower::Service` that answers at once, bare, behind
//!   `CircuitBreakerLayer`, and behind `FallbackLayer` (fixed answer) + `CircuitBreakerLayer`;
//!   once with a future that holds the ready response (`std::future::Ready`), once (`lazy_`)
//!   with one that makes it when polled; then the first three again in alternating rounds
//!   (medians printed: `fallback interleaved: …`).
//! - `ops`: `/v1/circuit-breaker/metrics` and `/metrics` over 10,000 breakers, through the
//!   router (in process).
//! - `scrape`: the breaker layer's hot path while the other core is idle, scrapes `/metrics`
//!   ten times a second, scrapes back to back, or does unrelated work of the same kind (the
//!   control); the ratios of the interleaved medians are printed.
//!
//! Run with `cargo bench --bench ops`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use breakwater::{CircuitBreaker, Registry};
use breakwater_axum::OpsApi;
use breakwater_tower::CircuitBreakerLayer;
use breakwater_tower::fallback::FallbackLayer;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use tower::{Layer, Service, ServiceExt};

#[path = "support/mod.rs"]
mod support;

use support::config;

type Body = Empty<Bytes>;

/// Polls a service once, with a no-op waker: enough for services that answer at once.
fn drive<S, B>(svc: &mut S) -> bool
where
    S: Service<Request<Body>, Response = Response<B>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    let mut fut = pin!(svc.call(Request::new(Empty::new())));
    matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_)))
}

#[allow(clippy::type_complexity)]
fn inner() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Body>, Infallible>>,
> + Clone {
    tower::service_fn(|_req: Request<Body>| std::future::ready(Ok(Response::new(Empty::new()))))
}

/// The same service, its future making the response when polled (as most services' futures do:
/// hyper's and axum's hold a pointer, not the response).
fn lazy_inner() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone
{
    tower::service_fn(|_req: Request<Body>| async { Ok(Response::new(Empty::new())) })
}

fn fallback(c: &mut Criterion) {
    let mut g = c.benchmark_group("fallback");
    let mut bare = inner();
    g.bench_function("bare_service", |b| b.iter(|| black_box(drive(&mut bare))));
    let mut breaker =
        CircuitBreakerLayer::new(CircuitBreaker::new("bench", config())).layer(inner());
    g.bench_function("breaker", |b| b.iter(|| black_box(drive(&mut breaker))));
    let mut both = FallbackLayer::new()
        .fixed(Response::new("[]"))
        .layer(CircuitBreakerLayer::new(CircuitBreaker::new("bench", config())).layer(inner()));
    g.bench_function("fallback_and_breaker", |b| {
        b.iter(|| black_box(drive(&mut both)))
    });
    let mut bare = lazy_inner();
    g.bench_function("lazy_bare_service", |b| {
        b.iter(|| black_box(drive(&mut bare)))
    });
    let mut breaker =
        CircuitBreakerLayer::new(CircuitBreaker::new("bench", config())).layer(lazy_inner());
    g.bench_function("lazy_breaker", |b| {
        b.iter(|| black_box(drive(&mut breaker)))
    });
    let mut both = FallbackLayer::new().fixed(Response::new("[]")).layer(
        CircuitBreakerLayer::new(CircuitBreaker::new("bench", config())).layer(lazy_inner()),
    );
    g.bench_function("lazy_fallback_and_breaker", |b| {
        b.iter(|| black_box(drive(&mut both)))
    });
    g.finish();

    let mut bare = inner();
    let mut breaker =
        CircuitBreakerLayer::new(CircuitBreaker::new("bench", config())).layer(inner());
    let mut both = FallbackLayer::new()
        .fixed(Response::new("[]"))
        .layer(CircuitBreakerLayer::new(CircuitBreaker::new("bench", config())).layer(inner()));
    support::interleaved(
        "fallback",
        20_000,
        &mut [
            (
                "bare_service",
                &mut support::times(|| {
                    black_box(drive(&mut bare));
                }),
            ),
            (
                "breaker",
                &mut support::times(|| {
                    black_box(drive(&mut breaker));
                }),
            ),
            (
                "fallback_and_breaker",
                &mut support::times(|| {
                    black_box(drive(&mut both));
                }),
            ),
        ],
    );
}

/// A registry of `n` breakers with some history each.
fn registry(n: usize) -> Registry {
    let registry = Registry::new();
    for i in 0..n {
        let b = registry.breaker_with(&format!("svc-{i:05}"), config());
        b.try_acquire().unwrap().success();
        if i % 7 == 0 {
            b.try_acquire().unwrap().failure();
        }
        if i % 100 == 0 {
            b.force_open();
        }
    }
    registry
}

fn ops(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = registry(10_000);
    let router = OpsApi::new(&registry).router();
    let mut g = c.benchmark_group("ops_10k_breakers");
    g.sample_size(20);
    for path in ["/v1/circuit-breaker/metrics", "/metrics"] {
        g.bench_function(path, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let req = Request::get(path).body(axum::body::Body::empty()).unwrap();
                    let res = router.clone().oneshot(req).await.unwrap();
                    let body = res.into_body().collect().await.unwrap().to_bytes();
                    black_box(body.len())
                })
            })
        });
    }
    g.finish();
}

/// What runs on the other core while the hot path is measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Other {
    Idle,
    /// Scrapes `/metrics` back to back.
    Scraping,
    /// Scrapes every 100 ms (ten a second; Prometheus' default is one per 15 s).
    Paced,
    /// Unrelated busy work of the same kind (building a large string): the control.
    Busy,
}

/// The hot path with the other core idle, scraping, or busy with unrelated work: rounds
/// alternate so all see the same machine; prints the ratios of the medians to `Idle`.
fn scrape(c: &mut Criterion) {
    let registry = registry(1_000);
    let breaker = registry.breaker_with("hot", config());
    let mut svc = CircuitBreakerLayer::new(breaker).layer(inner());
    let mode = Arc::new(std::sync::atomic::AtomicU8::new(Other::Idle as u8));
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (mode, stop, registry) = (mode.clone(), stop.clone(), registry.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match mode.load(Ordering::Relaxed) {
                    m if m == Other::Scraping as u8 => {
                        black_box(breakwater_axum::prometheus::render(&registry).len());
                        scrapes += 1;
                    }
                    m if m == Other::Paced as u8 => {
                        black_box(breakwater_axum::prometheus::render(&registry).len());
                        scrapes += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    m if m == Other::Busy as u8 => {
                        let mut s = String::new();
                        for i in 0..20_000u32 {
                            s.push_str(black_box("resilience_circuit_breaker_calls_total{"));
                            s.push_str(&i.to_string());
                        }
                        black_box(s.len());
                    }
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            scrapes
        })
    };
    let mut g = c.benchmark_group("scrape");
    for m in [Other::Idle, Other::Paced, Other::Scraping, Other::Busy] {
        mode.store(m as u8, Ordering::Relaxed);
        g.bench_function(format!("hot_path_other_core_{m:?}"), |b| {
            b.iter(|| black_box(drive(&mut svc)))
        });
    }
    g.finish();

    let mut round = |m: Other| {
        mode.store(m as u8, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        for _ in 0..1_000_000 {
            black_box(drive(&mut svc));
        }
        start.elapsed()
    };
    let modes = [Other::Idle, Other::Paced, Other::Scraping, Other::Busy];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..9 {
        if Instant::now() > deadline {
            break;
        }
        for (i, m) in modes.iter().enumerate() {
            times[i].push(round(*m));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let scrapes = other.join().unwrap();
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|v| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e9 / 1e6
        })
        .collect();
    println!(
        "scrape: hot path per call, interleaved medians: idle {:.2} ns, paced scraping {:.2} ns \
         (x{:.3}), back-to-back scraping {:.2} ns (x{:.3}), unrelated busy work {:.2} ns \
         (x{:.3}); {scrapes} scrapes",
        medians[0],
        medians[1],
        medians[1] / medians[0],
        medians[2],
        medians[2] / medians[0],
        medians[3],
        medians[3] / medians[0],
    );
}

criterion_group!(benches, fallback, ops, scrape);
criterion_main!(benches);
