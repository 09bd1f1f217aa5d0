//! The Breakwater circuit-breaker engine: no tower, no http, no async runtime on the hot path.
//!
//! A [`CircuitBreaker`] moves between CLOSED, OPEN and HALF_OPEN (plus the operator states
//! FORCED_OPEN, DISABLED and METRICS_ONLY), tripping on consecutive failures, on the failure rate
//! or on the slow-call rate over a count- or time-based sliding window, and staying open for a
//! fixed or exponentially growing wait. Semantics follow Resilience4j, plus generations: an
//! outcome reported by a permit issued before a transition stays out of the window (a thread
//! caught between the check and the record at the transition can still land one in the new
//! window), and is counted in the lifetime counters.
//!
//! - [`CircuitBreaker::try_acquire`] → [`Permit`] → `success()` / `failure()` / `ignore()`;
//!   [`CircuitBreaker::call`] wraps a future.
//! - [`Config`] is built and validated by [`ConfigBuilder`]; errors name the field.
//! - [`Registry`] holds named breakers, named configs (presets `read`, `write`, `auth`) and
//!   [`KeyedFamily`]s with a cap on keys.
//! - [`Event`]s go to any number of [`Subscription`]s without blocking calls.
//! - [`Snapshot`] is the serde view the ops API serves.
//! - [`ManualClock`] makes every time-based behaviour testable without sleeping.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use breakwater::{CircuitBreaker, Config, ManualClock, State};
//!
//! let clock = ManualClock::new();
//! let config = Config::builder()
//!     .consecutive_failures(3)
//!     .wait_in_open(Duration::from_secs(30))
//!     .success_threshold(2)
//!     .permitted_calls_in_half_open(2)
//!     .build()?;
//! let breaker = CircuitBreaker::with_clock("search", config, clock.clone());
//!
//! for _ in 0..3 {
//!     breaker.try_acquire()?.failure();
//! }
//! assert_eq!(breaker.state(), State::Open);
//! assert!(breaker.try_acquire().is_err());
//!
//! clock.advance(Duration::from_secs(31));
//! breaker.try_acquire()?.success();
//! breaker.try_acquire()?.success();
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! - `tokio`: the system clock runs timers (automatic OPEN → HALF_OPEN, max wait in HALF_OPEN)
//!   on tokio when called inside a runtime. Without it, those transitions happen lazily on the
//!   next call.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod breaker;
pub mod clock;
pub mod config;
mod error;
pub mod event;
pub mod fleet;
mod policy;
mod registry;
mod snapshot;
mod state;
mod stats;
mod sync;
mod window;

pub use backoff::WaitInOpen;
pub use breaker::{
    CircuitBreaker, LATENCY_BUCKETS, LearnedThreshold, LearnedValue, Outcome, OutcomeTotals,
    OwnedPermit, Permit, latency_bucket_bounds,
};
pub use clock::{Clock, ClockHandle, ManualClock, SystemClock};
pub use config::{
    Config, ConfigBuilder, ConfigError, ConfigView, HealthMode, SlidingWindow, WindowType,
};
pub use error::{CallError, CallNotPermitted, TransitionError};
pub use event::{Event, EventKind, Subscription};
pub use registry::{
    DEFAULT_IDLE_EVICTION, DEFAULT_MAX_KEYS, FamilyOptions, KeyedFamily, Registry, RegistryBuilder,
};
pub use snapshot::{Snapshot, WindowSnapshot};
pub use state::{State, Trigger};
pub use stats::{DURATION_BUCKETS, DurationHistogram, TransitionCount};
