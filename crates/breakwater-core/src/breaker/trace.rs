//! `tracing` events on target `breakwater`: every transition (warn for OPEN and FORCED_OPEN,
//! info for the others) and every refused call (debug). Successful calls are never events.
//!
//! Each check is `tracing`'s own callsite filter, so with no subscriber, or one that does not
//! listen to `breakwater`, nothing is built.

use crate::snapshot::WindowSnapshot;
use crate::state::{FORCED_OPEN, OPEN, State, Trigger};

/// Whether a transition to `to` would be seen by a subscriber.
#[inline]
pub(super) fn transition_enabled(to: u64) -> bool {
    if warns(to) {
        tracing::enabled!(target: "breakwater", tracing::Level::WARN)
    } else {
        tracing::enabled!(target: "breakwater", tracing::Level::INFO)
    }
}

fn warns(to: u64) -> bool {
    matches!(to, OPEN | FORCED_OPEN)
}

/// A transition, with the numbers of the state it left (why it moved).
#[cold]
pub(super) fn transition(
    name: &str,
    from: u64,
    to: u64,
    trigger: Trigger,
    window: &WindowSnapshot,
) {
    let from = State::from_code(from).as_str();
    let to_state = State::from_code(to).as_str();
    let trigger = trigger.as_str();
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: "breakwater",
                $level,
                circuit_breaker.name = name,
                from_state = from,
                to_state = to_state,
                trigger,
                failure_rate = window.failure_rate,
                slow_call_rate = window.slow_call_rate,
                buffered_calls = window.buffered_calls,
                failed_calls = window.failed_calls,
                slow_calls = window.slow_calls,
                not_permitted_calls = window.not_permitted_calls,
                "circuit breaker {name}: {from} -> {to_state} ({trigger})"
            )
        };
    }
    if warns(to) {
        event!(tracing::Level::WARN);
    } else {
        event!(tracing::Level::INFO);
    }
}

/// A refused call.
#[inline]
pub(super) fn refused(name: &str, state: State) {
    tracing::event!(
        target: "breakwater",
        tracing::Level::DEBUG,
        circuit_breaker.name = name,
        circuit_breaker.state = state.as_str(),
        "call not permitted"
    );
}
