//! Model checks of the engine's lock-free paths with loom: every interleaving of the threads
//! (up to a bound of preemptions) is run. Built only with `--cfg breakwater_loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg breakwater_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p breakwater-core --test loom --release
//! ```
//!
//! An outcome is checked against the breaker's generation and then recorded, two steps without
//! a lock: a thread preempted between them while another makes a transition records its stale
//! outcome into the new window. These models show that it happens, and that it is bounded: at
//! most one stale outcome per thread that was recording when the transition happened, counted
//! at most once in the lifetime counters.
#![cfg(breakwater_loom)]

use std::sync::atomic::{AtomicBool, Ordering};

use breakwater_core::{CircuitBreaker, Config, ManualClock, SlidingWindow, State};
use loom::thread;

/// Every interleaving with at most `preemptions` forced thread switches.
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

fn breaker() -> CircuitBreaker {
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(2))
        .minimum_number_of_calls(2)
        .build()
        .unwrap();
    CircuitBreaker::with_clock("model", config, ManualClock::new())
}

#[test]
fn a_stale_success_lands_in_the_new_window_at_most_once_per_recorder() {
    static LANDED: AtomicBool = AtomicBool::new(false);
    model(3, || {
        let cb = breaker();
        let permit = cb.try_acquire_owned().unwrap();
        let recorder = thread::spawn(move || permit.success());
        cb.reset();
        recorder.join().unwrap();
        let s = cb.snapshot();
        assert!(s.window.buffered_calls <= 1, "{s:?}");
        assert_eq!(s.state, State::Closed);
        if s.window.buffered_calls == 1 {
            LANDED.store(true, Ordering::Relaxed);
        }
    });
    assert!(
        LANDED.load(Ordering::Relaxed),
        "some interleaving records the stale outcome after the reset"
    );
}

#[test]
fn stale_failures_of_two_recorders_are_at_most_two() {
    // Three threads: bounded at one forced switch to keep the run to seconds.
    model(1, || {
        let cb = breaker();
        let a = cb.try_acquire_owned().unwrap();
        let b = cb.try_acquire_owned().unwrap();
        let ta = thread::spawn(move || a.failure());
        let tb = thread::spawn(move || b.failure());
        cb.reset();
        ta.join().unwrap();
        tb.join().unwrap();
        let s = cb.snapshot();
        assert!(s.window.failed_calls <= 2, "{s:?}");
        assert_eq!(s.window.buffered_calls, s.window.failed_calls);
        // Lifetime counters: a reset zeroes them, and a stale outcome counts at most once.
        assert!(s.failures <= 2);
    });
}

#[test]
fn concurrent_successes_in_closed_are_all_counted() {
    model(3, || {
        let cb = breaker();
        let a = cb.try_acquire_owned().unwrap();
        let b = cb.try_acquire_owned().unwrap();
        let ta = thread::spawn(move || a.success());
        b.success();
        ta.join().unwrap();
        let s = cb.snapshot();
        assert_eq!(s.successes, 2);
        assert_eq!(s.window.buffered_calls, 2);
        assert_eq!(s.state, State::Closed);
    });
}
