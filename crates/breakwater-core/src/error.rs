//! Errors: a call the breaker did not permit, a call that failed through [`crate::CircuitBreaker::call`],
//! and an illegal manual transition.

use std::fmt;
use std::time::Duration;

use crate::state::State;

/// A call was not permitted: the breaker is OPEN, FORCED_OPEN, or HALF_OPEN with every probe
/// permit taken (Resilience4j's `CallNotPermittedException`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallNotPermitted {
    pub(crate) state: State,
    pub(crate) retry_after: Option<Duration>,
}

impl CallNotPermitted {
    /// The state that rejected the call.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker will admit a probe, when known (OPEN only).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CallNotPermitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker is {}: call not permitted", self.state)?;
        if let Some(d) = self.retry_after {
            write!(f, " (retry after {} ms)", d.as_millis())?;
        }
        Ok(())
    }
}

impl std::error::Error for CallNotPermitted {}

/// The error of [`crate::CircuitBreaker::call`]: rejected by the breaker, or the call's own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The breaker did not permit the call; it was never made.
    Rejected(CallNotPermitted),
    /// The call was made and failed.
    Inner(E),
}

impl<E> CallError<E> {
    /// The call's own error, if it was made.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Inner(e) => Some(e),
            CallError::Rejected(_) => None,
        }
    }

    /// Whether the breaker rejected the call.
    pub fn is_rejected(&self) -> bool {
        matches!(self, CallError::Rejected(_))
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => r.fmt(f),
            CallError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Inner(e) => Some(e),
        }
    }
}

/// A manual transition that the state machine does not allow (e.g. CLOSED to HALF_OPEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionError {
    pub(crate) from: State,
    pub(crate) to: State,
}

impl TransitionError {
    /// The state the breaker was in.
    pub fn from(&self) -> State {
        self.from
    }
    /// The state asked for.
    pub fn to(&self) -> State {
        self.to
    }
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "illegal transition from {} to {}", self.from, self.to)
    }
}

impl std::error::Error for TransitionError {}
