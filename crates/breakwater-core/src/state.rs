//! The breaker's states, and how a state and its generation are packed into one atomic word.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Calls flow and outcomes are recorded; the trip policies are judged.
    Closed,
    /// Calls are rejected until the wait in OPEN is over.
    Open,
    /// A limited number of probe calls decide whether to close or re-open.
    HalfOpen,
    /// Held open by an operator: every call is rejected until released.
    ForcedOpen,
    /// Held closed by an operator: every call flows, nothing is recorded, it never trips.
    Disabled,
    /// Every call flows and is recorded, but the breaker never trips.
    MetricsOnly,
}

impl State {
    /// Every state, in a stable order.
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
        State::MetricsOnly,
    ];

    /// The upper-case name used in JSON and metrics (`CLOSED`, `HALF_OPEN`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
            State::ForcedOpen => "FORCED_OPEN",
            State::Disabled => "DISABLED",
            State::MetricsOnly => "METRICS_ONLY",
        }
    }

    /// Parses an upper-case state name (also accepts lower case and dashes).
    pub fn parse(s: &str) -> Option<State> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        State::ALL.into_iter().find(|st| st.as_str() == norm)
    }

    /// Whether calls are admitted without limit in this state.
    #[inline]
    pub fn allows_calls(self) -> bool {
        matches!(self, State::Closed | State::Disabled | State::MetricsOnly)
    }

    pub(crate) const fn code(self) -> u64 {
        match self {
            State::Closed => CLOSED,
            State::Open => OPEN,
            State::HalfOpen => HALF_OPEN,
            State::ForcedOpen => FORCED_OPEN,
            State::Disabled => DISABLED,
            State::MetricsOnly => METRICS_ONLY,
        }
    }

    #[inline]
    pub(crate) const fn from_code(code: u64) -> State {
        match code {
            CLOSED => State::Closed,
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            FORCED_OPEN => State::ForcedOpen,
            DISABLED => State::Disabled,
            _ => State::MetricsOnly,
        }
    }

    /// Whether a manual transition from `self` to `to` is allowed (Resilience4j's table):
    /// HALF_OPEN cannot be entered from CLOSED or METRICS_ONLY, nor OPEN from METRICS_ONLY.
    pub fn can_transition_to(self, to: State) -> bool {
        !matches!(
            (self, to),
            (State::Closed, State::HalfOpen)
                | (State::MetricsOnly, State::HalfOpen)
                | (State::MetricsOnly, State::Open)
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;
pub(crate) const FORCED_OPEN: u64 = 3;
pub(crate) const DISABLED: u64 = 4;
pub(crate) const METRICS_ONLY: u64 = 5;

/// Bits of the state word holding the state; the rest hold the generation.
pub(crate) const STATE_BITS: u64 = 3;
pub(crate) const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// Packs a state and a generation into one word.
#[inline]
pub(crate) const fn pack(state: u64, generation: u64) -> u64 {
    // (`^` would do the same: the two fields share no bit.)
    (generation << STATE_BITS) | state
}

#[inline]
pub(crate) const fn state_of(word: u64) -> u64 {
    word & STATE_MASK
}

#[inline]
pub(crate) const fn generation_of(word: u64) -> u64 {
    word >> STATE_BITS
}

/// What moved a breaker from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The failure rate reached its threshold.
    FailureRatio,
    /// The slow-call rate reached its threshold.
    SlowCallRatio,
    /// Consecutive failures reached their threshold.
    ConsecutiveFailures,
    /// A wait ran out (OPEN to HALF_OPEN, or the max wait in HALF_OPEN).
    Timer,
    /// Probes decided: the half-open trial calls, or an active health probe feeding the
    /// breaker.
    Probe,
    /// An operator or the program asked for it.
    Manual,
    /// Another replica's state, adopted through a shared [`StateStore`](crate::fleet::StateStore).
    Fleet,
}

impl Trigger {
    /// The snake_case name used in metrics (`failure_ratio`, `timer`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::FailureRatio => "failure_ratio",
            Trigger::SlowCallRatio => "slow_call_ratio",
            Trigger::ConsecutiveFailures => "consecutive_failures",
            Trigger::Timer => "timer",
            Trigger::Probe => "probe",
            Trigger::Manual => "manual",
            Trigger::Fleet => "fleet",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_pack() {
        for s in State::ALL {
            assert_eq!(State::from_code(s.code()), s);
            let w = pack(s.code(), 12345);
            assert_eq!(state_of(w), s.code());
            assert_eq!(generation_of(w), 12345);
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("half-open"), Some(State::HalfOpen));
        assert_eq!(State::parse("bogus"), None);
    }

    #[test]
    fn illegal_manual_transitions() {
        assert!(!State::Closed.can_transition_to(State::HalfOpen));
        assert!(!State::MetricsOnly.can_transition_to(State::HalfOpen));
        assert!(!State::MetricsOnly.can_transition_to(State::Open));
        assert!(State::Open.can_transition_to(State::HalfOpen));
        assert!(State::ForcedOpen.can_transition_to(State::Closed));
    }
}
