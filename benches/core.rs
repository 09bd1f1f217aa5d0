//! The engine against its peers, in one run: CLOSED acquire + record success, the OPEN
//! (reject) path, and two threads hammering one breaker. Every breaker is configured as close to
//! "failure rate 50 % over the last 100 calls" as it allows.
//!
//! Run with `cargo bench --bench core`; subtract `bare` from each figure for the overhead.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use breakwater::{CircuitBreaker, Config, SlidingWindow};
use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use tower::{Layer, Service};

const HOUR: Duration = Duration::from_secs(3_600);

#[inline(always)]
fn op() -> Result<u64, ()> {
    Ok(black_box(1))
}

/// Reduces a call's result to one word for criterion's `black_box`: handing it the 16-byte
/// `Result` itself costs a store-forwarding stall (~5 ns here) that would swamp the breakers.
#[inline(always)]
fn sink<E>(r: Result<u64, E>) -> u64 {
    r.unwrap_or(u64::MAX)
}

fn ours(timed: bool) -> CircuitBreaker {
    let mut b = Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(100))
        .minimum_number_of_calls(100)
        .wait_in_open(HOUR);
    if timed {
        b = b
            .slow_call_rate_threshold(100.0)
            .slow_call_duration_threshold(Duration::from_secs(60));
    }
    CircuitBreaker::new("bench", b.build().unwrap())
}

fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .half_open_len(10)
        .open_wait(HOUR)
        .build()
}

fn failsafe_rate() -> impl failsafe::CircuitBreaker {
    // failsafe has no count window: its closest policy is a success rate over a time window.
    let policy = failsafe::failure_policy::success_rate_over_time_window(
        0.5,
        100,
        Duration::from_secs(30),
        failsafe::backoff::constant(HOUR),
    );
    failsafe::Config::new().failure_policy(policy).build()
}

#[inline(always)]
fn through_ours(cb: &CircuitBreaker) -> Result<u64, ()> {
    match cb.try_acquire() {
        Ok(p) => {
            let r = op();
            if r.is_ok() {
                p.success()
            } else {
                p.failure()
            }
            r
        }
        Err(_) => Err(()),
    }
}

fn closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_success");
    let floor_state = AtomicU64::new(0);
    let floor_count = AtomicU64::new(0);
    g.bench_function("bare", |b| b.iter(|| sink(op())));
    g.bench_function("floor_load_plus_fetch_add", |b| {
        b.iter(|| {
            black_box(floor_state.load(Ordering::Acquire));
            let r = op();
            floor_count.fetch_add(1, Ordering::AcqRel);
            sink(r)
        })
    });
    let cb = ours(false);
    g.bench_function("breakwater", |b| b.iter(|| sink(through_ours(&cb))));
    g.bench_function("breakwater_owned_permit", |b| {
        b.iter(|| {
            sink(match cb.try_acquire_owned() {
                Ok(p) => {
                    let r = op();
                    p.success();
                    r
                }
                Err(_) => Err(()),
            })
        })
    });
    let timed = ours(true);
    g.bench_function("breakwater_slow_call_timing", |b| {
        b.iter(|| sink(through_ours(&timed)))
    });
    // The same, with the threshold learned from the calls' latency (each counted in a bucket).
    let learned = CircuitBreaker::new(
        "bench",
        timed
            .config()
            .to_builder()
            .learn_slow_call_threshold(breakwater::LearnedThreshold {
                min_ms: 60_000,
                ..breakwater::LearnedThreshold::default()
            })
            .build()
            .unwrap(),
    );
    g.bench_function("breakwater_slow_call_learned", |b| {
        b.iter(|| sink(through_ours(&learned)))
    });
    let rc = recloser();
    g.bench_function("recloser", |b| b.iter(|| sink(rc.call(op))));
    let fs = failsafe_rate();
    g.bench_function("failsafe", |b| b.iter(|| sink(fs.call(op))));
    g.finish();
}

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open_reject");
    let cb = ours(false);
    cb.open_for(HOUR).unwrap();
    g.bench_function("breakwater", |b| b.iter(|| sink(through_ours(&cb))));
    let rc = recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(1)
        .open_wait(HOUR)
        .build();
    let _ = rc.call(|| Err::<(), ()>(()));
    let _ = rc.call(|| Err::<(), ()>(()));
    assert!(matches!(rc.call(op), Err(recloser::Error::Rejected)));
    g.bench_function("recloser", |b| b.iter(|| sink(rc.call(op))));
    let fs = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            1,
            failsafe::backoff::constant(HOUR),
        ))
        .build();
    let _ = fs.call(|| Err::<(), ()>(()));
    assert!(matches!(fs.call(op), Err(failsafe::Error::Rejected)));
    g.bench_function("failsafe", |b| b.iter(|| sink(fs.call(op))));
    g.finish();
}

/// Two threads, each making `iters` calls through `f` at once; the time per call as one thread
/// sees it.
fn two_threads(iters: u64, f: &(dyn Fn() -> Result<u64, ()> + Sync)) -> Duration {
    let start = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                start.wait();
                for _ in 0..iters {
                    black_box(sink(f()));
                }
            });
        }
        start.wait();
        let t = Instant::now();
        // The scope joins both threads before returning.
        t
    })
    .elapsed()
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_2_threads");
    g.bench_function("bare", |b| b.iter_custom(|n| two_threads(n, &op)));
    // The floor for any shared counter: both threads load one word and `fetch_add` another.
    let floor_state = AtomicU64::new(0);
    let floor_count = AtomicU64::new(0);
    let floor = || {
        black_box(floor_state.load(Ordering::Acquire));
        let r = op();
        floor_count.fetch_add(1, Ordering::AcqRel);
        r
    };
    g.bench_function("floor_load_plus_fetch_add", |b| {
        b.iter_custom(|n| two_threads(n, &floor))
    });
    let cb = ours(false);
    g.bench_function("breakwater", |b| {
        b.iter_custom(|n| two_threads(n, &|| through_ours(&cb)))
    });
    let rc = recloser();
    g.bench_function("recloser", |b| {
        b.iter_custom(|n| two_threads(n, &|| rc.call(op).map_err(|_| ())))
    });
    g.finish();
}

/// Polls a service once, with a no-op waker: enough for services that answer at once.
fn drive<S: Service<u64, Response = u64>>(svc: &mut S) -> Option<u64> {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return None,
    }
    let mut fut = pin!(svc.call(black_box(1)));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(r)) => Some(r),
        _ => None,
    }
}

fn tower_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("tower_service");
    let svc = tower::service_fn(|x: u64| std::future::ready(Ok::<u64, Infallible>(x)));
    let mut bare = svc;
    g.bench_function("bare", |b| b.iter(|| drive(&mut bare).unwrap_or(0)));
    let mut ours_layered = breakwater_tower::ResultBreakerLayer::new(ours(false)).layer(svc);
    g.bench_function("breakwater_result_breaker", |b| {
        b.iter(|| drive(&mut ours_layered).unwrap_or(0))
    });
    let layer = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .unwrap();
    let mut layered = layer.layer(svc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    assert_eq!(drive(&mut layered), Some(1));
    g.bench_function("tower_resilience", |b| {
        b.iter(|| drive(&mut layered).unwrap_or(0))
    });
    g.finish();
}

fn keyed_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed_lookup");
    for keys in [1usize, 1_000, 100_000] {
        let registry = breakwater::Registry::new();
        let family = registry.family(
            "bench",
            breakwater::FamilyOptions::new(Config::default()).max_keys(keys + 1),
        );
        let names: Vec<String> = (0..keys).map(|i| format!("GET /k{i}")).collect();
        for n in &names {
            family.get(n);
        }
        g.bench_function(format!("hot_key_of_{keys}"), |b| {
            b.iter(|| family.with(black_box(&names[0]), |cb| black_box(cb.state())))
        });
        if keys == 1_000 {
            g.bench_function("hot_key_of_1000_two_threads", |b| {
                b.iter_custom(|n| {
                    two_threads(n, &|| {
                        family.with(&names[0], |cb| black_box(cb.state()));
                        Ok(1)
                    })
                })
            });
        }
        let mut i = 0usize;
        g.bench_function(format!("round_robin_{keys}"), |b| {
            b.iter(|| {
                i = (i + 7919) % keys;
                family.with(&names[i], |cb| black_box(cb.state()))
            })
        });
    }
    g.finish();
}

fn clock(c: &mut Criterion) {
    use breakwater::Clock;
    let mut g = c.benchmark_group("clock_read");
    g.bench_function("std_instant_now", |b| b.iter(std::time::Instant::now));
    g.bench_function("breakwater_system_clock", |b| {
        b.iter(|| breakwater::SystemClock.now())
    });
    g.finish();
}

criterion_group!(
    benches,
    closed,
    open,
    contended,
    tower_layers,
    keyed_lookup,
    clock
);
criterion_main!(benches);
