//! The registry of named breakers and keyed families.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::breaker::CircuitBreaker;
use crate::clock::{Clock, ClockHandle, saturating_nanos};
use crate::config::Config;
use crate::event::{
    DEFAULT_RECENT_EVENTS, DEFAULT_SUBSCRIBER_CAPACITY, Event, EventHub, EventKind, Subscription,
};
use crate::snapshot::Snapshot;
use crate::state::State;

/// Default cap on the keys of a family.
pub const DEFAULT_MAX_KEYS: usize = 1_000;
/// Default idle time after which a closed family member may be evicted.
pub const DEFAULT_IDLE_EVICTION: Duration = Duration::from_secs(300);

/// Breakers by name, sharing a clock and an event hub: named breakers, named configurations
/// (with the `read`, `write` and `auth` presets), keyed families with a cap on keys, and a ring
/// of recent events.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use breakwater_core::{FamilyOptions, Registry, State};
///
/// let registry = Registry::new();
/// let db = registry.breaker("db");                  // the default config
/// let login = registry.breaker_with_preset("login", "auth").unwrap();
/// assert_eq!(login.config().consecutive_failures(), Some(10));
///
/// let endpoints = registry.family(
///     "api",
///     FamilyOptions::new(registry.config("read").unwrap()).max_keys(1_000),
/// );
/// let items = endpoints.get("GET /items/{id}");
/// assert_eq!(items.name(), "api:GET /items/{id}");
/// assert!(registry.get("api:GET /items/{id}").is_some());
/// assert!(registry.get("nope").is_none()); // never creates
/// # let _ = (db, State::Closed, Duration::ZERO);
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    default_config: RwLock<Config>,
    configs: RwLock<HashMap<String, Config>>,
    breakers: RwLock<HashMap<Arc<str>, CircuitBreaker>>,
    families: RwLock<HashMap<Arc<str>, KeyedFamily>>,
    clock: ClockHandle,
    hub: Arc<EventHub>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("breakers", &read(&self.inner.breakers).len())
            .field("families", &read(&self.inner.families).len())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Builds a [`Registry`].
#[derive(Debug)]
#[must_use]
pub struct RegistryBuilder {
    default_config: Config,
    configs: HashMap<String, Config>,
    clock: ClockHandle,
    recent_events: usize,
}

impl RegistryBuilder {
    /// The config of breakers created without one.
    pub fn default_config(mut self, config: Config) -> Self {
        self.default_config = config;
        self
    }

    /// Adds (or replaces) a named config.
    pub fn config(mut self, name: impl Into<String>, config: Config) -> Self {
        self.configs.insert(name.into(), config);
        self
    }

    /// The clock every breaker of the registry uses.
    pub fn clock(mut self, clock: impl Into<ClockHandle>) -> Self {
        self.clock = clock.into();
        self
    }

    /// How many recent events to keep (0: none).
    pub fn recent_events(mut self, capacity: usize) -> Self {
        self.recent_events = capacity;
        self
    }

    /// The registry.
    pub fn build(self) -> Registry {
        Registry {
            inner: Arc::new(RegistryInner {
                default_config: RwLock::new(self.default_config),
                configs: RwLock::new(self.configs),
                breakers: RwLock::new(HashMap::new()),
                families: RwLock::new(HashMap::new()),
                clock: self.clock,
                hub: Arc::new(EventHub::new(self.recent_events)),
            }),
        }
    }
}

impl Registry {
    /// A registry on the system clock with the default config and the `read`, `write` and
    /// `auth` presets.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder, starting with the default config and the presets.
    pub fn builder() -> RegistryBuilder {
        let configs = ["read", "write", "auth"]
            .into_iter()
            .filter_map(|n| Config::preset_named(n).map(|c| (n.to_string(), c)))
            .collect();
        RegistryBuilder {
            default_config: Config::default(),
            configs,
            clock: ClockHandle::System,
            recent_events: DEFAULT_RECENT_EVENTS,
        }
    }

    /// The registry's clock.
    pub fn clock(&self) -> &ClockHandle {
        &self.inner.clock
    }

    /// Puts an event about `circuit` into this registry's stream (subscribers and the ring of
    /// recent events), stamped with the registry's clock: how middleware outside the breakers,
    /// such as a fallback, reports what it did. Nothing is built while nobody listens.
    ///
    /// ```
    /// use breakwater_core::{EventKind, Registry};
    ///
    /// let registry = Registry::new();
    /// registry.emit("orders", EventKind::FallbackUsed { strategy: "stale" });
    /// assert_eq!(registry.recent_events()[0].kind, EventKind::FallbackUsed { strategy: "stale" });
    /// ```
    pub fn emit(&self, circuit: &str, kind: EventKind) {
        if !self.inner.hub.is_active() {
            return;
        }
        self.inner.hub.emit(Event {
            circuit: Arc::from(circuit),
            at: self.inner.clock.epoch_millis(),
            kind,
        });
    }

    /// Adds (or replaces) a named config, for breakers created after this.
    pub fn add_config(&self, name: impl Into<String>, config: Config) {
        write(&self.inner.configs).insert(name.into(), config);
    }

    /// A named config.
    pub fn config(&self, name: &str) -> Option<Config> {
        read(&self.inner.configs).get(name).cloned()
    }

    /// The default config.
    pub fn default_config(&self) -> Config {
        read(&self.inner.default_config).clone()
    }

    /// The breaker called `name`, created on first use with the config of the same name if there
    /// is one, else the default config.
    pub fn breaker(&self, name: &str) -> CircuitBreaker {
        if let Some(b) = read(&self.inner.breakers).get(name) {
            return b.clone();
        }
        let config = self.config(name).unwrap_or_else(|| self.default_config());
        self.breaker_with(name, config)
    }

    /// The breaker called `name`, created on first use with `config` (an existing breaker keeps
    /// its own config).
    pub fn breaker_with(&self, name: &str, config: Config) -> CircuitBreaker {
        if let Some(b) = read(&self.inner.breakers).get(name) {
            return b.clone();
        }
        let mut map = write(&self.inner.breakers);
        map.entry(Arc::from(name))
            .or_insert_with_key(|k| {
                CircuitBreaker::build(
                    k.clone(),
                    config,
                    self.inner.clock.clone(),
                    self.inner.hub.clone(),
                )
            })
            .clone()
    }

    /// The breaker called `name`, created on first use with the named config; `None` if there is
    /// no such config.
    pub fn breaker_with_preset(&self, name: &str, config_name: &str) -> Option<CircuitBreaker> {
        if let Some(b) = read(&self.inner.breakers).get(name) {
            return Some(b.clone());
        }
        let config = self.config(config_name)?;
        Some(self.breaker_with(name, config))
    }

    /// The breaker called `name` (a family member's name is `family:key`), without creating one.
    pub fn get(&self, name: &str) -> Option<CircuitBreaker> {
        if let Some(b) = read(&self.inner.breakers).get(name) {
            return Some(b.clone());
        }
        let families = read(&self.inner.families);
        families.values().find_map(|f| f.find(name))
    }

    /// Removes a breaker (not a family member); handles already given out keep working.
    pub fn remove(&self, name: &str) -> Option<CircuitBreaker> {
        write(&self.inner.breakers).remove(name)
    }

    /// The keyed family called `name`, created on first use with `options`.
    pub fn family(&self, name: &str, options: FamilyOptions) -> KeyedFamily {
        if let Some(f) = read(&self.inner.families).get(name) {
            return f.clone();
        }
        let mut map = write(&self.inner.families);
        map.entry(Arc::from(name))
            .or_insert_with_key(|k| {
                KeyedFamily::new(
                    k.clone(),
                    options,
                    self.inner.clock.clone(),
                    self.inner.hub.clone(),
                )
            })
            .clone()
    }

    /// Every family.
    pub fn families(&self) -> Vec<KeyedFamily> {
        read(&self.inner.families).values().cloned().collect()
    }

    /// Every breaker, family members and overflow breakers included, sorted by name.
    pub fn breakers(&self) -> Vec<CircuitBreaker> {
        let mut all: Vec<CircuitBreaker> = read(&self.inner.breakers).values().cloned().collect();
        for f in read(&self.inner.families).values() {
            all.extend(f.members());
        }
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// A snapshot of every breaker, sorted by name.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.breakers()
            .iter()
            .map(CircuitBreaker::snapshot)
            .collect()
    }

    /// Resets every breaker.
    pub fn reset_all(&self) {
        for b in self.breakers() {
            b.reset();
        }
    }

    /// A live feed of the events of every breaker in the registry.
    pub fn subscribe(&self) -> Subscription {
        self.inner.hub.subscribe(None, DEFAULT_SUBSCRIBER_CAPACITY)
    }

    /// A live feed keeping at most `capacity` unread events.
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        self.inner.hub.subscribe(None, capacity)
    }

    /// The most recent events, oldest first (rejected calls are counted, not kept).
    pub fn recent_events(&self) -> Vec<Event> {
        self.inner.hub.recent()
    }

    /// Events the ring or a subscriber list could not take without waiting.
    pub fn dropped_events(&self) -> u64 {
        self.inner.hub.dropped()
    }
}

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
    fn new(name: Arc<str>, options: FamilyOptions, clock: ClockHandle, hub: Arc<EventHub>) -> Self {
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
        let due = now.saturating_sub(inner.last_sweep.load(Ordering::Relaxed)) >= idle;
        if members.len() >= inner.options.max_keys || due {
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

    /// The members, then the overflow breaker.
    pub fn members(&self) -> Vec<CircuitBreaker> {
        let mut v: Vec<CircuitBreaker> = self
            .inner
            .members
            .pin()
            .values()
            .map(|m| m.breaker.clone())
            .collect();
        v.push(self.inner.overflow.clone());
        v
    }

    fn find(&self, name: &str) -> Option<CircuitBreaker> {
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
        members.remove(key);
    }
    idle_keys.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn registry(clock: &ManualClock) -> Registry {
        Registry::builder().clock(clock.clone()).build()
    }

    #[test]
    fn named_config_applies_to_breaker_of_same_name() {
        let r = Registry::new();
        r.add_config(
            "db",
            Config::builder().consecutive_failures(2).build().unwrap(),
        );
        assert_eq!(r.breaker("db").config().consecutive_failures(), Some(2));
        assert_eq!(r.breaker("other").config(), Config::default());
        assert!(r.breaker("db").ptr_eq(&r.breaker("db")));
        assert!(r.breaker_with_preset("x", "nope").is_none());
    }

    #[test]
    fn family_caps_keys_and_uses_overflow() {
        let clock = ManualClock::new();
        let r = registry(&clock);
        let f = r.family("api", FamilyOptions::new(Config::default()).max_keys(3));
        for i in 0..10 {
            f.get(&format!("/k{i}"));
        }
        assert_eq!(f.len(), 3);
        let over = f.get("/k9");
        assert!(over.ptr_eq(f.overflow()));
        assert_eq!(over.name(), "api:<overflow>");
    }

    #[test]
    fn idle_closed_members_are_evicted_busy_or_open_ones_are_not() {
        let clock = ManualClock::new();
        let r = registry(&clock);
        let opts = FamilyOptions::new(Config::builder().consecutive_failures(1).build().unwrap())
            .max_keys(3)
            .idle_eviction(Duration::from_secs(60));
        let f = r.family("api", opts);
        let idle = f.get("idle");
        let busy = f.get("busy");
        let open = f.get("open");
        open.try_acquire().unwrap().failure();
        assert_eq!(open.state(), State::Open);
        f.evict_idle(); // first sweep records activity
        clock.advance(Duration::from_secs(61));
        busy.try_acquire().unwrap().success();
        let newcomer = f.get("new");
        assert!(!newcomer.ptr_eq(f.overflow()));
        assert!(f.get_existing("idle").is_none());
        assert!(f.get_existing("busy").is_some());
        assert!(f.get_existing("open").is_some());
        drop(idle);
    }

    #[test]
    fn registry_lists_and_finds_family_members() {
        let r = Registry::new();
        r.breaker("b");
        let f = r.family("fam", FamilyOptions::new(Config::default()));
        f.get("GET /x y");
        let names: Vec<String> = r.breakers().iter().map(|b| b.name().to_string()).collect();
        assert_eq!(names, vec!["b", "fam:<overflow>", "fam:GET /x y"]);
        assert!(r.get("fam:GET /x y").is_some());
        assert!(r.get("fam:<overflow>").is_some());
        assert!(r.get("fam:missing").is_none());
    }

    #[test]
    fn registry_ring_keeps_transitions() {
        let clock = ManualClock::new();
        let r = registry(&clock);
        let b = r.breaker_with(
            "x",
            Config::builder().consecutive_failures(1).build().unwrap(),
        );
        b.try_acquire().unwrap().failure();
        let _ = b.try_acquire();
        let recent = r.recent_events();
        assert!(recent.iter().any(|e| matches!(
            e.kind,
            crate::EventKind::StateTransition {
                to: State::Open,
                ..
            }
        )));
        assert!(
            !recent
                .iter()
                .any(|e| matches!(e.kind, crate::EventKind::CallNotPermitted { .. }))
        );
    }
}
