//! Breaker configuration: a validated [`Config`], its [`ConfigBuilder`], and the presets.
//!
//! Names follow Resilience4j where it has one. Every invalid value is refused by
//! [`ConfigBuilder::build`] with a [`ConfigError`] naming the field; nothing panics.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use breakwater::{Config, SlidingWindow, WaitInOpen};
//!
//! let config = Config::builder()
//!     .failure_rate_threshold(50.0)
//!     .sliding_window(SlidingWindow::Count(100))
//!     .minimum_number_of_calls(20)
//!     .wait_in_open(WaitInOpen::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(60)))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.minimum_number_of_calls(), 20);
//!
//! let err = Config::builder().failure_rate_threshold(150.0).build().unwrap_err();
//! assert_eq!(err.field(), "failure_rate_threshold");
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::WaitInOpen;
use crate::state::State;

/// Resilience4j's default failure-rate threshold, in percent.
pub const DEFAULT_FAILURE_RATE_THRESHOLD: f32 = 50.0;
/// Default slow-call duration threshold (Resilience4j's).
pub const DEFAULT_SLOW_CALL_DURATION_THRESHOLD: Duration = Duration::from_secs(60);
/// Default count-based sliding window size.
pub const DEFAULT_SLIDING_WINDOW_SIZE: u32 = 100;
/// Default minimum number of calls before a rate is judged.
pub const DEFAULT_MINIMUM_NUMBER_OF_CALLS: u32 = 100;
/// Default number of calls permitted in HALF_OPEN.
pub const DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN: u32 = 10;
/// Default wait in OPEN before probing.
pub const DEFAULT_WAIT_IN_OPEN: Duration = Duration::from_secs(60);
/// The smallest slow-call duration threshold judged on the coarse clock (the system clock's
/// time as of its last [`COARSE_TICK`](crate::clock::COARSE_TICK), one load from memory): at
/// 20 ticks the judgement is within 5 %. Smaller thresholds, and calls whose durations are
/// recorded ([`ConfigBuilder::record_call_durations`]), are timed on the precise clock.
pub const COARSE_TIMING_MIN_THRESHOLD: Duration = Duration::from_millis(20);
/// Largest count-based window.
pub const MAX_COUNT_WINDOW: u32 = 1_000_000;
/// Largest time-based window, in seconds.
pub const MAX_TIME_WINDOW_SECS: u64 = 3_600;
/// Largest number of permitted calls in HALF_OPEN.
pub const MAX_PERMITTED_CALLS_IN_HALF_OPEN: u32 = 1_023;

/// The sliding window over which rates are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "size", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SlidingWindow {
    /// The last `n` recorded calls (1..=1,000,000).
    Count(u32),
    /// The calls of the last `d` (whole seconds, 1 s..=1 h), in 1-second buckets.
    #[serde(serialize_with = "ser_secs")]
    Time(Duration),
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// How a breaker's health is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthMode {
    /// Not reported at all.
    Ignore,
    /// Reported: open degrades (warn), never fails.
    #[default]
    Report,
    /// Critical: open fails readiness.
    Critical,
}

/// An invalid configuration value, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    message: String,
}

impl ConfigError {
    /// An error about `field` (for builders of other crates that validate the same way).
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// The name of the offending field, as in the builder (snake_case).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A validated breaker configuration. Build one with [`Config::builder`], or start from a preset
/// ([`Config::read`], [`Config::write`], [`Config::auth`]) and [`Config::to_builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub(crate) failure_rate_threshold: Option<f32>,
    pub(crate) slow_call_rate_threshold: Option<f32>,
    pub(crate) slow_call_duration_threshold: Duration,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) sliding_window: SlidingWindow,
    pub(crate) minimum_number_of_calls: u32,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) success_threshold: Option<u32>,
    pub(crate) max_wait_in_half_open: Option<Duration>,
    pub(crate) state_after_max_wait_in_half_open: State,
    pub(crate) wait_in_open: WaitInOpen,
    pub(crate) automatic_transition_to_half_open: bool,
    pub(crate) record_call_durations: bool,
    pub(crate) health: HealthMode,
    pub(crate) learned_slow_call_threshold: Option<crate::LearnedThreshold>,
    pub(crate) slo_objective: Option<f64>,
}

impl Default for Config {
    /// Resilience4j's defaults, except that the slow-call policy is off (Resilience4j's 100 % of
    /// calls over 60 s rarely trips, and leaving it off keeps the clock off the hot path).
    fn default() -> Self {
        Self {
            failure_rate_threshold: Some(DEFAULT_FAILURE_RATE_THRESHOLD),
            slow_call_rate_threshold: None,
            slow_call_duration_threshold: DEFAULT_SLOW_CALL_DURATION_THRESHOLD,
            consecutive_failures: None,
            sliding_window: SlidingWindow::Count(DEFAULT_SLIDING_WINDOW_SIZE),
            minimum_number_of_calls: DEFAULT_MINIMUM_NUMBER_OF_CALLS,
            permitted_calls_in_half_open: DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN,
            success_threshold: None,
            max_wait_in_half_open: None,
            state_after_max_wait_in_half_open: State::Open,
            wait_in_open: WaitInOpen::Fixed(DEFAULT_WAIT_IN_OPEN),
            automatic_transition_to_half_open: false,
            record_call_durations: false,
            health: HealthMode::Report,
            learned_slow_call_threshold: None,
            slo_objective: None,
        }
    }
}

impl Config {
    /// A builder starting from [`Config::default`].
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// A builder starting from this configuration.
    pub fn to_builder(&self) -> ConfigBuilder {
        ConfigBuilder {
            config: self.clone(),
        }
    }

    /// Preset for reads: trips after 3 consecutive failures, waits 3 s (doubling to at most 15 s),
    /// closes after 2 consecutive successful probes.
    pub fn read() -> Self {
        Self::preset(3, 3, 15, 2)
    }

    /// Preset for writes: 5 consecutive failures, 10 s (up to 60 s), 3 successes.
    pub fn write() -> Self {
        Self::preset(5, 10, 60, 3)
    }

    /// Preset for authentication: 10 consecutive failures, 5 s (up to 30 s), 2 successes.
    pub fn auth() -> Self {
        Self::preset(10, 5, 30, 2)
    }

    /// The preset with this name (`read`, `write` or `auth`).
    pub fn preset_named(name: &str) -> Option<Self> {
        match name {
            "read" => Some(Self::read()),
            "write" => Some(Self::write()),
            "auth" => Some(Self::auth()),
            _ => None,
        }
    }

    fn preset(failures: u32, wait_s: u64, max_s: u64, successes: u32) -> Self {
        Self {
            failure_rate_threshold: None,
            consecutive_failures: Some(failures),
            wait_in_open: WaitInOpen::Exponential {
                initial: Duration::from_secs(wait_s),
                multiplier: 2.0,
                max: Duration::from_secs(max_s),
                jitter: 0.0,
            },
            success_threshold: Some(successes),
            permitted_calls_in_half_open: successes,
            ..Self::default()
        }
    }

    /// Failure rate (percent, `0 < t <= 100`) at or above which the breaker trips; `None`: off.
    pub fn failure_rate_threshold(&self) -> Option<f32> {
        self.failure_rate_threshold
    }
    /// Slow-call rate (percent) at or above which the breaker trips; `None`: off.
    pub fn slow_call_rate_threshold(&self) -> Option<f32> {
        self.slow_call_rate_threshold
    }
    /// Calls longer than this are slow.
    pub fn slow_call_duration_threshold(&self) -> Duration {
        self.slow_call_duration_threshold
    }
    /// Consecutive failures that trip the breaker; `None`: off.
    pub fn consecutive_failures(&self) -> Option<u32> {
        self.consecutive_failures
    }
    /// The sliding window.
    pub fn sliding_window(&self) -> SlidingWindow {
        self.sliding_window
    }
    /// Calls needed in the window before a rate is judged (capped at a count window's size).
    pub fn minimum_number_of_calls(&self) -> u32 {
        self.minimum_number_of_calls
    }
    /// The effective minimum: for a count window, at most its size.
    pub(crate) fn effective_minimum_calls(&self) -> u32 {
        match self.sliding_window {
            SlidingWindow::Count(n) => self.minimum_number_of_calls.min(n),
            SlidingWindow::Time(_) => self.minimum_number_of_calls,
        }
    }
    /// Calls admitted in HALF_OPEN.
    pub fn permitted_calls_in_half_open(&self) -> u32 {
        self.permitted_calls_in_half_open
    }
    /// Consecutive successes in HALF_OPEN that close the breaker; `None`: the rate decides.
    pub fn success_threshold(&self) -> Option<u32> {
        self.success_threshold
    }
    /// Longest time in HALF_OPEN before moving to
    /// [`state_after_max_wait_in_half_open`](Self::state_after_max_wait_in_half_open).
    pub fn max_wait_in_half_open(&self) -> Option<Duration> {
        self.max_wait_in_half_open
    }
    /// Where a breaker goes after `max_wait_in_half_open` (OPEN or CLOSED).
    pub fn state_after_max_wait_in_half_open(&self) -> State {
        self.state_after_max_wait_in_half_open
    }
    /// How long to stay OPEN.
    pub fn wait_in_open(&self) -> &WaitInOpen {
        &self.wait_in_open
    }
    /// Whether a timer moves OPEN to HALF_OPEN without waiting for a call.
    pub fn automatic_transition_to_half_open(&self) -> bool {
        self.automatic_transition_to_half_open
    }
    /// Whether every call's duration is measured precisely and kept in the breaker's
    /// histogram.
    pub fn record_call_durations(&self) -> bool {
        self.record_call_durations
    }
    /// How the breaker's health is reported.
    pub fn health(&self) -> HealthMode {
        self.health
    }

    /// The slow-call threshold learned from the breaker's own latency, if on.
    pub fn learned_slow_call_threshold(&self) -> Option<crate::LearnedThreshold> {
        self.learned_slow_call_threshold
    }

    /// The service-level objective of the calls through the breaker (the fraction that must
    /// succeed, e.g. 0.999), if one is set.
    pub fn slo_objective(&self) -> Option<f64> {
        self.slo_objective
    }

    /// Whether calls must be timed (a slow-call policy is on, durations are recorded, or the
    /// slow-call threshold is learned).
    pub(crate) fn needs_timing(&self) -> bool {
        self.slow_call_rate_threshold.is_some()
            || self.record_call_durations
            || self.learned_slow_call_threshold.is_some()
    }

    /// Whether timing can use the coarse clock: only slow calls are judged, on a threshold of
    /// at least [`COARSE_TIMING_MIN_THRESHOLD`].
    pub(crate) fn coarse_timing(&self) -> bool {
        let least = match self.learned_slow_call_threshold {
            Some(l) => Duration::from_millis(l.min_ms).min(self.slow_call_duration_threshold),
            None => self.slow_call_duration_threshold,
        };
        !self.record_call_durations && least >= COARSE_TIMING_MIN_THRESHOLD
    }

    /// The serde view used in snapshots and the ops API (camelCase, durations in ms, thresholds
    /// in percent).
    pub fn view(&self) -> ConfigView {
        let (window_type, window_size) = match self.sliding_window {
            SlidingWindow::Count(n) => (WindowType::CountBased, n as u64),
            SlidingWindow::Time(d) => (WindowType::TimeBased, d.as_secs()),
        };
        let (wait_ms, max_ms, multiplier, jitter) = match &self.wait_in_open {
            WaitInOpen::Fixed(d) => (millis(*d), millis(*d), 1.0, 0.0),
            WaitInOpen::Exponential {
                initial,
                multiplier,
                max,
                jitter,
            } => (millis(*initial), millis(*max), *multiplier, *jitter),
        };
        ConfigView {
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            slow_call_duration_threshold_ms: millis(self.slow_call_duration_threshold),
            consecutive_failures: self.consecutive_failures,
            sliding_window_type: window_type,
            sliding_window_size: window_size,
            minimum_number_of_calls: self.minimum_number_of_calls,
            permitted_calls_in_half_open: self.permitted_calls_in_half_open,
            success_threshold: self.success_threshold,
            max_wait_in_half_open_ms: self.max_wait_in_half_open.map(millis),
            state_after_max_wait_in_half_open: self.state_after_max_wait_in_half_open,
            wait_in_open_ms: wait_ms,
            max_wait_in_open_ms: max_ms,
            wait_in_open_multiplier: multiplier,
            wait_in_open_jitter: jitter,
            automatic_transition_to_half_open: self.automatic_transition_to_half_open,
            learned_slow_call_threshold: self.learned_slow_call_threshold,
            slo_objective: self.slo_objective,
            record_call_durations: self.record_call_durations,
            health: self.health,
        }
    }
}

/// A duration in whole milliseconds, a nonzero one under 1 ms counting as 1 (so that a view
/// read back never turns a threshold into zero).
fn millis(d: Duration) -> u64 {
    match u64::try_from(d.as_millis()).unwrap_or(u64::MAX) {
        0 if !d.is_zero() => 1,
        ms => ms,
    }
}

/// The kind of sliding window, as the JSON names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WindowType {
    /// [`SlidingWindow::Count`]: the size is a number of calls.
    CountBased,
    /// [`SlidingWindow::Time`]: the size is seconds.
    TimeBased,
}

/// The JSON shape of a [`Config`]: camelCase, durations in whole ms with an `Ms` suffix,
/// thresholds in percent (`null` for a policy that is off). It is the one description of the
/// fields: the ops API shows it, and a change at run time is this shape with some fields
/// replaced, read back by [`to_config`](ConfigView::to_config) (unknown fields refused).
///
/// ```
/// use breakwater::Config;
///
/// let config = Config::builder().failure_rate_threshold(25.0).build().unwrap();
/// let mut view = config.view();
/// assert_eq!(serde_json::to_value(&view).unwrap()["failureRateThreshold"], 25.0);
/// view.failure_rate_threshold = None;
/// view.consecutive_failures = Some(5);
/// let changed = view.to_config().unwrap();
/// assert_eq!(changed.failure_rate_threshold(), None);
/// assert_eq!(changed.consecutive_failures(), Some(5));
/// // Every change is validated again.
/// view.consecutive_failures = None;
/// assert_eq!(view.to_config().unwrap_err().field(), "failure_rate_threshold");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigView {
    /// Failure rate that trips, in percent (0 < t <= 100; `50.0` is half the calls), `null`: off.
    pub failure_rate_threshold: Option<f32>,
    /// Slow-call rate that trips, in percent, `null`: off.
    pub slow_call_rate_threshold: Option<f32>,
    /// A call taking longer than this many milliseconds is slow.
    pub slow_call_duration_threshold_ms: u64,
    /// Failures in a row that trip, `null`: off.
    pub consecutive_failures: Option<u32>,
    /// `COUNT_BASED` (the last N calls) or `TIME_BASED` (the last N seconds).
    pub sliding_window_type: WindowType,
    /// The window's size: calls (count-based) or seconds (time-based).
    pub sliding_window_size: u64,
    /// Calls in the window before a rate is judged.
    pub minimum_number_of_calls: u32,
    /// Probe calls admitted in HALF_OPEN.
    pub permitted_calls_in_half_open: u32,
    /// Successful probes in a row that close, `null`: the probes' rate decides.
    pub success_threshold: Option<u32>,
    /// Longest stay in HALF_OPEN, in milliseconds, `null`: until the probes report.
    pub max_wait_in_half_open_ms: Option<u64>,
    /// Where a breaker goes after `maxWaitInHalfOpenMs`: `OPEN` or `CLOSED`.
    pub state_after_max_wait_in_half_open: State,
    /// The (first) wait in OPEN, in milliseconds.
    pub wait_in_open_ms: u64,
    /// The longest wait in OPEN as it grows, in milliseconds (equal to `waitInOpenMs` when fixed).
    pub max_wait_in_open_ms: u64,
    /// The wait's growth per consecutive re-open (1: fixed).
    pub wait_in_open_multiplier: f64,
    /// Random spread of each wait, as a fraction (0..1) of it.
    pub wait_in_open_jitter: f64,
    /// Whether a timer moves OPEN to HALF_OPEN without waiting for a call.
    pub automatic_transition_to_half_open: bool,
    /// Whether call durations are kept in a histogram (precise clock).
    pub record_call_durations: bool,
    /// How health reports the breaker: `ignore`, `report` or `critical`.
    pub health: HealthMode,
    /// A slow-call threshold learned from the breaker's own latency (`{quantile, factor,
    /// minMs, maxMs, warmupCalls, horizonMinutes}`), `null`: the static one only.
    #[serde(default)]
    pub learned_slow_call_threshold: Option<crate::LearnedThreshold>,
    /// The fraction of calls that must succeed (0 < o < 1, e.g. `0.999`), for error-budget
    /// burn-rate alerts; `null`: none.
    #[serde(default)]
    pub slo_objective: Option<f64>,
}

impl ConfigView {
    /// The configuration this view describes, validated as by [`ConfigBuilder::build`] (errors
    /// name the builder's field). A wait in OPEN with multiplier 1 and no jitter is fixed.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let ms = Duration::from_millis;
        let window = match self.sliding_window_type {
            WindowType::CountBased => SlidingWindow::Count(
                u32::try_from(self.sliding_window_size)
                    .map_err(|_| ConfigError::new("sliding_window", "is too large"))?,
            ),
            WindowType::TimeBased => {
                SlidingWindow::Time(Duration::from_secs(self.sliding_window_size))
            }
        };
        let initial = ms(self.wait_in_open_ms);
        let wait = if self.wait_in_open_multiplier == 1.0 && self.wait_in_open_jitter == 0.0 {
            WaitInOpen::Fixed(initial)
        } else {
            WaitInOpen::exponential(
                initial,
                self.wait_in_open_multiplier,
                ms(self.max_wait_in_open_ms),
            )
            .with_jitter(self.wait_in_open_jitter)
        };
        let mut b = Config::builder()
            .slow_call_duration_threshold(ms(self.slow_call_duration_threshold_ms))
            .sliding_window(window)
            .minimum_number_of_calls(self.minimum_number_of_calls)
            .permitted_calls_in_half_open(self.permitted_calls_in_half_open)
            .state_after_max_wait_in_half_open(self.state_after_max_wait_in_half_open)
            .wait_in_open(wait)
            .automatic_transition_to_half_open(self.automatic_transition_to_half_open)
            .record_call_durations(self.record_call_durations)
            .health(self.health);
        b.config.failure_rate_threshold = self.failure_rate_threshold;
        b.config.slow_call_rate_threshold = self.slow_call_rate_threshold;
        b.config.consecutive_failures = self.consecutive_failures;
        b.config.success_threshold = self.success_threshold;
        b.config.max_wait_in_half_open = self.max_wait_in_half_open_ms.map(ms);
        b.config.learned_slow_call_threshold = self.learned_slow_call_threshold;
        b.config.slo_objective = self.slo_objective;
        b.build()
    }
}

/// Builds a [`Config`]; [`build`](ConfigBuilder::build) validates every field.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Trip when the failure rate is at or above `percent` (0 < percent <= 100).
    pub fn failure_rate_threshold(mut self, percent: f32) -> Self {
        self.config.failure_rate_threshold = Some(percent);
        self
    }
    /// Turn the failure-rate policy off.
    pub fn no_failure_rate_threshold(mut self) -> Self {
        self.config.failure_rate_threshold = None;
        self
    }
    /// Trip when the slow-call rate is at or above `percent` (turns call timing on).
    pub fn slow_call_rate_threshold(mut self, percent: f32) -> Self {
        self.config.slow_call_rate_threshold = Some(percent);
        self
    }
    /// Turn the slow-call policy off.
    pub fn no_slow_call_rate_threshold(mut self) -> Self {
        self.config.slow_call_rate_threshold = None;
        self
    }
    /// A call taking strictly longer than this is slow.
    pub fn slow_call_duration_threshold(mut self, d: Duration) -> Self {
        self.config.slow_call_duration_threshold = d;
        self
    }
    /// Trip after `n` consecutive failures (n >= 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = Some(n);
        self
    }
    /// Turn the consecutive-failures policy off.
    pub fn no_consecutive_failures(mut self) -> Self {
        self.config.consecutive_failures = None;
        self
    }
    /// The sliding window.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.config.sliding_window = window;
        self
    }
    /// Calls needed before rates are judged (>= 1).
    pub fn minimum_number_of_calls(mut self, n: u32) -> Self {
        self.config.minimum_number_of_calls = n;
        self
    }
    /// Calls admitted in HALF_OPEN (1..=1023).
    pub fn permitted_calls_in_half_open(mut self, n: u32) -> Self {
        self.config.permitted_calls_in_half_open = n;
        self
    }
    /// Close after `n` consecutive successes in HALF_OPEN; any failure re-opens.
    pub fn success_threshold(mut self, n: u32) -> Self {
        self.config.success_threshold = Some(n);
        self
    }
    /// Let the rate over the half-open calls decide (the default).
    pub fn no_success_threshold(mut self) -> Self {
        self.config.success_threshold = None;
        self
    }
    /// Leave HALF_OPEN after `d` even if probes never report.
    pub fn max_wait_in_half_open(mut self, d: Duration) -> Self {
        self.config.max_wait_in_half_open = Some(d);
        self
    }
    /// Stay in HALF_OPEN until the probes report (the default).
    pub fn no_max_wait_in_half_open(mut self) -> Self {
        self.config.max_wait_in_half_open = None;
        self
    }
    /// Where to go after `max_wait_in_half_open`: [`State::Open`] (default) or [`State::Closed`].
    pub fn state_after_max_wait_in_half_open(mut self, state: State) -> Self {
        self.config.state_after_max_wait_in_half_open = state;
        self
    }
    /// How long to stay OPEN: a `Duration` (fixed) or a [`WaitInOpen`].
    pub fn wait_in_open(mut self, wait: impl Into<WaitInOpen>) -> Self {
        self.config.wait_in_open = wait.into();
        self
    }
    /// Move OPEN to HALF_OPEN on a timer, without waiting for a call.
    pub fn automatic_transition_to_half_open(mut self, on: bool) -> Self {
        self.config.automatic_transition_to_half_open = on;
        self
    }
    /// Measure every call's duration on the precise clock and keep it in the breaker's
    /// histogram ([`CircuitBreaker::duration_histogram`](crate::CircuitBreaker::duration_histogram),
    /// the `call_duration` metrics). Off by default: a slow-call policy alone times calls on the
    /// coarse clock and keeps no histogram, which costs a call about as much as no timing.
    pub fn record_call_durations(mut self, on: bool) -> Self {
        self.config.record_call_durations = on;
        self
    }
    /// How health is reported.
    pub fn health(mut self, health: HealthMode) -> Self {
        self.config.health = health;
        self
    }

    /// Learns the slow-call threshold from the breaker's own latency (by a task such as
    /// `breakwater::history`'s; until it has, and before `warmup_calls`, the static
    /// [`slow_call_duration_threshold`](Self::slow_call_duration_threshold) applies). Calls
    /// are then timed, each counted in a latency bucket.
    pub fn learn_slow_call_threshold(mut self, learned: crate::LearnedThreshold) -> Self {
        self.config.learned_slow_call_threshold = Some(learned);
        self
    }

    /// The service-level objective of the calls through the breaker: the fraction that must
    /// succeed (0 < o < 1, e.g. 0.999). The alerting engine raises error-budget burn-rate
    /// alerts on it (from the breaker's history). A refusal counts as an error.
    pub fn slo_objective(mut self, objective: f64) -> Self {
        self.config.slo_objective = Some(objective);
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        let rate = |field: &'static str, v: Option<f32>| match v {
            Some(p) if !(p > 0.0 && p <= 100.0) => Err(ConfigError::new(
                field,
                format!("must be a percentage in (0, 100], got {p}"),
            )),
            _ => Ok(()),
        };
        rate("failure_rate_threshold", c.failure_rate_threshold)?;
        rate("slow_call_rate_threshold", c.slow_call_rate_threshold)?;
        if let Some(l) = &c.learned_slow_call_threshold {
            l.validate()?;
        }
        if let Some(o) = c.slo_objective
            && !(o > 0.0 && o < 1.0)
        {
            return Err(ConfigError::new(
                "slo_objective",
                format!("must be a fraction in (0, 1), got {o}"),
            ));
        }
        if c.slow_call_duration_threshold.is_zero() {
            return Err(ConfigError::new(
                "slow_call_duration_threshold",
                "must be greater than zero",
            ));
        }
        if c.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        match c.sliding_window {
            SlidingWindow::Count(n) if n == 0 || n > MAX_COUNT_WINDOW => {
                return Err(ConfigError::new(
                    "sliding_window",
                    format!("a count window holds 1..={MAX_COUNT_WINDOW} calls, got {n}"),
                ));
            }
            SlidingWindow::Time(d)
                if d.as_secs() == 0
                    || d.subsec_nanos() != 0
                    || d.as_secs() > MAX_TIME_WINDOW_SECS =>
            {
                return Err(ConfigError::new(
                    "sliding_window",
                    format!(
                        "a time window is whole seconds in 1..={MAX_TIME_WINDOW_SECS}, got {d:?}"
                    ),
                ));
            }
            _ => {}
        }
        if c.minimum_number_of_calls == 0 {
            return Err(ConfigError::new(
                "minimum_number_of_calls",
                "must be at least 1",
            ));
        }
        if c.permitted_calls_in_half_open == 0
            || c.permitted_calls_in_half_open > MAX_PERMITTED_CALLS_IN_HALF_OPEN
        {
            return Err(ConfigError::new(
                "permitted_calls_in_half_open",
                format!(
                    "must be in 1..={MAX_PERMITTED_CALLS_IN_HALF_OPEN}, got {}",
                    c.permitted_calls_in_half_open
                ),
            ));
        }
        if let Some(n) = c.success_threshold
            && (n == 0 || n > MAX_PERMITTED_CALLS_IN_HALF_OPEN)
        {
            return Err(ConfigError::new(
                "success_threshold",
                format!("must be in 1..={MAX_PERMITTED_CALLS_IN_HALF_OPEN}, got {n}"),
            ));
        }
        if c.max_wait_in_half_open == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "max_wait_in_half_open",
                "must be greater than zero (leave it unset to wait forever)",
            ));
        }
        if !matches!(
            c.state_after_max_wait_in_half_open,
            State::Open | State::Closed
        ) {
            return Err(ConfigError::new(
                "state_after_max_wait_in_half_open",
                format!(
                    "must be OPEN or CLOSED, got {}",
                    c.state_after_max_wait_in_half_open
                ),
            ));
        }
        c.wait_in_open.validate()?;
        if c.failure_rate_threshold.is_none()
            && c.slow_call_rate_threshold.is_none()
            && c.consecutive_failures.is_none()
        {
            return Err(ConfigError::new(
                "failure_rate_threshold",
                "no trip policy is on: set a failure-rate, slow-call-rate or consecutive-failures threshold",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(b: ConfigBuilder) -> &'static str {
        b.build().unwrap_err().field()
    }

    #[test]
    fn every_invalid_value_names_its_field() {
        let b = Config::builder;
        assert_eq!(
            field_of(b().failure_rate_threshold(0.0)),
            "failure_rate_threshold"
        );
        assert_eq!(
            field_of(b().failure_rate_threshold(100.5)),
            "failure_rate_threshold"
        );
        assert_eq!(
            field_of(b().failure_rate_threshold(f32::NAN)),
            "failure_rate_threshold"
        );
        assert_eq!(
            field_of(b().slow_call_rate_threshold(-1.0)),
            "slow_call_rate_threshold"
        );
        assert_eq!(
            field_of(b().slow_call_duration_threshold(Duration::ZERO)),
            "slow_call_duration_threshold"
        );
        assert_eq!(
            field_of(b().consecutive_failures(0)),
            "consecutive_failures"
        );
        assert_eq!(
            field_of(b().sliding_window(SlidingWindow::Count(0))),
            "sliding_window"
        );
        assert_eq!(
            field_of(b().sliding_window(SlidingWindow::Count(MAX_COUNT_WINDOW + 1))),
            "sliding_window"
        );
        assert_eq!(
            field_of(b().sliding_window(SlidingWindow::Time(Duration::ZERO))),
            "sliding_window"
        );
        assert_eq!(
            field_of(b().sliding_window(SlidingWindow::Time(Duration::from_millis(1500)))),
            "sliding_window"
        );
        assert_eq!(
            field_of(b().minimum_number_of_calls(0)),
            "minimum_number_of_calls"
        );
        assert_eq!(
            field_of(b().permitted_calls_in_half_open(0)),
            "permitted_calls_in_half_open"
        );
        assert_eq!(
            field_of(b().permitted_calls_in_half_open(5000)),
            "permitted_calls_in_half_open"
        );
        assert_eq!(field_of(b().success_threshold(0)), "success_threshold");
        assert_eq!(
            field_of(b().max_wait_in_half_open(Duration::ZERO)),
            "max_wait_in_half_open"
        );
        assert_eq!(
            field_of(b().state_after_max_wait_in_half_open(State::HalfOpen)),
            "state_after_max_wait_in_half_open"
        );
        assert_eq!(field_of(b().wait_in_open(Duration::ZERO)), "wait_in_open");
        assert_eq!(
            field_of(b().wait_in_open(WaitInOpen::exponential(
                Duration::from_secs(10),
                2.0,
                Duration::from_secs(5)
            ))),
            "wait_in_open"
        );
        assert_eq!(
            field_of(b().no_failure_rate_threshold()),
            "failure_rate_threshold"
        );
    }

    #[test]
    fn error_message_names_the_field() {
        let e = Config::builder()
            .failure_rate_threshold(150.0)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("failure_rate_threshold"), "{e}");
        assert!(e.to_string().contains("150"), "{e}");
    }

    #[test]
    fn presets_carry_the_documented_numbers() {
        for (c, f, w, m, s) in [
            (Config::read(), 3, 3, 15, 2),
            (Config::write(), 5, 10, 60, 3),
            (Config::auth(), 10, 5, 30, 2),
        ] {
            assert_eq!(c.consecutive_failures(), Some(f));
            assert_eq!(c.success_threshold(), Some(s));
            match c.wait_in_open() {
                WaitInOpen::Exponential { initial, max, .. } => {
                    assert_eq!(*initial, Duration::from_secs(w));
                    assert_eq!(*max, Duration::from_secs(m));
                }
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(c.to_builder().build().unwrap(), c);
        }
        assert_eq!(Config::preset_named("write"), Some(Config::write()));
        assert_eq!(Config::preset_named("nope"), None);
    }

    #[test]
    fn minimum_calls_is_capped_at_count_window_size() {
        let c = Config::builder()
            .sliding_window(SlidingWindow::Count(10))
            .minimum_number_of_calls(100)
            .build()
            .unwrap();
        assert_eq!(c.effective_minimum_calls(), 10);
    }

    #[test]
    fn view_uses_ms_and_percent() {
        let v = serde_json::to_value(Config::read().view()).unwrap();
        assert_eq!(v["waitInOpenMs"], 3000);
        assert_eq!(v["maxWaitInOpenMs"], 15000);
        assert_eq!(v["consecutiveFailures"], 3);
        assert_eq!(v["slidingWindowType"], "COUNT_BASED");
        assert_eq!(v["stateAfterMaxWaitInHalfOpen"], "OPEN");
    }

    #[test]
    fn every_field_survives_the_view_and_back() {
        let everything = Config::builder()
            .failure_rate_threshold(30.0)
            .slow_call_rate_threshold(80.0)
            .slow_call_duration_threshold(Duration::from_millis(250))
            .consecutive_failures(4)
            .sliding_window(SlidingWindow::Time(Duration::from_secs(30)))
            .minimum_number_of_calls(7)
            .permitted_calls_in_half_open(3)
            .success_threshold(2)
            .max_wait_in_half_open(Duration::from_secs(9))
            .state_after_max_wait_in_half_open(State::Closed)
            .wait_in_open(
                WaitInOpen::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(40))
                    .with_jitter(0.25),
            )
            .automatic_transition_to_half_open(true)
            .record_call_durations(true)
            .health(HealthMode::Critical)
            .build()
            .unwrap();
        for c in [
            Config::default(),
            Config::read(),
            Config::write(),
            Config::auth(),
            everything,
        ] {
            let view = c.view();
            assert_eq!(view.to_config().unwrap(), c);
            let json = serde_json::to_value(&view).unwrap();
            let back: ConfigView = serde_json::from_value(json).unwrap();
            assert_eq!(back, view);
        }
    }

    #[test]
    fn a_view_read_back_is_validated_and_refuses_unknown_fields() {
        let mut view = Config::default().view();
        view.permitted_calls_in_half_open = 0;
        assert_eq!(
            view.to_config().unwrap_err().field(),
            "permitted_calls_in_half_open"
        );
        let mut json = serde_json::to_value(Config::default().view()).unwrap();
        json["nope"] = 1.into();
        assert!(serde_json::from_value::<ConfigView>(json).is_err());
        // A nonzero duration under 1 ms is shown as 1 ms, never as an invalid 0.
        let tiny = Config::builder()
            .slow_call_duration_threshold(Duration::from_micros(300))
            .build()
            .unwrap();
        assert_eq!(tiny.view().slow_call_duration_threshold_ms, 1);
        assert!(tiny.view().to_config().is_ok());
    }
}
