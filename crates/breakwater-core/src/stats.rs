//! Numbers kept for metrics exporters: transitions by kind, and a histogram of call durations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::state::{State, Trigger};

/// Upper bounds of the call-duration histogram's buckets, in seconds (Prometheus' defaults).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BUCKET_NANOS: [u64; 11] = [
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// How many times a breaker moved from one state to another, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionCount {
    /// The state it left.
    pub from: State,
    /// The state it entered.
    pub to: State,
    /// Why.
    pub trigger: Trigger,
    /// How many times, since creation or the last reset.
    pub count: u64,
}

/// Durations of the calls a breaker recorded with
/// [`record_call_durations`](crate::ConfigBuilder::record_call_durations) on, since creation or
/// the last reset.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DurationHistogram {
    /// Cumulative counts: calls that took at most [`DURATION_BUCKETS`]`[i]` seconds.
    pub cumulative: [u64; 11],
    /// All recorded calls (the `+Inf` bucket).
    pub count: u64,
    /// Their total duration.
    pub sum: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Per bucket, not cumulative; the last is over the largest bound.
    buckets: [AtomicU64; 12],
    sum_nanos: AtomicU64,
}

impl Histogram {
    #[inline]
    pub(crate) fn observe(&self, nanos: u64) {
        let i = BUCKET_NANOS.partition_point(|&b| b < nanos);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
        self.sum_nanos.store(0, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DurationHistogram {
        let mut cumulative = [0; 11];
        let mut total = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            if i < 11 {
                cumulative[i] = total;
            }
        }
        DurationHistogram {
            cumulative,
            count: total,
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_cumulative() {
        let h = Histogram::default();
        for ms in [1, 5, 6, 300, 20_000] {
            h.observe(ms * 1_000_000);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2, "1 ms and 5 ms are <= 5 ms");
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(s.cumulative[6], 4, "300 ms <= 500 ms");
        assert_eq!(s.cumulative[10], 4);
        assert_eq!(s.count, 5);
        assert_eq!(s.sum, Duration::from_millis(20_312));
    }
}
