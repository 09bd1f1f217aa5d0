//! The count-based window: a ring of the last N outcomes, one byte each, and one packed counter
//! word.
//!
//! Recording is one `fetch_add` on the counter word (sequence, failed, slow), which also hands out
//! the ring slot. The slot is then written only when the evicted or the new outcome counts as
//! failed or slow: in a healthy breaker a success lands on a slot holding a success, and only reads
//! it. The counter word always equals the sum of the slots' contributions once in-flight records
//! finish, because every contribution is added before its outcome enters a slot and subtracted by
//! whoever swaps it out.

use std::sync::atomic::Ordering;

use super::{Call, Counts, FullCounts};
use crate::sync::{AtomicBool, AtomicU8, AtomicU64};

const SLOW_SHIFT: u32 = 0;
const FAILED_SHIFT: u32 = 21;
const SEQ_SHIFT: u32 = 42;
const FIELD_MASK: u64 = (1 << 21) - 1;
const SEQ_ONE: u64 = 1 << SEQ_SHIFT;
const FAILED_ONE: u64 = 1 << FAILED_SHIFT;
/// One slow call: the slow field is the lowest (`SLOW_SHIFT` is 0).
const SLOW_ONE: u64 = 1;
/// The failed and slow fields, every bit below the sequence: any bit set there means a call the
/// policies look at.
const BAD_MASK: u64 = SEQ_ONE - 1;

const EMPTY: u8 = 0;

#[inline]
const fn contribution(code: u8) -> u64 {
    match code {
        2 => FAILED_ONE,
        3 => SLOW_ONE,
        4 => FAILED_ONE + SLOW_ONE,
        _ => 0,
    }
}

/// The field at `shift` of a packed counter word.
#[inline]
const fn field(word: u64, shift: u32) -> u64 {
    (word >> shift) & FIELD_MASK
}

/// Keeps hot counters on their own cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// The written-to words, together on one cache line; the read-mostly fields live elsewhere.
#[derive(Debug, Default)]
struct Counters {
    packed: AtomicU64,
    /// Calls recorded in finished laps and cleared windows (for lifetime totals).
    recorded_base: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct CountWindow {
    counters: Padded<Counters>,
    size: u64,
    /// Set once the first lap completes (written once per clear, read on every record).
    full: AtomicBool,
    slots: Box<[AtomicU8]>,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(1) as u64;
        Self {
            counters: Padded(Counters::default()),
            size,
            full: AtomicBool::new(false),
            slots: (0..size).map(|_| AtomicU8::new(EMPTY)).collect(),
        }
    }

    /// Records one call and returns the counts right after it.
    #[inline]
    pub(crate) fn record(&self, call: Call) -> Counts {
        self.counts_of(self.record_packed(call))
    }

    /// Whether counts packed in `word` hold any failed or slow call (only then can a policy trip).
    #[inline]
    pub(crate) fn any_bad(word: u64) -> bool {
        word & BAD_MASK != 0
    }

    /// Records one call and returns the packed counter word right after it. A success only
    /// touches its slot when the window holds a failed or slow call (one it may evict): while
    /// it holds none, every slot holds a success (or nothing) and the `fetch_add` is the whole
    /// cost.
    #[inline]
    pub(crate) fn record_packed(&self, call: Call) -> u64 {
        let code = call as u8;
        let add = SEQ_ONE + contribution(code);
        let prev = self.counters.0.packed.fetch_add(add, Ordering::AcqRel);
        let mut now = prev.wrapping_add(add);
        let seq = prev >> SEQ_SHIFT;
        let idx = if seq < self.size {
            seq
        } else {
            seq % self.size
        };
        let slot = &self.slots[idx as usize];
        if code > Call::Success as u8
            || (Self::any_bad(prev) && slot.load(Ordering::Acquire) > Call::Success as u8)
        {
            let evicted = contribution(slot.swap(code, Ordering::AcqRel));
            if evicted != 0 {
                now = self.counters.0.packed.fetch_sub(evicted, Ordering::AcqRel) - evicted;
            }
        }
        if idx == self.size - 1 {
            self.wrap();
        }
        now
    }

    /// The lap is complete: the window is full, and the sequence goes back by one lap.
    #[cold]
    fn wrap(&self) {
        if !self.full.load(Ordering::Relaxed) {
            self.full.store(true, Ordering::Release);
        }
        let mut cur = self.counters.0.packed.load(Ordering::Acquire);
        while (cur >> SEQ_SHIFT) >= self.size {
            match self.counters.0.packed.compare_exchange_weak(
                cur,
                cur - self.size * SEQ_ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.counters
                        .0
                        .recorded_base
                        .fetch_add(self.size, Ordering::Relaxed);
                    break;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    #[inline]
    pub(crate) fn counts_of(&self, word: u64) -> Counts {
        let buffered = if self.full.load(Ordering::Acquire) {
            self.size
        } else {
            (word >> SEQ_SHIFT).min(self.size)
        };
        Counts {
            buffered,
            failed: field(word, FAILED_SHIFT).min(buffered),
            slow: field(word, SLOW_SHIFT).min(buffered),
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts_of(self.counters.0.packed.load(Ordering::Acquire))
    }

    pub(crate) fn full_counts(&self) -> FullCounts {
        let c = self.counts();
        let slow_failed = self
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == Call::SlowFailure as u8)
            .count() as u64;
        FullCounts {
            buffered: c.buffered,
            failed: c.failed,
            slow: c.slow,
            slow_failed: slow_failed.min(c.failed).min(c.slow),
        }
    }

    /// Calls recorded since creation (exact once in-flight records finish).
    pub(crate) fn lifetime_calls(&self) -> u64 {
        self.counters.0.recorded_base.load(Ordering::Acquire)
            + (self.counters.0.packed.load(Ordering::Acquire) >> SEQ_SHIFT)
    }

    /// Empties the window, keeping the lifetime count.
    pub(crate) fn clear(&self) {
        self.full.store(false, Ordering::Release);
        for slot in self.slots.iter() {
            let evicted = contribution(slot.swap(EMPTY, Ordering::AcqRel));
            if evicted != 0 {
                self.counters.0.packed.fetch_sub(evicted, Ordering::AcqRel);
            }
        }
        let mut cur = self.counters.0.packed.load(Ordering::Acquire);
        loop {
            let seq = cur >> SEQ_SHIFT;
            match self.counters.0.packed.compare_exchange_weak(
                cur,
                cur & !(u64::MAX << SEQ_SHIFT),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.counters
                        .0
                        .recorded_base
                        .fetch_add(seq, Ordering::Relaxed);
                    break;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Bytes this window owns on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(w: &CountWindow, calls: &[Call]) -> Counts {
        let mut last = Counts::default();
        for c in calls {
            last = w.record(*c);
        }
        last
    }

    #[test]
    fn evicts_oldest_and_keeps_counts() {
        let w = CountWindow::new(3);
        let c = rec(&w, &[Call::Failure, Call::SlowSuccess, Call::Success]);
        assert_eq!(
            c,
            Counts {
                buffered: 3,
                failed: 1,
                slow: 1
            }
        );
        // Evicts the failure.
        let c = w.record(Call::Success);
        assert_eq!(
            c,
            Counts {
                buffered: 3,
                failed: 0,
                slow: 1
            }
        );
        // Evicts the slow success.
        let c = w.record(Call::SlowFailure);
        assert_eq!(
            c,
            Counts {
                buffered: 3,
                failed: 1,
                slow: 1
            }
        );
        assert_eq!(w.full_counts().slow_failed, 1);
        assert_eq!(w.lifetime_calls(), 5);
    }

    #[test]
    fn clear_empties_but_keeps_lifetime() {
        let w = CountWindow::new(4);
        rec(&w, &[Call::Failure; 6]);
        assert_eq!(
            w.counts(),
            Counts {
                buffered: 4,
                failed: 4,
                slow: 0
            }
        );
        w.clear();
        assert_eq!(w.counts(), Counts::default());
        assert_eq!(w.lifetime_calls(), 6);
        let c = w.record(Call::Success);
        assert_eq!(
            c,
            Counts {
                buffered: 1,
                failed: 0,
                slow: 0
            }
        );
        assert_eq!(w.lifetime_calls(), 7);
    }

    #[test]
    fn matches_a_reference_ring_over_many_laps() {
        let w = CountWindow::new(7);
        let mut reference: std::collections::VecDeque<Call> = Default::default();
        let kinds = [
            Call::Success,
            Call::Failure,
            Call::SlowSuccess,
            Call::SlowFailure,
        ];
        let mut x: u32 = 12345;
        for _ in 0..1_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let call = kinds[(x >> 16) as usize % 4];
            let got = w.record(call);
            reference.push_back(call);
            if reference.len() > 7 {
                reference.pop_front();
            }
            let failed = reference.iter().filter(|c| c.is_failure()).count() as u64;
            let slow = reference.iter().filter(|c| c.is_slow()).count() as u64;
            assert_eq!(
                got,
                Counts {
                    buffered: reference.len() as u64,
                    failed,
                    slow
                }
            );
        }
        assert_eq!(w.lifetime_calls(), 1_000);
    }

    #[test]
    fn window_of_one() {
        let w = CountWindow::new(1);
        assert_eq!(
            w.record(Call::Failure),
            Counts {
                buffered: 1,
                failed: 1,
                slow: 0
            }
        );
        assert_eq!(
            w.record(Call::Success),
            Counts {
                buffered: 1,
                failed: 0,
                slow: 0
            }
        );
        assert_eq!(w.lifetime_calls(), 2);
    }
}
