//! Lock-free sliding windows: the last N calls ([`count`]) or the last T seconds ([`time`]).
//!
//! A recorded call is one of [`Call`]'s four kinds; windows count buffered, failed (slow or not),
//! slow (failed or not) and slow-failed calls, and hand back the counts after each record so the
//! trip policies can judge them without another read.

pub(crate) mod count;
pub(crate) mod time;

/// The kind of a recorded call (Resilience4j's `Outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Call {
    Success = 1,
    Failure = 2,
    SlowSuccess = 3,
    SlowFailure = 4,
}

impl Call {
    #[inline]
    pub(crate) fn new(failed: bool, slow: bool) -> Call {
        match (failed, slow) {
            (false, false) => Call::Success,
            (true, false) => Call::Failure,
            (false, true) => Call::SlowSuccess,
            (true, true) => Call::SlowFailure,
        }
    }

    #[inline]
    pub(crate) fn is_failure(self) -> bool {
        matches!(self, Call::Failure | Call::SlowFailure)
    }

    #[inline]
    pub(crate) fn is_slow(self) -> bool {
        matches!(self, Call::SlowSuccess | Call::SlowFailure)
    }
}

/// Counts over a window at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) buffered: u64,
    pub(crate) failed: u64,
    pub(crate) slow: u64,
}

/// Either kind of window. Kept inline in the breaker (no box): one indirection less on the hot
/// path is worth the padding of the count window's counter line.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Window {
    Count(count::CountWindow),
    Time(time::TimeWindow),
}

/// Full counts for a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FullCounts {
    pub(crate) buffered: u64,
    pub(crate) failed: u64,
    pub(crate) slow: u64,
    pub(crate) slow_failed: u64,
}

impl Window {
    pub(crate) fn full_counts(&self, now_nanos: u64) -> FullCounts {
        match self {
            Window::Count(w) => w.full_counts(),
            Window::Time(w) => w.full_counts(now_nanos),
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}
