//! Breaker events: state transitions and notable calls, fanned out to any number of subscribers
//! without ever blocking the caller.
//!
//! Each subscriber has a bounded queue; when it is full the event is dropped for that subscriber
//! and counted in [`Subscription::lost`]. A registry also keeps a bounded ring of recent events
//! ([`crate::Registry::recent_events`]). Successful calls are not events (they are counted in the
//! snapshot), and nothing is built at all while no one listens.
//!
//! # Example
//!
//! ```
//! use breakwater::{CircuitBreaker, Config, EventKind, State};
//!
//! let config = Config::builder().consecutive_failures(1).build().unwrap();
//! let breaker = CircuitBreaker::new("payments", config);
//! let events = breaker.subscribe();
//! breaker.try_acquire().unwrap().failure();
//!
//! let mut kinds = Vec::new();
//! while let Some(e) = events.try_recv() {
//!     kinds.push(e.kind);
//! }
//! assert!(kinds.iter().any(|k| matches!(k,
//!     EventKind::StateTransition { to: State::Open, .. })));
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::state::{State, Trigger};

/// Default capacity of a subscriber's queue.
pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 1_024;
/// Default capacity of a registry's ring of recent events.
pub const DEFAULT_RECENT_EVENTS: usize = 256;

/// Something that happened to a breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The breaker's name.
    pub circuit: Arc<str>,
    /// When, in ms since the Unix epoch (from the breaker's clock).
    pub at: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    rename_all_fields = "camelCase"
)]
pub enum EventKind {
    /// The breaker changed state.
    StateTransition {
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
        /// Why.
        trigger: Trigger,
    },
    /// A call was rejected.
    CallNotPermitted {
        /// The state that rejected it.
        state: State,
    },
    /// A call failed.
    Failure {
        /// How long it took, when timed.
        #[serde(serialize_with = "ser_opt_ms")]
        duration_ms: Option<Duration>,
    },
    /// A call was slower than the slow-call threshold.
    SlowCall {
        /// How long it took.
        #[serde(serialize_with = "ser_ms")]
        duration_ms: Duration,
    },
    /// An outcome was ignored (neither success nor failure).
    Ignored,
    /// The breaker was reset: empty window, lifetime counters zeroed.
    Reset,
    /// The breaker's configuration changed.
    ConfigChanged,
    /// A caller was given a fallback instead of the dependency's answer (emitted by fallback
    /// middleware through [`Registry::emit`](crate::Registry::emit)).
    FallbackUsed {
        /// Which strategy answered: `fixed`, `function`, `stale` or `backup`.
        strategy: &'static str,
    },
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1_000.0)
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_ms(d, s),
        None => s.serialize_none(),
    }
}

impl EventKind {
    /// Whether the registry's ring keeps this kind (rejections are counted, not kept one by one,
    /// so a flood of them cannot push transitions out of the ring).
    fn kept_in_ring(&self) -> bool {
        !matches!(self, EventKind::CallNotPermitted { .. })
    }
}

/// A live feed of events. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: async_channel::Receiver<Event>,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// The next event, if one is queued.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Waits for the next event (async). `None` once the source is gone.
    pub async fn recv(&self) -> Option<Event> {
        self.rx.recv().await.ok()
    }

    /// Blocks the thread until the next event. `None` once the source is gone.
    pub fn recv_blocking(&self) -> Option<Event> {
        self.rx.recv_blocking().ok()
    }

    /// Events dropped because this subscriber's queue was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Subscriber {
    tx: async_channel::Sender<Event>,
    lost: Arc<AtomicU64>,
    /// Only events of this breaker (compared by pointer), or all.
    only: Option<Arc<str>>,
    /// Only state transitions and resets.
    transitions_only: bool,
}

/// Fans events out. Shared by the breakers of one registry.
#[derive(Debug)]
pub(crate) struct EventHub {
    /// Subscribers plus one if the ring is on: zero means nobody listens.
    listeners: AtomicUsize,
    subscribers: RwLock<Vec<Subscriber>>,
    ring: Option<Mutex<VecDeque<Event>>>,
    ring_capacity: usize,
    /// Events the ring or a subscriber could not take without waiting.
    dropped: AtomicU64,
    /// Where recorded call durations also go (an exporter's histogram), once installed.
    durations: OnceLock<DurationObserver>,
}

/// A callback receiving each recorded call duration with the breaker's name.
pub(crate) struct DurationObserver(pub(crate) Box<ObserveDuration>);

type ObserveDuration = dyn Fn(&Arc<str>, Duration) + Send + Sync;

impl std::fmt::Debug for DurationObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DurationObserver")
    }
}

impl EventHub {
    pub(crate) fn new(ring_capacity: usize) -> Self {
        Self {
            listeners: AtomicUsize::new((ring_capacity > 0) as usize),
            subscribers: RwLock::new(Vec::new()),
            ring: (ring_capacity > 0).then(|| Mutex::new(VecDeque::with_capacity(ring_capacity))),
            ring_capacity,
            dropped: AtomicU64::new(0),
            durations: OnceLock::new(),
        }
    }

    /// Installs the duration observer; false if one already is.
    pub(crate) fn observe_durations(&self, observer: DurationObserver) -> bool {
        self.durations.set(observer).is_ok()
    }

    /// The duration observer, if one is installed.
    #[inline]
    pub(crate) fn duration_observer(&self) -> Option<&DurationObserver> {
        self.durations.get()
    }

    /// Whether anyone would see an event: check before building one.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn subscribe(&self, only: Option<Arc<str>>, capacity: usize) -> Subscription {
        self.subscribe_to(only, false, capacity)
    }

    pub(crate) fn subscribe_to(
        &self,
        only: Option<Arc<str>>,
        transitions_only: bool,
        capacity: usize,
    ) -> Subscription {
        let (tx, rx) = async_channel::bounded(capacity.max(1));
        let lost = Arc::new(AtomicU64::new(0));
        let mut subs = self.subscribers.write().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| !s.tx.is_closed());
        subs.push(Subscriber {
            tx,
            lost: lost.clone(),
            only,
            transitions_only,
        });
        self.listeners
            .store(subs.len() + self.ring.is_some() as usize, Ordering::Relaxed);
        Subscription { rx, lost }
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(ring) = &self.ring
            && event.kind.kept_in_ring()
        {
            match ring.try_lock() {
                Ok(mut ring) => {
                    if ring.len() == self.ring_capacity {
                        ring.pop_front();
                    }
                    ring.push_back(event.clone());
                }
                Err(_) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let Ok(subs) = self.subscribers.try_read() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut closed = false;
        for sub in subs.iter() {
            if let Some(only) = &sub.only
                && !Arc::ptr_eq(only, &event.circuit)
            {
                continue;
            }
            if sub.transitions_only
                && !matches!(
                    event.kind,
                    EventKind::StateTransition { .. } | EventKind::Reset
                )
            {
                continue;
            }
            match sub.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(async_channel::TrySendError::Full(_)) => {
                    sub.lost.fetch_add(1, Ordering::Relaxed);
                }
                Err(async_channel::TrySendError::Closed(_)) => closed = true,
            }
        }
        drop(subs);
        if closed && let Ok(mut subs) = self.subscribers.try_write() {
            subs.retain(|s| !s.tx.is_closed());
            self.listeners
                .store(subs.len() + self.ring.is_some() as usize, Ordering::Relaxed);
        }
    }

    pub(crate) fn recent(&self) -> Vec<Event> {
        match &self.ring {
            Some(ring) => ring
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
            None => Vec::new(),
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &Arc<str>, kind: EventKind) -> Event {
        Event {
            circuit: name.clone(),
            at: 1,
            kind,
        }
    }

    #[test]
    fn slow_subscriber_loses_events_and_counts_them() {
        let hub = EventHub::new(0);
        assert!(!hub.is_active());
        let name: Arc<str> = "a".into();
        let sub = hub.subscribe(None, 2);
        assert!(hub.is_active());
        for _ in 0..5 {
            hub.emit(ev(&name, EventKind::Ignored));
        }
        assert_eq!(sub.lost(), 3);
        assert!(sub.try_recv().is_some());
        assert!(sub.try_recv().is_some());
        assert!(sub.try_recv().is_none());
    }

    #[test]
    fn ring_is_bounded_and_skips_rejections() {
        let hub = EventHub::new(3);
        let name: Arc<str> = "a".into();
        for _ in 0..10 {
            hub.emit(ev(&name, EventKind::Ignored));
            hub.emit(ev(
                &name,
                EventKind::CallNotPermitted { state: State::Open },
            ));
        }
        let recent = hub.recent();
        assert_eq!(recent.len(), 3);
        assert!(recent.iter().all(|e| e.kind == EventKind::Ignored));
    }

    #[test]
    fn dropped_subscription_is_removed() {
        let hub = EventHub::new(0);
        let name: Arc<str> = "a".into();
        drop(hub.subscribe(None, 1));
        hub.emit(ev(&name, EventKind::Ignored));
        assert!(!hub.is_active());
    }

    #[test]
    fn filtered_subscription_sees_only_its_breaker() {
        let hub = EventHub::new(0);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let sub = hub.subscribe(Some(a.clone()), 8);
        hub.emit(ev(&b, EventKind::Ignored));
        hub.emit(ev(&a, EventKind::Reset));
        assert_eq!(sub.try_recv().unwrap().kind, EventKind::Reset);
        assert!(sub.try_recv().is_none());
    }

    #[test]
    fn events_serialize_with_type_tags() {
        let name: Arc<str> = "db".into();
        let v = serde_json::to_value(ev(
            &name,
            EventKind::StateTransition {
                from: State::Closed,
                to: State::Open,
                trigger: Trigger::FailureRatio,
            },
        ))
        .unwrap();
        assert_eq!(v["type"], "STATE_TRANSITION");
        assert_eq!(v["from"], "CLOSED");
        assert_eq!(v["trigger"], "failure_ratio");
        assert_eq!(v["circuit"], "db");
    }
}
