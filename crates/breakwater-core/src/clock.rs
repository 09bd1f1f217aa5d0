//! Time for breakers: the system clock, a manual clock for tests, and timers.
//!
//! A breaker reads monotonic time as a [`Duration`] since its clock's origin, and wall time as
//! milliseconds since the Unix epoch (for snapshots and events). The [`ManualClock`] only moves
//! when told to, and runs the timers that fall due when it does, so every time-based behaviour can
//! be tested without sleeping.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use breakwater::{CircuitBreaker, Config, ManualClock, State};
//!
//! let clock = ManualClock::new();
//! let config = Config::builder()
//!     .consecutive_failures(1)
//!     .wait_in_open(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! let breaker = CircuitBreaker::with_clock("db", config, clock.clone());
//! breaker.try_acquire().unwrap().failure();
//! assert_eq!(breaker.state(), State::Open);
//!
//! clock.advance(Duration::from_secs(6));
//! assert!(breaker.try_acquire().is_ok()); // lazily HALF_OPEN, a probe is admitted
//! assert_eq!(breaker.state(), State::HalfOpen);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A task a clock runs when its time comes.
pub type TimerTask = Box<dyn FnOnce() + Send + 'static>;

/// A source of time, and optionally of timers.
///
/// Implement it to drive breakers from a clock of your own; the crate ships [`SystemClock`] and
/// [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time since this clock's origin. Never goes backwards.
    fn now(&self) -> Duration;

    /// Wall-clock time in milliseconds since the Unix epoch.
    fn epoch_millis(&self) -> u64;

    /// Runs `task` once the clock reaches `at` (monotonic). Returns `false`, dropping the task,
    /// when this clock has no timers; breakers then make time-driven transitions lazily, on the
    /// next call.
    fn schedule(&self, at: Duration, task: TimerTask) -> bool {
        let _ = (at, task);
        false
    }
}

/// The process's monotonic clock (TSC-based where available, through `quanta`).
///
/// With the `tokio` feature and inside a tokio runtime, its timers run on tokio; otherwise it has
/// none and time-driven transitions happen lazily.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

fn origin() -> &'static (quanta::Clock, u64) {
    static ORIGIN: OnceLock<(quanta::Clock, u64)> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        (clock, start)
    })
}

impl SystemClock {
    #[inline]
    fn now_nanos() -> u64 {
        let (clock, start) = origin();
        clock.delta_as_nanos(*start, clock.raw())
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(Self::now_nanos())
    }

    fn epoch_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    #[cfg(feature = "tokio")]
    fn schedule(&self, at: Duration, task: TimerTask) -> bool {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let delay = at.saturating_sub(self.now());
        handle.spawn(async move {
            tokio::time::sleep(delay).await;
            task();
        });
        true
    }
}

/// How often the coarse clock ticks: calls timed on it are measured to about this resolution,
/// while its thread gets the CPU on time (on a saturated machine a tick can come late, and a
/// call that spans a late tick is measured long by as much).
pub const COARSE_TICK: Duration = Duration::from_millis(1);

/// The system clock's time as of its last tick (monotonic nanos since the origin).
static COARSE_NANOS: AtomicU64 = AtomicU64::new(0);

/// Starts the coarse clock's ticker once per process (a thread that stores the system clock's
/// time every [`COARSE_TICK`]) and says whether it runs. quanta's own `Upkeep` does the same, but
/// its reading is a `quanta::Instant` with no integer view, and turning it into this clock's
/// nanoseconds costs a `Duration` round trip (a division) on every read.
fn coarse_clock_running() -> bool {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    *RUNNING.get_or_init(|| {
        COARSE_NANOS.store(SystemClock::now_nanos(), Ordering::Release);
        std::thread::Builder::new()
            .name("breakwater-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(COARSE_TICK);
                    COARSE_NANOS.store(SystemClock::now_nanos(), Ordering::Release);
                }
            })
            .is_ok()
    })
}

/// A clock that moves only when told to, for deterministic tests.
///
/// Clones share the same time. [`advance`](ManualClock::advance) runs every timer that falls due,
/// in time order, with the clock set to each timer's own time while it runs.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    now_nanos: AtomicU64,
    epoch_at_origin_ms: u64,
    timers: Mutex<Vec<(u64, u64, TimerTask)>>,
    seq: AtomicU64,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pending = self.inner.timers.lock().map(|t| t.len()).unwrap_or(0);
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .field("pending_timers", &pending)
            .finish()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at monotonic time zero, whose wall time starts at 2025-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::with_epoch_millis(1_735_689_600_000)
    }

    /// A clock at monotonic time zero whose wall time starts at `epoch_ms`.
    pub fn with_epoch_millis(epoch_ms: u64) -> Self {
        Self {
            inner: Arc::new(ManualInner {
                now_nanos: AtomicU64::new(0),
                epoch_at_origin_ms: epoch_ms,
                timers: Mutex::new(Vec::new()),
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// Moves the clock forward by `by`, running the timers that fall due on the way.
    pub fn advance(&self, by: Duration) {
        let target = self
            .inner
            .now_nanos
            .load(Ordering::Acquire)
            .saturating_add(saturating_nanos(by));
        self.run_until(target);
    }

    /// Moves the clock to `to` (no-op if it is already past), running due timers.
    pub fn set(&self, to: Duration) {
        self.run_until(saturating_nanos(to));
    }

    /// Number of timers not yet run.
    pub fn pending_timers(&self) -> usize {
        self.inner.timers.lock().map(|t| t.len()).unwrap_or(0)
    }

    fn run_until(&self, target: u64) {
        loop {
            let next = {
                let mut timers = self.inner.timers.lock().unwrap_or_else(|e| e.into_inner());
                let due = timers
                    .iter()
                    .enumerate()
                    .filter(|(_, (at, _, _))| *at <= target)
                    .min_by_key(|(_, (at, seq, _))| (*at, *seq))
                    .map(|(i, _)| i);
                due.map(|i| timers.swap_remove(i))
            };
            match next {
                Some((at, _, task)) => {
                    self.inner.now_nanos.fetch_max(at, Ordering::AcqRel);
                    task();
                }
                None => break,
            }
        }
        self.inner.now_nanos.fetch_max(target, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.inner.now_nanos.load(Ordering::Acquire))
    }

    fn epoch_millis(&self) -> u64 {
        self.inner.epoch_at_origin_ms + self.inner.now_nanos.load(Ordering::Acquire) / 1_000_000
    }

    fn schedule(&self, at: Duration, task: TimerTask) -> bool {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.inner
            .timers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((saturating_nanos(at), seq, task));
        true
    }
}

/// The clock a breaker uses: the system clock (the fast path, no dynamic dispatch), a
/// [`ManualClock`], or any other [`Clock`].
#[derive(Clone, Debug, Default)]
pub enum ClockHandle {
    /// [`SystemClock`].
    #[default]
    System,
    /// A [`ManualClock`].
    Manual(ManualClock),
    /// Any other clock.
    Custom(Arc<dyn Clock>),
}

impl ClockHandle {
    /// Monotonic nanoseconds since the clock's origin.
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match self {
            ClockHandle::System => SystemClock::now_nanos(),
            ClockHandle::Manual(m) => m.inner.now_nanos.load(Ordering::Acquire),
            ClockHandle::Custom(c) => saturating_nanos(c.now()),
        }
    }

    /// Monotonic nanoseconds as of the coarse clock's last tick: one load from memory, at most
    /// about a [`COARSE_TICK`] behind [`nanos`](Self::nanos) on the system clock; exact on the
    /// others.
    #[inline]
    pub(crate) fn coarse_nanos(&self) -> u64 {
        match self {
            ClockHandle::System => COARSE_NANOS.load(Ordering::Acquire),
            other => other.nanos(),
        }
    }

    /// Whether [`coarse_nanos`](Self::coarse_nanos) moves (starting the system clock's ticker
    /// on first use).
    pub(crate) fn has_coarse_time(&self) -> bool {
        match self {
            ClockHandle::System => coarse_clock_running(),
            _ => true,
        }
    }

    /// Converts monotonic times of this clock into ms since the epoch, reading both clocks
    /// once for any number of conversions.
    pub(crate) fn epoch_converter(&self) -> impl Fn(u64) -> u64 + use<> {
        let now = self.nanos();
        let wall = self.epoch_millis();
        move |nanos| wall.saturating_sub(now.saturating_sub(nanos) / 1_000_000)
    }
}

impl Clock for ClockHandle {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos())
    }

    fn epoch_millis(&self) -> u64 {
        match self {
            ClockHandle::System => SystemClock.epoch_millis(),
            ClockHandle::Manual(m) => m.epoch_millis(),
            ClockHandle::Custom(c) => c.epoch_millis(),
        }
    }

    fn schedule(&self, at: Duration, task: TimerTask) -> bool {
        match self {
            ClockHandle::System => SystemClock.schedule(at, task),
            ClockHandle::Manual(m) => m.schedule(at, task),
            ClockHandle::Custom(c) => c.schedule(at, task),
        }
    }
}

impl From<SystemClock> for ClockHandle {
    fn from(_: SystemClock) -> Self {
        ClockHandle::System
    }
}

impl From<ManualClock> for ClockHandle {
    fn from(clock: ManualClock) -> Self {
        ClockHandle::Manual(clock)
    }
}

impl From<Arc<dyn Clock>> for ClockHandle {
    fn from(clock: Arc<dyn Clock>) -> Self {
        ClockHandle::Custom(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn manual_clock_runs_due_timers_in_order_at_their_time() {
        let clock = ManualClock::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for at in [30u64, 10, 20] {
            let log = log.clone();
            let c = clock.clone();
            clock.schedule(
                Duration::from_millis(at),
                Box::new(move || log.lock().unwrap().push((at, c.now().as_millis() as u64))),
            );
        }
        clock.advance(Duration::from_millis(25));
        assert_eq!(*log.lock().unwrap(), vec![(10, 10), (20, 20)]);
        assert_eq!(clock.now(), Duration::from_millis(25));
        assert_eq!(clock.pending_timers(), 1);
        clock.advance(Duration::from_millis(5));
        assert_eq!(log.lock().unwrap().len(), 3);
    }

    #[test]
    fn timer_scheduling_another_timer_that_is_due_runs_it_too() {
        let clock = ManualClock::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let (c, r) = (clock.clone(), runs.clone());
        clock.schedule(
            Duration::from_secs(1),
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
                let r2 = r.clone();
                c.schedule(
                    Duration::from_secs(2),
                    Box::new(move || {
                        r2.fetch_add(1, Ordering::SeqCst);
                    }),
                );
            }),
        );
        clock.advance(Duration::from_secs(3));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn epoch_follows_monotonic_time() {
        let clock = ManualClock::with_epoch_millis(1_000);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.epoch_millis(), 2_500);
        let handle = ClockHandle::from(clock);
        assert_eq!(handle.epoch_converter()(500_000_000), 1_500);
    }

    #[test]
    fn coarse_system_time_follows_the_precise_one() {
        let clock = ClockHandle::System;
        assert!(clock.has_coarse_time());
        let before = clock.nanos();
        let coarse = clock.coarse_nanos();
        assert!(
            coarse > 0,
            "the first reading is stored before the ticker starts"
        );
        assert!(coarse <= clock.nanos());
        // It moves: wait (bounded) for a tick past `before`.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while clock.coarse_nanos() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the coarse clock never ticked"
            );
            std::thread::yield_now();
        }
        let manual = ClockHandle::from(ManualClock::new());
        assert_eq!(manual.coarse_nanos(), manual.nanos());
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(b >= a);
        assert!(SystemClock.epoch_millis() > 1_600_000_000_000);
    }
}
