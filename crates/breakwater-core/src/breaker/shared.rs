//! What a breaker tells a fleet of replicas, and how it takes the fleet's state
//! ([`crate::fleet`]).

use std::sync::atomic::Ordering;

use super::CircuitBreaker;
use crate::clock::Clock;
use crate::state::{OPEN, State, Trigger, state_of};

/// A breaker's lifetime outcome counts, for adding to a fleet-wide window
/// ([`CircuitBreaker::outcome_totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeTotals {
    /// Calls recorded as a success or a failure.
    pub calls: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Of those, slow calls.
    pub slow: u64,
}

impl CircuitBreaker {
    /// The state to tell other replicas: the state, and in OPEN when its wait ends (ms since
    /// the Unix epoch, on the breaker's clock).
    pub fn shared_state(&self) -> (State, Option<u64>) {
        let inner = &*self.inner;
        let word = inner.hot.0.state.load(Ordering::Acquire);
        let state = State::from_code(state_of(word));
        let until = (state_of(word) == OPEN).then(|| {
            let until = inner.hot.0.open_until.load(Ordering::Acquire);
            let now = inner.clock.nanos();
            let wall = inner.clock.epoch_millis();
            wall.saturating_add(until.saturating_sub(now).div_ceil(1_000_000))
        });
        (state, until)
    }

    /// Applies a state a fleet of replicas agreed on, numbered `epoch` by the store that
    /// ordered it. The newest epoch wins: an epoch no newer than the newest this breaker has
    /// seen changes nothing, so a late message never undoes a newer state. OPEN needs
    /// `open_until` (ms since the Unix epoch) still ahead; HALF_OPEN is never adopted (each
    /// replica probes for itself), nor a move [`State::can_transition_to`] forbids.
    ///
    /// The move is made with [`Trigger::Fleet`], so that whatever shares local transitions can
    /// tell it apart. True if the state changed.
    ///
    /// ```
    /// use breakwater::{CircuitBreaker, Config, ManualClock, State};
    ///
    /// let clock = ManualClock::with_epoch_millis(1_000_000);
    /// let breaker = CircuitBreaker::with_clock("db", Config::default(), clock.clone());
    /// assert!(breaker.adopt(State::Open, Some(1_030_000), 7)); // open for 30 s more
    /// assert_eq!(breaker.state(), State::Open);
    /// assert!(!breaker.adopt(State::Closed, None, 6)); // older: ignored
    /// assert_eq!(breaker.state(), State::Open);
    /// assert!(breaker.adopt(State::Closed, None, 8));
    /// assert_eq!((breaker.state(), breaker.fleet_epoch()), (State::Closed, 8));
    /// ```
    pub fn adopt(&self, state: State, open_until: Option<u64>, epoch: u64) -> bool {
        let inner = &*self.inner;
        let mut ctl = inner.lock();
        if epoch <= ctl.fleet_epoch {
            return false;
        }
        ctl.fleet_epoch = epoch;
        let cur = inner.hot.0.state.load(Ordering::Acquire);
        let from = State::from_code(state_of(cur));
        if from == state || state == State::HalfOpen || !from.can_transition_to(state) {
            return false;
        }
        let until = match (state, open_until) {
            (State::Open, Some(until_ms)) => {
                let wall = inner.clock.epoch_millis();
                if until_ms <= wall {
                    return false;
                }
                let ahead = (until_ms - wall).saturating_mul(1_000_000);
                Some(inner.clock.nanos().saturating_add(ahead))
            }
            (State::Open, None) => return false,
            _ => None,
        };
        inner.enter(&mut ctl, cur, state.code(), Trigger::Fleet, until);
        true
    }

    /// Records that the fleet holds this breaker's own state at `epoch` (what a store answered
    /// when it published a local transition), so that an older message, this replica's own
    /// echo of an earlier state included, cannot undo a newer local move.
    pub fn note_fleet_epoch(&self, epoch: u64) {
        let mut ctl = self.inner.lock();
        ctl.fleet_epoch = ctl.fleet_epoch.max(epoch);
    }

    /// The newest fleet epoch this breaker has adopted or seen (0: none).
    pub fn fleet_epoch(&self) -> u64 {
        self.inner.lock().fleet_epoch
    }

    /// Calls recorded since creation or the last reset, with their failures and slow calls:
    /// a few loads, for a task that adds each interval's difference to a fleet-wide window.
    pub fn outcome_totals(&self) -> OutcomeTotals {
        let inner = &*self.inner;
        let l = &inner.life.0;
        OutcomeTotals {
            calls: inner.window_calls() + l.other_calls.load(Ordering::Relaxed),
            failures: l.failures.load(Ordering::Relaxed),
            slow: l.slow_calls.load(Ordering::Relaxed),
        }
    }
}
