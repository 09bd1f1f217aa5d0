//! The authentication-failure circuit: per client, `401`/`403` answers count as failures;
//! after `failures` of them within `window` the client is refused `429` with `Retry-After`
//! for `block`, then let through again. Other clients are untouched.
//!
//! A full circuit breaker per client would cost a breaker's memory (its window, counters and
//! cache-line padding) for each of up to a million clients; a client's circuit here is three
//! atomics (its window's start and count, and the end of its refusal), in a lock-free map
//! bounded at `max_clients`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use breakwater_core::{Clock, ClockHandle, ConfigError};

/// Clients tracked at most, by default.
pub(crate) const DEFAULT_MAX_CLIENTS: usize = 1_000_000;

#[derive(Debug, Default)]
struct Entry {
    /// ms on the guard's clock.
    window_start: AtomicU64,
    failures: AtomicU32,
    /// ms on the guard's clock; 0 when not refused.
    blocked_until: AtomicU64,
}

/// Counters of an [`AuthGuard`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthGuardCounts {
    /// Authentication failures counted.
    pub failures: u64,
    /// Clients that reached the limit (each time).
    pub blocked: u64,
    /// Requests refused with 429.
    pub refused: u64,
    /// Failures not counted because the map was full of clients still in their window.
    pub untracked: u64,
    /// Clients tracked now.
    pub clients: u64,
}

/// Builds an [`AuthGuard`].
#[derive(Debug)]
#[must_use]
pub struct AuthGuardBuilder {
    failures: u32,
    window: Duration,
    block: Duration,
    max_clients: usize,
    clock: ClockHandle,
}

impl AuthGuardBuilder {
    /// Failures within the window that get a client refused (default 10).
    pub fn failures(mut self, n: u32) -> Self {
        self.failures = n;
        self
    }

    /// The window the failures are counted in (default 60 s).
    pub fn window(mut self, d: Duration) -> Self {
        self.window = d;
        self
    }

    /// How long a client is refused (default 60 s).
    pub fn block(mut self, d: Duration) -> Self {
        self.block = d;
        self
    }

    /// Clients tracked at most (default 1,000,000).
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// The clock (a `ManualClock` in tests).
    pub fn clock(mut self, clock: impl Into<ClockHandle>) -> Self {
        self.clock = clock.into();
        self
    }

    /// The guard; a zero setting is refused, naming it.
    pub fn build(self) -> Result<AuthGuard, ConfigError> {
        for (field, zero) in [
            ("failures", self.failures == 0),
            ("window", self.window.is_zero()),
            ("block", self.block.is_zero()),
            ("max_clients", self.max_clients == 0),
        ] {
            if zero {
                return Err(ConfigError::new(field, "must be more than 0"));
            }
        }
        Ok(AuthGuard {
            inner: Arc::new(Inner {
                clients: papaya::HashMap::builder()
                    .hasher(foldhash::fast::RandomState::default())
                    .build(),
                failures: self.failures,
                window_ms: self.window.as_millis() as u64,
                block_ms: self.block.as_millis() as u64,
                max_clients: self.max_clients,
                clock: self.clock,
                last_sweep: AtomicU64::new(0),
                counted: AtomicU64::new(0),
                blocked: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                untracked: AtomicU64::new(0),
            }),
        })
    }
}

/// Clients refused after too many authentication failures; clones share it.
///
/// ```
/// use std::time::Duration;
/// use breakwater::ManualClock;
/// use breakwater::guard::AuthGuard;
///
/// let clock = ManualClock::new();
/// let guard = AuthGuard::builder().failures(3).clock(clock.clone()).build().unwrap();
/// let (mallory, alice) = ("10.0.0.66".parse().unwrap(), "10.0.0.7".parse().unwrap());
/// for _ in 0..3 {
///     assert!(guard.check(mallory).is_ok());
///     guard.record(mallory, true);
/// }
/// assert_eq!(guard.check(mallory).unwrap_err(), Duration::from_secs(60));
/// assert!(guard.check(alice).is_ok());
/// clock.advance(Duration::from_secs(61));
/// assert!(guard.check(mallory).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct AuthGuard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clients: papaya::HashMap<IpAddr, Entry, foldhash::fast::RandomState>,
    failures: u32,
    window_ms: u64,
    block_ms: u64,
    max_clients: usize,
    clock: ClockHandle,
    last_sweep: AtomicU64,
    counted: AtomicU64,
    blocked: AtomicU64,
    refused: AtomicU64,
    untracked: AtomicU64,
}

impl AuthGuard {
    /// 10 failures in 60 s refuse a client for 60 s; at most 1,000,000 clients.
    pub fn builder() -> AuthGuardBuilder {
        AuthGuardBuilder {
            failures: 10,
            window: Duration::from_secs(60),
            block: Duration::from_secs(60),
            max_clients: DEFAULT_MAX_CLIENTS,
            clock: ClockHandle::System,
        }
    }

    fn now(&self) -> u64 {
        self.inner.clock.now().as_millis() as u64
    }

    /// `Ok` if `client` may try, else how long until it may (its `Retry-After`).
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let clients = self.inner.clients.pin();
        let Some(e) = clients.get(&client) else {
            return Ok(());
        };
        let until = e.blocked_until.load(Ordering::Acquire);
        let now = self.now();
        if until > now {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Duration::from_millis(until - now));
        }
        Ok(())
    }

    /// Records an answer to `client`: `failed` for a 401 or 403.
    pub fn record(&self, client: IpAddr, failed: bool) {
        if !failed {
            return;
        }
        let i = &*self.inner;
        let now = self.now();
        let clients = i.clients.pin();
        if clients.get(&client).is_none() && clients.len() >= i.max_clients {
            self.sweep(now);
            if clients.len() >= i.max_clients {
                i.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let e = clients.get_or_insert_with(client, Entry::default);
        i.counted.fetch_add(1, Ordering::Relaxed);
        let start = e.window_start.load(Ordering::Acquire);
        if start == 0 || now.saturating_sub(start) >= i.window_ms {
            e.window_start.store(now.max(1), Ordering::Release);
            e.failures.store(0, Ordering::Release);
        }
        if e.failures.fetch_add(1, Ordering::AcqRel) + 1 >= i.failures {
            e.failures.store(0, Ordering::Release);
            e.blocked_until.store(now + i.block_ms, Ordering::Release);
            i.blocked.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets clients whose window and refusal are over (at most every 100 ms).
    fn sweep(&self, now: u64) {
        let i = &*self.inner;
        let last = i.last_sweep.load(Ordering::Relaxed);
        if now < last + 100 && last != 0
            || i.last_sweep
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        i.clients.pin().retain(|_, e| {
            e.blocked_until.load(Ordering::Acquire) > now
                || now.saturating_sub(e.window_start.load(Ordering::Acquire)) < i.window_ms
        });
    }

    /// Its counters now.
    pub fn counts(&self) -> AuthGuardCounts {
        let i = &*self.inner;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AuthGuardCounts {
            failures: n(&i.counted),
            blocked: n(&i.blocked),
            refused: n(&i.refused),
            untracked: n(&i.untracked),
            clients: i.clients.len() as u64,
        }
    }
}
