//! The breaker handle's accessors (its `Debug`, generation, clock, memory), the names of states
//! and triggers, idle detection in a family, and half-open edges.

use std::time::Duration;

use breakwater_core::{
    CircuitBreaker, Clock, Config, FamilyOptions, ManualClock, Outcome, Registry, SlidingWindow,
    State, Trigger,
};

const SEC: Duration = Duration::from_secs(1);

#[test]
fn debug_names_the_breaker_and_its_state() {
    let cb = CircuitBreaker::new("inventory", Config::default());
    let shown = format!("{cb:?}");
    assert!(
        shown.contains("inventory") && shown.contains("Closed"),
        "{shown}"
    );
    let permit = format!("{:?}", cb.try_acquire_owned().unwrap());
    assert!(permit.contains("inventory"), "{permit}");
}

#[test]
fn the_generation_counts_transitions_and_resets() {
    let cb = CircuitBreaker::new("g", Config::default());
    let g0 = cb.generation();
    cb.transition_to(State::Open).unwrap();
    assert_eq!(cb.generation(), g0 + 1);
    cb.transition_to(State::ForcedOpen).unwrap();
    assert_eq!(cb.generation(), g0 + 2);
    cb.reset();
    assert_eq!(cb.generation(), g0 + 3);
}

#[test]
fn the_clock_is_the_one_given() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("c", Config::default(), clock.clone());
    clock.advance(42 * SEC);
    assert_eq!(cb.clock().now(), clock.now());
    assert!(cb.clock().now() >= 42 * SEC);
}

#[test]
fn memory_grows_with_the_window() {
    let sized = |n| {
        let config = Config::builder()
            .sliding_window(SlidingWindow::Count(n))
            .build()
            .unwrap();
        CircuitBreaker::new("m", config).memory_bytes()
    };
    let (small, large) = (sized(100), sized(10_000));
    assert!(small > 100, "{small}");
    assert!(large >= small + 9_900, "{small} → {large}: a byte per slot");
}

#[test]
fn states_and_triggers_have_their_names() {
    let admits: Vec<State> = State::ALL
        .into_iter()
        .filter(|s| s.allows_calls())
        .collect();
    assert_eq!(
        admits,
        vec![State::Closed, State::Disabled, State::MetricsOnly]
    );
    assert_eq!(State::HalfOpen.to_string(), "HALF_OPEN");
    assert_eq!(
        format!("{:>9}", State::Open),
        "     OPEN",
        "padded as a str"
    );
    let names: Vec<String> = [
        Trigger::FailureRatio,
        Trigger::SlowCallRatio,
        Trigger::ConsecutiveFailures,
        Trigger::Timer,
        Trigger::Probe,
        Trigger::Manual,
    ]
    .iter()
    .map(|t| format!("{t}/{}", t.as_str()))
    .collect();
    assert_eq!(
        names,
        [
            "failure_ratio/failure_ratio",
            "slow_call_ratio/slow_call_ratio",
            "consecutive_failures/consecutive_failures",
            "timer/timer",
            "probe/probe",
            "manual/manual",
        ]
    );
}

#[test]
fn a_member_with_any_kind_of_call_is_not_idle() {
    let clock = ManualClock::new();
    let registry = Registry::builder().clock(clock.clone()).build();
    let family = registry.family(
        "api",
        FamilyOptions::new(Config::default()).idle_eviction(10 * SEC),
    );
    let names = ["ignored", "rejected", "late", "quiet"];
    for n in names {
        family.get(n);
    }
    family.evict_idle(); // the first sweep notes every member's activity
    clock.advance(11 * SEC);
    // Only ignored calls.
    family.get("ignored").try_acquire().unwrap().ignore();
    // Only rejected calls, then CLOSED again.
    let rejected = family.get("rejected");
    rejected.transition_to(State::Open).unwrap();
    assert!(rejected.try_acquire().is_err());
    rejected.transition_to(State::Closed).unwrap();
    // Only an outcome that arrived after a transition.
    let late = family.get("late");
    let permit = late.try_acquire().unwrap();
    late.transition_to(State::MetricsOnly).unwrap();
    late.transition_to(State::Closed).unwrap();
    permit.success();
    assert_eq!(family.evict_idle(), 1, "only the quiet one is idle");
    for n in ["ignored", "rejected", "late"] {
        assert!(family.get_existing(n).is_some(), "{n}");
    }
    assert!(family.get_existing("quiet").is_none());
}

fn half_open_breaker(config: breakwater_core::ConfigBuilder) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("h", config.build().unwrap(), clock.clone());
    cb.transition_to(State::Open).unwrap();
    clock.advance(11 * SEC);
    (cb, clock)
}

#[test]
fn slow_failed_probes_are_counted_as_such() {
    let (cb, clock) = half_open_breaker(
        Config::builder()
            .failure_rate_threshold(50.0)
            .slow_call_rate_threshold(50.0)
            .slow_call_duration_threshold(SEC)
            .wait_in_open(10 * SEC)
            .permitted_calls_in_half_open(2),
    );
    let a = cb.try_acquire().unwrap();
    let b = cb.try_acquire().unwrap();
    assert_eq!(cb.state(), State::HalfOpen);
    clock.advance(2 * SEC);
    a.failure();
    b.record_with_duration(Outcome::Success, Duration::from_millis(10));
    assert_eq!(cb.state(), State::Open);
    let w = cb.snapshot().window;
    assert_eq!((w.buffered_calls, w.failed_calls, w.slow_calls), (2, 1, 1));
    assert_eq!((w.slow_failed_calls, w.slow_successful_calls), (1, 0));
}

#[test]
fn without_a_slow_call_policy_a_long_probe_is_not_slow() {
    let (cb, clock) = half_open_breaker(
        Config::builder()
            .failure_rate_threshold(50.0)
            .slow_call_duration_threshold(SEC)
            .wait_in_open(10 * SEC)
            .permitted_calls_in_half_open(1),
    );
    let probe = cb.try_acquire().unwrap();
    clock.advance(5 * SEC);
    probe.success();
    let s = cb.snapshot();
    assert_eq!(s.state, State::Closed);
    assert_eq!(
        s.slow_calls, 0,
        "calls are not timed without a slow-call policy"
    );
}

#[test]
fn a_stale_half_open_permit_dropped_frees_no_slot_of_the_next_trial() {
    let (cb, clock) = half_open_breaker(
        Config::builder()
            .failure_rate_threshold(50.0)
            .wait_in_open(10 * SEC)
            .permitted_calls_in_half_open(1),
    );
    let stale = cb.try_acquire().unwrap(); // the first trial's only permit
    cb.transition_to(State::Open).unwrap();
    clock.advance(11 * SEC);
    let current = cb.try_acquire().unwrap(); // the second trial's only permit
    assert_eq!(cb.state(), State::HalfOpen);
    drop(stale);
    assert!(
        cb.try_acquire().is_err(),
        "the second trial's slot is still taken"
    );
    drop(current);
    assert!(cb.try_acquire().is_ok(), "its own permit gives it back");
}

#[test]
fn transitions_are_counted_by_from_to_and_trigger() {
    let clock = ManualClock::new();
    let config = Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(1)
        .wait_in_open(10 * SEC)
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("t", config, clock.clone());
    for _ in 0..2 {
        cb.try_acquire().unwrap().failure(); // CLOSED -> OPEN, consecutive failures
        cb.transition_to(State::Closed).unwrap(); // OPEN -> CLOSED, manual
    }
    cb.transition_to(State::ForcedOpen).unwrap(); // CLOSED -> FORCED_OPEN, manual
    let mut counts: Vec<(State, State, Trigger, u64)> = cb
        .transition_counts()
        .into_iter()
        .map(|c| (c.from, c.to, c.trigger, c.count))
        .collect();
    counts.sort_by_key(|c| format!("{c:?}"));
    let mut expected = vec![
        (State::Closed, State::Open, Trigger::ConsecutiveFailures, 2),
        (State::Open, State::Closed, Trigger::Manual, 2),
        (State::Closed, State::ForcedOpen, Trigger::Manual, 1),
    ];
    expected.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(counts, expected);
}

#[test]
fn total_requests_add_up_every_kind_of_call() {
    let cb = CircuitBreaker::new("n", Config::default());
    cb.try_acquire().unwrap().success();
    cb.try_acquire().unwrap().success();
    cb.try_acquire().unwrap().failure();
    cb.try_acquire().unwrap().ignore();
    cb.force_open();
    assert!(cb.try_acquire().is_err());
    let s = cb.snapshot();
    assert_eq!(
        (
            s.successes,
            s.failures,
            s.ignored_calls,
            s.not_permitted_calls
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(s.total_requests, 5);
}

#[test]
fn untimed_calls_are_never_slow_however_late_the_clock() {
    let clock = ManualClock::new();
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .slow_call_duration_threshold(SEC)
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("u", config, clock.clone());
    clock.advance(100 * SEC);
    cb.try_acquire().unwrap().failure();
    cb.try_acquire().unwrap().success();
    assert_eq!(cb.snapshot().slow_calls, 0);
}

#[test]
fn the_last_success_is_stamped_after_a_failure_and_the_first_time() {
    let clock = ManualClock::with_epoch_millis(1_000_000);
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("s", config, clock.clone());
    assert_eq!(cb.snapshot().last_success_time, None);
    clock.advance(SEC);
    cb.try_acquire().unwrap().success();
    assert_eq!(
        cb.snapshot().last_success_time,
        Some(1_001_000),
        "the first success"
    );
    clock.advance(SEC);
    cb.try_acquire().unwrap().failure();
    assert_eq!(cb.snapshot().last_failure_time, Some(1_002_000));
    clock.advance(SEC);
    cb.try_acquire().unwrap().success();
    assert_eq!(
        cb.snapshot().last_success_time,
        Some(1_003_000),
        "the first after a failure"
    );
    assert_eq!(cb.snapshot().consecutive_failures, 0);
}

fn untimed() -> Config {
    Config::builder()
        .failure_rate_threshold(50.0)
        .no_slow_call_rate_threshold()
        .build()
        .unwrap()
}

#[test]
fn an_untimed_failure_is_stamped_from_the_clock() {
    let clock = ManualClock::with_epoch_millis(1_000_000);
    let cb = CircuitBreaker::with_clock("u", untimed(), clock.clone());
    clock.advance(2 * SEC);
    cb.try_acquire().unwrap().failure();
    // Read later: a time that is wrong in the future would show as "now".
    clock.advance(SEC);
    assert_eq!(cb.snapshot().last_failure_time, Some(1_002_000));
}

#[test]
fn a_first_success_with_a_given_duration_is_stamped() {
    let clock = ManualClock::with_epoch_millis(1_000_000);
    let cb = CircuitBreaker::with_clock("d", untimed(), clock.clone());
    clock.advance(SEC);
    cb.try_acquire()
        .unwrap()
        .record_with_duration(Outcome::Success, Duration::from_millis(3));
    assert_eq!(cb.snapshot().last_success_time, Some(1_001_000));
}

#[test]
fn timed_successes_keep_the_last_success_current() {
    let clock = ManualClock::with_epoch_millis(1_000_000);
    let config = untimed()
        .to_builder()
        .record_call_durations(true)
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("t", config, clock.clone());
    for s in 1..=3 {
        clock.advance(SEC);
        cb.try_acquire().unwrap().success();
        assert_eq!(cb.snapshot().last_success_time, Some(1_000_000 + s * 1_000));
    }
}

#[test]
fn the_window_counts_refusals_since_the_state_was_entered() {
    let cb = CircuitBreaker::new("n", untimed());
    let refusals = |n| {
        for _ in 0..n {
            assert!(cb.try_acquire().is_err());
        }
    };
    cb.force_open();
    refusals(2);
    assert_eq!(cb.snapshot().window.not_permitted_calls, 2);
    cb.transition_to(State::Closed).unwrap();
    assert_eq!(
        cb.snapshot().window.not_permitted_calls,
        0,
        "reset on CLOSED"
    );
    cb.transition_to(State::Open).unwrap();
    refusals(3);
    assert_eq!(cb.snapshot().window.not_permitted_calls, 3);
    cb.force_open();
    assert_eq!(
        cb.snapshot().window.not_permitted_calls,
        0,
        "reset on FORCED_OPEN"
    );
    assert_eq!(
        cb.snapshot().not_permitted_calls,
        5,
        "the lifetime count only grows"
    );
}

fn count_window(size: u32, min: u32, threshold: f32) -> CircuitBreaker {
    let config = Config::builder()
        .sliding_window(SlidingWindow::Count(size))
        .minimum_number_of_calls(min)
        .failure_rate_threshold(threshold)
        .no_slow_call_rate_threshold()
        .no_consecutive_failures()
        .build()
        .unwrap();
    CircuitBreaker::new("w", config)
}

#[test]
fn a_failure_that_evicts_a_failure_is_judged_on_the_window_after_it() {
    // [F, S] is 50 %; the next failure takes the first one's slot: [F, S] again, not 100 %.
    let cb = count_window(2, 2, 100.0);
    cb.try_acquire().unwrap().failure();
    cb.try_acquire().unwrap().success();
    cb.try_acquire().unwrap().failure();
    assert_eq!(cb.state(), State::Closed);
    let w = cb.snapshot().window;
    assert_eq!((w.buffered_calls, w.failed_calls), (2, 1));
    cb.try_acquire().unwrap().failure();
    assert_eq!(cb.state(), State::Open, "[F, F] is 100 %");
}

#[test]
fn the_window_keeps_counting_past_its_sequence_field() {
    // The packed counter's sequence has 22 bits: every lap takes it back by the window's size,
    // so it never runs out, however many calls.
    let cb = count_window(3, 3, 100.0);
    let calls = (1u64 << 22) + 5;
    for i in 0..calls {
        let p = cb.try_acquire().unwrap();
        if i % 3 == 0 {
            p.failure();
        } else {
            p.success();
        }
    }
    let s = cb.snapshot();
    assert_eq!(s.total_requests, calls);
    assert_eq!(s.failures, calls.div_ceil(3));
    assert_eq!(s.window.buffered_calls, 3);
    assert_eq!(s.window.failed_calls, 1);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn slow_failures_in_a_count_window_are_told_apart() {
    let config = Config::builder()
        .sliding_window(SlidingWindow::Count(4))
        .minimum_number_of_calls(100)
        .slow_call_rate_threshold(100.0)
        .slow_call_duration_threshold(SEC)
        .build()
        .unwrap();
    let cb = CircuitBreaker::new("sf", config);
    let record = |outcome, secs| {
        cb.try_acquire()
            .unwrap()
            .record_with_duration(outcome, secs * SEC)
    };
    record(Outcome::Failure, 2);
    record(Outcome::Success, 2);
    record(Outcome::Failure, 0);
    record(Outcome::Success, 0);
    let w = cb.snapshot().window;
    assert_eq!((w.failed_calls, w.slow_calls), (2, 2));
    assert_eq!((w.slow_failed_calls, w.slow_successful_calls), (1, 1));
}

#[test]
fn a_time_window_costs_a_bucket_per_second() {
    let sized = |secs| {
        let config = Config::builder()
            .sliding_window(SlidingWindow::Time(Duration::from_secs(secs)))
            .build()
            .unwrap();
        CircuitBreaker::new("t", config).memory_bytes()
    };
    let bucket = sized(2) - sized(1);
    assert!(bucket >= 24, "three counters a bucket: {bucket}");
    assert_eq!(sized(61) - sized(1), 60 * bucket);
}
