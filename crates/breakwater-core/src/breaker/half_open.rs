//! The half-open accounting: one atomic word per breaker holding the probes' counts, tagged with
//! the generation of the HALF_OPEN state they belong to, so that a permit of an older generation
//! never touches them.

use std::sync::atomic::Ordering;

use crate::policy::{Decision, ProbeRules};
use crate::state::{HALF_OPEN, OPEN};
use crate::sync::AtomicU64;
use crate::window::Call;

// [tag:14][issued:10][successes:10][failures:10][slow:10][slow_failed:10]
const FIELD: u64 = (1 << 10) - 1;
// (The lowest field: `1 >> SLOW_FAILED` is `1 << SLOW_FAILED`.)
const SLOW_FAILED: u32 = 0;
const _: () = assert!(
    SLOW_FAILED == 0,
    "`report` counts a slow failure with `+ 1`"
);
const SLOW: u32 = 10;
const FAILED: u32 = 20;
const SUCC: u32 = 30;
const ISSUED: u32 = 40;
const TAG: u32 = 50;
/// The four counts, without the issued permits or the tag.
const COUNTS: u64 = (1 << ISSUED) - 1;

#[inline]
fn get(w: u64, shift: u32) -> u64 {
    (w >> shift) & FIELD
}

#[inline]
fn tag(generation: u64) -> u64 {
    // (Any one-to-one map of the low bits would do, `^` for `&` too: a tag is only compared
    // with the tag of another generation made the same way.)
    (generation & ((1 << 14) - 1)) << TAG
}

#[inline]
fn tag_matches(w: u64, generation: u64) -> bool {
    w >> TAG == tag(generation) >> TAG
}

/// The probes' counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeCounts {
    pub(crate) successes: u64,
    pub(crate) failed: u64,
    pub(crate) slow: u64,
    pub(crate) slow_failed: u64,
}

/// What asking for a probe permit gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Issue {
    Issued,
    /// Every permit is out.
    Full,
    /// The word belongs to another generation: the breaker has moved on.
    Stale,
}

#[derive(Debug, Default)]
pub(crate) struct HalfOpen(AtomicU64);

impl HalfOpen {
    /// Fresh counts for the HALF_OPEN state of `generation` (before it is published).
    pub(crate) fn enter(&self, generation: u64) {
        self.0.store(tag(generation), Ordering::Release);
    }

    /// Leaving HALF_OPEN (or any state) for `to`, of generation `generation`: no permit of an
    /// older generation matches the word any more, so a late probe's outcome is dropped like
    /// any other stale outcome. Entering OPEN from HALF_OPEN keeps the probes' counts, tagged
    /// with OPEN's generation, so the snapshot shows why the breaker re-opened; entering OPEN
    /// from another state tags the word with that state's generation (never a half-open one),
    /// so the snapshot shows the window instead.
    pub(crate) fn retire(&self, from: u64, to: u64, generation: u64) {
        if to != OPEN {
            self.0.store(tag(generation), Ordering::Release);
        } else if from != HALF_OPEN {
            self.0
                .store(tag(generation.wrapping_sub(1)), Ordering::Release);
        } else {
            let mut cur = self.0.load(Ordering::Acquire);
            while let Err(actual) = self.0.compare_exchange_weak(
                cur,
                // (The tag and the counts share no bit: `^` would do the same.)
                tag(generation) | (cur & COUNTS),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                cur = actual;
            }
        }
    }

    /// Takes one of `permitted` probe permits of `generation`.
    pub(crate) fn issue(&self, generation: u64, permitted: u64) -> Issue {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if !tag_matches(cur, generation) {
                return Issue::Stale;
            }
            if get(cur, ISSUED) >= permitted {
                return Issue::Full;
            }
            match self.0.compare_exchange_weak(
                cur,
                cur + (1 << ISSUED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Issue::Issued,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Counts a probe's outcome and says what the probes decide; `None` when the permit's
    /// `generation` is no longer the word's (the outcome is dropped).
    pub(crate) fn report(
        &self,
        generation: u64,
        call: Call,
        rules: &ProbeRules,
    ) -> Option<Decision> {
        let probe_mode = rules.probe_mode();
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if !tag_matches(cur, generation) {
                return None;
            }
            let mut next = cur;
            if probe_mode {
                // A reported probe frees its permit.
                next -= 1 << ISSUED;
            }
            next += if call.is_failure() {
                1 << FAILED
            } else {
                1 << SUCC
            };
            if call.is_slow() {
                next += 1 << SLOW;
                if call.is_failure() {
                    // `1 << SLOW_FAILED`: the lowest field.
                    next += 1;
                }
            }
            let decision = rules.decide(
                call.is_failure(),
                get(next, SUCC),
                get(next, FAILED),
                get(next, SLOW),
            );
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(decision),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back a permit of `generation` that reported nothing.
    pub(crate) fn release(&self, generation: u64) {
        let mut cur = self.0.load(Ordering::Acquire);
        // (Each issued permit is released at most once, so with a matching tag ISSUED is never
        // 0 here: `>= 0` would not change what happens.)
        while tag_matches(cur, generation) && get(cur, ISSUED) > 0 {
            match self.0.compare_exchange_weak(
                cur,
                cur - (1 << ISSUED),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The probes' counts, if the word belongs to `generation`.
    pub(crate) fn counts(&self, generation: u64) -> Option<ProbeCounts> {
        let w = self.0.load(Ordering::Acquire);
        tag_matches(w, generation).then(|| ProbeCounts {
            successes: get(w, SUCC),
            failed: get(w, FAILED),
            slow: get(w, SLOW),
            slow_failed: get(w, SLOW_FAILED),
        })
    }
}
