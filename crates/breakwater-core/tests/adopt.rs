//! A breaker taking a fleet's state: the newest epoch wins, and what it tells the fleet.

use std::time::Duration;

use breakwater::{
    CircuitBreaker, Config, EventKind, ManualClock, OutcomeTotals, Registry, State, Trigger,
};

const T0: u64 = 1_700_000_000_000;

fn breaker() -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::with_epoch_millis(T0);
    let config = Config::builder()
        .consecutive_failures(2)
        .permitted_calls_in_half_open(1)
        .wait_in_open(Duration::from_secs(30))
        .build()
        .unwrap();
    (
        CircuitBreaker::with_clock("db", config, clock.clone()),
        clock,
    )
}

#[test]
fn an_adopted_open_lasts_until_the_fleets_time_then_probes_as_usual() {
    let (b, clock) = breaker();
    let events = b.subscribe();
    assert!(b.adopt(State::Open, Some(T0 + 10_000), 3));
    let refused = b.try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(10)));
    let e = events.try_recv().unwrap();
    assert!(matches!(
        e.kind,
        EventKind::StateTransition {
            from: State::Closed,
            to: State::Open,
            trigger: Trigger::Fleet
        }
    ));
    assert_eq!(b.shared_state(), (State::Open, Some(T0 + 10_000)));
    clock.advance(Duration::from_millis(10_001));
    b.try_acquire().unwrap().success(); // the probe
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn older_or_equal_epochs_expired_opens_half_open_and_forbidden_moves_change_nothing() {
    let (b, clock) = breaker();
    assert!(b.adopt(State::ForcedOpen, None, 10));
    assert!(!b.adopt(State::Closed, None, 10));
    assert!(!b.adopt(State::Closed, None, 9));
    assert_eq!((b.state(), b.fleet_epoch()), (State::ForcedOpen, 10));
    assert!(!b.adopt(State::HalfOpen, None, 11));
    assert_eq!(b.state(), State::ForcedOpen);
    // An OPEN whose time is over, or without one: only the epoch is kept.
    assert!(b.adopt(State::Closed, None, 12));
    assert!(!b.adopt(State::Open, Some(T0 - 1), 13));
    assert!(!b.adopt(State::Open, None, 14));
    assert_eq!((b.state(), b.fleet_epoch()), (State::Closed, 14));
    // METRICS_ONLY never opens (Resilience4j's table), from the fleet either.
    b.metrics_only();
    assert!(!b.adopt(State::Open, Some(T0 + 60_000), 15));
    assert_eq!(b.state(), State::MetricsOnly);
    // Same state: nothing moves, the epoch is kept.
    clock.advance(Duration::from_millis(1));
    assert!(!b.adopt(State::MetricsOnly, None, 16));
    assert_eq!(b.fleet_epoch(), 16);
}

#[test]
fn a_local_trip_tells_its_open_until_and_the_outcome_totals_count_calls() {
    let (b, _clock) = breaker();
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.shared_state(), (State::Open, Some(T0 + 30_000)));
    assert_eq!(
        b.outcome_totals(),
        OutcomeTotals {
            calls: 3,
            failures: 2,
            slow: 0
        }
    );
    b.reset();
    assert_eq!(b.outcome_totals(), OutcomeTotals::default());
    assert_eq!(b.shared_state(), (State::Closed, None));
}

#[test]
fn a_transitions_feed_hears_no_calls() {
    let registry = Registry::builder().clock(ManualClock::new()).build();
    let b = registry.breaker_with("db", breaker().0.config());
    let transitions = registry.subscribe_transitions(16);
    let all = registry.subscribe();
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    let _ = b.try_acquire();
    let kinds: Vec<EventKind> = std::iter::from_fn(|| transitions.try_recv())
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    assert!(matches!(
        kinds[0],
        EventKind::StateTransition {
            to: State::Open,
            ..
        }
    ));
    assert!(std::iter::from_fn(|| all.try_recv()).count() > 1);
    b.reset();
    b.reset(); // from CLOSED: no transition, still a reset
    let kinds: Vec<EventKind> = std::iter::from_fn(|| transitions.try_recv())
        .map(|e| e.kind)
        .collect();
    assert!(
        matches!(
            kinds[..],
            [
                EventKind::StateTransition {
                    to: State::Closed,
                    ..
                },
                EventKind::Reset,
                EventKind::Reset
            ]
        ),
        "{kinds:?}"
    );
}

#[test]
fn an_echo_older_than_what_the_store_answered_for_a_local_move_is_ignored() {
    let (b, _clock) = breaker();
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    b.note_fleet_epoch(20); // the store published that OPEN as epoch 20
    b.reset(); // an operator closes it here before the echo comes back
    assert!(!b.adopt(State::Open, Some(T0 + 30_000), 20), "its own echo");
    assert_eq!(b.state(), State::Closed);
    b.note_fleet_epoch(5);
    assert_eq!(b.fleet_epoch(), 20, "never back");
}
