//! A breaker trips, rejects, probes and recovers, printing each transition.
//!
//! Run with:
//!
//! ```text
//! cargo run --example breaker
//! ```
//!
//! A simulated dependency fails for a while and then heals. The breaker (a failure-rate policy
//! over the last 10 calls, 2 s in OPEN doubling up to 8 s, 3 probes in HALF_OPEN) runs on a
//! manual clock, so the whole story plays out instantly and the same way every time.

use std::time::Duration;

use breakwater::{
    CircuitBreaker, Config, EventKind, ManualClock, SlidingWindow, State, WaitInOpen,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clock = ManualClock::new();
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(10))
        .minimum_number_of_calls(5)
        .permitted_calls_in_half_open(3)
        .wait_in_open(WaitInOpen::exponential(
            Duration::from_secs(2),
            2.0,
            Duration::from_secs(8),
        ))
        .build()?;
    let breaker = CircuitBreaker::with_clock("inventory", config, clock.clone());
    let events = breaker.subscribe();

    // The dependency is down for the first 9 simulated seconds.
    let healthy = |t: Duration| t >= Duration::from_secs(9);
    let (mut calls, mut rejected, mut reached) = (0, 0, 0);

    for tick in 0..100 {
        let now = Duration::from_millis(250 * tick);
        clock.set(now);
        calls += 1;
        match breaker.try_acquire() {
            Ok(permit) => {
                reached += 1;
                if healthy(now) {
                    permit.success();
                } else {
                    permit.failure();
                }
            }
            Err(e) => {
                rejected += 1;
                if rejected % 8 == 1 {
                    println!("t={:>5.2}s  rejected: {e}", now.as_secs_f64());
                }
            }
        }
        while let Some(event) = events.try_recv() {
            if let EventKind::StateTransition { from, to, trigger } = event.kind {
                println!("t={:>5.2}s  {from} -> {to} ({trigger})", now.as_secs_f64());
            }
        }
    }

    let s = breaker.snapshot();
    println!();
    println!("{calls} calls: {reached} reached the dependency, {rejected} were rejected fast");
    println!(
        "final state {}, opened {} times, {} failures, {} successes",
        s.state, s.circuit_opens, s.failures, s.successes
    );
    assert_eq!(breaker.state(), State::Closed);
    Ok(())
}
