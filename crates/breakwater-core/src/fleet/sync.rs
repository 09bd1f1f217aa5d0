//! [`Fleet`]: the background tasks that share a registry's breakers through a [`StateStore`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::stats::Counter;
use super::{
    FleetMessage, FleetState, OutcomeTotals, StateChange, StateStore, StoreError, StoreStats,
    WindowDelta,
};
use crate::clock::Clock;
use crate::config::ConfigError;
use crate::event::{EventKind, Subscription};
use crate::{CircuitBreaker, Registry, State, Trigger};

/// Default bound on each store call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default interval between shared-window flushes and retries of failed publishes.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Flush intervals between two reads of every stored state.
const RESYNC_EVERY: u64 = 10;
/// Default capacity of the queue of local events waiting for the store's task.
pub const DEFAULT_QUEUE: usize = 4_096;

/// Builds a [`Fleet`].
#[derive(Debug)]
#[must_use]
pub struct FleetBuilder {
    registry: Registry,
    store: Arc<dyn StateStore>,
    replica: Option<String>,
    quorum: Option<u32>,
    shared_window: Option<Duration>,
    flush_interval: Duration,
    timeout: Duration,
    queue: usize,
}

impl FleetBuilder {
    /// This replica's id in the store (default: the host name and the process id).
    pub fn replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica = Some(id.into());
        self
    }

    /// Opens the fleet on a breaker's own trip only once `k` replicas have tripped on their
    /// own within their waits in OPEN (default: every trip opens the fleet). Operators' moves
    /// are never put to a vote.
    pub fn quorum(mut self, k: u32) -> Self {
        self.quorum = Some(k);
        self
    }

    /// Also judges each breaker's failure and slow-call rates over all replicas' calls of the
    /// last `window` (per-second buckets in the store, added to once per flush interval).
    pub fn shared_window(mut self, window: Duration) -> Self {
        self.shared_window = Some(window);
        self
    }

    /// How often the shared window is flushed and failed publishes retried (default 1 s);
    /// every tenth time the stored states are also read again.
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = every;
        self
    }

    /// The bound on every store call (default 500 ms); also how long [`start`](Self::start)
    /// waits for the fleet's states.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Capacity of the queue of local events for the store's task (default 4,096). Events
    /// lost to a full queue are counted, and every breaker is then compared with what was
    /// published.
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = capacity;
        self
    }

    /// Starts sharing, on the current tokio runtime: reads the fleet's states and adopts
    /// them (waiting at most the timeout: a store that is down makes a replica start on its
    /// own state), then publishes local transitions and listens for others'. Refuses an
    /// invalid setting, naming it.
    pub async fn start(self) -> Result<Fleet, ConfigError> {
        let replica: Arc<str> = match self.replica {
            Some(id) if id.trim().is_empty() => {
                return Err(ConfigError::new("replica_id", "must not be empty"));
            }
            Some(id) => id.into(),
            None => default_replica_id().into(),
        };
        if self.quorum == Some(0) {
            return Err(ConfigError::new("quorum", "must be at least 1"));
        }
        if self
            .shared_window
            .is_some_and(|w| w < Duration::from_secs(1))
        {
            return Err(ConfigError::new("shared_window", "must be at least 1 s"));
        }
        if self.flush_interval.is_zero() {
            return Err(ConfigError::new("flush_interval", "must be more than 0"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be more than 0"));
        }
        if self.queue == 0 {
            return Err(ConfigError::new("queue", "must be at least 1"));
        }
        let stats = StoreStats::new(self.store.kind(), replica.clone());
        let shared = Arc::new(Shared {
            registry: self.registry,
            store: self.store,
            stats: stats.clone(),
            replica,
            timeout: self.timeout,
        });
        // Subscribed before the first read, so that no local transition falls between.
        let events = shared.registry.subscribe_transitions(self.queue);
        let (synced_tx, synced_rx) = async_channel::bounded::<()>(1);
        let listener = tokio::spawn(listen(shared.clone(), synced_tx));
        let _ = tokio::time::timeout(self.timeout, synced_rx.recv()).await;
        let writer = Writer {
            shared: shared.clone(),
            events,
            quorum: self.quorum,
            shared_window: self.shared_window,
            pending: HashMap::new(),
            closed_since: HashMap::new(),
            totals: HashMap::new(),
            lost: 0,
            reset_published: None,
            flushes: 0,
        };
        let writer = tokio::spawn(writer.run(self.flush_interval));
        Ok(Fleet {
            stats,
            tasks: vec![listener, writer],
        })
    }
}

/// A registry's breakers shared with the other replicas through a [`StateStore`]: two tasks
/// on the tokio runtime (one publishes local transitions and flushes the shared window, one
/// listens and adopts), stopped when this is dropped. Nothing is added to a call's path.
///
/// ```no_run
/// # async fn run(store: std::sync::Arc<dyn breakwater::fleet::StateStore>) {
/// use breakwater::Registry;
/// use breakwater::fleet::Fleet;
///
/// let registry = Registry::new();
/// let fleet = Fleet::builder(&registry, store)
///     .replica_id("gateway-1")
///     .start()
///     .await
///     .expect("valid settings");
/// assert_eq!(fleet.stats().view().replica, "gateway-1");
/// # }
/// ```
#[derive(Debug)]
pub struct Fleet {
    stats: StoreStats,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Shares `registry`'s breakers through `store`.
    pub fn builder(registry: &Registry, store: Arc<dyn StateStore>) -> FleetBuilder {
        FleetBuilder {
            registry: registry.clone(),
            store,
            replica: None,
            quorum: None,
            shared_window: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            queue: DEFAULT_QUEUE,
        }
    }

    /// The store's counters (for `/health`, the metrics JSON and `/metrics`).
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The host name (`HOSTNAME`, else `/etc/hostname`) and the process id: `host-1234`.
pub(crate) fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_owned());
    format!("{host}-{}", std::process::id())
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    store: Arc<dyn StateStore>,
    stats: StoreStats,
    replica: Arc<str>,
    timeout: Duration,
}

impl Shared {
    /// A store call, bounded by the timeout, its failure counted.
    async fn call<T>(&self, op: super::StoreFuture<'_, T>) -> Option<T> {
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::timeout(self.timeout)),
        };
        match result {
            Ok(v) => {
                self.stats.ok();
                Some(v)
            }
            Err(e) => {
                self.stats.error(&e);
                tracing::warn!(target: "breakwater", store = self.stats.kind(), error = %e, "state store call failed");
                None
            }
        }
    }

    /// The breaker named `name`: a named one, or a family member (created when `create`).
    fn breaker(&self, name: &str, create: bool) -> Option<CircuitBreaker> {
        if let Some(b) = self.registry.get(name) {
            return Some(b);
        }
        if !create {
            return None;
        }
        self.registry.families().into_iter().find_map(|family| {
            let key = name.strip_prefix(family.name())?.strip_prefix(':')?;
            // A full family answers with its overflow breaker: not this circuit's.
            Some(family.get(key)).filter(|b| b.name() == name)
        })
    }

    fn adopt(&self, s: &FleetState) {
        let Some(breaker) = self.breaker(&s.circuit, s.state != State::Closed) else {
            return;
        };
        // This replica's own message tells it nothing new, and applying it could undo a local
        // move made while it was on its way (a reset just after a trip): only its epoch is kept.
        if s.replica == self.replica {
            breaker.note_fleet_epoch(s.epoch);
            return;
        }
        if breaker.adopt(s.state, s.open_until, s.epoch) {
            self.stats.count(Counter::Adopted, 1);
        } else {
            self.stats.count(Counter::Stale, 1);
        }
    }
}

/// Listens for the fleet's states and adopts them; re-subscribes with backoff when the store
/// goes, and re-reads the stored states each time it is back.
async fn listen(shared: Arc<Shared>, synced: async_channel::Sender<()>) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        let (tx, rx) = async_channel::bounded(1_024);
        let mut connected_once = false;
        let consume = async {
            while let Ok(message) = rx.recv().await {
                match message {
                    FleetMessage::Subscribed => {
                        connected_once = true;
                        if !first {
                            shared.stats.count(Counter::Reconnects, 1);
                        }
                        first = false;
                        // Read the stored states (a few tries: until then the replica does
                        // not count as connected).
                        for attempt in 0..5u32 {
                            if let Some(states) = shared.call(shared.store.load()).await {
                                for s in &states {
                                    shared.adopt(s);
                                }
                                shared.stats.set_connected(true);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100) * (attempt + 1)).await;
                        }
                        let _ = synced.try_send(());
                    }
                    FleetMessage::State(s) => shared.adopt(&s),
                }
            }
        };
        let (result, ()) = tokio::join!(shared.store.listen(tx), consume);
        match result {
            Ok(()) => {
                shared.stats.set_connected(false);
                return;
            }
            Err(e) => {
                shared.stats.disconnected(&e);
                tracing::warn!(target: "breakwater", store = shared.stats.kind(), error = %e, "state store subscription lost");
            }
        }
        // A subscription that had come up starts the backoff over.
        if connected_once {
            backoff = Duration::from_millis(50);
        }
        let jitter = Duration::from_millis(fastrand::u64(0..=backoff.as_millis() as u64 / 2));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

struct Writer {
    shared: Arc<Shared>,
    events: Subscription,
    quorum: Option<u32>,
    shared_window: Option<Duration>,
    /// Changes whose publishing failed, newest per circuit, retried each flush.
    pending: HashMap<Arc<str>, Trigger>,
    /// When each breaker last entered CLOSED (ms since the epoch).
    closed_since: HashMap<Arc<str>, u64>,
    /// Each breaker's outcome totals at the last flush.
    totals: HashMap<Arc<str>, OutcomeTotals>,
    lost: u64,
    /// The breaker whose manual closing was the last event: its reset follows, already told.
    reset_published: Option<Arc<str>>,
    flushes: u64,
}

impl Writer {
    async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.events.recv() => {
                    let Some(event) = event else { return };
                    match event.kind {
                        EventKind::StateTransition { to, trigger, .. } => {
                            if to == State::Closed {
                                self.closed_since.insert(event.circuit.clone(), event.at);
                            }
                            let manual_close = to == State::Closed && trigger == Trigger::Manual;
                            self.reset_published = manual_close.then(|| event.circuit.clone());
                            if trigger != Trigger::Fleet && to != State::HalfOpen {
                                self.publish(event.circuit, trigger).await;
                            }
                        }
                        // A reset from CLOSED moves nothing here, but closes the fleet (one
                        // that moved the breaker was just published as its transition).
                        EventKind::Reset => {
                            self.closed_since.insert(event.circuit.clone(), event.at);
                            let published = self.reset_published.take() == Some(event.circuit.clone());
                            let breaker = self.shared.breaker(&event.circuit, false);
                            if !published && breaker.is_some_and(|b| b.state() == State::Closed) {
                                self.publish(event.circuit, Trigger::Manual).await;
                            }
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => self.flush().await,
            }
        }
    }

    /// Publishes `circuit`'s current state, if it is still one to publish.
    async fn publish(&mut self, circuit: Arc<str>, trigger: Trigger) {
        let shared = self.shared.clone();
        let Some(breaker) = shared.breaker(&circuit, false) else {
            return;
        };
        let (state, open_until) = breaker.shared_state();
        if state == State::HalfOpen {
            return;
        }
        let change = StateChange {
            circuit: circuit.clone(),
            state,
            open_until,
            trigger,
            replica: shared.replica.clone(),
            at: shared.registry.clock().epoch_millis(),
            quorum: self
                .quorum
                .filter(|_| state == State::Open && trigger != Trigger::Manual),
        };
        match shared.call(shared.store.publish(change)).await {
            Some(epoch) => {
                self.pending.remove(&circuit);
                if let Some(epoch) = epoch {
                    // Its echo, when it comes back late, is then not newer than a local
                    // move made meanwhile.
                    breaker.note_fleet_epoch(epoch);
                    shared.stats.count(Counter::Published, 1);
                }
            }
            None => {
                self.pending.insert(circuit, trigger);
            }
        }
    }

    async fn flush(&mut self) {
        let lost = self.events.lost();
        if lost != self.lost {
            self.shared.stats.count(Counter::Dropped, lost - self.lost);
            self.lost = lost;
            // Which transitions were lost is unknown: every breaker not CLOSED tells its state
            // again, an OPEN as a trip (so a quorum still applies). (CLOSED ones are not: a
            // replica's many closed breakers would close the fleet on a newer OPEN it has not
            // heard of yet.)
            for breaker in self.shared.registry.breakers() {
                let trigger = match breaker.state() {
                    State::Open => Trigger::FailureRatio,
                    State::Closed | State::HalfOpen => continue,
                    _ => Trigger::Manual,
                };
                self.pending.insert(breaker.shared_name().clone(), trigger);
            }
        }
        for (circuit, trigger) in std::mem::take(&mut self.pending) {
            self.publish(circuit, trigger).await;
        }
        // Every tenth flush the stored states are read again: a message lost on its way
        // (a subscription that dropped and came back between two reads) is made up for.
        self.flushes = self.flushes.wrapping_add(1);
        if self.flushes.is_multiple_of(RESYNC_EVERY) {
            let shared = self.shared.clone();
            if let Some(states) = shared.call(shared.store.load()).await {
                for s in &states {
                    shared.adopt(s);
                }
            }
        }
        if let Some(window) = self.shared_window {
            self.flush_window(window).await;
        }
    }

    /// Adds each breaker's outcomes since the last flush to the shared window, and trips a
    /// closed breaker whose fleet-wide rate reached its threshold.
    async fn flush_window(&mut self, window: Duration) {
        let mut deltas = Vec::new();
        let mut breakers = Vec::new();
        for breaker in self.shared.registry.breakers() {
            let now = breaker.outcome_totals();
            let name = breaker.shared_name().clone();
            let before = self.totals.get(&name).copied().unwrap_or_default();
            // Lifetime counters go back to zero on a reset.
            let delta = if now.calls < before.calls {
                now
            } else {
                OutcomeTotals {
                    calls: now.calls - before.calls,
                    failures: now.failures.saturating_sub(before.failures),
                    slow: now.slow.saturating_sub(before.slow),
                }
            };
            if delta.calls == 0 {
                continue;
            }
            let since = self.closed_since.get(&name).copied().unwrap_or(0);
            deltas.push(WindowDelta {
                circuit: name,
                counts: delta,
                since,
            });
            breakers.push((breaker, now));
        }
        if deltas.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let now = shared.registry.clock().epoch_millis();
        // The counts count as added only once the store has them (else the next flush adds
        // them again).
        let Some(fleet) = shared
            .call(shared.store.add_window(deltas, window, now))
            .await
        else {
            return;
        };
        for (breaker, totals) in &breakers {
            self.totals.insert(breaker.shared_name().clone(), *totals);
        }
        let breakers: Vec<CircuitBreaker> = breakers.into_iter().map(|(b, _)| b).collect();
        shared.stats.count(Counter::Flushes, 1);
        for (breaker, totals) in breakers.iter().zip(fleet) {
            if breaker.state() != State::Closed {
                continue;
            }
            if let Some(trigger) = judge(&breaker.config(), totals) {
                let _ = breaker.transition_to_by(State::Open, trigger);
            }
        }
    }
}

/// Whether the fleet's totals reach a breaker's rate thresholds.
fn judge(config: &crate::Config, t: OutcomeTotals) -> Option<Trigger> {
    if t.calls == 0 || t.calls < u64::from(config.minimum_number_of_calls()) {
        return None;
    }
    let rate = |n: u64| n as f64 * 100.0 / t.calls as f64;
    if config
        .failure_rate_threshold()
        .is_some_and(|th| rate(t.failures) >= f64::from(th))
    {
        return Some(Trigger::FailureRatio);
    }
    if config
        .slow_call_rate_threshold()
        .is_some_and(|th| rate(t.slow) >= f64::from(th))
    {
        return Some(Trigger::SlowCallRatio);
    }
    None
}
