//! A per-client rate limit: GCRA (`governor`'s keyed limiter) on the guard's clock.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use breakwater_core::{Clock, ClockHandle, ConfigError};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Clients whose state is kept at most, by default (beyond, the idle ones are forgotten).
pub(crate) const DEFAULT_MAX_CLIENTS: usize = 1_000_000;

/// `governor`'s clock on ours.
#[derive(Debug, Clone)]
struct OnClock(ClockHandle);

impl governor::clock::Clock for OnClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.now()
    }
}

/// Builds a [`RateLimit`].
#[derive(Debug)]
#[must_use]
pub struct RateLimitBuilder {
    per_second: u32,
    burst: Option<u32>,
    max_clients: usize,
    clock: ClockHandle,
}

impl RateLimitBuilder {
    /// Requests a client may make at once before the rate applies (default: one second's).
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = Some(n);
        self
    }

    /// Clients whose state is kept at most (default 1,000,000).
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// The clock (a `ManualClock` in tests).
    pub fn clock(mut self, clock: impl Into<ClockHandle>) -> Self {
        self.clock = clock.into();
        self
    }

    /// The limit; a zero setting is refused, naming it.
    pub fn build(self) -> Result<RateLimit, ConfigError> {
        let rate = NonZeroU32::new(self.per_second)
            .ok_or_else(|| ConfigError::new("per_second", "must be more than 0"))?;
        let burst = NonZeroU32::new(self.burst.unwrap_or(self.per_second))
            .ok_or_else(|| ConfigError::new("burst", "must be more than 0"))?;
        if self.max_clients == 0 {
            return Err(ConfigError::new("max_clients", "must be more than 0"));
        }
        let quota = Quota::per_second(rate).allow_burst(burst);
        Ok(RateLimit {
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(
                    quota,
                    DefaultKeyedStateStore::default(),
                    OnClock(self.clock.clone()),
                ),
                clock: self.clock,
                per_second: self.per_second,
                max_clients: self.max_clients,
                permitted: AtomicU64::new(0),
                limited: AtomicU64::new(0),
                last_sweep: AtomicU64::new(0),
            }),
        })
    }
}

/// Each client at most `per_second` requests a second (after a burst); clones share it.
///
/// ```
/// use std::time::Duration;
/// use breakwater::ManualClock;
/// use breakwater::guard::RateLimit;
///
/// let clock = ManualClock::new();
/// let limit = RateLimit::builder(10).burst(2).clock(clock.clone()).build().unwrap();
/// let client = "10.0.0.1".parse().unwrap();
/// assert!(limit.check(client).is_ok());
/// assert!(limit.check(client).is_ok());
/// assert_eq!(limit.check(client).unwrap_err(), Duration::from_millis(100));
/// clock.advance(Duration::from_millis(100));
/// assert!(limit.check(client).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct RateLimit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, OnClock, NoOpMiddleware<Duration>>,
    clock: ClockHandle,
    per_second: u32,
    max_clients: usize,
    permitted: AtomicU64,
    limited: AtomicU64,
    last_sweep: AtomicU64,
}

/// Counters of a [`RateLimit`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitCounts {
    /// Requests let through.
    pub permitted: u64,
    /// Requests refused with 429.
    pub limited: u64,
    /// Clients with state now.
    pub clients: u64,
}

impl RateLimit {
    /// `per_second` requests a second per client.
    pub fn builder(per_second: u32) -> RateLimitBuilder {
        RateLimitBuilder {
            per_second,
            burst: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            clock: ClockHandle::System,
        }
    }

    /// The rate, per second.
    pub fn per_second(&self) -> u32 {
        self.inner.per_second
    }

    /// `Ok` if `client` may make a request now, else how long until it may.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let i = &*self.inner;
        let result = match i.limiter.check_key(&client) {
            Ok(()) => {
                i.permitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(not_until) => {
                i.limited.fetch_add(1, Ordering::Relaxed);
                Err(not_until.wait_time_from(i.clock.now()))
            }
        };
        if i.limiter.len() > i.max_clients {
            self.sweep();
        }
        result
    }

    /// Forgets the clients back at a full burst (at most every 100 ms).
    fn sweep(&self) {
        let i = &*self.inner;
        let now = i.clock.now().as_millis() as u64;
        let last = i.last_sweep.load(Ordering::Relaxed);
        if (last != 0 && now < last + 100)
            || i.last_sweep
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        i.limiter.retain_recent();
        i.limiter.shrink_to_fit();
    }

    /// Its counters now.
    pub fn counts(&self) -> RateLimitCounts {
        let i = &*self.inner;
        RateLimitCounts {
            permitted: i.permitted.load(Ordering::Relaxed),
            limited: i.limited.load(Ordering::Relaxed),
            clients: i.limiter.len() as u64,
        }
    }
}
