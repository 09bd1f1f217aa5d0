//! Model test: random calls, drops, clock advances, resets and manual transitions are applied to
//! a real breaker and to a plain reference model of the state machine (a `VecDeque` window, no
//! atomics); state, window view, rates and lifetime counters must agree after every step.

use std::collections::VecDeque;
use std::time::Duration;

use breakwater::{CircuitBreaker, Config, ManualClock, Outcome, SlidingWindow, State};
use proptest::prelude::*;

const WAIT_MS: u64 = 10_000;
const SLOW_MS: u64 = 100;

#[derive(Debug, Clone)]
struct Params {
    window: usize,
    min_calls: usize,
    failure_rate: Option<f32>,
    slow_rate: Option<f32>,
    consecutive: Option<u64>,
    permitted: u64,
    success_threshold: Option<u64>,
}

impl Params {
    fn config(&self) -> Config {
        let mut b = Config::builder()
            .no_failure_rate_threshold()
            .sliding_window(SlidingWindow::Count(self.window as u32))
            .minimum_number_of_calls(self.min_calls as u32)
            .slow_call_duration_threshold(Duration::from_millis(SLOW_MS))
            .permitted_calls_in_half_open(self.permitted as u32)
            .wait_in_open(Duration::from_millis(WAIT_MS));
        if let Some(t) = self.failure_rate {
            b = b.failure_rate_threshold(t);
        }
        if let Some(t) = self.slow_rate {
            b = b.slow_call_rate_threshold(t);
        }
        if let Some(n) = self.consecutive {
            b = b.consecutive_failures(n as u32);
        }
        if let Some(n) = self.success_threshold {
            b = b.success_threshold(n as u32);
        }
        b.build().expect("generated configs are valid")
    }

    fn probe_mode(&self) -> bool {
        self.success_threshold.is_some()
            || (self.failure_rate.is_none() && self.slow_rate.is_none())
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        1usize..=10,
        1usize..=12,
        prop::option::of(prop::sample::select(vec![25.0f32, 50.0, 100.0])),
        prop::option::of(prop::sample::select(vec![50.0f32, 100.0])),
        prop::option::of(1u64..=5),
        1u64..=4,
        prop::option::of(1u64..=3),
    )
        .prop_map(
            |(window, min_calls, failure_rate, slow_rate, consecutive, permitted, st)| {
                let consecutive = if failure_rate.is_none() && slow_rate.is_none() {
                    consecutive.or(Some(3))
                } else {
                    consecutive
                };
                Params {
                    window,
                    min_calls,
                    failure_rate,
                    slow_rate,
                    consecutive,
                    permitted,
                    success_threshold: st,
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Step {
    Call(Outcome, u64),
    AcquireAndDrop,
    Advance(u64),
    Reset,
    Transition(State),
}

fn step() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ];
    prop_oneof![
        12 => (outcome, 0u64..300).prop_map(|(o, d)| Step::Call(o, d)),
        2 => Just(Step::AcquireAndDrop),
        4 => (0u64..15_000).prop_map(Step::Advance),
        1 => Just(Step::Reset),
        1 => prop::sample::select(State::ALL.to_vec()).prop_map(Step::Transition),
    ]
}

/// The reference model.
#[derive(Debug)]
struct Model {
    p: Params,
    now: u64,
    state: State,
    window: VecDeque<(bool, bool)>,
    open_until: u64,
    consecutive: u64,
    failures: u64,
    successes: u64,
    not_permitted: u64,
    opens: u64,
    ho_issued: u64,
    ho_succ: u64,
    ho_fail: u64,
    ho_slow: u64,
}

impl Model {
    fn new(p: Params) -> Self {
        Self {
            p,
            now: 0,
            state: State::Closed,
            window: VecDeque::new(),
            open_until: 0,
            consecutive: 0,
            failures: 0,
            successes: 0,
            not_permitted: 0,
            opens: 0,
            ho_issued: 0,
            ho_succ: 0,
            ho_fail: 0,
            ho_slow: 0,
        }
    }

    fn enter(&mut self, to: State) {
        match to {
            State::Open => {
                self.opens += 1;
                self.open_until = self.now + WAIT_MS;
            }
            State::HalfOpen => {
                self.window.clear();
                (self.ho_issued, self.ho_succ, self.ho_fail, self.ho_slow) = (0, 0, 0, 0);
            }
            State::Closed => {
                self.window.clear();
                self.consecutive = 0;
            }
            _ => self.window.clear(),
        }
        self.state = to;
    }

    /// Whether a call is admitted.
    fn acquire(&mut self) -> bool {
        if self.state == State::Open && self.now > self.open_until {
            self.enter(State::HalfOpen);
        }
        let ok = match self.state {
            State::Closed | State::MetricsOnly | State::Disabled => true,
            State::HalfOpen if self.ho_issued < self.p.permitted => {
                self.ho_issued += 1;
                true
            }
            _ => false,
        };
        if !ok {
            self.not_permitted += 1;
        }
        ok
    }

    fn release(&mut self) {
        if self.state == State::HalfOpen {
            self.ho_issued -= 1;
        }
    }

    fn min_calls(&self) -> usize {
        self.p.min_calls.min(self.p.window)
    }

    fn record(&mut self, outcome: Outcome, ms: u64) {
        if outcome == Outcome::Ignored {
            self.release();
            return;
        }
        if self.state == State::Disabled {
            return;
        }
        let failed = outcome == Outcome::Failure;
        let slow = ms > SLOW_MS;
        if failed {
            self.failures += 1;
            self.consecutive += 1;
        } else {
            self.successes += 1;
            self.consecutive = 0;
        }
        if self.state == State::HalfOpen {
            self.ho_slow += slow as u64;
            if self.p.probe_mode() {
                self.ho_issued -= 1;
                let threshold = self.p.success_threshold.unwrap_or(self.p.permitted);
                if failed {
                    self.ho_fail += 1;
                    self.enter(State::Open);
                } else {
                    self.ho_succ += 1;
                    if self.ho_succ >= threshold {
                        self.enter(State::Closed);
                    }
                }
            } else {
                if failed {
                    self.ho_fail += 1;
                } else {
                    self.ho_succ += 1;
                }
                let reported = self.ho_succ + self.ho_fail;
                if reported >= self.p.permitted {
                    let total = reported as f64;
                    let trip_f = self
                        .p
                        .failure_rate
                        .is_some_and(|t| self.ho_fail as f64 * 100.0 >= t as f64 * total);
                    let trip_s = self
                        .p
                        .slow_rate
                        .is_some_and(|t| self.ho_slow as f64 * 100.0 >= t as f64 * total);
                    self.enter(if trip_f || trip_s {
                        State::Open
                    } else {
                        State::Closed
                    });
                }
            }
            return;
        }
        // CLOSED or METRICS_ONLY.
        self.window.push_back((failed, slow));
        if self.window.len() > self.p.window {
            self.window.pop_front();
        }
        if self.state != State::Closed {
            return;
        }
        if self.p.consecutive.is_some_and(|n| self.consecutive >= n) {
            self.enter(State::Open);
            return;
        }
        let n = self.window.len();
        if n >= self.min_calls() {
            let total = n as f64;
            let (f, s) = self.counts();
            let trip_f = self
                .p
                .failure_rate
                .is_some_and(|t| f as f64 * 100.0 >= t as f64 * total);
            let trip_s = self
                .p
                .slow_rate
                .is_some_and(|t| s as f64 * 100.0 >= t as f64 * total);
            if trip_f || trip_s {
                self.enter(State::Open);
            }
        }
    }

    fn counts(&self) -> (u64, u64) {
        let f = self.window.iter().filter(|c| c.0).count() as u64;
        let s = self.window.iter().filter(|c| c.1).count() as u64;
        (f, s)
    }

    fn transition(&mut self, to: State) -> bool {
        if self.state == to {
            return true;
        }
        if !self.state.can_transition_to(to) {
            return false;
        }
        self.enter(to);
        true
    }

    fn reset(&mut self) {
        self.enter(State::Closed);
        (
            self.failures,
            self.successes,
            self.not_permitted,
            self.opens,
        ) = (0, 0, 0, 0);
    }

    /// (buffered, failed, slow, rates known)
    fn view(&self) -> (u64, u64, u64, bool) {
        if self.state == State::HalfOpen {
            return (
                self.ho_succ + self.ho_fail,
                self.ho_fail,
                self.ho_slow,
                false,
            );
        }
        let (f, s) = self.counts();
        let n = self.window.len();
        (n as u64, f, s, n > 0 && n >= self.min_calls())
    }
}

fn check(cb: &CircuitBreaker, m: &Model, i: usize, step: &Step) -> Result<(), TestCaseError> {
    let s = cb.snapshot();
    let ctx = format!("after step {i} {step:?}; model {m:?}");
    prop_assert_eq!(s.state, m.state, "state {}", ctx);
    let (buffered, failed, slow, known) = m.view();
    prop_assert_eq!(s.window.buffered_calls, buffered, "buffered {}", ctx);
    prop_assert_eq!(s.window.failed_calls, failed, "failed {}", ctx);
    prop_assert_eq!(s.window.slow_calls, slow, "slow {}", ctx);
    let rate = |n: u64| known.then(|| n as f64 / buffered as f64);
    prop_assert_eq!(s.window.failure_rate, rate(failed), "failure rate {}", ctx);
    prop_assert_eq!(s.window.slow_call_rate, rate(slow), "slow rate {}", ctx);
    prop_assert_eq!(s.failures, m.failures, "failures {}", ctx);
    prop_assert_eq!(s.successes, m.successes, "successes {}", ctx);
    prop_assert_eq!(
        s.not_permitted_calls,
        m.not_permitted,
        "not permitted {}",
        ctx
    );
    prop_assert_eq!(s.consecutive_failures, m.consecutive, "consecutive {}", ctx);
    prop_assert_eq!(s.circuit_opens, m.opens, "opens {}", ctx);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn count_window_breaker_matches_the_model(p in params(), steps in prop::collection::vec(step(), 1..80)) {
        let clock = ManualClock::new();
        let cb = CircuitBreaker::with_clock("model", p.config(), clock.clone());
        let mut m = Model::new(p);
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Call(outcome, ms) => {
                    let admitted = m.acquire();
                    match cb.try_acquire() {
                        Ok(permit) => {
                            prop_assert!(admitted, "breaker admitted, model did not at {i}");
                            permit.record_with_duration(*outcome, Duration::from_millis(*ms));
                            m.record(*outcome, *ms);
                        }
                        Err(_) => prop_assert!(!admitted, "model admitted, breaker did not at {i}"),
                    }
                }
                Step::AcquireAndDrop => {
                    let admitted = m.acquire();
                    let got = cb.try_acquire();
                    prop_assert_eq!(got.is_ok(), admitted);
                    if admitted {
                        drop(got);
                        m.release();
                    }
                }
                Step::Advance(ms) => {
                    clock.advance(Duration::from_millis(*ms));
                    m.now += ms;
                }
                Step::Reset => {
                    cb.reset();
                    m.reset();
                }
                Step::Transition(to) => {
                    let ok = cb.transition_to(*to).is_ok();
                    prop_assert_eq!(ok, m.transition(*to));
                }
            }
            check(&cb, &m, i, step)?;
        }
    }

    #[test]
    fn time_window_counts_match_the_model(
        steps in prop::collection::vec(
            prop_oneof![
                3 => any::<bool>().prop_map(Some),
                1 => Just(None),
            ].prop_flat_map(|call| (Just(call), 0u64..2_500)),
            1..120,
        )
    ) {
        let clock = ManualClock::new();
        let config = Config::builder()
            .failure_rate_threshold(100.0)
            .minimum_number_of_calls(1_000)
            .sliding_window(SlidingWindow::Time(Duration::from_secs(3)))
            .build()
            .unwrap();
        let cb = CircuitBreaker::with_clock("time", config, clock.clone());
        let mut now_ms = 0u64;
        let mut calls: Vec<(u64, bool)> = Vec::new();
        for (call, advance) in steps {
            if let Some(failed) = call {
                let p = cb.try_acquire().unwrap();
                if failed { p.failure() } else { p.success() }
                calls.push((now_ms / 1_000, failed));
            } else {
                clock.advance(Duration::from_millis(advance));
                now_ms += advance;
            }
            let sec = now_ms / 1_000;
            let live: Vec<_> = calls.iter().filter(|(s, _)| s + 3 > sec).collect();
            let s = cb.snapshot();
            prop_assert_eq!(s.window.buffered_calls, live.len() as u64);
            prop_assert_eq!(s.window.failed_calls, live.iter().filter(|c| c.1).count() as u64);
            prop_assert_eq!(s.state, State::Closed);
        }
    }
}
