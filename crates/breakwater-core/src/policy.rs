//! When to trip: the thresholds, kept in atomics so they can change at run time, the judgement
//! of a window's counts, and the judgement of the half-open probes.

use std::sync::atomic::Ordering;

use crate::clock::saturating_nanos;
use crate::config::Config;
use crate::state::Trigger;
use crate::sync::{AtomicU32, AtomicU64};
use crate::window::Counts;

/// Thresholds read on the hot path.
#[derive(Debug)]
pub(crate) struct Tuning {
    /// f32 bits of the failure-rate threshold in percent; 0 when off.
    failure_rate: AtomicU32,
    /// f32 bits of the slow-call-rate threshold in percent; 0 when off.
    slow_rate: AtomicU32,
    pub(crate) slow_nanos: AtomicU64,
    pub(crate) min_calls: AtomicU64,
    /// 0 when off.
    pub(crate) consecutive: AtomicU64,
    pub(crate) permitted: AtomicU64,
    /// 0 when the rate decides in HALF_OPEN.
    success_threshold: AtomicU64,
    /// 0 when off.
    pub(crate) max_half_open_nanos: AtomicU64,
}

impl Tuning {
    pub(crate) fn new(c: &Config) -> Self {
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

    pub(crate) fn set(&self, c: &Config) {
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
    pub(crate) fn judge(&self, c: Counts) -> Option<Trigger> {
        if c.buffered == 0 || c.buffered < self.min_calls.load(Ordering::Relaxed) {
            return None;
        }
        rate_trip(
            Self::rate(&self.failure_rate),
            Self::rate(&self.slow_rate),
            c.buffered,
            c.failed,
            c.slow,
        )
    }

    /// The half-open rules as they stand now.
    pub(crate) fn probe_rules(&self) -> ProbeRules {
        ProbeRules {
            permitted: self.permitted.load(Ordering::Relaxed),
            success_threshold: self.success_threshold.load(Ordering::Relaxed),
            failure_rate: Self::rate(&self.failure_rate),
            slow_rate: Self::rate(&self.slow_rate),
        }
    }
}

/// Which rate trips over `total` calls of which `failed` failed and `slow` were slow.
fn rate_trip(
    failure_rate: Option<f64>,
    slow_rate: Option<f64>,
    total: u64,
    failed: u64,
    slow: u64,
) -> Option<Trigger> {
    let total = total as f64;
    if failure_rate.is_some_and(|t| failed as f64 * 100.0 >= t * total) {
        return Some(Trigger::FailureRatio);
    }
    if slow_rate.is_some_and(|t| slow as f64 * 100.0 >= t * total) {
        return Some(Trigger::SlowCallRatio);
    }
    None
}

/// What a reported probe decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    None,
    Close,
    Reopen(Trigger),
}

/// How HALF_OPEN decides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeRules {
    permitted: u64,
    success_threshold: u64,
    failure_rate: Option<f64>,
    slow_rate: Option<f64>,
}

impl ProbeRules {
    /// Probe mode (a success threshold, or no rate to judge): a reported probe frees its
    /// permit, that many successes in a row close, and any failure re-opens. Otherwise the rate
    /// over all `permitted` probes decides once they have reported.
    pub(crate) fn probe_mode(&self) -> bool {
        self.success_threshold != 0 || self.failure_rate.is_none() && self.slow_rate.is_none()
    }

    /// The decision after a probe that `failed` was reported, with the probes' counts (this
    /// one included).
    pub(crate) fn decide(&self, failed: bool, succ: u64, nfailed: u64, slow: u64) -> Decision {
        if self.probe_mode() {
            let needed = if self.success_threshold != 0 {
                self.success_threshold
            } else {
                self.permitted
            };
            return if failed {
                Decision::Reopen(Trigger::Probe)
            } else if succ >= needed {
                Decision::Close
            } else {
                Decision::None
            };
        }
        let reported = succ + nfailed;
        if reported < self.permitted {
            return Decision::None;
        }
        match rate_trip(self.failure_rate, self.slow_rate, reported, nfailed, slow) {
            Some(trigger) => Decision::Reopen(trigger),
            None => Decision::Close,
        }
    }
}
