//! The hot paths allocate nothing: CLOSED acquire + record, and OPEN rejection.
//!
//! A counting global allocator (the only unsafe code in the project, confined to this test
//! binary) counts allocations made by this thread while the paths run.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use breakwater::{CircuitBreaker, Config, ManualClock, SlidingWindow, State};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn config() -> Config {
    Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(100))
        .minimum_number_of_calls(100)
        .wait_in_open(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[test]
fn closed_path_allocates_nothing() {
    for cb in [
        CircuitBreaker::new("system", config()),
        CircuitBreaker::with_clock("manual", config(), ManualClock::new()),
        CircuitBreaker::new(
            "timed",
            config()
                .to_builder()
                .slow_call_rate_threshold(100.0)
                .build()
                .unwrap(),
        ),
    ] {
        // Warm up (first use of the system clock calibrates it).
        cb.try_acquire().unwrap().success();
        let n = allocations_during(|| {
            for i in 0..10_000 {
                let p = cb.try_acquire().unwrap();
                if i % 50 == 0 {
                    p.failure();
                } else {
                    p.success();
                }
            }
        });
        assert_eq!(cb.state(), State::Closed);
        assert_eq!(n, 0, "{}", cb.name());
    }
}

#[test]
fn open_path_allocates_nothing() {
    let cb = CircuitBreaker::new("open", config());
    cb.force_open();
    cb.transition_to(State::Closed).unwrap();
    cb.open_for(Duration::from_secs(3_600)).unwrap();
    let _ = cb.try_acquire();
    let n = allocations_during(|| {
        for _ in 0..10_000 {
            assert!(cb.try_acquire().is_err());
        }
    });
    assert_eq!(n, 0);
    assert_eq!(cb.snapshot().not_permitted_calls, 10_001);
}
