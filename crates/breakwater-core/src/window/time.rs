//! The time-based window: one bucket per second (aligned to whole seconds of the breaker's clock),
//! each a pair of packed counter words, reused in a ring of T buckets.

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;

use super::{Call, Counts, FullCounts};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const HI: u64 = 1 << 32;
const LO_MASK: u64 = HI - 1;

#[derive(Debug, Default)]
struct Bucket {
    /// Second number + 1 of the calls in this bucket; 0 when unused.
    epoch: AtomicU64,
    /// calls << 32 | failed
    calls_failed: AtomicU64,
    /// slow << 32 | slow_failed
    slow: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct TimeWindow {
    secs: u64,
    buckets: Box<[Bucket]>,
    /// Second number + 1 of the latest failed or slow call: while it is in the window, a success
    /// may trip the breaker and the window must be summed; otherwise it cannot.
    last_bad: AtomicU64,
}

impl TimeWindow {
    pub(crate) fn new(secs: u64) -> Self {
        let secs = secs.max(1);
        Self {
            secs,
            buckets: (0..secs).map(|_| Bucket::default()).collect(),
            last_bad: AtomicU64::new(0),
        }
    }

    /// Records a call at `now_nanos`; returns the counts when a policy could trip on them.
    #[inline]
    pub(crate) fn record(&self, now_nanos: u64, call: Call) -> Option<Counts> {
        let tag = now_nanos / NANOS_PER_SEC + 1;
        let bucket = &self.buckets[(tag % self.secs) as usize];
        let epoch = bucket.epoch.load(Ordering::Acquire);
        if epoch < tag
            && bucket
                .epoch
                .compare_exchange(epoch, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.calls_failed.store(0, Ordering::Release);
            bucket.slow.store(0, Ordering::Release);
        }
        let failed = call.is_failure() as u64;
        bucket.calls_failed.fetch_add(HI + failed, Ordering::AcqRel);
        if call.is_slow() {
            bucket.slow.fetch_add(HI + failed, Ordering::AcqRel);
        }
        if call.is_failure() || call.is_slow() {
            self.last_bad.fetch_max(tag, Ordering::AcqRel);
        } else {
            let last_bad = self.last_bad.load(Ordering::Acquire);
            if last_bad == 0 || last_bad + self.secs <= tag {
                return None;
            }
        }
        let c = self.full_counts(now_nanos);
        Some(Counts {
            buffered: c.buffered,
            failed: c.failed,
            slow: c.slow,
        })
    }

    pub(crate) fn full_counts(&self, now_nanos: u64) -> FullCounts {
        let tag = now_nanos / NANOS_PER_SEC + 1;
        let oldest = tag.saturating_sub(self.secs - 1);
        let mut c = FullCounts::default();
        for b in self.buckets.iter() {
            let e = b.epoch.load(Ordering::Acquire);
            if e >= oldest && e <= tag && e != 0 {
                let cf = b.calls_failed.load(Ordering::Acquire);
                let s = b.slow.load(Ordering::Acquire);
                c.buffered += cf >> 32;
                c.failed += cf & LO_MASK;
                c.slow += s >> 32;
                c.slow_failed += s & LO_MASK;
            }
        }
        c
    }

    pub(crate) fn clear(&self) {
        for b in self.buckets.iter() {
            b.epoch.store(0, Ordering::Release);
            b.calls_failed.store(0, Ordering::Release);
            b.slow.store(0, Ordering::Release);
        }
        self.last_bad.store(0, Ordering::Release);
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SEC;

    #[test]
    fn calls_age_out_by_whole_seconds() {
        let w = TimeWindow::new(3);
        w.record(0, Call::Failure);
        w.record(S / 2, Call::Success);
        w.record(S + 1, Call::SlowFailure);
        let c = w.full_counts(2 * S);
        assert_eq!((c.buffered, c.failed, c.slow, c.slow_failed), (3, 2, 1, 1));
        // Second 0 leaves the window when second 3 starts.
        let c = w.full_counts(3 * S);
        assert_eq!((c.buffered, c.failed, c.slow), (1, 1, 1));
        // A bucket is reused for a new second.
        w.record(3 * S, Call::Success);
        let c = w.full_counts(3 * S);
        assert_eq!((c.buffered, c.failed), (2, 1));
        let c = w.full_counts(100 * S);
        assert_eq!(c.buffered, 0);
    }

    #[test]
    fn success_with_no_bad_call_in_window_skips_judging() {
        let w = TimeWindow::new(2);
        assert!(w.record(0, Call::Success).is_none());
        assert!(w.record(0, Call::Failure).is_some());
        assert!(w.record(S, Call::Success).is_some());
        assert!(w.record(2 * S, Call::Success).is_none());
    }

    #[test]
    fn clear_empties() {
        let w = TimeWindow::new(2);
        w.record(0, Call::Failure);
        w.clear();
        assert_eq!(w.full_counts(0), FullCounts::default());
    }
}
