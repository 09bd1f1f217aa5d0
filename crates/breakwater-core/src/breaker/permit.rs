//! Permits: permission to make one call, and how its outcome is recorded.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::inner::Inner;
use super::timing::UNTIMED;
use crate::state::{State, generation_of, state_of};

/// A permit's word once its outcome is recorded: no state, so dropping it releases nothing.
const RECORDED: u64 = u64::MAX;

/// The outcome of a permitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed: it counts towards tripping.
    Failure,
    /// Neither: not recorded, and a half-open permit is given back.
    Ignored,
}

/// Permission to make one call; record its outcome with [`success`](Permit::success),
/// [`failure`](Permit::failure), [`ignore`](Permit::ignore) or [`record`](Permit::record).
///
/// Dropping a permit without an outcome (e.g. a cancelled future) records nothing and gives a
/// half-open permit back. Outcomes of permits issued before a transition are dropped (save one
/// per thread caught recording at the moment of the transition).
#[must_use = "record the call's outcome on the permit"]
pub struct Permit<'a> {
    pub(super) inner: &'a Inner,
    pub(super) word: u64,
    pub(super) started: u64,
}

/// A [`Permit`] that owns a handle to its breaker (`'static`).
#[must_use = "record the call's outcome on the permit"]
pub struct OwnedPermit {
    pub(super) inner: Arc<Inner>,
    pub(super) word: u64,
    pub(super) started: u64,
}

macro_rules! permit_methods {
    ($ty:ty) => {
        impl $ty {
            /// The call succeeded.
            #[inline]
            pub fn success(self) {
                self.record(Outcome::Success)
            }

            /// The call failed.
            #[inline]
            pub fn failure(self) {
                self.record(Outcome::Failure)
            }

            /// The call counts as neither success nor failure.
            #[inline]
            pub fn ignore(self) {
                self.record(Outcome::Ignored)
            }

            /// Records `outcome`, timing the call if the breaker times calls.
            #[inline(always)]
            pub fn record(mut self, outcome: Outcome) {
                self.inner.record(self.word, self.started, outcome, None);
                self.word = RECORDED;
            }

            /// Records `outcome` for a call that took `duration` (instead of the measured time).
            pub fn record_with_duration(mut self, outcome: Outcome, duration: Duration) {
                self.inner
                    .record(self.word, self.started, outcome, Some(duration));
                self.word = RECORDED;
            }

            /// The name of the breaker that issued the permit.
            pub fn circuit(&self) -> &str {
                &self.inner.name
            }

            /// The state the permit was issued in.
            pub fn state(&self) -> State {
                State::from_code(state_of(self.word))
            }

            /// Whether the call is being timed.
            pub fn is_timed(&self) -> bool {
                self.started != UNTIMED
            }

            /// How long since the permit was issued, when timed.
            pub fn elapsed(&self) -> Option<Duration> {
                (self.started != UNTIMED)
                    .then(|| Duration::from_nanos(self.inner.elapsed(self.started).1))
            }
        }

        impl Drop for $ty {
            #[inline(always)]
            fn drop(&mut self) {
                self.inner.release(self.word);
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("circuit", &self.inner.name)
                    .field("state", &self.state())
                    .field("generation", &generation_of(self.word))
                    .finish()
            }
        }
    };
}

permit_methods!(Permit<'_>);
permit_methods!(OwnedPermit);
