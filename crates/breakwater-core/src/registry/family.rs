//! Keyed families: one breaker per key, with a cap on keys.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::CircuitBreaker;
use crate::clock::{ClockHandle, saturating_nanos};
use crate::config::Config;
use crate::event::{DEFAULT_SUBSCRIBER_CAPACITY, EventHub, Subscription};
use crate::state::State;

use super::{DEFAULT_IDLE_EVICTION, DEFAULT_MAX_KEYS};

/// How often a full family looks for idle members to evict (monotonic nanos): 100 ms.
const FULL_SWEEP_EVERY: u64 = 100_000_000;

/// How a [`KeyedFamily`] creates and bounds its breakers.
#[derive(Debug, Clone)]
#[must_use]
pub struct FamilyOptions {
    config: Config,
    max_keys: usize,
    idle_eviction: Duration,
}

impl FamilyOptions {
    /// Members use `config`; at most [`DEFAULT_MAX_KEYS`] keys, idle eviction after
    /// [`DEFAULT_IDLE_EVICTION`].
    pub fn new(config: Config) -> Self {
        Self {
            config,
            max_keys: DEFAULT_MAX_KEYS,
            idle_eviction: DEFAULT_IDLE_EVICTION,
        }
    }

    /// The most keys the family holds (at least 1); beyond it, calls share the overflow breaker.
    pub fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n.max(1);
        self
    }

    /// A CLOSED member with no calls for this long may be evicted to make room.
    pub fn idle_eviction(mut self, d: Duration) -> Self {
        self.idle_eviction = d;
        self
    }
}

/// One breaker per key (e.g. per endpoint), with a cap on keys: past the cap, idle CLOSED
/// members are evicted, and if none is idle the call goes through the family's shared overflow
/// breaker, so attacker-chosen keys cannot grow memory.
#[derive(Clone)]
pub struct KeyedFamily {
    inner: Arc<FamilyInner>,
}

struct FamilyInner {
    name: Arc<str>,
    options: FamilyOptions,
    members: Members,
    /// Serialises inserts and sweeps (so the cap holds); reads never take it.
    insert_lock: std::sync::Mutex<()>,
    overflow: CircuitBreaker,
    clock: ClockHandle,
    hub: Arc<EventHub>,
    last_sweep: AtomicU64,
}

/// A family's members: a concurrent map with lock-free reads, hashed with a fast hasher seeded
/// per map (keys may come from requests).
type Members = papaya::HashMap<Box<str>, Member, foldhash::fast::RandomState>;

struct Member {
    breaker: CircuitBreaker,
    /// Activity seen at the last sweep, and when it last changed (monotonic nanos).
    seen: AtomicU64,
    active_at: AtomicU64,
}

impl fmt::Debug for KeyedFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedFamily")
            .field("name", &self.inner.name)
            .field("keys", &self.len())
            .finish()
    }
}

impl KeyedFamily {
    pub(super) fn new(
        name: Arc<str>,
        options: FamilyOptions,
        clock: ClockHandle,
        hub: Arc<EventHub>,
    ) -> Self {
        let overflow = CircuitBreaker::build(
            Arc::from(format!("{name}:<overflow>")),
            options.config.clone(),
            clock.clone(),
            hub.clone(),
        );
        Self {
            inner: Arc::new(FamilyInner {
                name,
                options,
                members: Members::with_hasher(Default::default()),
                insert_lock: std::sync::Mutex::new(()),
                overflow,
                clock,
                hub,
                last_sweep: AtomicU64::new(0),
            }),
        }
    }

    /// The family's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The breaker for `key`: an existing one (no allocation), a new one, or the overflow breaker
    /// when the family is full of active keys.
    pub fn get(&self, key: &str) -> CircuitBreaker {
        if let Some(m) = self.inner.members.pin().get(key) {
            return m.breaker.clone();
        }
        self.insert(key)
    }

    /// Runs `f` on the breaker for `key` (created if needed, or the overflow breaker), without
    /// cloning the handle of an existing one.
    #[inline]
    pub fn with<R>(&self, key: &str, f: impl FnOnce(&CircuitBreaker) -> R) -> R {
        {
            let members = self.inner.members.pin();
            if let Some(m) = members.get(key) {
                return f(&m.breaker);
            }
        }
        f(&self.insert(key))
    }

    /// The breaker for `key` if it has one, without creating it.
    pub fn get_existing(&self, key: &str) -> Option<CircuitBreaker> {
        self.inner.members.pin().get(key).map(|m| m.breaker.clone())
    }

    #[cold]
    fn insert(&self, key: &str) -> CircuitBreaker {
        let inner = &*self.inner;
        let now = inner.clock.nanos();
        let _serial = inner.insert_lock.lock().unwrap_or_else(|e| e.into_inner());
        let members = inner.members.pin();
        if let Some(m) = members.get(key) {
            return m.breaker.clone();
        }
        let idle = saturating_nanos(inner.options.idle_eviction);
        let since = now.saturating_sub(inner.last_sweep.load(Ordering::Relaxed));
        // A full family looks for idle members to make room, but at most every
        // `FULL_SWEEP_EVERY`: a stream of new keys into a family full of active ones must not
        // cost a sweep of every member each.
        let full = members.len() >= inner.options.max_keys;
        if since >= idle || (full && since >= idle.min(FULL_SWEEP_EVERY)) {
            inner.last_sweep.store(now, Ordering::Relaxed);
            sweep(&members, now, idle);
        }
        if members.len() >= inner.options.max_keys {
            return inner.overflow.clone();
        }
        let breaker = CircuitBreaker::build(
            Arc::from(format!("{}:{key}", inner.name)),
            inner.options.config.clone(),
            inner.clock.clone(),
            inner.hub.clone(),
        );
        members.insert(
            Box::from(key),
            Member {
                breaker: breaker.clone(),
                seen: AtomicU64::new(0),
                active_at: AtomicU64::new(now),
            },
        );
        breaker
    }

    /// Evicts CLOSED members that have had no calls for the idle time; returns how many.
    pub fn evict_idle(&self) -> usize {
        let now = self.inner.clock.nanos();
        let idle = saturating_nanos(self.inner.options.idle_eviction);
        let _serial = self
            .inner
            .insert_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.last_sweep.store(now, Ordering::Relaxed);
        sweep(&self.inner.members.pin(), now, idle)
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    /// Whether the family holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared breaker for calls past the cap.
    pub fn overflow(&self) -> &CircuitBreaker {
        &self.inner.overflow
    }

    /// The members, then the overflow breaker once it is in use (it has seen a call, or is in
    /// a state other than CLOSED): until the family is full it has nothing to show.
    pub fn members(&self) -> Vec<CircuitBreaker> {
        let mut v: Vec<CircuitBreaker> = self
            .inner
            .members
            .pin()
            .values()
            .map(|m| m.breaker.clone())
            .collect();
        let overflow = &self.inner.overflow;
        if overflow.activity() > 0 || overflow.state() != State::Closed {
            v.push(overflow.clone());
        }
        v
    }

    pub(super) fn find(&self, name: &str) -> Option<CircuitBreaker> {
        let key = name.strip_prefix(&*self.inner.name)?.strip_prefix(':')?;
        if name == self.inner.overflow.name() {
            return Some(self.inner.overflow.clone());
        }
        self.get_existing(key)
    }

    /// Subscribes to the events of every member.
    pub fn subscribe(&self) -> Subscription {
        self.inner.hub.subscribe(None, DEFAULT_SUBSCRIBER_CAPACITY)
    }
}

/// Removes the CLOSED members idle for `idle`; the caller holds the insert lock.
fn sweep<G: papaya::Guard>(
    members: &papaya::HashMapRef<'_, Box<str>, Member, foldhash::fast::RandomState, G>,
    now: u64,
    idle: u64,
) -> usize {
    let idle_keys: Vec<Box<str>> = members
        .iter()
        .filter(|(_, m)| {
            let activity = m.breaker.activity();
            if activity != m.seen.load(Ordering::Relaxed) {
                m.seen.store(activity, Ordering::Relaxed);
                m.active_at.store(now, Ordering::Relaxed);
                return false;
            }
            let idle_for = now.saturating_sub(m.active_at.load(Ordering::Relaxed));
            m.breaker.state() == State::Closed && idle_for >= idle
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in &idle_keys {
        if let Some(m) = members.remove(key) {
            m.breaker.mark_evicted();
        }
    }
    idle_keys.len()
}
