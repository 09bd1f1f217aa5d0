//! The circuit breaker: its public handle. The parts live beside it: [`inner`] (the shared
//! state, transitions and recording), [`half_open`] (the probes' accounting), [`timing`] (how
//! calls are timed), [`permit`] (permits and outcomes), [`snapshot`] (the serde view) and
//! [`shared`] (what a fleet of replicas shares).

mod half_open;
mod inner;
mod learned;
mod permit;
mod shared;
mod snapshot;
mod timing;
mod trace;

use std::fmt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use learned::{LATENCY_BUCKETS, LearnedThreshold, LearnedValue, latency_bucket_bounds};
pub use permit::{Outcome, OwnedPermit, Permit};
pub use shared::OutcomeTotals;

use crate::clock::{ClockHandle, saturating_nanos};
use crate::config::{Config, ConfigError};
use crate::error::{CallError, CallNotPermitted, TransitionError};
use crate::event::{DEFAULT_SUBSCRIBER_CAPACITY, EventHub, EventKind, Subscription};
use crate::snapshot::Snapshot;
use crate::state::{CLOSED, OPEN, State, Trigger, generation_of, state_of};
use crate::stats::{DurationHistogram, TransitionCount};
use crate::window::Window;
use inner::Inner;
use timing::timing_of;

/// A circuit breaker, cheap to clone (clones share one breaker).
///
/// [`CircuitBreaker::try_acquire`] hands out a [`Permit`] or refuses with [`CallNotPermitted`];
/// the permit records the call's outcome.
///
/// In CLOSED, acquiring is one atomic load and recording a success is one `fetch_add` (plus a
/// read of the ring slot it lands on); no lock, no allocation, and no clock read: a slow-call
/// policy reads the coarse clock (a load from memory), and only `record_call_durations` or a
/// threshold under 20 ms reads the precise one. Every other path (failures that may trip, OPEN, HALF_OPEN,
/// transitions) is off the hot path; transitions are serialised by a mutex the hot path never
/// touches.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use breakwater::{CircuitBreaker, Config, ManualClock, SlidingWindow, State};
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
        CircuitBreaker {
            inner: Inner::new(name, config, clock, hub),
        }
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
    /// use breakwater::{CallError, CircuitBreaker, Config};
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
        let word = inner.hot.0.state.load(Ordering::Acquire);
        l.reset_generation
            .store(crate::state::generation_of(word), Ordering::Release);
        ctl.transitions.clear();
        inner.emit(EventKind::Reset);
    }

    /// OPEN for `duration` from now (then HALF_OPEN as usual), whatever the backoff says.
    pub fn open_for(&self, duration: Duration) -> Result<(), TransitionError> {
        let until = Duration::from_nanos(self.inner.clock.nanos()).saturating_add(duration);
        self.open_until(until)
    }

    /// OPEN until the clock reads `until` (monotonic, as [`Clock::now`](crate::Clock::now)).
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
        if config.learned_slow_call_threshold.is_some() {
            self.inner.latency.get_or_init(learned::LatencyCounts::new);
            // The threshold learned so far stays until the next one.
            if let Some(v) = ctl.learned {
                let nanos = saturating_nanos(Duration::from_secs_f64(v.threshold_ms / 1_000.0));
                self.inner
                    .hot
                    .0
                    .tuning
                    .slow_nanos
                    .store(nanos.max(1), Ordering::Relaxed);
            }
        } else {
            ctl.learned = None;
        }
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

    /// Whether its [`KeyedFamily`](crate::KeyedFamily) evicted it (idle): the key then has a
    /// new member, or none yet, and this one sees no more calls through the family. A handle
    /// kept to skip the family's lookup is valid while this is false. One atomic load.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breakwater::{Config, FamilyOptions, ManualClock, Registry};
    ///
    /// let clock = ManualClock::new();
    /// let registry = Registry::builder().clock(clock.clone()).build();
    /// let family = registry.family(
    ///     "hosts",
    ///     FamilyOptions::new(Config::default()).idle_eviction(Duration::from_secs(60)),
    /// );
    /// let kept = family.get("a.example");
    /// assert!(!kept.is_evicted());
    /// family.evict_idle(); // the first sweep notes each member's activity
    /// clock.advance(Duration::from_secs(61));
    /// family.evict_idle();
    /// assert!(kept.is_evicted());
    /// assert!(!family.get("a.example").ptr_eq(&kept));
    /// ```
    #[inline]
    pub fn is_evicted(&self) -> bool {
        self.inner.hot.0.evicted.load(Ordering::Acquire)
    }

    /// Marks it evicted from its family.
    pub(crate) fn mark_evicted(&self) {
        self.inner.hot.0.evicted.store(true, Ordering::Release);
    }

    /// Whether both handles are the same breaker.
    pub fn ptr_eq(&self, other: &CircuitBreaker) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
