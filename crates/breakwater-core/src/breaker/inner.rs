//! The breaker's shared state, its state word and transitions, and how outcomes are recorded.
//!
//! In CLOSED, acquiring is one atomic load and recording a success is one `fetch_add` (plus a
//! read of the ring slot it lands on). Every other path (failures that may trip, OPEN,
//! HALF_OPEN, transitions) is off the hot path; transitions are serialised by a mutex the hot
//! path never touches.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::half_open::{HalfOpen, Issue};
use super::permit::Outcome;
use super::timing::{TIMING_OFF, TIMING_RECORDED, UNTIMED, timing_of};
use super::trace;
use crate::clock::{Clock, ClockHandle, saturating_nanos};
use crate::config::{Config, SlidingWindow};
use crate::error::CallNotPermitted;
use crate::event::{Event, EventHub, EventKind};
use crate::policy::{Decision, Tuning};
use crate::state::{
    CLOSED, DISABLED, FORCED_OPEN, HALF_OPEN, METRICS_ONLY, OPEN, State, Trigger, generation_of,
    pack, state_of,
};
use crate::stats::{Histogram, TransitionCount};
use crate::sync::{AtomicBool, AtomicU8, AtomicU64, Mutex, MutexGuard};
use crate::window::count::{CountWindow, Padded};
use crate::window::time::TimeWindow;
use crate::window::{Call, Counts, Window};

/// The read-mostly part, on its own cache line.
#[derive(Debug)]
pub(super) struct Hot {
    pub(super) state: AtomicU64,
    /// `TIMING_*`.
    pub(super) timing: AtomicU8,
    /// Monotonic nanos: end of the wait in OPEN (written before OPEN is published).
    pub(super) open_until: AtomicU64,
    /// Monotonic nanos: when HALF_OPEN was entered (written before it is published).
    pub(super) half_open_since: AtomicU64,
    pub(super) consecutive_failures: AtomicU64,
    pub(super) tuning: Tuning,
    /// Removed from its keyed family (idle); beside the state, which every call reads.
    pub(super) evicted: AtomicBool,
}

/// Lifetime counters and times, on their own cache line.
#[derive(Debug, Default)]
pub(super) struct Lifetime {
    pub(super) failures: AtomicU64,
    /// Calls recorded outside the count window (HALF_OPEN, time windows, late outcomes).
    pub(super) other_calls: AtomicU64,
    /// The count window's lifetime calls at the last reset.
    pub(super) window_base: AtomicU64,
    pub(super) slow_calls: AtomicU64,
    pub(super) ignored: AtomicU64,
    pub(super) not_permitted: AtomicU64,
    /// `not_permitted` when the current state was entered.
    pub(super) not_permitted_base: AtomicU64,
    pub(super) circuit_opens: AtomicU64,
    /// Successes at the latest failure.
    pub(super) success_mark: AtomicU64,
    /// Monotonic nanos + 1; 0 for never.
    pub(super) last_failure: AtomicU64,
    pub(super) last_success: AtomicU64,
    pub(super) opened_at: AtomicU64,
    /// The generation the latest reset entered: a late outcome from before it is not counted.
    pub(super) reset_generation: AtomicU64,
    /// Durations of the calls recorded with `record_call_durations`.
    pub(super) durations: Histogram,
}

/// State guarded by the transition lock.
#[derive(Debug)]
pub(super) struct Control {
    pub(super) config: Config,
    /// Consecutive openings since the breaker last closed (drives the backoff).
    pub(super) open_attempts: u32,
    /// Transitions by (from, to, trigger), since creation or the last reset.
    pub(super) transitions: Vec<TransitionCount>,
    /// The newest fleet epoch seen ([`CircuitBreaker::adopt`](super::CircuitBreaker::adopt)).
    pub(super) fleet_epoch: u64,
    /// The learned slow-call threshold in use.
    pub(super) learned: Option<super::learned::LearnedValue>,
}

pub(crate) struct Inner {
    pub(super) hot: Padded<Hot>,
    pub(super) half_open: Padded<HalfOpen>,
    pub(super) window: Window,
    pub(super) life: Padded<Lifetime>,
    pub(super) name: Arc<str>,
    pub(super) clock: ClockHandle,
    pub(super) hub: Arc<EventHub>,
    pub(super) control: Mutex<Control>,
    pub(super) created_at: u64,
    pub(super) me: Weak<Inner>,
    /// Call durations per bucket, while the slow-call threshold is learned.
    pub(super) latency: std::sync::OnceLock<super::learned::LatencyCounts>,
}

impl Inner {
    pub(super) fn new(
        name: Arc<str>,
        config: Config,
        clock: ClockHandle,
        hub: Arc<EventHub>,
    ) -> Arc<Inner> {
        let window = match config.sliding_window {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time(d) => Window::Time(TimeWindow::new(d.as_secs())),
        };
        let created_at = clock.nanos();
        let latency = std::sync::OnceLock::new();
        if config.learned_slow_call_threshold.is_some() {
            let _ = latency.set(super::learned::LatencyCounts::new());
        }
        Arc::new_cyclic(|me| Inner {
            hot: Padded(Hot {
                state: AtomicU64::new(pack(CLOSED, 0)),
                timing: AtomicU8::new(timing_of(&config, &clock)),
                open_until: AtomicU64::new(0),
                half_open_since: AtomicU64::new(0),
                consecutive_failures: AtomicU64::new(0),
                tuning: Tuning::new(&config),
                evicted: AtomicBool::new(false),
            }),
            half_open: Padded(HalfOpen::default()),
            window,
            life: Padded(Lifetime::default()),
            name,
            clock,
            hub,
            control: Mutex::new(Control {
                config,
                open_attempts: 0,
                transitions: Vec::new(),
                fleet_epoch: 0,
                learned: None,
            }),
            created_at,
            me: me.clone(),
            latency,
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline(always)]
    pub(super) fn acquire(&self) -> Result<(u64, u64), CallNotPermitted> {
        let hot = &self.hot.0;
        let word = hot.state.load(Ordering::Acquire);
        match state_of(word) {
            CLOSED | METRICS_ONLY => {
                let timing = hot.timing.load(Ordering::Relaxed);
                let started = if timing == TIMING_OFF {
                    UNTIMED
                } else {
                    self.start(timing)
                };
                Ok((word, started))
            }
            DISABLED => Ok((word, UNTIMED)),
            _ => self.acquire_slow(word),
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, mut word: u64) -> Result<(u64, u64), CallNotPermitted> {
        let hot = &self.hot.0;
        loop {
            match state_of(word) {
                OPEN => {
                    let now = self.clock.nanos();
                    let until = hot.open_until.load(Ordering::Acquire);
                    if now > until {
                        self.transition(word, HALF_OPEN, Trigger::Timer);
                        word = hot.state.load(Ordering::Acquire);
                        continue;
                    }
                    return Err(self.reject(State::Open, Some(Duration::from_nanos(until - now))));
                }
                HALF_OPEN => {
                    let max = hot.tuning.max_half_open_nanos.load(Ordering::Relaxed);
                    let now = self.clock.nanos();
                    let since = hot.half_open_since.load(Ordering::Acquire);
                    if max != 0 && now >= since.saturating_add(max) {
                        let to = self.lock().config.state_after_max_wait_in_half_open.code();
                        self.transition(word, to, Trigger::Timer);
                        word = hot.state.load(Ordering::Acquire);
                        continue;
                    }
                    let permitted = hot.tuning.permitted.load(Ordering::Relaxed);
                    match self.half_open.0.issue(generation_of(word), permitted) {
                        Issue::Issued => {
                            let started = match hot.timing.load(Ordering::Relaxed) {
                                TIMING_OFF => UNTIMED,
                                _ => now,
                            };
                            return Ok((word, started));
                        }
                        Issue::Full => return Err(self.reject(State::HalfOpen, None)),
                        Issue::Stale => {}
                    }
                    // The half-open generation moved on under us: look again.
                    let next = hot.state.load(Ordering::Acquire);
                    // (Reached only while another thread makes a transition; no test here
                    // drives that interleaving.)
                    if next == word {
                        // The word is published after the half-open counters, so this is
                        // transient; treat it as a rejection rather than spin.
                        return Err(self.reject(State::HalfOpen, None));
                    }
                    word = next;
                }
                FORCED_OPEN => return Err(self.reject(State::ForcedOpen, None)),
                _ => return self.acquire(),
            }
        }
    }

    #[cold]
    fn reject(&self, state: State, retry_after: Option<Duration>) -> CallNotPermitted {
        self.life.0.not_permitted.fetch_add(1, Ordering::Relaxed);
        trace::refused(&self.name, state);
        if self.hub.is_active() {
            self.emit(EventKind::CallNotPermitted { state });
        }
        CallNotPermitted { state, retry_after }
    }

    #[inline]
    pub(super) fn emit(&self, kind: EventKind) {
        if self.hub.is_active() {
            self.hub.emit(Event {
                circuit: self.name.clone(),
                at: self.clock.epoch_millis(),
                kind,
            });
        }
    }

    /// Moves from the state in `expected` (same generation) to `to`. False if the breaker had
    /// already moved on.
    pub(super) fn transition(&self, expected: u64, to: u64, trigger: Trigger) -> bool {
        let mut ctl = self.lock();
        if self.hot.0.state.load(Ordering::Acquire) != expected {
            return false;
        }
        self.enter(&mut ctl, expected, to, trigger, None);
        true
    }

    /// Enters `to` from the state word `cur`, under the transition lock.
    pub(super) fn enter(
        &self,
        ctl: &mut Control,
        cur: u64,
        to: u64,
        trigger: Trigger,
        until: Option<u64>,
    ) {
        let hot = &self.hot.0;
        let l = &self.life.0;
        let from = state_of(cur);
        count_transition(&mut ctl.transitions, from, to, trigger);
        let generation = generation_of(cur) + 1;
        let now = self.clock.nanos();
        // The numbers of the state being left, read before the window is cleared.
        let traced =
            (from != to && trace::transition_enabled(to)).then(|| self.window_view(cur, now));
        match to {
            OPEN => {
                ctl.open_attempts = ctl.open_attempts.saturating_add(1);
                let until = until.unwrap_or_else(|| {
                    let wait = ctl.config.wait_in_open.wait_for(ctl.open_attempts);
                    now.saturating_add(saturating_nanos(wait))
                });
                hot.open_until.store(until, Ordering::Release);
                l.opened_at.store(now.saturating_add(1), Ordering::Relaxed);
                l.circuit_opens.fetch_add(1, Ordering::Relaxed);
            }
            HALF_OPEN => {
                self.window.clear();
                self.half_open.0.enter(generation);
                hot.half_open_since.store(now, Ordering::Release);
            }
            CLOSED => {
                self.window.clear();
                hot.consecutive_failures.store(0, Ordering::Relaxed);
                ctl.open_attempts = 0;
            }
            _ => self.window.clear(),
        }
        if to != HALF_OPEN {
            self.half_open.0.retire(from, to, generation);
        }
        if to != OPEN {
            l.not_permitted_base
                .store(l.not_permitted.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let word = pack(to, generation);
        hot.state.store(word, Ordering::Release);

        if to == OPEN && ctl.config.automatic_transition_to_half_open {
            let me = self.me.clone();
            let at = hot.open_until.load(Ordering::Relaxed);
            self.clock.schedule(
                Duration::from_nanos(at),
                Box::new(move || {
                    if let Some(inner) = me.upgrade() {
                        inner.transition(word, HALF_OPEN, Trigger::Timer);
                    }
                }),
            );
        }
        if to == HALF_OPEN
            && let Some(max) = ctl.config.max_wait_in_half_open
        {
            let me = self.me.clone();
            let after = ctl.config.state_after_max_wait_in_half_open.code();
            self.clock.schedule(
                Duration::from_nanos(now).saturating_add(max),
                Box::new(move || {
                    if let Some(inner) = me.upgrade() {
                        inner.transition(word, after, Trigger::Timer);
                    }
                }),
            );
        }
        if from != to {
            self.emit(EventKind::StateTransition {
                from: State::from_code(from),
                to: State::from_code(to),
                trigger,
            });
        }
        if let Some(window) = traced {
            trace::transition(&self.name, from, to, trigger, &window);
        }
    }

    /// Records the outcome of a permit issued with state word `word`.
    #[inline(always)]
    pub(super) fn record(
        &self,
        word: u64,
        started: u64,
        outcome: Outcome,
        duration: Option<Duration>,
    ) {
        // The hot path: a success in CLOSED or METRICS_ONLY on a count window, untimed or timed
        // (without a histogram) and not slow. (Narrowing this test, as by `&&` for one of its
        // `||`s, changes no outcome: the general path below records the same, only slower;
        // `benches/instructions.rs` is what catches it.)
        if outcome == Outcome::Success
            && duration.is_none()
            && (state_of(word) == CLOSED || state_of(word) == METRICS_ONLY)
            && let Window::Count(w) = &self.window
            && (started == UNTIMED || self.fast_within_threshold(started))
        {
            let hot = &self.hot.0;
            // An outcome from an older generation is dropped from the window.
            if hot.state.load(Ordering::Acquire) != word {
                self.count_late(word, Call::new(false, false));
                return;
            }
            // Read before the `fetch_add`, which orders every later load behind it.
            let stamp = hot.consecutive_failures.load(Ordering::Relaxed) != 0
                || self.life.0.last_success.load(Ordering::Relaxed) == 0;
            let packed = w.record_packed(Call::Success);
            if stamp {
                self.first_success_after_failure();
            }
            if CountWindow::any_bad(packed) && state_of(word) == CLOSED {
                self.judge_after_success(word, w.counts_of(packed));
            }
            return;
        }
        self.record_general(word, started, outcome, duration);
    }

    /// Whether a timed call that kept no histogram took no longer than the slow-call threshold.
    #[inline(always)]
    fn fast_within_threshold(&self, started: u64) -> bool {
        let hot = &self.hot.0;
        if hot.timing.load(Ordering::Relaxed) == TIMING_RECORDED {
            return false;
        }
        let d = self.elapsed(started).1;
        if d > hot.tuning.slow_nanos.load(Ordering::Relaxed) {
            return false; // slow: the general path measures and counts it
        }
        if let Some(latency) = self.latency.get() {
            latency.record(d);
        }
        true
    }

    /// Resets the consecutive failures and stamps the success time.
    #[cold]
    fn first_success_after_failure(&self) {
        self.hot.0.consecutive_failures.store(0, Ordering::Relaxed);
        self.stamp_success(UNTIMED);
    }

    /// A success landed in a window holding failed or slow calls: the rate may still trip.
    #[inline(never)]
    fn judge_after_success(&self, word: u64, counts: Counts) {
        if let Some(trigger) = self.hot.0.tuning.judge(counts) {
            self.transition(word, OPEN, trigger);
        }
    }

    /// Every other outcome: failures, timed calls, HALF_OPEN, time windows, ignored.
    #[inline(never)]
    fn record_general(
        &self,
        word: u64,
        started: u64,
        outcome: Outcome,
        duration: Option<Duration>,
    ) {
        let st = state_of(word);
        if outcome == Outcome::Success
            && duration.is_none()
            && started != UNTIMED
            && (st == CLOSED || st == METRICS_ONLY)
            && let Window::Count(w) = &self.window
            && self.hot.0.timing.load(Ordering::Relaxed) == TIMING_RECORDED
        {
            self.record_timed_success(word, started, w);
            return;
        }
        if outcome == Outcome::Ignored {
            self.ignore(word);
            return;
        }
        if st == DISABLED {
            return;
        }
        let failed = outcome == Outcome::Failure;
        // Duration: given, or measured when timing is on.
        let mut now = UNTIMED;
        let duration = match duration {
            Some(d) => Some(saturating_nanos(d)),
            None if started != UNTIMED => {
                let (at, d) = self.elapsed(started);
                now = at;
                Some(d)
            }
            None => None,
        };
        if let (Some(d), Some(latency)) = (duration, self.latency.get()) {
            latency.record(d);
        }
        let slow =
            duration.is_some_and(|d| d > self.hot.0.tuning.slow_nanos.load(Ordering::Relaxed));
        let call = Call::new(failed, slow);
        if st == HALF_OPEN {
            self.record_half_open(word, call, duration);
            return;
        }
        // CLOSED or METRICS_ONLY. An outcome from an older generation is dropped. The check and
        // the record are two steps without a lock: an outcome whose thread is preempted between
        // them while another thread makes a transition can land in the new window, at most one
        // per thread recording at that moment (the loom models in `tests/loom.rs` show both).
        // HALF_OPEN accounting has no such gap (its word carries the generation).
        let hot = &self.hot.0;
        if hot.state.load(Ordering::Acquire) != word {
            self.count_late(word, call);
            return;
        }
        self.observe(duration);
        let counts = match &self.window {
            Window::Count(w) => Some(w.record(call)),
            Window::Time(w) => {
                if now == UNTIMED {
                    now = self.clock.nanos();
                }
                self.life.0.other_calls.fetch_add(1, Ordering::Relaxed);
                w.record(now, call)
            }
        };
        let mut trigger = None;
        if failed {
            let consecutive = self.on_failure(now, duration);
            let n = hot.tuning.consecutive.load(Ordering::Relaxed);
            if n != 0 && consecutive >= n {
                trigger = Some(Trigger::ConsecutiveFailures);
            }
        } else {
            if hot.consecutive_failures.load(Ordering::Relaxed) != 0 {
                hot.consecutive_failures.store(0, Ordering::Relaxed);
                self.stamp_success(now);
            } else if now != UNTIMED {
                self.life
                    .0
                    .last_success
                    .store(now.saturating_add(1), Ordering::Relaxed);
            } else if self.life.0.last_success.load(Ordering::Relaxed) == 0 {
                self.stamp_success(now);
            }
        }
        if slow {
            self.on_slow(duration);
        }
        if st != CLOSED {
            return;
        }
        if trigger.is_none()
            && let Some(c) = counts
            && (c.failed != 0 || c.slow != 0)
        {
            trigger = hot.tuning.judge(c);
        }
        if let Some(trigger) = trigger {
            self.transition(word, OPEN, trigger);
        }
    }

    /// A success in CLOSED or METRICS_ONLY on a count window whose durations are recorded:
    /// what the general path does for it, in one place (the usual call of a breaker with a
    /// histogram).
    #[inline(always)]
    fn record_timed_success(&self, word: u64, started: u64, w: &CountWindow) {
        let (now, d) = self.elapsed(started);
        if let Some(latency) = self.latency.get() {
            latency.record(d);
        }
        let hot = &self.hot.0;
        let slow = d > hot.tuning.slow_nanos.load(Ordering::Relaxed);
        let call = Call::new(false, slow);
        // An outcome from an older generation is dropped from the window.
        if hot.state.load(Ordering::Acquire) != word {
            self.count_late(word, call);
            return;
        }
        self.observe(Some(d));
        let packed = w.record_packed(call);
        if hot.consecutive_failures.load(Ordering::Relaxed) != 0 {
            hot.consecutive_failures.store(0, Ordering::Relaxed);
        }
        self.life
            .0
            .last_success
            .store(now.saturating_add(1), Ordering::Relaxed);
        if slow {
            self.on_slow(Some(d));
        }
        if CountWindow::any_bad(packed) && state_of(word) == CLOSED {
            self.judge_after_success(word, w.counts_of(packed));
        }
    }

    /// A recorded call's duration, into the histogram where durations are recorded.
    fn observe(&self, duration: Option<u64>) {
        if let Some(d) = duration
            && self.hot.0.timing.load(Ordering::Relaxed) == TIMING_RECORDED
        {
            self.life.0.durations.observe(d);
            if let Some(observer) = self.hub.duration_observer() {
                (observer.0)(&self.name, Duration::from_nanos(d));
            }
        }
    }

    #[cold]
    fn stamp_success(&self, now: u64) {
        let now = if now == UNTIMED {
            self.clock.nanos()
        } else {
            now
        };
        self.life
            .0
            .last_success
            .store(now.saturating_add(1), Ordering::Relaxed);
    }

    #[cold]
    fn on_failure(&self, now: u64, duration: Option<u64>) -> u64 {
        let l = &self.life.0;
        let now = if now == UNTIMED {
            self.clock.nanos()
        } else {
            now
        };
        l.failures.fetch_add(1, Ordering::Relaxed);
        l.last_failure
            .store(now.saturating_add(1), Ordering::Relaxed);
        l.success_mark.store(self.successes(), Ordering::Relaxed);
        self.emit(EventKind::Failure {
            duration_ms: duration.map(Duration::from_nanos),
        });
        self.hot
            .0
            .consecutive_failures
            .fetch_add(1, Ordering::AcqRel)
            + 1
    }

    #[cold]
    fn on_slow(&self, duration: Option<u64>) {
        self.life.0.slow_calls.fetch_add(1, Ordering::Relaxed);
        self.emit(EventKind::SlowCall {
            duration_ms: Duration::from_nanos(duration.unwrap_or(0)),
        });
    }

    /// An outcome that arrived after a transition: it belongs to no window (it decides
    /// nothing), but the call did happen, so the lifetime counters count it (unless a reset,
    /// which zeroes them, came after its permit).
    #[cold]
    #[inline(never)]
    fn count_late(&self, word: u64, call: Call) {
        let l = &self.life.0;
        if generation_of(word) < l.reset_generation.load(Ordering::Acquire) {
            return;
        }
        l.other_calls.fetch_add(1, Ordering::Relaxed);
        if call.is_failure() {
            l.failures.fetch_add(1, Ordering::Relaxed);
        }
        if call.is_slow() {
            l.slow_calls.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cold]
    fn record_half_open(&self, word: u64, call: Call, duration: Option<u64>) {
        let hot = &self.hot.0;
        let rules = hot.tuning.probe_rules();
        let Some(decision) = self.half_open.0.report(generation_of(word), call, &rules) else {
            self.count_late(word, call);
            return;
        };
        self.observe(duration);
        let l = &self.life.0;
        l.other_calls.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.nanos();
        if call.is_failure() {
            self.on_failure(now, duration);
        } else {
            hot.consecutive_failures.store(0, Ordering::Relaxed);
            l.last_success
                .store(now.saturating_add(1), Ordering::Relaxed);
        }
        if call.is_slow() {
            self.on_slow(duration);
        }
        match decision {
            Decision::None => {}
            Decision::Close => {
                self.transition(word, CLOSED, Trigger::Probe);
            }
            Decision::Reopen(trigger) => {
                self.transition(word, OPEN, trigger);
            }
        }
    }

    /// An ignored outcome: nothing recorded, a half-open permit given back.
    #[cold]
    fn ignore(&self, word: u64) {
        self.life.0.ignored.fetch_add(1, Ordering::Relaxed);
        self.release(word);
        self.emit(EventKind::Ignored);
    }

    /// A permit dropped without an outcome: gives a half-open permit back, counts nothing.
    #[inline(always)]
    pub(super) fn release(&self, word: u64) {
        if state_of(word) == HALF_OPEN {
            self.release_half_open(word);
        }
    }

    #[cold]
    #[inline(never)]
    fn release_half_open(&self, word: u64) {
        self.half_open.0.release(generation_of(word));
    }

    pub(super) fn window_calls(&self) -> u64 {
        match &self.window {
            Window::Count(w) => w
                .lifetime_calls()
                .saturating_sub(self.life.0.window_base.load(Ordering::Relaxed)),
            Window::Time(_) => 0,
        }
    }

    pub(super) fn successes(&self) -> u64 {
        let l = &self.life.0;
        (self.window_calls() + l.other_calls.load(Ordering::Relaxed))
            .saturating_sub(l.failures.load(Ordering::Relaxed))
    }
}

pub(super) fn count_transition(
    counts: &mut Vec<TransitionCount>,
    from: u64,
    to: u64,
    trigger: Trigger,
) {
    let (from, to) = (State::from_code(from), State::from_code(to));
    match counts
        .iter_mut()
        .find(|c| c.from == from && c.to == to && c.trigger == trigger)
    {
        Some(c) => c.count += 1,
        None => counts.push(TransitionCount {
            from,
            to,
            trigger,
            count: 1,
        }),
    }
}
