//! Per-minute aggregates of a breaker and of a probe, and the rings that keep 24 h of them.

use std::collections::VecDeque;

use breakwater_core::{DURATION_BUCKETS, State};
use serde::{Deserialize, Serialize};

/// A minute in ms.
pub const MINUTE_MS: u64 = 60_000;
/// How long the rings keep minutes: 24 h.
pub const KEPT_MS: u64 = 24 * 60 * MINUTE_MS;
/// Minutes a ring holds at most (24 h of them, whatever the traffic).
pub const RING_MINUTES: usize = 24 * 60;

/// Time spent in each state during a minute, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateTimes {
    /// In CLOSED.
    pub closed: u64,
    /// In OPEN.
    pub open: u64,
    /// In HALF_OPEN.
    pub half_open: u64,
    /// In FORCED_OPEN.
    pub forced_open: u64,
    /// In DISABLED.
    pub disabled: u64,
    /// In METRICS_ONLY.
    pub metrics_only: u64,
}

impl StateTimes {
    pub(crate) fn add(&mut self, state: State, ms: u64) {
        let slot = match state {
            State::Closed => &mut self.closed,
            State::Open => &mut self.open,
            State::HalfOpen => &mut self.half_open,
            State::ForcedOpen => &mut self.forced_open,
            State::Disabled => &mut self.disabled,
            State::MetricsOnly => &mut self.metrics_only,
        };
        *slot += ms;
    }

    fn merge(&mut self, o: &StateTimes) {
        self.closed += o.closed;
        self.open += o.open;
        self.half_open += o.half_open;
        self.forced_open += o.forced_open;
        self.disabled += o.disabled;
        self.metrics_only += o.metrics_only;
    }

    /// Whether the whole time was CLOSED (nothing worth keeping without calls).
    pub(crate) fn only_closed(&self) -> bool {
        self.open + self.half_open + self.forced_open + self.disabled + self.metrics_only == 0
    }
}

/// One minute of a breaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Minute {
    /// Its start, ms since the Unix epoch.
    pub minute: u64,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls whose outcome was ignored.
    pub ignored: u64,
    /// Calls refused by the breaker.
    pub refused: u64,
    /// Calls slower than the slow-call threshold.
    pub slow_calls: u64,
    /// Median call duration, ms (from the duration histogram: breakers with
    /// `record_call_durations`; the bucket's interpolated value).
    pub p50_ms: Option<f64>,
    /// 99th percentile call duration, ms (as `p50Ms`).
    pub p99_ms: Option<f64>,
    /// Calls per duration bucket (the bounds of `DURATION_BUCKETS`, then above the last).
    pub latency_buckets: Vec<u64>,
    /// Time in each state, ms.
    pub time_in_state: StateTimes,
}

impl Minute {
    /// Whether it holds anything worth keeping.
    pub(crate) fn is_empty(&self) -> bool {
        self.successes + self.failures + self.ignored + self.refused == 0
            && self.time_in_state.only_closed()
    }

    /// Adds a later part of the same minute.
    pub(crate) fn merge(&mut self, o: &Minute) {
        self.successes += o.successes;
        self.failures += o.failures;
        self.ignored += o.ignored;
        self.refused += o.refused;
        self.slow_calls += o.slow_calls;
        if self.latency_buckets.len() < o.latency_buckets.len() {
            self.latency_buckets.resize(o.latency_buckets.len(), 0);
        }
        for (a, b) in self.latency_buckets.iter_mut().zip(&o.latency_buckets) {
            *a += b;
        }
        self.time_in_state.merge(&o.time_in_state);
        self.set_percentiles();
    }

    pub(crate) fn set_percentiles(&mut self) {
        self.p50_ms = bucket_quantile(&self.latency_buckets, 0.50);
        self.p99_ms = bucket_quantile(&self.latency_buckets, 0.99);
    }
}

/// The `q` quantile of calls counted per bucket, in ms, interpolated linearly inside its
/// bucket (as Prometheus's `histogram_quantile`); in the last, open bucket, its lower bound.
pub(crate) fn bucket_quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { DURATION_BUCKETS[i - 1] };
            let Some(&upper) = DURATION_BUCKETS.get(i) else {
                return Some(lower * 1_000.0);
            };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) * 1_000.0);
        }
        below += n;
    }
    None
}

/// One minute of a probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeMinute {
    /// Its start, ms since the Unix epoch.
    pub minute: u64,
    /// Runs that succeeded in time.
    pub ok: u64,
    /// Runs that succeeded, slowly.
    pub slow: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Median run latency, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile run latency, ms.
    pub p99_ms: Option<f64>,
    /// The runs' latencies, ms (at most [`MAX_LATENCIES`] a minute).
    pub latencies_ms: Vec<f64>,
}

/// Probe latencies kept per minute at most.
pub const MAX_LATENCIES: usize = 600;

impl ProbeMinute {
    pub(crate) fn is_empty(&self) -> bool {
        self.ok + self.slow + self.failed == 0
    }

    pub(crate) fn merge(&mut self, o: &ProbeMinute) {
        self.ok += o.ok;
        self.slow += o.slow;
        self.failed += o.failed;
        let room = MAX_LATENCIES.saturating_sub(self.latencies_ms.len());
        self.latencies_ms.extend(o.latencies_ms.iter().take(room));
        self.set_percentiles();
    }

    pub(crate) fn set_percentiles(&mut self) {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            (!v.is_empty()).then(|| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1])
        };
        self.p50_ms = at(0.50);
        self.p99_ms = at(0.99);
    }
}

/// What a ring keeps: a minute with its start.
pub(crate) trait Slot: Clone {
    fn start(&self) -> u64;
    fn merge_into(&mut self, later: &Self);
}

impl Slot for Minute {
    fn start(&self) -> u64 {
        self.minute
    }
    fn merge_into(&mut self, later: &Self) {
        self.merge(later);
    }
}

impl Slot for ProbeMinute {
    fn start(&self) -> u64 {
        self.minute
    }
    fn merge_into(&mut self, later: &Self) {
        self.merge(later);
    }
}

/// The last 24 h of minutes of one breaker or probe, oldest first; minutes with nothing in
/// them are not kept. Bounded at [`RING_MINUTES`].
#[derive(Debug, Clone)]
pub(crate) struct Ring<T> {
    minutes: VecDeque<T>,
}

impl<T: Slot> Ring<T> {
    pub(crate) fn new() -> Self {
        Self {
            minutes: VecDeque::new(),
        }
    }

    /// Adds `m` (merged into the newest if it is the same minute); the merged minute.
    pub(crate) fn push(&mut self, m: T, now: u64) -> T {
        let merged = match self.minutes.back_mut() {
            Some(last) if last.start() == m.start() => {
                last.merge_into(&m);
                last.clone()
            }
            _ => {
                self.minutes.push_back(m.clone());
                m
            }
        };
        while self.minutes.len() > RING_MINUTES
            || self
                .minutes
                .front()
                .is_some_and(|f| f.start() + KEPT_MS <= now)
        {
            self.minutes.pop_front();
        }
        merged
    }

    /// The minutes that start at or after `since`.
    pub(crate) fn since(&self, since: u64) -> Vec<T> {
        self.minutes
            .iter()
            .filter(|m| m.start() >= since)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 calls in (10, 25] ms: p50 is 17.5 ms, p99 24.85 ms.
        let mut b = vec![0; 12];
        b[2] = 100;
        assert_eq!(bucket_quantile(&b, 0.5), Some(17.5));
        assert!((bucket_quantile(&b, 0.99).unwrap() - 24.85).abs() < 1e-9);
        assert_eq!(bucket_quantile(&[0; 12], 0.5), None);
        let mut top = vec![0; 12];
        top[11] = 1;
        assert_eq!(bucket_quantile(&top, 0.99), Some(10_000.0));
    }

    #[test]
    fn a_ring_merges_the_same_minute_and_forgets_after_24_hours() {
        let mut r = Ring::new();
        let m = |minute, successes| Minute {
            minute,
            successes,
            ..Minute::default()
        };
        r.push(m(0, 1), 0);
        assert_eq!(r.push(m(0, 2), 0).successes, 3);
        r.push(m(MINUTE_MS, 1), MINUTE_MS);
        assert_eq!(r.since(0).len(), 2);
        r.push(m(KEPT_MS, 1), KEPT_MS);
        assert_eq!(
            r.since(0).iter().map(|m| m.minute).collect::<Vec<_>>(),
            [MINUTE_MS, KEPT_MS]
        );
        for i in 0..(RING_MINUTES as u64 + 10) {
            r.push(m(KEPT_MS + i * 1_000, 1), KEPT_MS + i * 1_000);
        }
        assert!(r.since(0).len() <= RING_MINUTES);
    }
}
