//! With the `tokio` feature, the system clock runs the automatic OPEN -> HALF_OPEN transition on
//! tokio's timer (driven here by tokio's paused clock, so nothing sleeps).
#![cfg(feature = "tokio")]

use std::time::Duration;

use breakwater_core::{CircuitBreaker, Config, State};

#[tokio::test(start_paused = true)]
async fn automatic_transition_fires_on_tokio_timer() {
    let config = Config::builder()
        .consecutive_failures(1)
        .wait_in_open(Duration::from_millis(50))
        .automatic_transition_to_half_open(true)
        .build()
        .unwrap();
    let cb = CircuitBreaker::new("t", config);
    cb.try_acquire().unwrap().failure();
    assert_eq!(cb.state(), State::Open);
    let events = cb.subscribe();
    // Let the timer task start its sleep, move tokio's paused clock past the wait, then let the
    // task run.
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(60)).await;
    for _ in 0..10 {
        if cb.state() == State::HalfOpen {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(cb.state(), State::HalfOpen);
    let e = events.try_recv().expect("a transition event");
    assert!(matches!(
        e.kind,
        breakwater_core::EventKind::StateTransition {
            to: State::HalfOpen,
            ..
        }
    ));
}
