//! The registry of named breakers and keyed families.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::breaker::CircuitBreaker;
use crate::clock::{Clock, ClockHandle};
use crate::config::Config;
mod family;

pub use family::{FamilyOptions, KeyedFamily};

use crate::event::{
    DEFAULT_RECENT_EVENTS, DEFAULT_SUBSCRIBER_CAPACITY, DurationObserver, Event, EventHub,
    EventKind, Subscription,
};
use crate::snapshot::Snapshot;

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
/// use breakwater::{FamilyOptions, Registry, State};
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
    /// use breakwater::{EventKind, Registry};
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

    /// Sends every call duration that this registry's breakers record (those with
    /// [`record_call_durations`](crate::ConfigBuilder::record_call_durations) on, family members
    /// included) to `observer` as well as to their own histograms: how an exporter feeds a
    /// histogram of its own, such as an OpenTelemetry one. It runs on the caller's thread, so it
    /// must be quick and never block. One per registry: false (and `observer` dropped) if one is
    /// already installed.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::time::Duration;
    /// use breakwater::{Config, Outcome, Registry};
    ///
    /// let registry = Registry::new();
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let counter = seen.clone();
    /// assert!(registry.observe_call_durations(move |_name, d| {
    ///     counter.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    /// }));
    /// let config = Config::builder().record_call_durations(true).build().unwrap();
    /// let db = registry.breaker_with("db", config);
    /// db.try_acquire().unwrap().record_with_duration(Outcome::Success, Duration::from_millis(3));
    /// assert_eq!(seen.load(Ordering::Relaxed), 3_000_000);
    /// ```
    pub fn observe_call_durations(
        &self,
        observer: impl Fn(&Arc<str>, Duration) + Send + Sync + 'static,
    ) -> bool {
        self.inner
            .hub
            .observe_durations(DurationObserver(Box::new(observer)))
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

    /// Every breaker, family members and overflow breakers in use included, sorted by name.
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

    /// A live feed of the state transitions and resets alone of every breaker in the registry,
    /// keeping at most `capacity` unread: calls' events (failures, refusals, …) never reach
    /// it, so a task that acts on state changes is not woken by traffic.
    pub fn subscribe_transitions(&self, capacity: usize) -> Subscription {
        self.inner.hub.subscribe_to(None, true, capacity)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, State};

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
        assert_eq!(
            names,
            vec!["b", "fam:GET /x y"],
            "an unused overflow is not listed"
        );
        assert!(r.get("fam:GET /x y").is_some());
        assert!(r.get("fam:<overflow>").is_some());
        f.overflow().try_acquire().unwrap().success();
        let names: Vec<String> = r.breakers().iter().map(|b| b.name().to_string()).collect();
        assert_eq!(names, vec!["b", "fam:<overflow>", "fam:GET /x y"]);
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
