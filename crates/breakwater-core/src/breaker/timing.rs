//! How a breaker times its calls: not at all, on the coarse clock (slow-call judgement at 1 ms
//! resolution, one load from memory per read), or on the precise clock (small thresholds, and
//! calls whose durations are recorded).

use super::inner::Inner;
use crate::clock::ClockHandle;
use crate::config::Config;

/// A permit's start time when the call is not timed.
pub(super) const UNTIMED: u64 = u64::MAX;
/// Set in a permit's start time taken on the coarse clock (monotonic nanos stay below 2^62).
pub(super) const COARSE: u64 = 1 << 62;

// How a breaker times its calls (`Hot::timing`).
pub(super) const TIMING_OFF: u8 = 0;
/// Slow calls judged on the coarse clock; no histogram.
pub(super) const TIMING_COARSE: u8 = 1;
/// Slow calls judged on the precise clock (a threshold too small for the coarse one).
pub(super) const TIMING_PRECISE: u8 = 2;
/// Every call measured on the precise clock and kept in the histogram.
pub(super) const TIMING_RECORDED: u8 = 3;

pub(super) fn timing_of(config: &Config, clock: &ClockHandle) -> u8 {
    if config.record_call_durations {
        TIMING_RECORDED
    } else if !config.needs_timing() {
        TIMING_OFF
    } else if config.coarse_timing() && clock.has_coarse_time() {
        TIMING_COARSE
    } else {
        TIMING_PRECISE
    }
}

impl Inner {
    /// A timed call's start: on the coarse clock (marked) or the precise one.
    #[inline(always)]
    pub(super) fn start(&self, timing: u8) -> u64 {
        if timing == TIMING_COARSE {
            // Monotonic nanos stay below 2^62: adding the bit sets it.
            self.clock.coarse_nanos() + COARSE
        } else {
            self.clock.nanos()
        }
    }

    /// The time now on the clock a call's start was taken from, and the call's duration.
    #[inline(always)]
    pub(super) fn elapsed(&self, started: u64) -> (u64, u64) {
        let now = if started & COARSE != 0 {
            self.clock.coarse_nanos()
        } else {
            self.clock.nanos()
        };
        (now, now.saturating_sub(started & !COARSE))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{CircuitBreaker, ManualClock};

    fn timing(b: crate::ConfigBuilder, clock: &ClockHandle) -> u8 {
        timing_of(&b.build().unwrap(), clock)
    }

    #[test]
    fn slow_calls_use_the_coarse_clock_from_its_threshold_on() {
        let system = ClockHandle::System;
        let slow = |ms| {
            Config::builder()
                .slow_call_rate_threshold(50.0)
                .slow_call_duration_threshold(Duration::from_millis(ms))
        };
        assert_eq!(timing(Config::builder(), &system), TIMING_OFF);
        assert_eq!(timing(slow(20), &system), TIMING_COARSE);
        assert_eq!(timing(slow(60_000), &system), TIMING_COARSE);
        assert_eq!(timing(slow(19), &system), TIMING_PRECISE);
        assert_eq!(
            timing(slow(60_000).record_call_durations(true), &system),
            TIMING_RECORDED
        );
        assert_eq!(
            timing(Config::builder().record_call_durations(true), &system),
            TIMING_RECORDED
        );
        let manual = ClockHandle::from(ManualClock::new());
        assert_eq!(timing(slow(20), &manual), TIMING_COARSE);
    }

    #[test]
    fn a_coarse_start_is_measured_on_the_coarse_clock() {
        let config = Config::builder()
            .slow_call_rate_threshold(50.0)
            .slow_call_duration_threshold(Duration::from_secs(1))
            .build()
            .unwrap();
        let cb = CircuitBreaker::new("coarse", config);
        let p = cb.try_acquire().unwrap();
        assert_ne!(p.started & COARSE, 0);
        let (now, elapsed) = cb.inner.elapsed(p.started);
        assert!(now <= cb.inner.clock.nanos());
        assert!(elapsed < 1_000_000_000, "no mark left in the duration");
        p.success();
        assert_eq!(cb.snapshot().successes, 1);
    }
}
