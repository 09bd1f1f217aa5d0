//! Active health probes: a check run on an interval with a timeout, its status decided by
//! thresholds, its recent results kept, optionally feeding a breaker.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Clock, ClockHandle, ConfigError, State, Trigger};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tower_service::Service;

use super::report::Status;
use crate::error::BoxError;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Default interval between two runs of a probe.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default time a run may take before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default consecutive failures that make a probe fail.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default consecutive successes that make a failing probe pass again.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Default number of results kept.
pub const DEFAULT_HISTORY: usize = 20;

/// One run of a probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// When it ended (ms since the epoch).
    pub at: u64,
    /// Whether the check succeeded in time.
    pub ok: bool,
    /// Whether it succeeded but slower than the slow threshold.
    pub slow: bool,
    /// How long it took (the timeout, when it timed out).
    #[serde(rename = "latencyMs", serialize_with = "ser_ms")]
    pub latency: Duration,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1_000.0)
}

/// A probe's settings, changeable at run time. Their JSON shape (camelCase, durations in whole
/// ms with an `Ms` suffix) is what the ops API shows and what a change replaces fields of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSettings {
    /// Time between the end of one run and the start of the next.
    #[serde(
        rename = "intervalMs",
        serialize_with = "ser_whole_ms",
        deserialize_with = "de_ms"
    )]
    pub interval: Duration,
    /// Time a run may take.
    #[serde(
        rename = "timeoutMs",
        serialize_with = "ser_whole_ms",
        deserialize_with = "de_ms"
    )]
    pub timeout: Duration,
    /// A success slower than this is `warn`.
    #[serde(
        rename = "slowThresholdMs",
        serialize_with = "ser_opt_ms",
        deserialize_with = "de_opt_ms"
    )]
    pub slow_threshold: Option<Duration>,
    /// Consecutive failures that make the probe `fail`.
    pub failure_threshold: u32,
    /// Consecutive successes that make a failing probe pass again.
    pub success_threshold: u32,
}

/// Whole milliseconds, a nonzero duration under 1 ms counting as 1 (read back, it must stay
/// valid).
fn ser_whole_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    s.serialize_u64(if ms == 0 && !d.is_zero() { 1 } else { ms })
}

fn de_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn de_opt_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_whole_ms(d, s),
        None => s.serialize_none(),
    }
}

impl ProbeSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::new("interval", "must be more than zero"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be more than zero"));
        }
        if self.failure_threshold == 0 {
            return Err(ConfigError::new("failure_threshold", "must be at least 1"));
        }
        if self.success_threshold == 0 {
            return Err(ConfigError::new("success_threshold", "must be at least 1"));
        }
        Ok(())
    }
}

/// How many times a probe ran, by result, since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeCounts {
    /// Succeeded in time, and no slower than the slow threshold.
    pub ok: u64,
    /// Succeeded, but slower than the slow threshold.
    pub slow: u64,
    /// Failed or timed out.
    pub failed: u64,
}

/// A probe's state as the ops API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeView {
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: Status,
    /// Whether it fails readiness when failing.
    pub critical: bool,
    /// Whether it is running.
    pub running: bool,
    /// Its settings.
    pub settings: ProbeSettings,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Successes in a row.
    pub consecutive_successes: u32,
    /// Recent runs, oldest first.
    pub history: Vec<ProbeResult>,
}

/// Builds a [`Probe`]: see [`Probe::builder`].
#[must_use]
pub struct ProbeBuilder {
    name: String,
    check: CheckFn,
    settings: ProbeSettings,
    history: usize,
    critical: bool,
    breaker: Option<CircuitBreaker>,
    clock: ClockHandle,
}

impl fmt::Debug for ProbeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeBuilder")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("critical", &self.critical)
            .finish_non_exhaustive()
    }
}

impl ProbeBuilder {
    /// Time between the end of one run and the start of the next.
    pub fn interval(mut self, d: Duration) -> Self {
        self.settings.interval = d;
        self
    }

    /// Time a run may take before it counts as failed.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.settings.timeout = d;
        self
    }

    /// A success slower than this makes the probe `warn`.
    pub fn slow_threshold(mut self, d: Duration) -> Self {
        self.settings.slow_threshold = Some(d);
        self
    }

    /// Consecutive failures that make the probe `fail` (default 3).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.settings.failure_threshold = n;
        self
    }

    /// Consecutive successes that make a failing probe pass again (default 1).
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.settings.success_threshold = n;
        self
    }

    /// How many results to keep (default 20).
    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// A failing critical probe fails readiness.
    pub fn critical(mut self, on: bool) -> Self {
        self.critical = on;
        self
    }

    /// Feeds `breaker`: when the probe starts failing the breaker opens (from CLOSED); a
    /// passing probe moves an OPEN breaker to HALF_OPEN, where real calls decide.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The clock that stamps results (default: the system clock).
    pub fn clock(mut self, clock: impl Into<ClockHandle>) -> Self {
        self.clock = clock.into();
        self
    }

    /// The probe, not running yet: give it to
    /// [`HealthRegistry::add_probe`](super::HealthRegistry::add_probe) or call
    /// [`start`](Probe::start) inside a tokio runtime. Invalid settings are refused, naming the
    /// field.
    pub fn build(self) -> Result<Probe, ConfigError> {
        self.settings.validate()?;
        if self.history == 0 {
            return Err(ConfigError::new("history", "must be at least 1"));
        }
        Ok(Probe {
            inner: Arc::new(Inner {
                name: self.name,
                check: self.check,
                critical: self.critical,
                breaker: self.breaker,
                clock: self.clock,
                history_len: self.history,
                state: Mutex::new(ProbeState {
                    settings: self.settings,
                    status: Status::Warn,
                    consecutive_failures: 0,
                    consecutive_successes: 0,
                    history: VecDeque::with_capacity(self.history),
                    counts: ProbeCounts::default(),
                    task: false,
                }),
                running: AtomicBool::new(false),
                wake: Arc::new(Notify::new()),
                on_change: Mutex::new(None),
            }),
        })
    }
}

/// An active health check of a dependency, run on tokio on an interval with a timeout.
///
/// Runs never overlap (the next starts an interval after the previous one ended) and never
/// hold up requests. A success slower than the slow threshold is `warn`; `failure_threshold`
/// failures in a row are `fail`, and a failing probe passes again after `success_threshold`
/// successes in a row; a failure below the threshold is `warn`. Before its first result a
/// probe is `warn`. Clones share the probe.
///
/// ```
/// use std::time::Duration;
/// use breakwater::Registry;
/// use breakwater::tower::health::{HealthRegistry, Probe};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let health = HealthRegistry::new(&Registry::new());
/// let db = Probe::builder("db", || async { Ok(()) })
///     .interval(Duration::from_secs(5))
///     .timeout(Duration::from_secs(1))
///     .critical(true)
///     .build()
///     .unwrap();
/// health.add_probe(db.clone());
/// db.set_interval(Duration::from_secs(1)).unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct Probe {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    check: CheckFn,
    critical: bool,
    breaker: Option<CircuitBreaker>,
    clock: ClockHandle,
    history_len: usize,
    state: Mutex<ProbeState>,
    running: AtomicBool,
    /// Wakes the task: settings changed, started or stopped.
    wake: Arc<Notify>,
    /// Told when the status changes.
    on_change: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

struct ProbeState {
    settings: ProbeSettings,
    status: Status,
    consecutive_failures: u32,
    consecutive_successes: u32,
    history: VecDeque<ProbeResult>,
    counts: ProbeCounts,
    /// Whether a task has been spawned.
    task: bool,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("name", &self.inner.name)
            .field("status", &self.status())
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe running `check`, an async function whose `Err` says why the dependency is
    /// unhealthy.
    pub fn builder<F, Fut>(name: impl Into<String>, check: F) -> ProbeBuilder
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        ProbeBuilder {
            name: name.into(),
            check: Arc::new(move || Box::pin(check())),
            settings: ProbeSettings {
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
                slow_threshold: None,
                failure_threshold: DEFAULT_FAILURE_THRESHOLD,
                success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            },
            history: DEFAULT_HISTORY,
            critical: false,
            breaker: None,
            clock: ClockHandle::System,
        }
    }

    /// A probe that calls a tower `Service` with `make_request()`: a response passes, an error
    /// fails. For HTTP, [`http`](Self::http) also judges the status.
    pub fn service<S, Req, M>(name: impl Into<String>, service: S, make_request: M) -> ProbeBuilder
    where
        S: Service<Req> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        Req: Send + 'static,
        M: Fn() -> Req + Send + Sync + 'static,
    {
        let make_request = Arc::new(make_request);
        Self::builder(name, move || {
            let svc = service.clone();
            let req = make_request();
            async move {
                use tower::ServiceExt;
                svc.oneshot(req)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.into().to_string())
            }
        })
    }

    /// A probe that sends `make_request()` through an HTTP client `Service`: 2xx and 3xx pass,
    /// any other status or an error fails.
    pub fn http<S, B, RB, M>(name: impl Into<String>, client: S, make_request: M) -> ProbeBuilder
    where
        S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Send + 'static,
        RB: Send + 'static,
        M: Fn() -> http::Request<B> + Send + Sync + 'static,
    {
        let make_request = Arc::new(make_request);
        Self::builder(name, move || {
            let svc = client.clone();
            let req = make_request();
            async move {
                use tower::ServiceExt;
                let res = svc.oneshot(req).await.map_err(|e| e.into().to_string())?;
                let status = res.status();
                if status.is_success() || status.is_redirection() {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                }
            }
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether a failure fails readiness.
    pub fn is_critical(&self) -> bool {
        self.inner.critical
    }

    /// Its status now.
    pub fn status(&self) -> Status {
        self.lock().status
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Its runs so far, by result.
    pub fn counts(&self) -> ProbeCounts {
        self.lock().counts
    }

    /// The latest result.
    pub fn last(&self) -> Option<ProbeResult> {
        self.lock().history.back().cloned()
    }

    /// Its state, settings and recent results.
    pub fn view(&self) -> ProbeView {
        let s = self.lock();
        ProbeView {
            name: self.inner.name.clone(),
            status: s.status,
            critical: self.inner.critical,
            running: self.is_running(),
            settings: s.settings,
            consecutive_failures: s.consecutive_failures,
            consecutive_successes: s.consecutive_successes,
            history: s.history.iter().cloned().collect(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> ProbeSettings {
        self.lock().settings
    }

    /// Changes the interval (from the next wait on).
    pub fn set_interval(&self, d: Duration) -> Result<(), ConfigError> {
        self.update(|s| s.interval = d)
    }

    /// Changes the timeout (from the next run on).
    pub fn set_timeout(&self, d: Duration) -> Result<(), ConfigError> {
        self.update(|s| s.timeout = d)
    }

    /// Changes the slow threshold.
    pub fn set_slow_threshold(&self, d: Option<Duration>) -> Result<(), ConfigError> {
        self.update(|s| s.slow_threshold = d)
    }

    /// Changes the failure and success thresholds.
    pub fn set_thresholds(&self, failures: u32, successes: u32) -> Result<(), ConfigError> {
        self.update(|s| {
            s.failure_threshold = failures;
            s.success_threshold = successes;
        })
    }

    /// Applies `f` to the settings, validated; a refused change changes nothing.
    pub fn update(&self, f: impl FnOnce(&mut ProbeSettings)) -> Result<(), ConfigError> {
        let mut state = self.lock();
        let mut settings = state.settings;
        f(&mut settings);
        settings.validate()?;
        state.settings = settings;
        drop(state);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Starts running (inside a tokio runtime): the first run is at once. Starting a running
    /// probe does nothing.
    pub fn start(&self) {
        if self.inner.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let spawn = {
            let mut s = self.lock();
            !std::mem::replace(&mut s.task, true)
        };
        if spawn {
            tokio::spawn(run(Arc::downgrade(&self.inner)));
        } else {
            self.inner.wake.notify_one();
        }
    }

    /// Stops after the run in progress, if any; [`start`](Self::start) resumes.
    pub fn stop(&self) {
        self.inner.running.store(false, Ordering::Release);
        self.inner.wake.notify_one();
    }

    /// Runs the check once now, outside the schedule, and records the result.
    pub async fn run_once(&self) -> ProbeResult {
        run_check(&self.inner).await
    }

    pub(crate) fn on_change(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *self
            .inner
            .on_change
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    fn lock(&self) -> MutexGuard<'_, ProbeState> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a result; returns the new status when it changed.
    fn record(&self, result: ProbeResult) -> Option<(Status, Status)> {
        let mut s = self.lock();
        let before = s.status;
        if result.ok {
            s.consecutive_successes = s.consecutive_successes.saturating_add(1);
            s.consecutive_failures = 0;
            if before != Status::Fail || s.consecutive_successes >= s.settings.success_threshold {
                s.status = if result.slow {
                    Status::Warn
                } else {
                    Status::Pass
                };
            }
        } else {
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.consecutive_successes = 0;
            s.status = if s.consecutive_failures >= s.settings.failure_threshold
                || before == Status::Fail
            {
                Status::Fail
            } else {
                Status::Warn
            };
        }
        let counter = match (result.ok, result.slow) {
            (true, false) => &mut s.counts.ok,
            (true, true) => &mut s.counts.slow,
            (false, _) => &mut s.counts.failed,
        };
        *counter += 1;
        if s.history.len() == self.history_len {
            s.history.pop_front();
        }
        s.history.push_back(result);
        let after = s.status;
        (before != after).then_some((before, after))
    }

    fn feed_breaker(&self, after: Status) {
        let Some(breaker) = &self.breaker else { return };
        match (after, breaker.state()) {
            (Status::Fail, State::Closed) => {
                let _ = breaker.transition_to_by(State::Open, Trigger::Probe);
            }
            (Status::Pass, State::Open) => {
                let _ = breaker.transition_to_by(State::HalfOpen, Trigger::Probe);
            }
            _ => {}
        }
    }
}

async fn run_check(inner: &Inner) -> ProbeResult {
    let settings = inner.lock().settings;
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(settings.timeout, (inner.check)()).await;
    let latency = started.elapsed();
    let (ok, error) = match outcome {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => (false, Some(e)),
        Err(_) => (
            false,
            Some(format!(
                "timed out after {} ms",
                settings.timeout.as_millis()
            )),
        ),
    };
    let result = ProbeResult {
        at: inner.clock.epoch_millis(),
        ok,
        slow: ok && settings.slow_threshold.is_some_and(|t| latency > t),
        latency,
        error,
    };
    if let Some((_, after)) = inner.record(result.clone()) {
        inner.feed_breaker(after);
        let hook = inner
            .on_change
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook();
        }
    } else if result.ok && !result.slow {
        // Still passing: an OPEN breaker may probe again.
        if inner.lock().status == Status::Pass {
            inner.feed_breaker(Status::Pass);
        }
    }
    result
}

/// The probe's task: checks while the probe is running, and ends once every handle is gone
/// (noticed within an interval).
async fn run(inner: Weak<Inner>) {
    loop {
        let Some(probe) = inner.upgrade() else { return };
        let running = probe.running.load(Ordering::Acquire);
        if running {
            run_check(&probe).await;
        }
        let interval = probe.lock().settings.interval;
        let wake = probe.wake.clone();
        drop(probe);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}
