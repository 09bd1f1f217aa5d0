//! Slow-call thresholds learned from each breaker's own latency: at every sample, the new
//! latency counts join the breaker's recent ones (its horizon's), and once there are
//! `warmup_calls` of them the threshold becomes `quantile` × `factor`, clamped to
//! `[min, max]` (HdrHistogram's quantile over the counts).

use std::time::Duration;

use breakwater_core::{
    CircuitBreaker, Clock, LearnedThreshold, LearnedValue, latency_bucket_bounds,
};
use hdrhistogram::Histogram;

use crate::minute::MINUTE_MS;
use crate::recorder::Breaker;

/// Adds the counts since the last sample and sets the threshold learned from the horizon.
pub(crate) fn sample(
    breaker: &CircuitBreaker,
    learn: LearnedThreshold,
    b: &mut Breaker,
    counts: Vec<u64>,
    end: u64,
) {
    let new: Vec<(u16, u64)> = counts
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| {
            let before = b.latency.get(i).copied().unwrap_or(0);
            // Counts only grow; after a new breaker of the same name, all of them are new.
            let d = if n >= before { n - before } else { n };
            (d > 0).then_some((i as u16, d))
        })
        .collect();
    b.latency = counts;
    if !new.is_empty() {
        b.latency_samples.push_back((end, new));
    }
    let horizon = u64::from(learn.horizon_minutes) * MINUTE_MS;
    while b
        .latency_samples
        .front()
        .is_some_and(|(at, _)| at + horizon < end)
    {
        b.latency_samples.pop_front();
    }
    let Some(value) = learned(learn, &b.latency_samples, breaker.clock().epoch_millis()) else {
        return;
    };
    breaker.set_learned_slow_call_threshold(value);
}

/// The threshold the counts give, once there are enough of them.
fn learned(
    learn: LearnedThreshold,
    samples: &std::collections::VecDeque<(u64, Vec<(u16, u64)>)>,
    at: u64,
) -> Option<LearnedValue> {
    let calls: u64 = samples
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(_, n)| n))
        .sum();
    if calls == 0 || calls < learn.warmup_calls {
        return None;
    }
    // 1 µs to an hour, 3 significant digits.
    let mut h = Histogram::<u64>::new_with_bounds(1_000, 3_600_000_000_000, 3).ok()?;
    for (i, n) in samples.iter().flat_map(|(_, s)| s.iter()) {
        let (lo, hi) = latency_bucket_bounds(usize::from(*i));
        let mid = (lo.as_nanos() as u64 + hi.as_nanos() as u64) / 2;
        h.saturating_record_n(mid, *n);
    }
    let q = Duration::from_nanos(h.value_at_quantile(learn.quantile));
    let quantile_ms = q.as_secs_f64() * 1_000.0;
    let raw = quantile_ms * learn.factor;
    let (threshold_ms, clamped) = if raw < learn.min_ms as f64 {
        (learn.min_ms as f64, Some("min"))
    } else if raw > learn.max_ms as f64 {
        (learn.max_ms as f64, Some("max"))
    } else {
        (raw, None)
    };
    Some(LearnedValue {
        threshold_ms,
        quantile: learn.quantile,
        quantile_ms,
        factor: learn.factor,
        calls,
        clamped,
        at,
    })
}
