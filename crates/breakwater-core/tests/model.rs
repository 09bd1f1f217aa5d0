//! Model-based tests: random sequences of calls, clock moves, resets and manual transitions are
//! applied both to a real breaker (on a manual clock) and to a plain, obviously-correct reference
//! model (a `VecDeque` window, no atomics, no packing), and the two are compared after every step.

use std::collections::VecDeque;
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Config, ManualClock, Outcome, SlidingWindow, State};
use proptest::prelude::*;

const SLOW_NANOS: u64 = 100_000_000; // slow_call_duration_threshold: 100 ms
const WAIT_NANOS: u64 = 10_000_000_000; // wait_in_open: 10 s
const NANOS_PER_SEC: u64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------------
// Count-window model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ModelConfig {
    window: usize,
    minimum: usize,
    failure_rate: Option<u32>,
    slow_rate: Option<u32>,
    consecutive: Option<u64>,
    permitted: u32,
    success_threshold: Option<u32>,
}

impl ModelConfig {
    fn build(&self) -> Config {
        let mut b = Config::builder()
            .sliding_window(SlidingWindow::Count(self.window as u32))
            .minimum_number_of_calls(self.minimum as u32)
            .slow_call_duration_threshold(Duration::from_nanos(SLOW_NANOS))
            .permitted_calls_in_half_open(self.permitted)
            .wait_in_open(Duration::from_nanos(WAIT_NANOS))
            .automatic_transition_to_half_open(false);
        b = match self.failure_rate {
            Some(p) => b.failure_rate_threshold(p as f32),
            None => b.no_failure_rate_threshold(),
        };
        b = match self.slow_rate {
            Some(p) => b.slow_call_rate_threshold(p as f32),
            None => b.no_slow_call_rate_threshold(),
        };
        b = match self.consecutive {
            Some(n) => b.consecutive_failures(n as u32),
            None => b.no_consecutive_failures(),
        };
        b = match self.success_threshold {
            Some(n) => b.success_threshold(n),
            None => b.no_success_threshold(),
        };
        b.build().expect("generated configs are valid")
    }

    fn effective_minimum(&self) -> usize {
        self.minimum.min(self.window)
    }

    /// HALF_OPEN is decided by consecutive successes (not by the probes' rates).
    fn probe_mode(&self) -> bool {
        self.success_threshold.is_some()
            || (self.failure_rate.is_none() && self.slow_rate.is_none())
    }

    /// Whether the rates over these counts trip the breaker (no minimum check here).
    fn rate_trips(&self, buffered: u64, failed: u64, slow: u64) -> bool {
        self.failure_rate
            .is_some_and(|t| failed * 100 >= u64::from(t) * buffered)
            || self
                .slow_rate
                .is_some_and(|t| slow * 100 >= u64::from(t) * buffered)
    }
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    failed: bool,
    slow: bool,
}

/// The reference model: plain fields, a `VecDeque` for the window.
#[derive(Debug)]
struct Model {
    cfg: ModelConfig,
    now: u64,
    state: State,
    window: VecDeque<Rec>,
    open_until: u64,
    // HALF_OPEN accounting.
    ho_issued: u32,
    ho_succ: u64,
    ho_failed: u64,
    ho_slow: u64,
    /// OPEN entered from HALF_OPEN: the probes' calls are the window.
    open_after_probes: bool,
    // Lifetime.
    failures: u64,
    successes: u64,
    not_permitted: u64,
    consecutive_failures: u64,
    circuit_opens: u64,
    /// Bumped on every state entry (a permit carries the one it was issued in).
    generation: u64,
    /// The generation the latest reset entered.
    reset_generation: u64,
}

impl Model {
    fn new(cfg: ModelConfig) -> Self {
        Model {
            cfg,
            now: 0,
            state: State::Closed,
            window: VecDeque::new(),
            open_until: 0,
            ho_issued: 0,
            ho_succ: 0,
            ho_failed: 0,
            ho_slow: 0,
            open_after_probes: false,
            failures: 0,
            successes: 0,
            not_permitted: 0,
            consecutive_failures: 0,
            circuit_opens: 0,
            generation: 0,
            reset_generation: 0,
        }
    }

    fn enter(&mut self, to: State) {
        match to {
            State::Open => {
                // The window is kept (from HALF_OPEN: the probes' calls).
                self.open_after_probes = self.state == State::HalfOpen;
                self.circuit_opens += 1;
                self.open_until = self.now + WAIT_NANOS;
            }
            State::HalfOpen => {
                self.window.clear();
                self.ho_issued = 0;
                self.ho_succ = 0;
                self.ho_failed = 0;
                self.ho_slow = 0;
            }
            State::Closed => {
                self.window.clear();
                self.consecutive_failures = 0;
            }
            State::ForcedOpen | State::Disabled | State::MetricsOnly => self.window.clear(),
        }
        self.state = to;
        self.generation += 1;
    }

    /// A permit held since `generation` (issued in `issued_in`) reports `outcome`: as any
    /// permit if nothing changed since; after a transition it decides nothing, and counts in
    /// the lifetime counters unless a reset came after it (or it was issued in DISABLED).
    fn release_held(&mut self, generation: u64, issued_in: State, outcome: Outcome, nanos: u64) {
        if issued_in == State::Disabled {
            return;
        }
        if generation == self.generation {
            return self.record(outcome, nanos);
        }
        if generation < self.reset_generation || outcome == Outcome::Ignored {
            return;
        }
        if outcome == Outcome::Failure {
            self.failures += 1;
        } else {
            self.successes += 1;
        }
    }

    /// A held permit is dropped unrecorded: it gives back a slot of its own generation only.
    fn drop_held(&mut self, generation: u64) {
        if generation == self.generation {
            self.drop_permit();
        }
    }

    /// Whether a call is admitted (and its permit issued).
    fn try_acquire(&mut self) -> bool {
        match self.state {
            State::Closed | State::MetricsOnly | State::Disabled => true,
            State::ForcedOpen => {
                self.not_permitted += 1;
                false
            }
            State::Open => {
                if self.now > self.open_until {
                    self.enter(State::HalfOpen);
                    self.try_acquire()
                } else {
                    self.not_permitted += 1;
                    false
                }
            }
            State::HalfOpen => {
                if self.ho_issued >= self.cfg.permitted {
                    self.not_permitted += 1;
                    false
                } else {
                    self.ho_issued += 1;
                    true
                }
            }
        }
    }

    /// A permit issued in the current state is dropped without an outcome.
    fn drop_permit(&mut self) {
        if self.state == State::HalfOpen {
            self.ho_issued -= 1;
        }
    }

    /// A permit issued in the current state records `outcome` for a call of `dur_nanos`.
    fn record(&mut self, outcome: Outcome, dur_nanos: u64) {
        let failed = match outcome {
            Outcome::Ignored => return self.drop_permit(),
            Outcome::Failure => true,
            Outcome::Success => false,
        };
        let slow = dur_nanos > SLOW_NANOS;
        match self.state {
            State::Disabled => {}
            State::Closed | State::MetricsOnly => {
                self.window.push_back(Rec { failed, slow });
                if self.window.len() > self.cfg.window {
                    self.window.pop_front();
                }
                self.count_lifetime(failed);
                if self.state != State::Closed {
                    return;
                }
                let consecutive_trip = self
                    .cfg
                    .consecutive
                    .is_some_and(|n| self.consecutive_failures >= n);
                let (buffered, nfailed, nslow) = self.window_counts();
                let rate_trip = buffered as usize >= self.cfg.effective_minimum()
                    && self.cfg.rate_trips(buffered, nfailed, nslow);
                if consecutive_trip || rate_trip {
                    self.enter(State::Open);
                }
            }
            State::HalfOpen => {
                self.count_lifetime(failed);
                if slow {
                    self.ho_slow += 1;
                }
                if failed {
                    self.ho_failed += 1;
                } else {
                    self.ho_succ += 1;
                }
                if self.cfg.probe_mode() {
                    // A reported outcome frees its permit.
                    self.ho_issued -= 1;
                    let needed =
                        u64::from(self.cfg.success_threshold.unwrap_or(self.cfg.permitted));
                    if failed {
                        self.enter(State::Open);
                    } else if self.ho_succ >= needed {
                        self.enter(State::Closed);
                    }
                } else {
                    let reported = self.ho_succ + self.ho_failed;
                    if reported == u64::from(self.cfg.permitted) {
                        if self.cfg.rate_trips(reported, self.ho_failed, self.ho_slow) {
                            self.enter(State::Open);
                        } else {
                            self.enter(State::Closed);
                        }
                    }
                }
            }
            State::Open | State::ForcedOpen => {
                unreachable!("no permit is issued in {}", self.state)
            }
        }
    }

    fn count_lifetime(&mut self, failed: bool) {
        if failed {
            self.failures += 1;
            self.consecutive_failures += 1;
        } else {
            self.successes += 1;
            self.consecutive_failures = 0;
        }
    }

    fn window_counts(&self) -> (u64, u64, u64) {
        let buffered = self.window.len() as u64;
        let failed = self.window.iter().filter(|r| r.failed).count() as u64;
        let slow = self.window.iter().filter(|r| r.slow).count() as u64;
        (buffered, failed, slow)
    }

    fn transition_to(&mut self, to: State) -> bool {
        if self.state == to {
            return true;
        }
        let illegal = matches!(
            (self.state, to),
            (State::Closed, State::HalfOpen)
                | (State::MetricsOnly, State::HalfOpen)
                | (State::MetricsOnly, State::Open)
        );
        if illegal {
            return false;
        }
        self.enter(to);
        true
    }

    fn reset(&mut self) {
        self.enter(State::Closed);
        self.reset_generation = self.generation;
        self.failures = 0;
        self.successes = 0;
        self.not_permitted = 0;
        self.circuit_opens = 0;
    }

    /// The expected window view: (buffered, failed, slow, failure_rate, slow_call_rate).
    fn expected_window(&self) -> (u64, u64, u64, Option<f64>, Option<f64>) {
        let probes =
            self.state == State::HalfOpen || self.state == State::Open && self.open_after_probes;
        let (buffered, failed, slow, known) = if probes {
            let buffered = self.ho_succ + self.ho_failed;
            let known = buffered >= u64::from(self.cfg.permitted);
            (buffered, self.ho_failed, self.ho_slow, known)
        } else {
            let (b, f, s) = self.window_counts();
            (b, f, s, b as usize >= self.cfg.effective_minimum())
        };
        let rate = |n: u64| (known && buffered > 0).then(|| n as f64 / buffered as f64);
        (buffered, failed, slow, rate(failed), rate(slow))
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Acquire and record; `None` duration: `Permit::record` (untimed, or timed at 0 elapsed).
    Call(Outcome, Option<Duration>),
    /// Acquire and drop the permit unrecorded.
    AcquireAndDrop,
    /// Acquire and hold the permit (across later steps).
    Hold,
    /// The oldest held permit reports (success or failure), whatever happened since.
    ReleaseHeld(Outcome, Option<Duration>),
    /// The oldest held permit is dropped unrecorded.
    DropHeld,
    AdvanceClock(Duration),
    Reset,
    Transition(State),
}

fn config_strategy() -> impl Strategy<Value = ModelConfig> {
    (
        1usize..=10,
        1usize..=12,
        prop::option::of(prop::sample::select(vec![25u32, 50, 100])),
        prop::option::of(prop::sample::select(vec![50u32, 100])),
        prop::option::of(1u64..=5),
        1u32..=4,
        prop::option::of(1u32..=3),
    )
        .prop_map(
            |(
                window,
                minimum,
                failure_rate,
                slow_rate,
                consecutive,
                permitted,
                success_threshold,
            )| {
                ModelConfig {
                    window,
                    minimum,
                    failure_rate,
                    slow_rate,
                    consecutive,
                    permitted,
                    success_threshold,
                }
            },
        )
        .prop_filter("at least one trip policy", |c| {
            c.failure_rate.is_some() || c.slow_rate.is_some() || c.consecutive.is_some()
        })
}

fn duration_strategy() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        6 => (0u64..=300).prop_map(|ms| Some(Duration::from_millis(ms))),
        1 => Just(Some(Duration::from_nanos(SLOW_NANOS))),
        1 => Just(Some(Duration::from_nanos(SLOW_NANOS + 1))),
        2 => Just(None),
    ]
}

fn outcome_strategy() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (outcome_strategy(), duration_strategy()).prop_map(|(o, d)| Step::Call(o, d)),
        2 => Just(Step::AcquireAndDrop),
        2 => Just(Step::Hold),
        2 => (
            prop::sample::select(vec![Outcome::Success, Outcome::Failure]),
            duration_strategy()
        )
            .prop_map(|(o, d)| Step::ReleaseHeld(o, d)),
        1 => Just(Step::DropHeld),
        3 => (0u64..15_000).prop_map(|ms| Step::AdvanceClock(Duration::from_millis(ms))),
        1 => Just(Step::AdvanceClock(Duration::from_nanos(WAIT_NANOS))),
        1 => Just(Step::AdvanceClock(Duration::from_nanos(1))),
        1 => Just(Step::Reset),
        2 => prop::sample::select(State::ALL.to_vec()).prop_map(Step::Transition),
    ]
}

fn compare(
    cb: &CircuitBreaker,
    m: &Model,
    clock: &ManualClock,
    ctx: &str,
) -> Result<(), TestCaseError> {
    let s = cb.snapshot();
    let (buffered, failed, slow, failure_rate, slow_call_rate) = m.expected_window();
    prop_assert_eq!(clock_nanos(clock), m.now, "clock, {}", ctx);
    prop_assert_eq!(cb.state(), m.state, "state, {}", ctx);
    prop_assert_eq!(s.state, m.state, "snapshot state, {}", ctx);
    prop_assert_eq!(s.window.buffered_calls, buffered, "buffered, {}", ctx);
    prop_assert_eq!(s.window.failed_calls, failed, "failed, {}", ctx);
    prop_assert_eq!(s.window.slow_calls, slow, "slow, {}", ctx);
    prop_assert_eq!(s.window.failure_rate, failure_rate, "failure rate, {}", ctx);
    prop_assert_eq!(
        s.window.slow_call_rate,
        slow_call_rate,
        "slow-call rate, {}",
        ctx
    );
    prop_assert_eq!(s.failures, m.failures, "failures, {}", ctx);
    prop_assert_eq!(s.successes, m.successes, "successes, {}", ctx);
    prop_assert_eq!(
        s.not_permitted_calls,
        m.not_permitted,
        "not permitted, {}",
        ctx
    );
    prop_assert_eq!(
        s.consecutive_failures,
        m.consecutive_failures,
        "consecutive failures, {}",
        ctx
    );
    prop_assert_eq!(s.circuit_opens, m.circuit_opens, "circuit opens, {}", ctx);
    Ok(())
}

fn clock_nanos(clock: &ManualClock) -> u64 {
    use breakwater_core::Clock;
    u64::try_from(clock.now().as_nanos()).unwrap()
}

fn run_count_model(cfg: ModelConfig, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("model", cfg.build(), clock.clone());
    let mut m = Model::new(cfg);
    let mut held = std::collections::VecDeque::new();
    compare(&cb, &m, &clock, "initially")?;
    for (i, step) in steps.iter().enumerate() {
        let ctx = format!("after step {i} {step:?} (model {m:?})");
        match step {
            Step::Call(outcome, duration) => {
                let got = cb.try_acquire();
                let admitted = m.try_acquire();
                prop_assert_eq!(got.is_ok(), admitted, "admitted, {}", ctx);
                if let Ok(permit) = got {
                    match duration {
                        Some(d) => permit.record_with_duration(*outcome, *d),
                        None => permit.record(*outcome),
                    }
                    let nanos = duration.map_or(0, |d| d.as_nanos() as u64);
                    m.record(*outcome, nanos);
                }
            }
            Step::AcquireAndDrop => {
                let got = cb.try_acquire();
                let admitted = m.try_acquire();
                prop_assert_eq!(got.is_ok(), admitted, "admitted, {}", ctx);
                if let Ok(permit) = got {
                    drop(permit);
                    m.drop_permit();
                }
            }
            Step::Hold => {
                let got = cb.try_acquire();
                let issued_in = m.state;
                let admitted = m.try_acquire();
                prop_assert_eq!(got.is_ok(), admitted, "admitted, {}", ctx);
                if let Ok(permit) = got {
                    // (A lazy OPEN -> HALF_OPEN happened in `try_acquire`.)
                    let issued_in = if admitted { m.state } else { issued_in };
                    held.push_back((permit, m.generation, issued_in, m.now));
                }
            }
            Step::ReleaseHeld(outcome, duration) => {
                if let Some((permit, generation, issued_in, at)) = held.pop_front() {
                    match duration {
                        Some(d) => permit.record_with_duration(*outcome, *d),
                        None => permit.record(*outcome),
                    }
                    // Untimed, a call is timed from its permit when a slow-call policy is on.
                    let elapsed = if m.cfg.slow_rate.is_some() {
                        m.now - at
                    } else {
                        0
                    };
                    let nanos = duration.map_or(elapsed, |d| d.as_nanos() as u64);
                    m.release_held(generation, issued_in, *outcome, nanos);
                }
            }
            Step::DropHeld => {
                if let Some((permit, generation, _, _)) = held.pop_front() {
                    drop(permit);
                    m.drop_held(generation);
                }
            }
            Step::AdvanceClock(d) => {
                clock.advance(*d);
                m.now += d.as_nanos() as u64;
            }
            Step::Reset => {
                cb.reset();
                m.reset();
            }
            Step::Transition(to) => {
                let got = cb.transition_to(*to);
                let ok = m.transition_to(*to);
                prop_assert_eq!(got.is_ok(), ok, "transition result, {}", ctx);
            }
        }
        compare(&cb, &m, &clock, &ctx)?;
    }
    Ok(())
}

proptest! {
    #[test]
    fn count_window_breaker_matches_model(
        cfg in config_strategy(),
        steps in prop::collection::vec(step_strategy(), 1..120),
    ) {
        run_count_model(cfg, steps)?;
    }
}

/// Hand-picked sequences the random ones might take long to find.
#[test]
fn model_fixed_sequences() {
    let rate = ModelConfig {
        window: 4,
        minimum: 4,
        failure_rate: Some(50),
        slow_rate: Some(50),
        consecutive: None,
        permitted: 2,
        success_threshold: None,
    };
    let f = |d| Step::Call(Outcome::Failure, Some(Duration::from_millis(d)));
    let s = |d| Step::Call(Outcome::Success, Some(Duration::from_millis(d)));
    let wait = Step::AdvanceClock(Duration::from_nanos(WAIT_NANOS));
    let tick = Step::AdvanceClock(Duration::from_nanos(1));
    // Trip on the rate, wait exactly 10 s (still rejected), then 1 ns more; probes in rate mode,
    // a dropped and an ignored permit give theirs back.
    let steps = vec![
        f(0),
        s(0),
        s(0),
        f(0),
        Step::Call(Outcome::Success, None),
        wait.clone(),
        s(0),
        tick.clone(),
        Step::AcquireAndDrop,
        Step::Call(Outcome::Ignored, None),
        s(0),
        s(150),
        s(0),
        s(0),
        Step::Transition(State::Open),
        Step::Transition(State::HalfOpen),
        s(0),
        Step::Reset,
        s(0),
    ];
    run_count_model(rate.clone(), steps).unwrap();

    // Probe mode: success threshold 2 with one permit; consecutive failures carry into HALF_OPEN.
    let probe = ModelConfig {
        consecutive: Some(2),
        failure_rate: None,
        slow_rate: None,
        success_threshold: Some(2),
        permitted: 1,
        ..rate
    };
    let steps = vec![
        f(0),
        f(0),
        wait,
        tick,
        s(500),
        s(0),
        Step::Transition(State::MetricsOnly),
        f(0),
        f(0),
        f(0),
        Step::Transition(State::Open),
        Step::Transition(State::Disabled),
        f(0),
        Step::Transition(State::Closed),
        f(0),
    ];
    run_count_model(probe, steps).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A permit from before a reset
// ---------------------------------------------------------------------------------------------

fn rate_breaker() -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(4))
        .minimum_number_of_calls(2)
        .build()
        .unwrap();
    (
        CircuitBreaker::with_clock("stale", config, clock.clone()),
        clock,
    )
}

#[test]
fn outcome_of_a_permit_from_before_a_reset_is_dropped() {
    let (cb, _clock) = rate_breaker();
    let permit = cb.try_acquire().unwrap();
    cb.reset();
    permit.failure();
    let s = cb.snapshot();
    assert_eq!(s.state, State::Closed);
    assert_eq!(s.failures, 0);
    assert_eq!(s.successes, 0);
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.window.buffered_calls, 0);
    assert_eq!(s.window.failed_calls, 0);

    // The same for a success (the untimed hot path) and a timed failure, each checked on its own.
    let permit = cb.try_acquire().unwrap();
    cb.reset();
    permit.success();
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (0, 0));
    assert_eq!(s.window.buffered_calls, 0);

    let permit = cb.try_acquire().unwrap();
    cb.reset();
    permit.record_with_duration(Outcome::Failure, Duration::from_millis(5));
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (0, 0));
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.window.buffered_calls, 0);

    // A stale permit's outcome does not leak into later counts either.
    cb.try_acquire().unwrap().failure();
    let s = cb.snapshot();
    assert_eq!(
        (s.failures, s.window.buffered_calls, s.window.failed_calls),
        (1, 1, 1)
    );
    cb.reset();

    // Across any other transition (here CLOSED -> METRICS_ONLY) a CLOSED permit's outcome is
    // dropped from the window, and counted in the lifetime counters: the call did happen.
    let permit = cb.try_acquire().unwrap();
    cb.transition_to(State::MetricsOnly).unwrap();
    permit.failure();
    let s = cb.snapshot();
    assert_eq!(s.failures, 1);
    assert_eq!(s.window.buffered_calls, 0);
    let permit = cb.try_acquire().unwrap();
    cb.transition_to(State::Closed).unwrap();
    permit.success();
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes, s.total_requests), (1, 1, 2));
    assert_eq!(s.window.buffered_calls, 0);
}

// ---------------------------------------------------------------------------------------------
// Time-window model
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum TimeStep {
    Call(Outcome, Option<Duration>),
    AdvanceClock(Duration),
    Reset,
}

fn time_step_strategy() -> impl Strategy<Value = TimeStep> {
    prop_oneof![
        6 => (outcome_strategy(), duration_strategy()).prop_map(|(o, d)| TimeStep::Call(o, d)),
        3 => (0u64..2_500).prop_map(|ms| TimeStep::AdvanceClock(Duration::from_millis(ms))),
        1 => (0u64..1_000).prop_map(|ms| TimeStep::AdvanceClock(Duration::from_micros(ms))),
        1 => Just(TimeStep::AdvanceClock(Duration::from_nanos(1))),
        1 => Just(TimeStep::Reset),
    ]
}

#[derive(Debug, Clone, Copy)]
struct TimedRec {
    second: u64,
    failed: bool,
    slow: bool,
}

fn run_time_model(steps: Vec<TimeStep>) -> Result<(), TestCaseError> {
    const SECS: u64 = 3;
    let clock = ManualClock::new();
    let config = Config::builder()
        .failure_rate_threshold(100.0)
        .minimum_number_of_calls(1000)
        .sliding_window(SlidingWindow::Time(Duration::from_secs(SECS)))
        .slow_call_duration_threshold(Duration::from_nanos(SLOW_NANOS))
        .build()
        .unwrap();
    let cb = CircuitBreaker::with_clock("time", config, clock.clone());
    let mut now: u64 = 0;
    let mut calls: Vec<TimedRec> = Vec::new();
    let (mut failures, mut successes) = (0u64, 0u64);
    for (i, step) in steps.iter().enumerate() {
        let ctx = format!("after step {i} {step:?} (now {now} ns)");
        match step {
            TimeStep::Call(outcome, duration) => {
                let permit = cb.try_acquire();
                prop_assert!(permit.is_ok(), "CLOSED admits, {}", ctx);
                let permit = permit.unwrap();
                match duration {
                    Some(d) => permit.record_with_duration(*outcome, *d),
                    None => permit.record(*outcome),
                }
                let failed = match outcome {
                    Outcome::Ignored => None,
                    Outcome::Failure => Some(true),
                    Outcome::Success => Some(false),
                };
                if let Some(failed) = failed {
                    let slow = duration.is_some_and(|d| d.as_nanos() as u64 > SLOW_NANOS);
                    calls.push(TimedRec {
                        second: now / NANOS_PER_SEC,
                        failed,
                        slow,
                    });
                    if failed {
                        failures += 1;
                    } else {
                        successes += 1;
                    }
                }
            }
            TimeStep::AdvanceClock(d) => {
                clock.advance(*d);
                now += d.as_nanos() as u64;
            }
            TimeStep::Reset => {
                cb.reset();
                calls.clear();
                failures = 0;
                successes = 0;
            }
        }
        let current = now / NANOS_PER_SEC;
        let in_window: Vec<&TimedRec> =
            calls.iter().filter(|c| c.second + SECS > current).collect();
        let buffered = in_window.len() as u64;
        let failed = in_window.iter().filter(|c| c.failed).count() as u64;
        let slow = in_window.iter().filter(|c| c.slow).count() as u64;
        let s = cb.snapshot();
        prop_assert_eq!(clock_nanos(&clock), now, "clock, {}", ctx);
        prop_assert_eq!(s.state, State::Closed, "state, {}", ctx);
        prop_assert_eq!(s.window.buffered_calls, buffered, "buffered, {}", ctx);
        prop_assert_eq!(s.window.failed_calls, failed, "failed, {}", ctx);
        prop_assert_eq!(s.window.slow_calls, slow, "slow, {}", ctx);
        prop_assert_eq!(s.window.failure_rate, None, "failure rate, {}", ctx);
        prop_assert_eq!(s.failures, failures, "failures, {}", ctx);
        prop_assert_eq!(s.successes, successes, "successes, {}", ctx);
    }
    Ok(())
}

proptest! {
    #[test]
    fn time_window_counts_match_model(
        steps in prop::collection::vec(time_step_strategy(), 1..150),
    ) {
        run_time_model(steps)?;
    }
}
