//! One test per rule of the state machine, on a manual clock.

use std::time::Duration;

use breakwater_core::{
    CallError, CircuitBreaker, Config, ConfigBuilder, EventKind, ManualClock, Outcome,
    SlidingWindow, State, Trigger, WaitInOpen,
};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn breaker(b: ConfigBuilder) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("t", b.build().unwrap(), clock.clone());
    (cb, clock)
}

fn rate(window: u32, min: u32) -> ConfigBuilder {
    Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(window))
        .minimum_number_of_calls(min)
        .wait_in_open(10 * SEC)
}

fn ok(cb: &CircuitBreaker) {
    cb.try_acquire().expect("permitted").success();
}

fn fail(cb: &CircuitBreaker) {
    cb.try_acquire().expect("permitted").failure();
}

fn transitions(sub: &breakwater_core::Subscription) -> Vec<(State, State, Trigger)> {
    let mut v = Vec::new();
    while let Some(e) = sub.try_recv() {
        if let EventKind::StateTransition { from, to, trigger } = e.kind {
            v.push((from, to, trigger));
        }
    }
    v
}

#[test]
fn failure_rate_trips_at_threshold_only_after_minimum_calls() {
    let (cb, _) = breaker(rate(10, 4));
    fail(&cb);
    fail(&cb);
    fail(&cb);
    // 3 of 3 failed, but fewer than the minimum: rate unknown.
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().failure_rate, None);
    ok(&cb);
    // 3 of 4 = 75 % >= 50 %.
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.window.buffered_calls, 4);
    assert_eq!(s.window.failed_calls, 3);
    assert_eq!(s.failure_rate, Some(0.75));
    assert_eq!(s.circuit_opens, 1);
}

#[test]
fn threshold_is_inclusive_and_a_success_can_trip() {
    let (cb, _) = breaker(rate(4, 4));
    fail(&cb);
    fail(&cb);
    ok(&cb);
    assert_eq!(cb.state(), State::Closed);
    // The 4th call is a success, and 2/4 = 50 % >= 50 %.
    ok(&cb);
    assert_eq!(cb.state(), State::Open);
}

#[test]
fn below_threshold_stays_closed_as_window_slides() {
    let (cb, _) = breaker(rate(4, 4));
    for _ in 0..20 {
        fail(&cb);
        ok(&cb);
        ok(&cb);
        ok(&cb);
        // at most 1 of any 4 consecutive calls failed: 25 %.
        assert_eq!(cb.state(), State::Closed);
    }
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes, s.total_requests), (20, 60, 80));
}

#[test]
fn minimum_is_capped_at_count_window_size() {
    let (cb, _) = breaker(rate(2, 100));
    fail(&cb);
    assert_eq!(cb.state(), State::Closed);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
}

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_count() {
    let (cb, _) = breaker(
        Config::builder()
            .no_failure_rate_threshold()
            .consecutive_failures(3),
    );
    fail(&cb);
    fail(&cb);
    ok(&cb);
    assert_eq!(cb.snapshot().consecutive_failures, 0);
    fail(&cb);
    fail(&cb);
    assert_eq!(cb.state(), State::Closed);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.consecutive_failures, 3);
    assert_eq!(s.consecutive_successes, 0);
}

#[test]
fn slow_call_rate_trips_and_slow_means_strictly_longer() {
    let (cb, _) = breaker(
        Config::builder()
            .no_failure_rate_threshold()
            .slow_call_rate_threshold(50.0)
            .slow_call_duration_threshold(100 * MS)
            .sliding_window(SlidingWindow::Count(4))
            .minimum_number_of_calls(4),
    );
    let rec = |d: Duration| {
        cb.try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Success, d)
    };
    rec(100 * MS); // exactly the threshold: not slow
    rec(101 * MS);
    rec(10 * MS);
    assert_eq!(cb.snapshot().window.slow_calls, 1);
    rec(500 * MS);
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.slow_call_rate, Some(0.5));
    assert_eq!(s.slow_calls, 2);
    assert_eq!(s.window.slow_successful_calls, 2);
}

#[test]
fn slow_calls_are_timed_on_the_clock() {
    let (cb, clock) = breaker(
        Config::builder()
            .slow_call_rate_threshold(100.0)
            .slow_call_duration_threshold(50 * MS)
            .sliding_window(SlidingWindow::Count(2))
            .minimum_number_of_calls(2),
    );
    let p = cb.try_acquire().unwrap();
    assert!(p.is_timed());
    clock.advance(60 * MS);
    assert_eq!(p.elapsed(), Some(60 * MS));
    p.failure();
    let p = cb.try_acquire().unwrap();
    clock.advance(51 * MS);
    p.success();
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.window.slow_failed_calls, 1);
    assert_eq!(s.window.slow_successful_calls, 1);
}

#[test]
fn slow_calls_are_judged_without_a_histogram_unless_durations_are_recorded() {
    for record in [false, true] {
        let (cb, clock) = breaker(
            Config::builder()
                .no_failure_rate_threshold()
                .slow_call_rate_threshold(50.0)
                .slow_call_duration_threshold(100 * MS)
                .sliding_window(SlidingWindow::Count(4))
                .minimum_number_of_calls(4)
                .record_call_durations(record),
        );
        for ms in [10, 100, 101, 250] {
            let p = cb.try_acquire().unwrap();
            assert!(p.is_timed());
            clock.advance(ms * MS);
            assert_eq!(p.elapsed(), Some(ms * MS));
            p.success();
        }
        let s = cb.snapshot();
        assert_eq!(s.slow_calls, 2, "strictly longer than 100 ms");
        assert_eq!(s.state, State::Open, "2 of 4 slow");
        let h = cb.duration_histogram();
        assert_eq!(h.count, if record { 4 } else { 0 });
        assert_eq!(cb.config().record_call_durations(), record);
    }
}

#[test]
fn without_a_slow_policy_calls_are_not_timed() {
    let (cb, _) = breaker(rate(10, 10));
    let p = cb.try_acquire().unwrap();
    assert!(!p.is_timed());
    p.success();
}

#[test]
fn open_rejects_with_retry_after_then_lazily_half_opens_strictly_after_the_wait() {
    let (cb, clock) = breaker(rate(2, 2).permitted_calls_in_half_open(2));
    fail(&cb);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    clock.advance(4 * SEC);
    let e = cb.try_acquire().unwrap_err();
    assert_eq!(e.state(), State::Open);
    assert_eq!(e.retry_after(), Some(6 * SEC));
    clock.advance(6 * SEC);
    // Exactly at the end of the wait: still OPEN.
    assert_eq!(
        cb.try_acquire().unwrap_err().retry_after(),
        Some(Duration::ZERO)
    );
    clock.advance(MS);
    // Reading the state does not transition.
    assert_eq!(cb.state(), State::Open);
    let p = cb.try_acquire().unwrap();
    assert_eq!(p.state(), State::HalfOpen);
    assert_eq!(cb.state(), State::HalfOpen);
    drop(p);
    let s = cb.snapshot();
    assert_eq!(s.not_permitted_calls, 2);
    // Not-permitted calls of the window restart on entering HALF_OPEN.
    assert_eq!(s.window.not_permitted_calls, 0);
}

#[test]
fn automatic_transition_runs_on_the_clock_timer() {
    let (cb, clock) = breaker(rate(1, 1).automatic_transition_to_half_open(true));
    let sub = cb.subscribe();
    fail(&cb);
    clock.advance(10 * SEC);
    assert_eq!(cb.state(), State::HalfOpen);
    assert_eq!(
        transitions(&sub),
        vec![
            (State::Closed, State::Open, Trigger::FailureRatio),
            (State::Open, State::HalfOpen, Trigger::Timer)
        ]
    );
}

#[test]
fn stale_timer_does_nothing_after_a_manual_change() {
    let (cb, clock) = breaker(rate(1, 1).automatic_transition_to_half_open(true));
    fail(&cb);
    cb.force_open();
    clock.advance(20 * SEC);
    assert_eq!(cb.state(), State::ForcedOpen);
}

#[test]
fn half_open_rate_mode_decides_when_all_permits_reported() {
    let (cb, clock) = breaker(rate(2, 2).permitted_calls_in_half_open(3));
    fail(&cb);
    fail(&cb);
    clock.advance(11 * SEC);
    let a = cb.try_acquire().unwrap();
    let b = cb.try_acquire().unwrap();
    let c = cb.try_acquire().unwrap();
    assert_eq!(cb.try_acquire().unwrap_err().state(), State::HalfOpen);
    a.success();
    b.failure();
    assert_eq!(cb.state(), State::HalfOpen);
    assert_eq!(cb.snapshot().failure_rate, None, "unknown until all report");
    c.success();
    // 1 of 3 failed: 33 % < 50 %.
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().window.buffered_calls, 0, "cleared on CLOSED");
}

#[test]
fn half_open_rate_mode_reopens_at_threshold_and_backs_off() {
    let (cb, clock) = breaker(
        rate(2, 2)
            .permitted_calls_in_half_open(2)
            .wait_in_open(WaitInOpen::exponential(10 * SEC, 2.0, 25 * SEC)),
    );
    fail(&cb);
    fail(&cb);
    for expected_wait in [20, 25, 25] {
        clock.advance(Duration::from_secs(30));
        ok(&cb);
        fail(&cb);
        assert_eq!(cb.state(), State::Open);
        let e = cb.try_acquire().unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(expected_wait)));
    }
    // Closing resets the backoff.
    clock.advance(Duration::from_secs(30));
    ok(&cb);
    ok(&cb);
    assert_eq!(cb.state(), State::Closed);
    fail(&cb);
    fail(&cb);
    assert_eq!(cb.try_acquire().unwrap_err().retry_after(), Some(10 * SEC));
}

#[test]
fn success_threshold_mode_closes_after_n_successes_and_any_failure_reopens() {
    let (cb, clock) = breaker(
        Config::builder()
            .no_failure_rate_threshold()
            .consecutive_failures(1)
            .success_threshold(3)
            .permitted_calls_in_half_open(1)
            .wait_in_open(SEC),
    );
    fail(&cb);
    clock.advance(2 * SEC);
    // One probe at a time: a reported probe frees its permit.
    let p = cb.try_acquire().unwrap();
    assert!(cb.try_acquire().is_err());
    p.success();
    ok(&cb);
    assert_eq!(cb.state(), State::HalfOpen);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    clock.advance(2 * SEC);
    for _ in 0..3 {
        ok(&cb);
    }
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn dropped_and_ignored_permits_give_half_open_permits_back() {
    let (cb, clock) = breaker(rate(1, 1).permitted_calls_in_half_open(1));
    fail(&cb);
    clock.advance(11 * SEC);
    drop(cb.try_acquire().unwrap());
    cb.try_acquire().unwrap().ignore();
    let s = cb.snapshot();
    assert_eq!(s.window.buffered_calls, 0);
    assert_eq!(s.ignored_calls, 1);
    ok(&cb);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn max_wait_in_half_open_moves_on_by_timer_and_lazily() {
    for (after, expected) in [(State::Open, State::Open), (State::Closed, State::Closed)] {
        let (cb, clock) = breaker(
            rate(1, 1)
                .max_wait_in_half_open(5 * SEC)
                .state_after_max_wait_in_half_open(after),
        );
        fail(&cb);
        clock.advance(11 * SEC);
        let stuck = cb.try_acquire().unwrap();
        clock.advance(5 * SEC);
        assert_eq!(cb.state(), expected);
        // The stuck probe's late outcome belongs to an old generation.
        stuck.failure();
        assert_eq!(cb.state(), expected);
    }
}

#[test]
fn outcome_from_older_generation_is_dropped() {
    let (cb, _) = breaker(rate(10, 1));
    let old = cb.try_acquire().unwrap();
    cb.reset();
    old.failure();
    let s = cb.snapshot();
    assert_eq!(s.failures, 0);
    assert_eq!(s.window.buffered_calls, 0);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn dropped_outcomes_stay_out_of_the_duration_histogram() {
    let (cb, clock) = breaker(
        rate(10, 1)
            .record_call_durations(true)
            .permitted_calls_in_half_open(2),
    );
    let old = cb.try_acquire().unwrap();
    cb.reset();
    old.record_with_duration(Outcome::Failure, 3 * MS);
    assert_eq!(
        cb.duration_histogram().count,
        0,
        "an older generation's outcome"
    );
    fail(&cb);
    clock.advance(11 * SEC);
    let late = cb.try_acquire().unwrap();
    cb.force_open();
    late.record_with_duration(Outcome::Success, 3 * MS);
    assert_eq!(cb.duration_histogram().count, 1, "a late probe's outcome");
}

#[test]
fn window_is_kept_on_open_and_cleared_on_half_open() {
    let (cb, clock) = breaker(rate(4, 2));
    ok(&cb);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!((s.window.buffered_calls, s.window.failed_calls), (2, 1));
    clock.advance(11 * SEC);
    let p = cb.try_acquire().unwrap();
    assert_eq!(cb.snapshot().window.buffered_calls, 0);
    drop(p);
}

#[test]
fn open_after_failed_probes_shows_the_probes_failure_rate() {
    // As Resilience4j's state machine: 3 of 4 probes fail, the OPEN breaker shows them.
    let (cb, clock) = breaker(rate(4, 4).permitted_calls_in_half_open(4));
    for _ in 0..4 {
        fail(&cb);
    }
    clock.advance(11 * SEC);
    ok(&cb);
    fail(&cb);
    fail(&cb);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.failure_rate, Some(0.75));
    assert_eq!(s.buffered_calls, 4);
    assert_eq!(s.window.failed_calls, 3);
    assert_eq!(s.window.successful_calls, 1);
    // Probes issued in HALF_OPEN that report late change nothing.
    clock.advance(30 * SEC);
    let late = cb.try_acquire().unwrap();
    cb.transition_to(State::Open).unwrap();
    late.failure();
    let s = cb.snapshot();
    assert_eq!(
        s.buffered_calls, 0,
        "a manual re-open with no probe reported"
    );
    assert_eq!(
        s.failures, 8,
        "the late probe's failure is out of the window, in the lifetime count"
    );
}

#[test]
fn open_after_slow_probes_shows_the_probes_slow_call_rate() {
    let (cb, clock) = breaker(
        Config::builder()
            .no_failure_rate_threshold()
            .slow_call_rate_threshold(50.0)
            .slow_call_duration_threshold(100 * MS)
            .sliding_window(SlidingWindow::Count(4))
            .minimum_number_of_calls(4)
            .permitted_calls_in_half_open(4)
            .wait_in_open(10 * SEC),
    );
    let slow = |cb: &CircuitBreaker| {
        cb.try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Success, 200 * MS)
    };
    for _ in 0..4 {
        slow(&cb);
    }
    assert_eq!(cb.state(), State::Open);
    clock.advance(11 * SEC);
    ok(&cb);
    slow(&cb);
    slow(&cb);
    slow(&cb);
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.slow_call_rate, Some(0.75));
    assert_eq!(s.failure_rate, Some(0.0));
    assert_eq!(s.window.slow_calls, 3);
    assert_eq!(s.window.slow_successful_calls, 3);
    assert_eq!(s.buffered_calls, 4);
}

#[test]
fn success_threshold_mode_reports_probe_rates_once_every_permit_reported() {
    let (cb, clock) = breaker(
        Config::builder()
            .consecutive_failures(1)
            .success_threshold(3)
            .permitted_calls_in_half_open(2)
            .wait_in_open(SEC),
    );
    fail(&cb);
    clock.advance(2 * SEC);
    ok(&cb);
    assert_eq!(cb.snapshot().failure_rate, None, "1 of 2 permits reported");
    ok(&cb);
    assert_eq!(cb.snapshot().failure_rate, Some(0.0));
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!(s.buffered_calls, 3);
    assert_eq!(s.failure_rate, Some(1.0 / 3.0));
    // Fewer reports than permits before re-opening: counts shown, rates unknown.
    clock.advance(3 * SEC);
    fail(&cb);
    let s = cb.snapshot();
    assert_eq!(
        (s.state, s.buffered_calls, s.failure_rate),
        (State::Open, 1, None)
    );
}

#[test]
fn late_probe_outcomes_leave_the_window_alone_after_the_breaker_leaves_half_open() {
    for to in [State::ForcedOpen, State::Closed, State::Open] {
        let (cb, clock) = breaker(rate(1, 1).permitted_calls_in_half_open(2));
        fail(&cb);
        clock.advance(11 * SEC);
        let late = cb.try_acquire().unwrap();
        cb.transition_to(to).unwrap();
        let before = cb.snapshot();
        late.failure();
        let after = cb.snapshot();
        assert_eq!(
            after.failures,
            before.failures + 1,
            "{to}: counted, the call happened"
        );
        assert_eq!(after.window, before.window, "{to}: the window is untouched");
        assert_eq!(after.state, to);
    }
}

#[test]
fn forced_open_disabled_and_metrics_only() {
    let (cb, _) = breaker(rate(2, 2));
    cb.force_open();
    let e = cb.try_acquire().unwrap_err();
    assert_eq!((e.state(), e.retry_after()), (State::ForcedOpen, None));

    cb.disable();
    for _ in 0..10 {
        fail(&cb);
    }
    assert_eq!(cb.state(), State::Disabled);
    assert_eq!(cb.snapshot().failures, 0, "DISABLED records nothing");

    cb.metrics_only();
    for _ in 0..10 {
        fail(&cb);
    }
    assert_eq!(cb.state(), State::MetricsOnly);
    let s = cb.snapshot();
    assert_eq!((s.failures, s.window.failed_calls), (10, 2));
    assert_eq!(s.failure_rate, Some(1.0));

    cb.close();
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().window.buffered_calls, 0);
}

#[test]
fn manual_transitions_are_checked_and_idempotent() {
    let (cb, clock) = breaker(rate(2, 2));
    let g = cb.generation();
    cb.transition_to(State::Closed).unwrap();
    assert_eq!(cb.generation(), g, "same state is a no-op");
    let e = cb.transition_to(State::HalfOpen).unwrap_err();
    assert_eq!((e.from(), e.to()), (State::Closed, State::HalfOpen));
    cb.transition_to(State::MetricsOnly).unwrap();
    assert!(cb.transition_to(State::Open).is_err());
    assert!(cb.transition_to(State::HalfOpen).is_err());
    cb.transition_to(State::Open).unwrap_err();
    cb.transition_to(State::Closed).unwrap();
    cb.transition_to(State::Open).unwrap();
    cb.transition_to(State::HalfOpen).unwrap();
    assert!(cb.try_acquire().is_ok());
    cb.open_for(3 * SEC).unwrap();
    assert_eq!(cb.try_acquire().unwrap_err().retry_after(), Some(3 * SEC));
    cb.open_until(clock.now_for_test() + 7 * SEC).unwrap();
    assert_eq!(cb.try_acquire().unwrap_err().retry_after(), Some(7 * SEC));
}

trait NowForTest {
    fn now_for_test(&self) -> Duration;
}
impl NowForTest for ManualClock {
    fn now_for_test(&self) -> Duration {
        breakwater_core::Clock::now(self)
    }
}

#[test]
fn reset_zeroes_lifetime_counters_and_closes() {
    let (cb, _) = breaker(rate(2, 2));
    fail(&cb);
    fail(&cb);
    assert!(cb.try_acquire().is_err());
    cb.reset();
    let s = cb.snapshot();
    assert_eq!(s.state, State::Closed);
    assert_eq!(
        (
            s.failures,
            s.successes,
            s.not_permitted_calls,
            s.circuit_opens,
            s.total_requests
        ),
        (0, 0, 0, 0, 0)
    );
    ok(&cb);
    assert_eq!(cb.snapshot().successes, 1);
}

#[test]
fn time_window_trips_on_rate_over_last_seconds() {
    let (cb, clock) = breaker(
        Config::builder()
            .failure_rate_threshold(50.0)
            .sliding_window(SlidingWindow::Time(Duration::from_secs(2)))
            .minimum_number_of_calls(4),
    );
    fail(&cb);
    fail(&cb);
    ok(&cb);
    clock.advance(2 * SEC);
    // The two failures have aged out.
    ok(&cb);
    ok(&cb);
    fail(&cb);
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().window.buffered_calls, 3);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (4, 3));
}

#[test]
fn snapshot_times_are_epoch_ms_from_the_clock() {
    let clock = ManualClock::with_epoch_millis(1_000_000);
    let cb = CircuitBreaker::with_clock("t", rate(1, 1).build().unwrap(), clock.clone());
    clock.advance(5 * SEC);
    ok(&cb);
    clock.advance(2 * SEC);
    fail(&cb);
    let s = cb.snapshot();
    assert_eq!(s.last_success_time, Some(1_005_000));
    assert_eq!(s.last_failure_time, Some(1_007_000));
    assert_eq!(s.opened_at, Some(1_007_000));
    assert_eq!(s.uptime, 7_000);
    assert_eq!(s.retry_after_ms, Some(10_000));
    let json = serde_json::to_value(&s).unwrap();
    for key in [
        "state",
        "failures",
        "successes",
        "slowCalls",
        "notPermittedCalls",
        "consecutiveFailures",
        "consecutiveSuccesses",
        "lastFailureTime",
        "lastSuccessTime",
        "openedAt",
        "totalRequests",
        "circuitOpens",
        "failureRate",
        "slowCallRate",
        "bufferedCalls",
        "uptime",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["state"], "OPEN");
    assert_eq!(json["window"]["failedCalls"], 1);
    assert_eq!(json["config"]["failureRateThreshold"], 50.0);
}

#[test]
fn update_config_changes_thresholds_and_keeps_the_window() {
    let (cb, _) = breaker(rate(4, 4));
    fail(&cb);
    ok(&cb);
    ok(&cb);
    ok(&cb);
    assert_eq!(cb.state(), State::Closed);
    cb.update_config(rate(4, 4).failure_rate_threshold(20.0).build().unwrap())
        .unwrap();
    assert_eq!(cb.snapshot().window.buffered_calls, 4);
    ok(&cb); // evicts the failure: 0 %
    fail(&cb); // 25 % >= 20 %
    assert_eq!(cb.state(), State::Open);
    let e = cb.update_config(rate(5, 4).build().unwrap()).unwrap_err();
    assert_eq!(e.field(), "sliding_window");
}

#[tokio::test]
async fn call_records_outcomes_and_rejects_without_running() {
    let (cb, _) = breaker(rate(3, 3));
    assert_eq!(cb.call(async { Ok::<_, ()>(1) }).await, Ok(1));
    assert_eq!(
        cb.call(async { Err::<u8, _>("x") }).await,
        Err(CallError::Inner("x"))
    );
    assert_eq!(
        cb.call(async { Err::<u8, _>("y") }).await,
        Err(CallError::Inner("y"))
    );
    assert_eq!(cb.state(), State::Open);
    let mut ran = false;
    let r = cb
        .call(async {
            ran = true;
            Ok::<_, ()>(())
        })
        .await;
    assert!(r.unwrap_err().is_rejected());
    assert!(!ran);
}

#[tokio::test]
async fn call_with_classifies() {
    let (cb, _) = breaker(rate(1, 1));
    let r = cb
        .call_with(async { Err::<(), _>(404) }, |r| match r {
            Err(404) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        })
        .await;
    assert_eq!(r, Err(CallError::Inner(404)));
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().ignored_calls, 1);
}

#[tokio::test]
async fn cancelled_call_frees_its_half_open_permit() {
    let (cb, clock) = breaker(rate(1, 1).permitted_calls_in_half_open(1));
    fail(&cb);
    clock.advance(11 * SEC);
    {
        let fut = cb.call(std::future::pending::<Result<(), ()>>());
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(cb.try_acquire().is_err(), "the only permit is in flight");
    }
    ok(&cb);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn events_report_failures_slow_calls_and_rejections() {
    let (cb, _) = breaker(
        rate(2, 2)
            .slow_call_duration_threshold(10 * MS)
            .slow_call_rate_threshold(100.0),
    );
    let sub = cb.subscribe();
    cb.try_acquire()
        .unwrap()
        .record_with_duration(Outcome::Failure, 20 * MS);
    fail(&cb);
    let _ = cb.try_acquire();
    let mut kinds = Vec::new();
    while let Some(e) = sub.try_recv() {
        assert_eq!(&*e.circuit, "t");
        kinds.push(e.kind);
    }
    assert!(matches!(kinds[0], EventKind::Failure { duration_ms: Some(d) } if d == 20 * MS));
    assert!(matches!(kinds[1], EventKind::SlowCall { .. }));
    assert!(matches!(kinds[2], EventKind::Failure { .. }));
    assert!(matches!(
        kinds[3],
        EventKind::StateTransition {
            from: State::Closed,
            to: State::Open,
            trigger: Trigger::FailureRatio
        }
    ));
    assert!(matches!(
        kinds[4],
        EventKind::CallNotPermitted { state: State::Open }
    ));
    assert_eq!(sub.lost(), 0);
}

#[test]
fn memory_of_a_breaker_with_a_100_call_window_is_under_2_kib() {
    let (cb, _) = breaker(rate(100, 100));
    println!(
        "memory of a breaker with a 100-call window: {} bytes",
        cb.memory_bytes()
    );
    assert!(cb.memory_bytes() <= 2048, "{} bytes", cb.memory_bytes());
}

#[test]
fn huge_durations_saturate_instead_of_panicking() {
    let (cb, clock) = breaker(
        Config::builder()
            .consecutive_failures(1)
            .wait_in_open(Duration::MAX)
            .max_wait_in_half_open(Duration::MAX)
            .slow_call_duration_threshold(Duration::MAX),
    );
    clock.advance(SEC);
    fail(&cb);
    assert!(cb.try_acquire().is_err());
    cb.open_for(Duration::MAX).unwrap();
    assert!(cb.try_acquire().is_err());
    cb.transition_to(State::HalfOpen).unwrap();
    clock.advance(Duration::from_secs(3_600));
    assert!(cb.try_acquire().is_ok());
    // The clock itself saturates too.
    clock.advance(Duration::MAX);
    clock.advance(Duration::MAX);
    let _ = cb.try_acquire();
    let _ = cb.snapshot();
}

#[test]
fn owned_permits_release_their_handle_when_recorded_or_dropped() {
    let (cb, _) = breaker(rate(10, 10));
    cb.metrics_only();
    assert_eq!(cb.handles(), 1);
    for i in 0..100 {
        let p = cb.try_acquire_owned().unwrap();
        assert_eq!(cb.handles(), 2);
        match i % 3 {
            0 => p.success(),
            1 => p.failure(),
            _ => drop(p),
        }
    }
    assert_eq!(cb.handles(), 1);
}

#[test]
fn transitions_and_timed_durations_are_counted_until_a_reset() {
    let (cb, clock) = breaker(
        Config::builder()
            .no_failure_rate_threshold()
            .consecutive_failures(2)
            .slow_call_rate_threshold(100.0)
            .slow_call_duration_threshold(SEC)
            .record_call_durations(true)
            .permitted_calls_in_half_open(1)
            .wait_in_open(10 * SEC),
    );
    let p = cb.try_acquire().unwrap();
    clock.advance(3 * MS);
    p.failure();
    fail(&cb);
    clock.advance(11 * SEC);
    fail(&cb); // HALF_OPEN probe fails: OPEN again
    let counts = cb.transition_counts();
    let count = |from, to, trigger| {
        counts
            .iter()
            .find(|c| c.from == from && c.to == to && c.trigger == trigger)
            .map_or(0, |c| c.count)
    };
    assert_eq!(
        count(State::Closed, State::Open, Trigger::ConsecutiveFailures),
        1
    );
    assert_eq!(count(State::Open, State::HalfOpen, Trigger::Timer), 1);
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 3);
    let h = cb.duration_histogram();
    assert_eq!(h.count, 3, "every call was timed");
    assert_eq!(h.cumulative[0], 3, "all within 5 ms");
    assert_eq!(h.sum, 3 * MS);

    cb.reset();
    assert!(cb.transition_counts().is_empty());
    assert_eq!(cb.duration_histogram().count, 0);
}

#[test]
fn timed_successes_with_durations_recorded_keep_every_count() {
    let (cb, clock) = breaker(
        rate(4, 4)
            .slow_call_rate_threshold(50.0)
            .slow_call_duration_threshold(SEC)
            .record_call_durations(true),
    );
    // A failure, then a success timed by its permit: the streak ends, the success is stamped.
    fail(&cb);
    assert_eq!(cb.snapshot().consecutive_failures, 1);
    let p = cb.try_acquire().unwrap();
    clock.advance(2 * MS);
    p.success();
    let s = cb.snapshot();
    assert_eq!((s.consecutive_failures, s.successes), (0, 1));
    let first = s.last_success_time.expect("a success");
    // Every success is stamped while durations are recorded, not only the first after a failure.
    clock.advance(SEC);
    ok(&cb);
    assert_eq!(cb.snapshot().last_success_time, Some(first + 1_000));
    // Two slow successes: half of the window's last four calls are slow, and it opens.
    for _ in 0..2 {
        let p = cb.try_acquire().unwrap();
        clock.advance(2 * SEC);
        p.success();
    }
    let s = cb.snapshot();
    assert_eq!(cb.state(), State::Open);
    assert_eq!((s.successes, s.slow_calls, s.window.slow_calls), (4, 2, 2));
    let h = cb.duration_histogram();
    assert_eq!(h.count, 5, "every call was timed");
    assert_eq!(h.sum, 2 * MS + 4 * SEC);
}
