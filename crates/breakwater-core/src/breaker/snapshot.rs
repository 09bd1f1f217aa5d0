//! A breaker's [`Snapshot`]: its state, lifetime counters, the window's view and its config.

use std::sync::atomic::Ordering;

use super::inner::Inner;
use crate::snapshot::{Snapshot, WindowSnapshot};
use crate::state::{HALF_OPEN, OPEN, State, generation_of, state_of};

impl Inner {
    /// The window's numbers in the state word `word`: the probes' calls in HALF_OPEN and in OPEN
    /// entered from HALF_OPEN, the sliding window otherwise.
    pub(super) fn window_view(&self, word: u64, now: u64) -> WindowSnapshot {
        let hot = &self.hot.0;
        let l = &self.life.0;
        let not_permitted = l.not_permitted.load(Ordering::Relaxed);
        let min_calls = hot.tuning.min_calls.load(Ordering::Relaxed);
        let window_not_permitted =
            not_permitted.saturating_sub(l.not_permitted_base.load(Ordering::Relaxed));

        // In HALF_OPEN, and in OPEN entered from HALF_OPEN, the probes' calls are the window.
        let probes = match state_of(word) {
            HALF_OPEN | OPEN => self.half_open.0.counts(generation_of(word)),
            _ => None,
        };
        if let Some(p) = probes {
            let buffered = p.successes + p.failed;
            // Known once every permitted probe has reported (in both half-open modes).
            let known = buffered >= hot.tuning.permitted.load(Ordering::Relaxed);
            WindowSnapshot::new(
                buffered,
                p.failed,
                p.slow,
                p.slow_failed,
                window_not_permitted,
                known,
            )
        } else {
            let c = self.window.full_counts(now);
            WindowSnapshot::new(
                c.buffered,
                c.failed,
                c.slow,
                c.slow_failed,
                window_not_permitted,
                c.buffered >= min_calls.max(1),
            )
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let hot = &self.hot.0;
        let l = &self.life.0;
        let ctl = self.lock();
        let config = ctl.config.clone();
        let learned = ctl.learned;
        drop(ctl);
        let word = hot.state.load(Ordering::Acquire);
        let state = State::from_code(state_of(word));
        let now = self.clock.nanos();
        let to_epoch = self.clock.epoch_converter();
        let epoch = |t: u64| (t != 0).then(|| to_epoch(t - 1));
        let failures = l.failures.load(Ordering::Relaxed);
        let successes = self.successes();
        let not_permitted = l.not_permitted.load(Ordering::Relaxed);
        let ignored = l.ignored.load(Ordering::Relaxed);
        let window = self.window_view(word, now);
        let retry_after_ms = (state == State::Open).then(|| {
            hot.open_until
                .load(Ordering::Acquire)
                .saturating_sub(now)
                .div_ceil(1_000_000)
        });
        Snapshot {
            name: self.name.to_string(),
            state,
            failures,
            successes,
            slow_calls: l.slow_calls.load(Ordering::Relaxed),
            not_permitted_calls: not_permitted,
            ignored_calls: ignored,
            consecutive_failures: hot.consecutive_failures.load(Ordering::Relaxed),
            consecutive_successes: successes.saturating_sub(l.success_mark.load(Ordering::Relaxed)),
            last_failure_time: epoch(l.last_failure.load(Ordering::Relaxed)),
            last_success_time: epoch(l.last_success.load(Ordering::Relaxed)),
            opened_at: epoch(l.opened_at.load(Ordering::Relaxed)),
            total_requests: successes + failures + not_permitted + ignored,
            circuit_opens: l.circuit_opens.load(Ordering::Relaxed),
            failure_rate: window.failure_rate,
            slow_call_rate: window.slow_call_rate,
            buffered_calls: window.buffered_calls,
            uptime: now.saturating_sub(self.created_at) / 1_000_000,
            retry_after_ms,
            generation: generation_of(word),
            window,
            config: config.view(),
            learned_slow_call_threshold: learned,
        }
    }
}
