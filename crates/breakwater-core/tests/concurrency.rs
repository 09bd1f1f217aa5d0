//! The engine under real threads: HALF_OPEN admits exactly its permits, cancelled permits are
//! never lost, and CLOSED counts are exact. Threads start together on a barrier; every loop is
//! bounded in count.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Config, ManualClock, SlidingWindow, State};

const THREADS: usize = 4;

/// Runs `f(thread_index)` on `THREADS` threads released together by a barrier.
fn on_threads(f: impl Fn(usize) + Sync) {
    let start = Barrier::new(THREADS);
    thread::scope(|s| {
        for t in 0..THREADS {
            let (f, start) = (&f, &start);
            s.spawn(move || {
                start.wait();
                f(t);
            });
        }
    });
}

fn half_open_breaker(permits: u32) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(1))
        .minimum_number_of_calls(1)
        .permitted_calls_in_half_open(permits)
        .wait_in_open(Duration::from_secs(1))
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("c", config, clock.clone());
    cb.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(2));
    (cb, clock)
}

#[test]
fn half_open_never_admits_more_than_its_permits() {
    for round in 0..200 {
        let permits = 1 + (round % 3) as u32;
        let (cb, _clock) = half_open_breaker(permits);
        let admitted = AtomicUsize::new(0);
        let start = Barrier::new(THREADS);
        let held = Barrier::new(THREADS);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    start.wait();
                    let mut mine = Vec::new();
                    for _ in 0..8 {
                        if let Ok(p) = cb.try_acquire() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            mine.push(p);
                        }
                    }
                    // Hold every permit until all threads have tried.
                    held.wait();
                    drop(mine);
                });
            }
        });
        assert_eq!(
            admitted.load(Ordering::SeqCst),
            permits as usize,
            "round {round}"
        );
        assert_eq!(cb.state(), State::HalfOpen);
    }
}

#[test]
fn cancelled_permits_are_never_lost() {
    let (cb, _clock) = half_open_breaker(3);
    on_threads(|t| {
        for i in 0..5_000 {
            if let Ok(p) = cb.try_acquire() {
                // Drop (cancel) or ignore: neither counts, both give the permit back.
                if (i + t) % 2 == 0 {
                    drop(p);
                } else {
                    p.ignore();
                }
            }
        }
    });
    // All three permits are free again, and nothing was recorded.
    let s = cb.snapshot();
    assert_eq!(s.window.buffered_calls, 0);
    assert_eq!(s.state, State::HalfOpen);
    let permits: Vec<_> = (0..3).map(|_| cb.try_acquire().unwrap()).collect();
    assert!(cb.try_acquire().is_err());
    for p in permits {
        p.success();
    }
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn closed_counts_are_exact_after_threads_times_calls() {
    const CALLS: u64 = 50_000;
    // 10 % failures never reach 100 % of a 100-call window; a 1-call window would trip on any
    // failure, so it runs in METRICS_ONLY (records, never trips).
    for window in [SlidingWindow::Count(100), SlidingWindow::Count(1)] {
        let config = Config::builder()
            .failure_rate_threshold(100.0)
            .minimum_number_of_calls(u32::MAX)
            .sliding_window(window)
            .build()
            .unwrap();
        let cb = CircuitBreaker::with_clock("c", config, ManualClock::new());
        if window == SlidingWindow::Count(1) {
            cb.metrics_only();
        }
        on_threads(|t| {
            for i in 0..CALLS {
                let p = cb.try_acquire().unwrap();
                if (i + t as u64).is_multiple_of(10) {
                    p.failure();
                } else {
                    p.success();
                }
            }
        });
        let s = cb.snapshot();
        let total = THREADS as u64 * CALLS;
        assert_eq!(s.failures, total / 10, "{window:?}");
        assert_eq!(s.successes, total - total / 10, "{window:?}");
        assert_eq!(s.total_requests, total);
        // The window holds exactly its size, and its failure count matches its slots.
        let size = match window {
            SlidingWindow::Count(n) => n as u64,
            SlidingWindow::Time(_) => unreachable!(),
        };
        assert_eq!(s.window.buffered_calls, size);
        assert!(s.window.failed_calls <= size);
    }
}

#[test]
fn window_counters_match_slots_after_concurrent_churn() {
    // Every failure trips nothing (threshold 100 %, minimum unreachable), so the window is pure
    // churn; afterwards, refilling it with successes must bring the failed count to exactly 0.
    let config = Config::builder()
        .failure_rate_threshold(100.0)
        .minimum_number_of_calls(u32::MAX)
        .sliding_window(SlidingWindow::Count(16))
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("c", config, ManualClock::new());
    on_threads(|t| {
        for i in 0..20_000 {
            let p = cb.try_acquire().unwrap();
            if (i * 7 + t) % 3 == 0 {
                p.failure();
            } else {
                p.success();
            }
        }
    });
    for _ in 0..16 {
        cb.try_acquire().unwrap().success();
    }
    let s = cb.snapshot();
    assert_eq!(s.window.buffered_calls, 16);
    assert_eq!(s.window.failed_calls, 0);
}

#[test]
fn trip_under_contention_happens_once_per_generation() {
    let config = Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(5)
        .wait_in_open(Duration::from_secs(60))
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("c", config, ManualClock::new());
    let sub = cb.subscribe();
    on_threads(|_| {
        for _ in 0..1_000 {
            if let Ok(p) = cb.try_acquire() {
                p.failure();
            }
        }
    });
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.circuit_opens, 1);
    // Outcomes of permits issued before the trip but reported after it are dropped.
    assert!(s.failures >= 5);
    assert!(s.failures + s.not_permitted_calls <= (THREADS * 1_000) as u64);
    let mut opens = 0;
    while let Some(e) = sub.try_recv() {
        if matches!(
            e.kind,
            breakwater_core::EventKind::StateTransition {
                to: State::Open,
                ..
            }
        ) {
            opens += 1;
        }
    }
    assert_eq!(opens, 1);
}
