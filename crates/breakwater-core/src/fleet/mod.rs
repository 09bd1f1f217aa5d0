//! Breaker state shared by the replicas of a service, through a store they all reach (Redis,
//! in `breakwater::redis`).
//!
//! Nothing here is on the call path. A background task ([`Fleet`], with the `tokio` feature)
//! reads the registry's events and publishes each local transition to the [`StateStore`],
//! which numbers it with a fleet-wide epoch and tells every replica; each replica
//! [adopts](crate::CircuitBreaker::adopt) what it hears, the newest epoch winning. If the store
//! is slow or gone, every replica goes on with its own state, counts the errors in
//! [`StoreStats`], and catches up when the store returns.
//!
//! Optional: a **shared window** (each replica adds its outcome counts to time-bucketed
//! counters in the store, once per flush interval, and trips when the fleet's rate reaches the
//! breaker's thresholds) and a **quorum** (a breaker's own trip opens the fleet only once K
//! replicas have tripped on their own).

mod stats;
#[cfg(feature = "tokio")]
mod sync;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use crate::breaker::OutcomeTotals;
pub use stats::{StoreStats, StoreStatsView};
#[cfg(feature = "tokio")]
pub use sync::{DEFAULT_FLUSH_INTERVAL, DEFAULT_QUEUE, DEFAULT_TIMEOUT, Fleet, FleetBuilder};

use crate::state::{State, Trigger};

/// A breaker's state as the fleet stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetState {
    /// The breaker's name (a family member's is `family:key`).
    pub circuit: Arc<str>,
    /// The state.
    pub state: State,
    /// In OPEN, when the wait ends (ms since the Unix epoch).
    pub open_until: Option<u64>,
    /// The fleet-wide number that orders states: the newest wins.
    pub epoch: u64,
    /// The replica that published it.
    pub replica: Arc<str>,
}

/// A local transition, to be published to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The breaker's name.
    pub circuit: Arc<str>,
    /// The state it entered.
    pub state: State,
    /// In OPEN, when the wait ends (ms since the Unix epoch).
    pub open_until: Option<u64>,
    /// Why it moved.
    pub trigger: Trigger,
    /// The replica publishing it.
    pub replica: Arc<str>,
    /// When (ms since the Unix epoch, the replica's clock).
    pub at: u64,
    /// With a quorum, a trip is a vote: published only once this many replicas' votes for
    /// the circuit are still open.
    pub quorum: Option<u32>,
}

/// A replica's outcome counts for one circuit since its last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDelta {
    /// The breaker's name.
    pub circuit: Arc<str>,
    /// Counts since the last flush.
    pub counts: OutcomeTotals,
    /// Only counts from this time on (ms since the Unix epoch) make the fleet's totals: the
    /// breaker's last closing, so that what made it open does not open it again.
    pub since: u64,
}

/// What went wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    message: String,
    timeout: bool,
}

impl StoreError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            timeout: false,
        }
    }

    /// The store did not answer within `after`.
    pub fn timeout(after: Duration) -> Self {
        Self {
            message: format!("no answer within {after:?}"),
            timeout: true,
        }
    }

    /// Whether it was a timeout.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

/// A store operation in flight.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What a store tells a listening replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetMessage {
    /// The subscription is in place: states published from now on will arrive, so this is
    /// when to read the stored ones.
    Subscribed,
    /// A state was published.
    State(FleetState),
}

/// Where the replicas of a fleet meet: it orders and keeps breaker states and tells every
/// replica of each. Implemented on Redis by `breakwater::redis::RedisStore`; [`Fleet`] drives
/// it. Every method is called from a background task, never on a call's path.
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// A short name for health checks and metrics (`redis`).
    fn kind(&self) -> &'static str;

    /// Stores `change` as its circuit's fleet state under the next epoch (greater than every
    /// epoch before it, also across a restart of the store) and publishes it, atomically.
    /// With [`StateChange::quorum`] set, records the vote and does so only once the quorum is
    /// reached. The epoch, or `None` for a vote short of its quorum.
    fn publish(&self, change: StateChange) -> StoreFuture<'_, Option<u64>>;

    /// Every stored state.
    fn load(&self) -> StoreFuture<'_, Vec<FleetState>>;

    /// Subscribes, sends [`FleetMessage::Subscribed`], then every published state, until the
    /// connection ends (an error) or `feed` is closed (`Ok`).
    fn listen(&self, feed: async_channel::Sender<FleetMessage>) -> StoreFuture<'_, ()>;

    /// Adds each delta to the current second's bucket of its circuit, drops buckets older
    /// than `window`, and answers each circuit's totals over the buckets within `window` and
    /// from its delta's `since` on (in the order of `deltas`).
    fn add_window(
        &self,
        deltas: Vec<WindowDelta>,
        window: Duration,
        now: u64,
    ) -> StoreFuture<'_, Vec<OutcomeTotals>>;
}
