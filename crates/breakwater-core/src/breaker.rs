//! The circuit breaker and its permits.

use std::fmt;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::clock::{Clock, ClockHandle, saturating_nanos};
use crate::config::{Config, ConfigError, SlidingWindow};
use crate::error::{CallError, CallNotPermitted, TransitionError};
use crate::event::{DEFAULT_SUBSCRIBER_CAPACITY, Event, EventHub, EventKind, Subscription};
use crate::snapshot::{Snapshot, WindowSnapshot};
use crate::state::{
    CLOSED, DISABLED, FORCED_OPEN, HALF_OPEN, METRICS_ONLY, OPEN, State, Trigger, generation_of,
    pack, state_of,
};
use crate::stats::{DurationHistogram, Histogram, TransitionCount};
use crate::window::count::{CountWindow, Padded};
use crate::window::time::TimeWindow;
use crate::window::{Call, Counts, Window};

/// A permit's start time when the call is not timed.
const UNTIMED: u64 = u64::MAX;
/// Set in a permit's start time taken on the coarse clock (monotonic nanos stay below 2^62).
const COARSE: u64 = 1 << 62;

// How a breaker times its calls (`Hot::timing`).
const TIMING_OFF: u8 = 0;
/// Slow calls judged on the coarse clock; no histogram.
const TIMING_COARSE: u8 = 1;
/// Slow calls judged on the precise clock (a threshold too small for the coarse one).
const TIMING_PRECISE: u8 = 2;
/// Every call measured on the precise clock and kept in the histogram.
const TIMING_RECORDED: u8 = 3;

fn timing_of(config: &Config, clock: &ClockHandle) -> u8 {
    if config.record_call_durations {
        TIMING_RECORDED
    } else if !config.needs_timing() {
        TIMING_OFF
    } else if config.coarse_timing() && clock.has_coarse_time() {
        TIMING_COARSE
    } else {
        TIMING_PRECISE
    }
}
/// A permit's word once its outcome is recorded: no state, so dropping it releases nothing.
const RECORDED: u64 = u64::MAX;

/// The outcome of a permitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed: it counts towards tripping.
    Failure,
    /// Neither: not recorded, and a half-open permit is given back.
    Ignored,
}

/// A circuit breaker, cheap to clone (clones share one breaker).
///
/// [`CircuitBreaker::try_acquire`] hands out a [`Permit`] or refuses with [`CallNotPermitted`];
/// the permit records the call's outcome.
///
/// In CLOSED, acquiring is one atomic load and recording a success is one `fetch_add` (plus a
/// read of the ring slot it lands on); no lock, no allocation, and no clock read unless a
/// slow-call policy is on. Every other path (failures that may trip, OPEN, HALF_OPEN,
/// transitions) is off the hot path; transitions are serialised by a mutex the hot path never
/// touches.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use breakwater_core::{CircuitBreaker, Config, ManualClock, SlidingWindow, State};
///
/// let clock = ManualClock::new();
/// let config = Config::builder()
///     .failure_rate_threshold(50.0)
///     .sliding_window(SlidingWindow::Count(4))
///     .minimum_number_of_calls(4)
///     .permitted_calls_in_half_open(1)
///     .wait_in_open(Duration::from_secs(10))
///     .build()?;
/// let breaker = CircuitBreaker::with_clock("inventory", config, clock.clone());
///
/// for ok in [true, false, true, false] {
///     let permit = breaker.try_acquire()?;
///     if ok { permit.success() } else { permit.failure() }
/// }
/// assert_eq!(breaker.state(), State::Open); // 2 of 4 failed: 50 %
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert_eq!(rejected.retry_after(), Some(Duration::from_secs(10)));
///
/// clock.advance(Duration::from_secs(11));
/// breaker.try_acquire()?.success(); // the probe
/// assert_eq!(breaker.state(), State::Closed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish()
    }
}

/// Thresholds read on the hot path, kept in atomics so they can change at run time.
#[derive(Debug)]
struct Tuning {
    /// f32 bits of the failure-rate threshold in percent; 0 when off.
    failure_rate: AtomicU32,
    /// f32 bits of the slow-call-rate threshold in percent; 0 when off.
    slow_rate: AtomicU32,
    slow_nanos: AtomicU64,
    min_calls: AtomicU64,
    /// 0 when off.
    consecutive: AtomicU64,
    permitted: AtomicU64,
    /// 0 when the rate decides in HALF_OPEN.
    success_threshold: AtomicU64,
    /// 0 when off.
    max_half_open_nanos: AtomicU64,
}

impl Tuning {
    fn new(c: &Config) -> Self {
        let t = Tuning {
            failure_rate: AtomicU32::new(0),
            slow_rate: AtomicU32::new(0),
            slow_nanos: AtomicU64::new(0),
            min_calls: AtomicU64::new(0),
            consecutive: AtomicU64::new(0),
            permitted: AtomicU64::new(0),
            success_threshold: AtomicU64::new(0),
            max_half_open_nanos: AtomicU64::new(0),
        };
        t.set(c);
        t
    }

    fn set(&self, c: &Config) {
        let r = Ordering::Relaxed;
        self.failure_rate
            .store(c.failure_rate_threshold.unwrap_or(0.0).to_bits(), r);
        self.slow_rate
            .store(c.slow_call_rate_threshold.unwrap_or(0.0).to_bits(), r);
        self.slow_nanos
            .store(saturating_nanos(c.slow_call_duration_threshold), r);
        self.min_calls.store(c.effective_minimum_calls() as u64, r);
        self.consecutive
            .store(c.consecutive_failures.unwrap_or(0) as u64, r);
        self.permitted
            .store(c.permitted_calls_in_half_open as u64, r);
        self.success_threshold
            .store(c.success_threshold.unwrap_or(0) as u64, r);
        self.max_half_open_nanos
            .store(c.max_wait_in_half_open.map_or(0, saturating_nanos), r);
    }

    #[inline]
    fn rate(bits: &AtomicU32) -> Option<f64> {
        let v = f32::from_bits(bits.load(Ordering::Relaxed));
        (v > 0.0).then_some(v as f64)
    }

    /// Which rate policy trips on these counts, if any.
    fn judge(&self, c: Counts) -> Option<Trigger> {
        if c.buffered == 0 || c.buffered < self.min_calls.load(Ordering::Relaxed) {
            return None;
        }
        let total = c.buffered as f64;
        if let Some(t) = Self::rate(&self.failure_rate)
            && c.failed as f64 * 100.0 >= t * total
        {
            return Some(Trigger::FailureRatio);
        }
        if let Some(t) = Self::rate(&self.slow_rate)
            && c.slow as f64 * 100.0 >= t * total
        {
            return Some(Trigger::SlowCallRatio);
        }
        None
    }
}

/// The read-mostly part, on its own cache line.
#[derive(Debug)]
struct Hot {
    state: AtomicU64,
    /// `TIMING_*`.
    timing: AtomicU8,
    /// Monotonic nanos: end of the wait in OPEN (written before OPEN is published).
    open_until: AtomicU64,
    /// Monotonic nanos: when HALF_OPEN was entered (written before it is published).
    half_open_since: AtomicU64,
    consecutive_failures: AtomicU64,
    tuning: Tuning,
}

/// Lifetime counters and times, on their own cache line.
#[derive(Debug, Default)]
struct Lifetime {
    failures: AtomicU64,
    /// Calls recorded outside the count window (HALF_OPEN, time windows).
    other_calls: AtomicU64,
    /// The count window's lifetime calls at the last reset.
    window_base: AtomicU64,
    slow_calls: AtomicU64,
    ignored: AtomicU64,
    not_permitted: AtomicU64,
    /// `not_permitted` when the current state was entered.
    not_permitted_base: AtomicU64,
    circuit_opens: AtomicU64,
    /// Successes at the latest failure.
    success_mark: AtomicU64,
    /// Monotonic nanos + 1; 0 for never.
    last_failure: AtomicU64,
    last_success: AtomicU64,
    opened_at: AtomicU64,
    /// Durations of timed calls.
    durations: Histogram,
}

/// State guarded by the transition lock.
#[derive(Debug)]
struct Control {
    config: Config,
    /// Consecutive openings since the breaker last closed (drives the backoff).
    open_attempts: u32,
    /// Transitions by (from, to, trigger), since creation or the last reset.
    transitions: Vec<TransitionCount>,
}

pub(crate) struct Inner {
    hot: Padded<Hot>,
    half_open: Padded<AtomicU64>,
    window: Window,
    life: Padded<Lifetime>,
    name: Arc<str>,
    clock: ClockHandle,
    hub: Arc<EventHub>,
    control: Mutex<Control>,
    created_at: u64,
    me: Weak<Inner>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").field("name", &self.name).finish()
    }
}

// Half-open accounting word: [tag:14][issued:10][successes:10][failures:10][slow:10][slow_failed:10]
const HO_FIELD: u64 = (1 << 10) - 1;
const HO_SLOW_FAILED: u32 = 0;
const HO_SLOW: u32 = 10;
const HO_FAILED: u32 = 20;
const HO_SUCC: u32 = 30;
const HO_ISSUED: u32 = 40;
const HO_TAG: u32 = 50;

#[inline]
fn ho_get(w: u64, shift: u32) -> u64 {
    (w >> shift) & HO_FIELD
}

#[inline]
fn ho_tag(generation: u64) -> u64 {
    (generation & ((1 << 14) - 1)) << HO_TAG
}

#[inline]
fn ho_tag_matches(w: u64, generation: u64) -> bool {
    w >> HO_TAG == ho_tag(generation) >> HO_TAG
}

enum Decision {
    None,
    Close,
    Reopen(Trigger),
}

impl CircuitBreaker {
    /// A breaker on the system clock.
    pub fn new(name: impl AsRef<str>, config: Config) -> Self {
        Self::with_clock(name, config, ClockHandle::System)
    }

    /// A breaker on the given clock (e.g. a [`ManualClock`](crate::ManualClock) in tests).
    pub fn with_clock(
        name: impl AsRef<str>,
        config: Config,
        clock: impl Into<ClockHandle>,
    ) -> Self {
        Self::build(
            Arc::from(name.as_ref()),
            config,
            clock.into(),
            Arc::new(EventHub::new(0)),
        )
    }

    pub(crate) fn build(
        name: Arc<str>,
        config: Config,
        clock: ClockHandle,
        hub: Arc<EventHub>,
    ) -> Self {
        let window = match config.sliding_window {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time(d) => Window::Time(TimeWindow::new(d.as_secs())),
        };
        let created_at = clock.nanos();
        let inner = Arc::new_cyclic(|me| Inner {
            hot: Padded(Hot {
                state: AtomicU64::new(pack(CLOSED, 0)),
                timing: AtomicU8::new(timing_of(&config, &clock)),
                open_until: AtomicU64::new(0),
                half_open_since: AtomicU64::new(0),
                consecutive_failures: AtomicU64::new(0),
                tuning: Tuning::new(&config),
            }),
            half_open: Padded(AtomicU64::new(0)),
            window,
            life: Padded(Lifetime::default()),
            name,
            clock,
            hub,
            control: Mutex::new(Control {
                config,
                open_attempts: 0,
                transitions: Vec::new(),
            }),
            created_at,
            me: me.clone(),
        });
        CircuitBreaker { inner }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The breaker's name, shared (cloning it does not allocate).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.inner.name
    }

    /// The current state. Reading it never performs a pending transition (an expired OPEN stays
    /// OPEN until the next call or timer).
    #[inline]
    pub fn state(&self) -> State {
        State::from_code(state_of(self.inner.hot.0.state.load(Ordering::Acquire)))
    }

    /// The generation: how many transitions the breaker has made (plus resets).
    pub fn generation(&self) -> u64 {
        generation_of(self.inner.hot.0.state.load(Ordering::Acquire))
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> Config {
        self.inner.lock().config.clone()
    }

    /// The breaker's clock.
    pub fn clock(&self) -> &ClockHandle {
        &self.inner.clock
    }

    /// Asks to make a call. In CLOSED (and DISABLED, METRICS_ONLY) this always succeeds; in OPEN
    /// it fails until the wait is over, then moves to HALF_OPEN and admits probes.
    ///
    /// Record the outcome on the [`Permit`]; dropping it unrecorded counts as nothing and gives
    /// a half-open permit back.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, CallNotPermitted> {
        let (word, started) = self.inner.acquire()?;
        Ok(Permit {
            inner: &self.inner,
            word,
            started,
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), but the permit owns a handle to the breaker
    /// (for futures that must be `'static`).
    #[inline(always)]
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, CallNotPermitted> {
        let (word, started) = self.inner.acquire()?;
        Ok(OwnedPermit {
            inner: self.inner.clone(),
            word,
            started,
        })
    }

    /// Runs `call` through the breaker: rejected without running it when not permitted, an `Err`
    /// is a failure, an `Ok` a success. Dropping the returned future before it finishes records
    /// nothing (and frees a half-open permit).
    ///
    /// ```
    /// use breakwater_core::{CallError, CircuitBreaker, Config};
    ///
    /// # tokio_test_block_on(async {
    /// let breaker = CircuitBreaker::new("api", Config::default());
    /// let ok: Result<u32, CallError<&str>> = breaker.call(async { Ok(7) }).await;
    /// assert_eq!(ok, Ok(7));
    /// let err = breaker.call(async { Err::<u32, _>("boom") }).await;
    /// assert_eq!(err, Err(CallError::Inner("boom")));
    /// # });
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    /// ```
    pub async fn call<F, T, E>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: IntoFuture<Output = Result<T, E>>,
    {
        self.call_with(call, |r| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        })
        .await
    }

    /// Like [`call`](Self::call), with `classify` deciding the outcome of the result (e.g. to
    /// ignore some errors, or to count some `Ok` values as failures).
    pub async fn call_with<F, T, E, C>(&self, call: F, classify: C) -> Result<T, CallError<E>>
    where
        F: IntoFuture<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Outcome,
    {
        let permit = self.try_acquire().map_err(CallError::Rejected)?;
        let result = call.into_future().await;
        permit.record(classify(&result));
        result.map_err(CallError::Inner)
    }

    /// Checked manual transition (for operators and tests). Asking for the current state is a
    /// no-op that succeeds; an illegal move (HALF_OPEN from CLOSED or METRICS_ONLY, OPEN from
    /// METRICS_ONLY) is an error.
    pub fn transition_to(&self, to: State) -> Result<(), TransitionError> {
        self.transition_to_by(to, Trigger::Manual)
    }

    /// As [`transition_to`](Self::transition_to), naming what asked for it (e.g.
    /// [`Trigger::Probe`] for a health probe feeding the breaker).
    pub fn transition_to_by(&self, to: State, trigger: Trigger) -> Result<(), TransitionError> {
        let mut ctl = self.inner.lock();
        let cur = self.inner.hot.0.state.load(Ordering::Acquire);
        let from = State::from_code(state_of(cur));
        if from == to {
            return Ok(());
        }
        if !from.can_transition_to(to) {
            return Err(TransitionError { from, to });
        }
        self.inner.enter(&mut ctl, cur, to.code(), trigger, None);
        Ok(())
    }

    /// Back to CLOSED (from any state).
    pub fn close(&self) {
        let _ = self.transition_to(State::Closed);
    }

    /// FORCED_OPEN: reject everything until released.
    pub fn force_open(&self) {
        let _ = self.transition_to(State::ForcedOpen);
    }

    /// DISABLED: let everything through, record nothing, never trip.
    pub fn disable(&self) {
        let _ = self.transition_to(State::Disabled);
    }

    /// METRICS_ONLY: record everything, never reject.
    pub fn metrics_only(&self) {
        let _ = self.transition_to(State::MetricsOnly);
    }

    /// Back to CLOSED with an empty window and lifetime counters zeroed, whatever the state.
    pub fn reset(&self) {
        let inner = &*self.inner;
        let mut ctl = inner.lock();
        let cur = inner.hot.0.state.load(Ordering::Acquire);
        inner.enter(&mut ctl, cur, CLOSED, Trigger::Manual, None);
        ctl.open_attempts = 0;
        let l = &inner.life.0;
        if let Window::Count(w) = &inner.window {
            l.window_base.store(w.lifetime_calls(), Ordering::Relaxed);
        }
        for c in [
            &l.failures,
            &l.other_calls,
            &l.slow_calls,
            &l.ignored,
            &l.not_permitted,
            &l.not_permitted_base,
            &l.circuit_opens,
            &l.success_mark,
            &l.last_failure,
            &l.last_success,
            &l.opened_at,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        l.durations.reset();
        ctl.transitions.clear();
        inner.emit(EventKind::Reset);
    }

    /// OPEN for `duration` from now (then HALF_OPEN as usual), whatever the backoff says.
    pub fn open_for(&self, duration: Duration) -> Result<(), TransitionError> {
        let until = Duration::from_nanos(self.inner.clock.nanos()).saturating_add(duration);
        self.open_until(until)
    }

    /// OPEN until the clock reads `until` (monotonic, as [`Clock::now`]).
    pub fn open_until(&self, until: Duration) -> Result<(), TransitionError> {
        let mut ctl = self.inner.lock();
        let cur = self.inner.hot.0.state.load(Ordering::Acquire);
        let from = State::from_code(state_of(cur));
        if !from.can_transition_to(State::Open) {
            return Err(TransitionError {
                from,
                to: State::Open,
            });
        }
        self.inner.enter(
            &mut ctl,
            cur,
            OPEN,
            Trigger::Manual,
            Some(saturating_nanos(until)),
        );
        Ok(())
    }

    /// Changes the configuration at run time, keeping the window and the state. The window's
    /// kind and size cannot change this way.
    pub fn update_config(&self, config: Config) -> Result<(), ConfigError> {
        let mut ctl = self.inner.lock();
        if config.sliding_window != ctl.config.sliding_window {
            return Err(ConfigError::new(
                "sliding_window",
                "the window cannot change at run time; create a new breaker",
            ));
        }
        self.inner.hot.0.tuning.set(&config);
        self.inner
            .hot
            .0
            .timing
            .store(timing_of(&config, &self.inner.clock), Ordering::Relaxed);
        ctl.config = config;
        drop(ctl);
        self.inner.emit(EventKind::ConfigChanged);
        Ok(())
    }

    /// A live feed of this breaker's events.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(DEFAULT_SUBSCRIBER_CAPACITY)
    }

    /// A live feed of this breaker's events, keeping at most `capacity` unread.
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        self.inner
            .hub
            .subscribe(Some(self.inner.name.clone()), capacity)
    }

    /// Everything about the breaker now: state, lifetime counters, the window's view, config.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    /// Transitions made, by (from, to, trigger), since creation or the last reset (which is
    /// itself counted afterwards only if it moved the breaker).
    pub fn transition_counts(&self) -> Vec<TransitionCount> {
        self.inner.lock().transitions.clone()
    }

    /// Durations of the calls this breaker recorded (with
    /// [`record_call_durations`](crate::ConfigBuilder::record_call_durations) on: measured, or
    /// given to [`Permit::record_with_duration`]), since creation or the last reset.
    pub fn duration_histogram(&self) -> DurationHistogram {
        self.inner.life.0.durations.snapshot()
    }

    /// Bytes this breaker owns (its struct and its window), excluding its name.
    pub fn memory_bytes(&self) -> usize {
        let window = match &self.inner.window {
            Window::Count(w) => w.heap_bytes(),
            Window::Time(w) => w.heap_bytes(),
        };
        std::mem::size_of::<Inner>() + window
    }

    /// Total calls this breaker has seen end (for idle detection).
    pub(crate) fn activity(&self) -> u64 {
        let l = &self.inner.life.0;
        self.inner.window_calls()
            + l.other_calls.load(Ordering::Relaxed)
            + l.not_permitted.load(Ordering::Relaxed)
            + l.ignored.load(Ordering::Relaxed)
    }

    /// Live handles to this breaker: clones, plus owned permits not yet dropped (for
    /// diagnostics).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Whether both handles are the same breaker.
    pub fn ptr_eq(&self, other: &CircuitBreaker) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline(always)]
    fn acquire(&self) -> Result<(u64, u64), CallNotPermitted> {
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

    /// A timed call's start: on the coarse clock (marked) or the precise one.
    #[inline(always)]
    fn start(&self, timing: u8) -> u64 {
        if timing == TIMING_COARSE {
            self.clock.coarse_nanos() | COARSE
        } else {
            self.clock.nanos()
        }
    }

    /// The time now on the clock a call's start was taken from, and the call's duration.
    #[inline(always)]
    fn elapsed(&self, started: u64) -> (u64, u64) {
        let now = if started & COARSE != 0 {
            self.clock.coarse_nanos()
        } else {
            self.clock.nanos()
        };
        (now, now.saturating_sub(started & !COARSE))
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
                    let generation = generation_of(word);
                    let mut cur = self.half_open.0.load(Ordering::Acquire);
                    loop {
                        if !ho_tag_matches(cur, generation) {
                            break;
                        }
                        if ho_get(cur, HO_ISSUED) >= permitted {
                            return Err(self.reject(State::HalfOpen, None));
                        }
                        match self.half_open.0.compare_exchange_weak(
                            cur,
                            cur + (1 << HO_ISSUED),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => {
                                let started = match hot.timing.load(Ordering::Relaxed) {
                                    TIMING_OFF => UNTIMED,
                                    _ => now,
                                };
                                return Ok((word, started));
                            }
                            Err(actual) => cur = actual,
                        }
                    }
                    // The half-open generation moved on under us: look again.
                    let next = hot.state.load(Ordering::Acquire);
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
        if self.hub.is_active() {
            self.emit(EventKind::CallNotPermitted { state });
        }
        CallNotPermitted { state, retry_after }
    }

    #[inline]
    fn emit(&self, kind: EventKind) {
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
    fn transition(&self, expected: u64, to: u64, trigger: Trigger) -> bool {
        let mut ctl = self.lock();
        if self.hot.0.state.load(Ordering::Acquire) != expected {
            return false;
        }
        self.enter(&mut ctl, expected, to, trigger, None);
        true
    }

    /// Enters `to` from the state word `cur`, under the transition lock.
    fn enter(&self, ctl: &mut Control, cur: u64, to: u64, trigger: Trigger, until: Option<u64>) {
        let hot = &self.hot.0;
        let l = &self.life.0;
        let from = state_of(cur);
        count_transition(&mut ctl.transitions, from, to, trigger);
        let generation = generation_of(cur) + 1;
        let now = self.clock.nanos();
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
                self.half_open
                    .0
                    .store(ho_tag(generation), Ordering::Release);
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
            self.retire_half_open(from, to, generation);
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
    }

    /// Leaves the half-open word so that no permit of an older generation matches it any more
    /// (a late probe's outcome is dropped like any other stale outcome). Entering OPEN from
    /// HALF_OPEN keeps the probes' counts, tagged with OPEN's generation, so the snapshot shows
    /// why the breaker re-opened; entering OPEN from another state tags the word with that
    /// state's generation (never a half-open one), so the snapshot shows the window instead.
    fn retire_half_open(&self, from: u64, to: u64, generation: u64) {
        let ho = &self.half_open.0;
        if to != OPEN {
            ho.store(ho_tag(generation), Ordering::Release);
        } else if from != HALF_OPEN {
            ho.store(ho_tag(generation.wrapping_sub(1)), Ordering::Release);
        } else {
            let counts = (1 << HO_ISSUED) - 1;
            let mut cur = ho.load(Ordering::Acquire);
            while let Err(actual) = ho.compare_exchange_weak(
                cur,
                ho_tag(generation) | (cur & counts),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                cur = actual;
            }
        }
    }

    /// Records the outcome of a permit issued with state word `word`.
    #[inline(always)]
    fn record(&self, word: u64, started: u64, outcome: Outcome, duration: Option<Duration>) {
        // The hot path: a success in CLOSED or METRICS_ONLY on a count window, untimed or timed
        // (without a histogram) and not slow.
        if outcome == Outcome::Success
            && duration.is_none()
            && (state_of(word) == CLOSED || state_of(word) == METRICS_ONLY)
            && let Window::Count(w) = &self.window
            && (started == UNTIMED || self.fast_within_threshold(started))
        {
            let hot = &self.hot.0;
            // An outcome from an older generation is dropped.
            if hot.state.load(Ordering::Acquire) != word {
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
        hot.timing.load(Ordering::Relaxed) != TIMING_RECORDED
            && self.elapsed(started).1 <= hot.tuning.slow_nanos.load(Ordering::Relaxed)
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
        let slow = match duration {
            Some(d) => {
                if self.hot.0.timing.load(Ordering::Relaxed) == TIMING_RECORDED {
                    self.life.0.durations.observe(d);
                }
                d > self.hot.0.tuning.slow_nanos.load(Ordering::Relaxed)
            }
            None => false,
        };
        let call = Call::new(failed, slow);
        if st == HALF_OPEN {
            self.record_half_open(word, call, duration);
            return;
        }
        // CLOSED or METRICS_ONLY. An outcome from an older generation is dropped. The check and
        // the record are two steps without a lock: an outcome whose thread is preempted between
        // them while another thread makes a transition can land in the new window. HALF_OPEN
        // accounting has no such gap (its word carries the generation).
        let hot = &self.hot.0;
        if hot.state.load(Ordering::Acquire) != word {
            return;
        }
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

    #[cold]
    fn record_half_open(&self, word: u64, call: Call, duration: Option<u64>) {
        let hot = &self.hot.0;
        let generation = generation_of(word);
        let permitted = hot.tuning.permitted.load(Ordering::Relaxed);
        let success_threshold = hot.tuning.success_threshold.load(Ordering::Relaxed);
        let failure_rate = Tuning::rate(&hot.tuning.failure_rate);
        let slow_rate = Tuning::rate(&hot.tuning.slow_rate);
        let mut cur = self.half_open.0.load(Ordering::Acquire);
        let decision = loop {
            if !ho_tag_matches(cur, generation) {
                return;
            }
            let mut next = cur;
            let decision;
            if success_threshold != 0 || failure_rate.is_none() && slow_rate.is_none() {
                // Probe mode: the permit is freed; successes in a row close, a failure re-opens.
                let threshold = if success_threshold != 0 {
                    success_threshold
                } else {
                    permitted
                };
                next -= 1 << HO_ISSUED;
                if call.is_failure() {
                    next += 1 << HO_FAILED;
                    decision = Decision::Reopen(Trigger::Probe);
                } else {
                    next += 1 << HO_SUCC;
                    decision = if ho_get(next, HO_SUCC) >= threshold {
                        Decision::Close
                    } else {
                        Decision::None
                    };
                }
                if call.is_slow() {
                    next += 1 << HO_SLOW;
                }
            } else {
                next += if call.is_failure() {
                    1 << HO_FAILED
                } else {
                    1 << HO_SUCC
                };
                if call.is_slow() {
                    next += 1 << HO_SLOW;
                    if call.is_failure() {
                        next += 1 << HO_SLOW_FAILED;
                    }
                }
                let reported = ho_get(next, HO_SUCC) + ho_get(next, HO_FAILED);
                decision = if reported >= permitted {
                    let total = reported as f64;
                    let failed = ho_get(next, HO_FAILED) as f64;
                    let slow = ho_get(next, HO_SLOW) as f64;
                    if failure_rate.is_some_and(|t| failed * 100.0 >= t * total) {
                        Decision::Reopen(Trigger::FailureRatio)
                    } else if slow_rate.is_some_and(|t| slow * 100.0 >= t * total) {
                        Decision::Reopen(Trigger::SlowCallRatio)
                    } else {
                        Decision::Close
                    }
                } else {
                    Decision::None
                };
            }
            match self.half_open.0.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break decision,
                Err(actual) => cur = actual,
            }
        };
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
    fn release(&self, word: u64) {
        if state_of(word) == HALF_OPEN {
            self.release_half_open(word);
        }
    }

    #[cold]
    #[inline(never)]
    fn release_half_open(&self, word: u64) {
        let generation = generation_of(word);
        let mut cur = self.half_open.0.load(Ordering::Acquire);
        while ho_tag_matches(cur, generation) && ho_get(cur, HO_ISSUED) > 0 {
            match self.half_open.0.compare_exchange_weak(
                cur,
                cur - (1 << HO_ISSUED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    fn window_calls(&self) -> u64 {
        match &self.window {
            Window::Count(w) => w
                .lifetime_calls()
                .saturating_sub(self.life.0.window_base.load(Ordering::Relaxed)),
            Window::Time(_) => 0,
        }
    }

    fn successes(&self) -> u64 {
        let l = &self.life.0;
        (self.window_calls() + l.other_calls.load(Ordering::Relaxed))
            .saturating_sub(l.failures.load(Ordering::Relaxed))
    }

    fn snapshot(&self) -> Snapshot {
        let hot = &self.hot.0;
        let l = &self.life.0;
        let ctl = self.lock();
        let config = ctl.config.clone();
        drop(ctl);
        let word = hot.state.load(Ordering::Acquire);
        let state = State::from_code(state_of(word));
        let now = self.clock.nanos();
        let to_epoch = self.clock.epoch_converter();
        let epoch = |t: u64| (t != 0).then(|| to_epoch(t - 1));
        let failures = l.failures.load(Ordering::Relaxed);
        let successes = self.successes();
        let not_permitted = l.not_permitted.load(Ordering::Relaxed);
        let ignored = l.ignored.load(Ordering::Relaxed);
        let min_calls = hot.tuning.min_calls.load(Ordering::Relaxed);
        let window_not_permitted =
            not_permitted.saturating_sub(l.not_permitted_base.load(Ordering::Relaxed));

        // In HALF_OPEN, and in OPEN entered from HALF_OPEN, the probes' calls are the window.
        let ho = self.half_open.0.load(Ordering::Acquire);
        let probes = state_of(word) == HALF_OPEN
            || state_of(word) == OPEN && ho_tag_matches(ho, generation_of(word));
        let window = if probes {
            let succ = ho_get(ho, HO_SUCC);
            let failed = ho_get(ho, HO_FAILED);
            let buffered = succ + failed;
            // Known once every permitted probe has reported (in both half-open modes).
            let known = buffered >= hot.tuning.permitted.load(Ordering::Relaxed);
            WindowSnapshot::new(
                buffered,
                failed,
                ho_get(ho, HO_SLOW),
                ho_get(ho, HO_SLOW_FAILED),
                window_not_permitted,
                known,
            )
        } else {
            let c = self.window.full_counts(now);
            WindowSnapshot::new(
                c.buffered,
                c.failed,
                c.slow,
                c.slow_failed,
                window_not_permitted,
                c.buffered > 0 && c.buffered >= min_calls,
            )
        };
        let retry_after_ms = (state == State::Open).then(|| {
            hot.open_until
                .load(Ordering::Acquire)
                .saturating_sub(now)
                .div_ceil(1_000_000)
        });
        Snapshot {
            name: self.name.to_string(),
            state,
            failures,
            successes,
            slow_calls: l.slow_calls.load(Ordering::Relaxed),
            not_permitted_calls: not_permitted,
            ignored_calls: ignored,
            consecutive_failures: hot.consecutive_failures.load(Ordering::Relaxed),
            consecutive_successes: successes.saturating_sub(l.success_mark.load(Ordering::Relaxed)),
            last_failure_time: epoch(l.last_failure.load(Ordering::Relaxed)),
            last_success_time: epoch(l.last_success.load(Ordering::Relaxed)),
            opened_at: epoch(l.opened_at.load(Ordering::Relaxed)),
            total_requests: successes + failures + not_permitted + ignored,
            circuit_opens: l.circuit_opens.load(Ordering::Relaxed),
            failure_rate: window.failure_rate,
            slow_call_rate: window.slow_call_rate,
            buffered_calls: window.buffered_calls,
            uptime: now.saturating_sub(self.created_at) / 1_000_000,
            retry_after_ms,
            generation: generation_of(word),
            window,
            config: config.view(),
        }
    }
}

/// Permission to make one call; record its outcome with [`success`](Permit::success),
/// [`failure`](Permit::failure), [`ignore`](Permit::ignore) or [`record`](Permit::record).
///
/// Dropping a permit without an outcome (e.g. a cancelled future) records nothing and gives a
/// half-open permit back. Outcomes of permits issued before a transition are dropped.
#[must_use = "record the call's outcome on the permit"]
pub struct Permit<'a> {
    inner: &'a Inner,
    word: u64,
    started: u64,
}

/// A [`Permit`] that owns a handle to its breaker (`'static`).
#[must_use = "record the call's outcome on the permit"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    word: u64,
    started: u64,
}

macro_rules! permit_methods {
    ($ty:ty) => {
        impl $ty {
            /// The call succeeded.
            #[inline]
            pub fn success(self) {
                self.record(Outcome::Success)
            }

            /// The call failed.
            #[inline]
            pub fn failure(self) {
                self.record(Outcome::Failure)
            }

            /// The call counts as neither success nor failure.
            #[inline]
            pub fn ignore(self) {
                self.record(Outcome::Ignored)
            }

            /// Records `outcome`, timing the call if the breaker times calls.
            #[inline(always)]
            pub fn record(mut self, outcome: Outcome) {
                self.inner.record(self.word, self.started, outcome, None);
                self.word = RECORDED;
            }

            /// Records `outcome` for a call that took `duration` (instead of the measured time).
            pub fn record_with_duration(mut self, outcome: Outcome, duration: Duration) {
                self.inner
                    .record(self.word, self.started, outcome, Some(duration));
                self.word = RECORDED;
            }

            /// The state the permit was issued in.
            pub fn state(&self) -> State {
                State::from_code(state_of(self.word))
            }

            /// Whether the call is being timed.
            pub fn is_timed(&self) -> bool {
                self.started != UNTIMED
            }

            /// How long since the permit was issued, when timed.
            pub fn elapsed(&self) -> Option<Duration> {
                (self.started != UNTIMED)
                    .then(|| Duration::from_nanos(self.inner.elapsed(self.started).1))
            }
        }

        impl Drop for $ty {
            #[inline(always)]
            fn drop(&mut self) {
                self.inner.release(self.word);
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("circuit", &self.inner.name)
                    .field("state", &self.state())
                    .field("generation", &generation_of(self.word))
                    .finish()
            }
        }
    };
}

permit_methods!(Permit<'_>);
permit_methods!(OwnedPermit);

fn count_transition(counts: &mut Vec<TransitionCount>, from: u64, to: u64, trigger: Trigger) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn timing(b: crate::ConfigBuilder, clock: &ClockHandle) -> u8 {
        timing_of(&b.build().unwrap(), clock)
    }

    #[test]
    fn slow_calls_use_the_coarse_clock_from_its_threshold_on() {
        let system = ClockHandle::System;
        let slow = |ms| {
            Config::builder()
                .slow_call_rate_threshold(50.0)
                .slow_call_duration_threshold(Duration::from_millis(ms))
        };
        assert_eq!(timing(Config::builder(), &system), TIMING_OFF);
        assert_eq!(timing(slow(20), &system), TIMING_COARSE);
        assert_eq!(timing(slow(60_000), &system), TIMING_COARSE);
        assert_eq!(timing(slow(19), &system), TIMING_PRECISE);
        assert_eq!(
            timing(slow(60_000).record_call_durations(true), &system),
            TIMING_RECORDED
        );
        assert_eq!(
            timing(Config::builder().record_call_durations(true), &system),
            TIMING_RECORDED
        );
        let manual = ClockHandle::from(ManualClock::new());
        assert_eq!(timing(slow(20), &manual), TIMING_COARSE);
    }

    #[test]
    fn a_coarse_start_is_measured_on_the_coarse_clock() {
        let config = Config::builder()
            .slow_call_rate_threshold(50.0)
            .slow_call_duration_threshold(Duration::from_secs(1))
            .build()
            .unwrap();
        let cb = CircuitBreaker::new("coarse", config);
        let p = cb.try_acquire().unwrap();
        assert_ne!(p.started & COARSE, 0);
        let (now, elapsed) = cb.inner.elapsed(p.started);
        assert!(now <= cb.inner.clock.nanos());
        assert!(elapsed < 1_000_000_000, "no mark left in the duration");
        p.success();
        assert_eq!(cb.snapshot().successes, 1);
    }
}
