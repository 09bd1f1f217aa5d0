//! Latency counts for a slow-call threshold learned from a breaker's own calls, and the
//! learned value. The breaker only counts (one `fetch_add` in a log-linear bucket per timed
//! call); what the threshold becomes is decided off the call path, by whoever reads the counts
//! (`breakwater::history` once a minute) and calls
//! [`CircuitBreaker::set_learned_slow_call_threshold`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::CircuitBreaker;
use crate::clock::saturating_nanos;

/// Sub-buckets per power of two (the counts' resolution: 1/16, about 6 %).
const SUB_BITS: u32 = 4;
const SUBS: usize = 1 << SUB_BITS;
/// Powers of two counted: durations from 2^10 ns (1 µs) to 2^40 ns (about 18 min).
const LOW_POWER: u32 = 10;
const POWERS: usize = 31;
/// Buckets in all.
pub const LATENCY_BUCKETS: usize = POWERS * SUBS;

/// Per-bucket counts of call durations (see [`latency_bucket_bounds`]).
#[derive(Debug)]
pub(crate) struct LatencyCounts {
    counts: Box<[AtomicU64]>,
}

impl LatencyCounts {
    pub(crate) fn new() -> Self {
        Self {
            counts: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline(always)]
    pub(crate) fn record(&self, nanos: u64) {
        self.counts[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

/// The bucket of a duration in ns: below 1 µs the first, above 18 min the last.
#[inline(always)]
fn bucket_of(nanos: u64) -> usize {
    let n = nanos.max(1 << LOW_POWER);
    let power = 63 - n.leading_zeros();
    if power >= LOW_POWER + POWERS as u32 {
        return LATENCY_BUCKETS - 1;
    }
    let sub = (n >> (power - SUB_BITS)) as usize & (SUBS - 1);
    (power - LOW_POWER) as usize * SUBS + sub
}

/// The lower bound of bucket `i`, and its upper bound (exclusive), as durations.
pub fn latency_bucket_bounds(i: usize) -> (Duration, Duration) {
    let power = (i / SUBS) as u32 + LOW_POWER;
    let sub = (i % SUBS) as u64;
    let base = 1u64 << power;
    let step = base >> SUB_BITS;
    let low = base + sub * step;
    (Duration::from_nanos(low), Duration::from_nanos(low + step))
}

/// A slow-call threshold to learn from a breaker's own latency: `quantile` × `factor` of its
/// recent calls, clamped to `[min, max]`, once `warmup_calls` calls have been seen; until
/// then the configured `slow_call_duration_threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LearnedThreshold {
    /// The quantile of recent latency (0 < q < 1; default 0.99).
    pub quantile: f64,
    /// What it is multiplied by (default 3).
    pub factor: f64,
    /// The least the threshold becomes, ms (default 1).
    pub min_ms: u64,
    /// The most it becomes, ms (default 60,000).
    pub max_ms: u64,
    /// Calls seen before it is used (default 100).
    pub warmup_calls: u64,
    /// How far back the latency is looked at, in minutes (default 60).
    pub horizon_minutes: u32,
}

impl Default for LearnedThreshold {
    fn default() -> Self {
        Self {
            quantile: 0.99,
            factor: 3.0,
            min_ms: 1,
            max_ms: 60_000,
            warmup_calls: 100,
            horizon_minutes: 60,
        }
    }
}

impl LearnedThreshold {
    pub(crate) fn validate(&self) -> Result<(), crate::ConfigError> {
        let bad = |field, why: &str| Err(crate::ConfigError::new(field, why.to_owned()));
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return bad("learned_slow_call_threshold.quantile", "must be in (0, 1)");
        }
        if !(self.factor > 0.0 && self.factor.is_finite()) {
            return bad("learned_slow_call_threshold.factor", "must be more than 0");
        }
        if self.min_ms == 0 || self.min_ms > self.max_ms {
            return bad(
                "learned_slow_call_threshold.min_ms",
                "must be at least 1 and at most max_ms",
            );
        }
        if self.horizon_minutes == 0 || self.horizon_minutes > 24 * 60 {
            return bad(
                "learned_slow_call_threshold.horizon_minutes",
                "must be 1 to 1440",
            );
        }
        Ok(())
    }
}

/// A learned slow-call threshold and what it was learned from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedValue {
    /// The threshold in use, ms.
    pub threshold_ms: f64,
    /// The quantile it came from.
    pub quantile: f64,
    /// That quantile of the recent calls, ms.
    pub quantile_ms: f64,
    /// The factor applied.
    pub factor: f64,
    /// The calls it was learned from.
    pub calls: u64,
    /// `min` or `max` when the clamp decided, else `null`.
    pub clamped: Option<&'static str>,
    /// When, ms since the Unix epoch.
    pub at: u64,
}

impl CircuitBreaker {
    /// Counts of this breaker's call durations per bucket since its creation
    /// ([`latency_bucket_bounds`]), when it learns its slow-call threshold.
    pub fn latency_counts(&self) -> Option<Vec<u64>> {
        self.inner.latency.get().map(LatencyCounts::snapshot)
    }

    /// Uses `value` as the slow-call threshold from now on (until the next, or a config
    /// change without learning). A few atomic stores; for the task that learns it.
    pub fn set_learned_slow_call_threshold(&self, value: LearnedValue) {
        let mut ctl = self.inner.lock();
        if ctl.config.learned_slow_call_threshold.is_none() {
            return;
        }
        let nanos = saturating_nanos(Duration::from_secs_f64(value.threshold_ms / 1_000.0));
        self.inner
            .hot
            .0
            .tuning
            .slow_nanos
            .store(nanos.max(1), Ordering::Relaxed);
        ctl.learned = Some(value);
    }

    /// The learned slow-call threshold in use, if one was learned.
    pub fn learned_slow_call_threshold(&self) -> Option<LearnedValue> {
        self.inner.lock().learned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_contiguous_and_within_a_sixteenth() {
        for i in 0..LATENCY_BUCKETS - 1 {
            let (lo, hi) = latency_bucket_bounds(i);
            assert_eq!(hi, latency_bucket_bounds(i + 1).0);
            assert!(hi.as_nanos() * 16 <= lo.as_nanos() * 17 + 16, "{i}");
            assert_eq!(bucket_of(lo.as_nanos() as u64), i);
            assert_eq!(bucket_of(hi.as_nanos() as u64 - 1), i);
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        let twenty = bucket_of(20_000_000);
        let (lo, hi) = latency_bucket_bounds(twenty);
        assert!(lo <= Duration::from_millis(20) && Duration::from_millis(20) < hi);
    }
}
