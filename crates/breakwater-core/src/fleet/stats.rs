//! A store's counters, for health checks, the metrics JSON and `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Counters of a fleet's store, shared by its tasks and whoever reports them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreStats {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: &'static str,
    replica: Arc<str>,
    connected: AtomicBool,
    failing: AtomicBool,
    published: AtomicU64,
    adopted: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    reconnects: AtomicU64,
    dropped: AtomicU64,
    flushes: AtomicU64,
    last_error: Mutex<Option<String>>,
    #[cfg(feature = "tokio")]
    health: tokio::sync::watch::Sender<bool>,
}

/// The serde view of [`StoreStats`] (camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatsView {
    /// The store's kind (`redis`).
    pub store: &'static str,
    /// This replica's id.
    pub replica: String,
    /// Whether the subscription is in place and the last write succeeded.
    pub healthy: bool,
    /// Whether the subscription is in place.
    pub connected: bool,
    /// Local transitions published.
    pub published: u64,
    /// Fleet states adopted (the state changed).
    pub adopted: u64,
    /// Fleet states heard and not adopted (not newer, or already the state).
    pub stale: u64,
    /// Failed store calls (timeouts included).
    pub errors: u64,
    /// Store calls that did not answer in time.
    pub timeouts: u64,
    /// Subscriptions made again after one was lost.
    pub reconnects: u64,
    /// Local events lost because the queue to the store's task was full (then every breaker
    /// is compared with what was published).
    pub dropped: u64,
    /// Shared-window flushes.
    pub window_flushes: u64,
    /// The latest error, if the store is failing now.
    pub last_error: Option<String>,
}

impl StoreStats {
    /// Zeroed counters for a store of `kind` used by `replica`.
    pub fn new(kind: &'static str, replica: impl Into<Arc<str>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                replica: replica.into(),
                connected: AtomicBool::new(false),
                failing: AtomicBool::new(false),
                published: AtomicU64::new(0),
                adopted: AtomicU64::new(0),
                stale: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                flushes: AtomicU64::new(0),
                last_error: Mutex::new(None),
                #[cfg(feature = "tokio")]
                health: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// The store's kind (`redis`).
    pub fn kind(&self) -> &'static str {
        self.inner.kind
    }

    /// The health check's name: `<kind>:store`.
    pub fn check_name(&self) -> String {
        format!("{}:store", self.inner.kind)
    }

    /// Whether the store is reachable and answering.
    pub fn is_healthy(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire) && !self.inner.failing.load(Ordering::Acquire)
    }

    /// The counters now.
    pub fn view(&self) -> StoreStatsView {
        let i = &*self.inner;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreStatsView {
            store: i.kind,
            replica: i.replica.to_string(),
            healthy: self.is_healthy(),
            connected: i.connected.load(Ordering::Acquire),
            published: n(&i.published),
            adopted: n(&i.adopted),
            stale: n(&i.stale),
            errors: n(&i.errors),
            timeouts: n(&i.timeouts),
            reconnects: n(&i.reconnects),
            dropped: n(&i.dropped),
            window_flushes: n(&i.flushes),
            last_error: i
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// What the fleet's tasks count, and who hears of it.
#[cfg(feature = "tokio")]
impl StoreStats {
    /// Tells of each change of [`is_healthy`](StoreStats::is_healthy).
    pub fn health_changes(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.health.subscribe()
    }

    fn tell_health(&self) {
        let healthy = self.is_healthy();
        self.inner.health.send_if_modified(|h| {
            let changed = *h != healthy;
            *h = healthy;
            changed
        });
    }

    pub(crate) fn set_connected(&self, on: bool) {
        self.inner.connected.store(on, Ordering::Release);
        self.tell_health();
    }

    /// The subscription ended with `e`: one change of health, told with its cause.
    pub(crate) fn disconnected(&self, e: &super::StoreError) {
        self.inner.connected.store(false, Ordering::Release);
        self.error(e);
    }

    /// A store call failed.
    pub(crate) fn error(&self, e: &super::StoreError) {
        let i = &*self.inner;
        i.errors.fetch_add(1, Ordering::Relaxed);
        if e.is_timeout() {
            i.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        i.failing.store(true, Ordering::Release);
        *i.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        self.tell_health();
    }

    /// A store call succeeded.
    pub(crate) fn ok(&self) {
        let i = &*self.inner;
        if i.failing.swap(false, Ordering::AcqRel) {
            *i.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.tell_health();
        }
    }

    pub(crate) fn count(&self, what: Counter, n: u64) {
        let i = &*self.inner;
        let c = match what {
            Counter::Published => &i.published,
            Counter::Adopted => &i.adopted,
            Counter::Stale => &i.stale,
            Counter::Reconnects => &i.reconnects,
            Counter::Dropped => &i.dropped,
            Counter::Flushes => &i.flushes,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Published,
    Adopted,
    Stale,
    Reconnects,
    Dropped,
    Flushes,
}
