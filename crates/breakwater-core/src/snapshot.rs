//! A serde view of a breaker: its state, lifetime counters, the window's own view, and its config.
//!
//! Field names are the camelCase of the ops API's metrics JSON; times are ms since the epoch,
//! rates are fractions 0..1 and `null` while the window holds fewer than the minimum calls.

use serde::Serialize;

use crate::config::ConfigView;
use crate::state::State;

/// Everything about one breaker at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// Failed calls since creation or the last reset.
    pub failures: u64,
    /// Successful calls since creation or the last reset.
    pub successes: u64,
    /// Slow calls since creation or the last reset.
    pub slow_calls: u64,
    /// Rejected calls since creation or the last reset.
    pub not_permitted_calls: u64,
    /// Calls whose outcome was ignored, since creation or the last reset.
    pub ignored_calls: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Successes since the last failure.
    pub consecutive_successes: u64,
    /// When the latest failure was recorded (ms since the epoch).
    pub last_failure_time: Option<u64>,
    /// When the latest success was recorded (ms since the epoch). Exact when call durations are
    /// recorded; otherwise refreshed on the first success after a failure (and on slow ones).
    pub last_success_time: Option<u64>,
    /// When the breaker last opened (ms since the epoch).
    pub opened_at: Option<u64>,
    /// Calls that ended: successes + failures + ignored + not permitted.
    pub total_requests: u64,
    /// Times the breaker has entered OPEN.
    pub circuit_opens: u64,
    /// The window's failure rate, 0..1, `None` while unknown.
    pub failure_rate: Option<f64>,
    /// The window's slow-call rate, 0..1, `None` while unknown.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window.
    pub buffered_calls: u64,
    /// Milliseconds since the breaker was created.
    pub uptime: u64,
    /// In OPEN: ms until a probe will be admitted.
    pub retry_after_ms: Option<u64>,
    /// Transitions made so far (plus resets).
    pub generation: u64,
    /// The window's own view (what drives decisions).
    pub window: WindowSnapshot,
    /// The configuration.
    pub config: ConfigView,
    /// The slow-call threshold learned, with what it was learned from (`null` until then, or
    /// when it is not learned).
    pub learned_slow_call_threshold: Option<crate::LearnedValue>,
}

/// The sliding window's view: in HALF_OPEN, and in OPEN entered from HALF_OPEN, the probes' calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowSnapshot {
    /// Calls in the window.
    pub buffered_calls: u64,
    /// Successful calls (slow or not).
    pub successful_calls: u64,
    /// Failed calls (slow or not).
    pub failed_calls: u64,
    /// Slow calls (failed or not).
    pub slow_calls: u64,
    /// Slow successful calls.
    pub slow_successful_calls: u64,
    /// Slow failed calls.
    pub slow_failed_calls: u64,
    /// Calls rejected since the current state was entered.
    pub not_permitted_calls: u64,
    /// Failed / buffered, 0..1; `None` below the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// Slow / buffered, 0..1; `None` below the minimum number of calls.
    pub slow_call_rate: Option<f64>,
}

impl WindowSnapshot {
    pub(crate) fn new(
        buffered: u64,
        failed: u64,
        slow: u64,
        slow_failed: u64,
        not_permitted: u64,
        rates_known: bool,
    ) -> Self {
        let rate = |n: u64| (rates_known && buffered > 0).then(|| n as f64 / buffered as f64);
        Self {
            buffered_calls: buffered,
            successful_calls: buffered.saturating_sub(failed),
            failed_calls: failed,
            slow_calls: slow,
            slow_successful_calls: slow.saturating_sub(slow_failed),
            slow_failed_calls: slow_failed,
            not_permitted_calls: not_permitted,
            failure_rate: rate(failed),
            slow_call_rate: rate(slow),
        }
    }
}
