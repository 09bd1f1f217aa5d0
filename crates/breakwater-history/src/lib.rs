//! History that survives restarts: per-minute aggregates of every breaker and probe kept for
//! 24 h in memory (fixed-size rings, bounded whatever the traffic), the transitions, the
//! probes' runs and the alerts, and, with a state dir, all of it plus every run-time change made through the ops
//! API in an embedded SQLite file, so that a restart keeps what operators changed.
//!
//! Nothing is on a call's path: a task reads the breakers' own counters once a minute (and on
//! [`History::flush`]), and the transitions from the registry's feed of them; SQLite writes are
//! batched on a thread of their own. A state dir that cannot be used (missing and not
//! creatable, locked by another process, full, corrupt, or written by a newer version) never
//! stops the service: it says why on stderr, keeps the history in memory only, and reports a
//! `warn` health check (`state_dir`).
//!
//! # Example
//!
//! ```
//! use breakwater::Registry;
//! use breakwater::history::History;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = Registry::new();
//! let db = registry.breaker("db");
//! let dir = std::env::temp_dir().join(format!("breakwater-doc-{}", std::process::id()));
//! let history = History::builder(&registry).state_dir(&dir).start().unwrap();
//! db.try_acquire().unwrap().failure();
//! history.flush().await;
//! let minutes = history.breaker("db", 1).unwrap().minutes;
//! assert_eq!(minutes.last().unwrap().failures, 1);
//! # drop(history);
//! # let _ = std::fs::remove_dir_all(dir);
//! # }
//! ```

mod db;
mod learn;
mod minute;
pub mod queue;
mod recorder;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use breakwater_core::{Clock, ConfigError, Registry};
use breakwater_tower::health::{CheckResult, HealthRegistry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use db::{FILE_NAME, SCHEMA_VERSION};
use minute::Ring;
pub use minute::{
    KEPT_MS, MAX_LATENCIES, MINUTE_MS, Minute, ProbeMinute, RING_MINUTES, StateTimes,
};

/// How long the state dir keeps history by default: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Transitions and alerts kept in memory at most (the last 24 h of them).
pub const MAX_KEPT_EVENTS: usize = 10_000;
/// Breakers and probes with a ring at most (a family's members count one each).
pub const MAX_SERIES: usize = 10_000;

/// A breaker's transition as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// When, ms since the Unix epoch.
    pub at: u64,
    /// The breaker.
    pub circuit: String,
    /// The state it left (`CLOSED`, …).
    pub from: String,
    /// The state it entered.
    pub to: String,
    /// Why (`failure_ratio`, `manual`, …).
    pub trigger: String,
}

/// One run of a probe as history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRun {
    /// The probe.
    pub probe: String,
    /// When it ended, ms since the Unix epoch.
    pub at: u64,
    /// Whether it succeeded in time.
    pub ok: bool,
    /// Whether it succeeded, slowly.
    pub slow: bool,
    /// How long it took, ms.
    pub latency_ms: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A breaker's history over the hours asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerHistory {
    /// The breaker.
    pub circuit: String,
    /// The hours covered.
    pub hours: u32,
    /// Its minutes with calls or outside CLOSED, oldest first.
    pub minutes: Vec<Minute>,
    /// Its transitions, oldest first.
    pub transitions: Vec<Transition>,
    /// Its alerts (as the alerting engine shows them), oldest first.
    pub alerts: Vec<Value>,
}

/// A probe's history over the hours asked for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeHistory {
    /// The probe.
    pub probe: String,
    /// The hours covered.
    pub hours: u32,
    /// Its minutes with runs, oldest first.
    pub minutes: Vec<ProbeMinute>,
    /// Its runs, oldest first.
    pub runs: Vec<ProbeRun>,
    /// Its alerts, oldest first.
    pub alerts: Vec<Value>,
}

/// A run-time change, kept so that a restart makes it again: the latest of each kind and name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// What changed: `breakerConfig`, `breakerState`, `probeSettings`, `alertRules`.
    pub kind: String,
    /// The breaker's or probe's name (empty for alert rules).
    pub name: String,
    /// The new value, in the ops API's JSON.
    pub value: Value,
}

/// Where the history is kept, for health checks and the ops API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryStatus {
    /// The state dir, if one was given.
    pub state_dir: Option<String>,
    /// Whether the history goes to the state dir.
    pub persistent: bool,
    /// Why it does not, or why its latest write failed.
    pub problem: Option<String>,
    /// Rows written.
    pub written: u64,
    /// Writes dropped because the writer was behind.
    pub dropped: u64,
}

/// Builds a [`History`].
#[derive(Debug)]
#[must_use]
pub struct HistoryBuilder {
    registry: Registry,
    health: Option<HealthRegistry>,
    state_dir: Option<PathBuf>,
    retention: Duration,
}

impl HistoryBuilder {
    /// Also keeps the history of `health`'s probes.
    pub fn probes(mut self, health: &HealthRegistry) -> Self {
        self.health = Some(health.clone());
        self
    }

    /// Keeps the history, the transitions, the alerts and run-time changes in `dir` (created
    /// if needed), in the SQLite file [`FILE_NAME`]. Without one, nothing is written.
    pub fn state_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.state_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// How long the state dir keeps history (default 7 days; at least 1 h); older rows are
    /// deleted every hour. Run-time changes are kept until replaced.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Reads back what the state dir holds, and starts recording on the current tokio runtime.
    /// Only an invalid setting is an error; a state dir that cannot be used is reported (on
    /// stderr and in [`History::status`]) and the history is kept in memory.
    pub fn start(self) -> Result<History, ConfigError> {
        if self.retention < Duration::from_secs(3600) {
            return Err(ConfigError::new("retention", "must be at least 1 h"));
        }
        let clock = self.registry.clock().clone();
        let now = clock.epoch_millis();
        let status: db::Status = Arc::default();
        let mut data = Data::default();
        let writer = match &self.state_dir {
            None => None,
            Some(dir) => match db::open(dir, now.saturating_sub(KEPT_MS)) {
                Ok((conn, loaded)) => {
                    data.load(loaded, now);
                    Some(db::Writer::spawn(conn, status.clone()))
                }
                Err(e) => {
                    eprintln!(
                        "breakwater: state dir unusable ({e}); history is kept in memory only"
                    );
                    status.lock().unwrap_or_else(|e| e.into_inner()).problem = Some(e);
                    None
                }
            },
        };
        let (flush_tx, flush_rx) = tokio::sync::mpsc::channel(16);
        let inner = Arc::new(Inner {
            registry: self.registry,
            health: self.health,
            state_dir: self.state_dir,
            retention: self.retention,
            data: Mutex::new(data),
            writer,
            status,
            flush: flush_tx,
        });
        let (rec, events) = recorder::begin(&inner);
        let task = tokio::spawn(recorder::run(Arc::downgrade(&inner), rec, events, flush_rx));
        Ok(History {
            inner,
            task: Arc::new(Task(task)),
        })
    }
}

#[derive(Debug)]
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The history of a registry's breakers and of a health registry's probes; clones share it.
/// Recording stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Inner>,
    task: Arc<Task>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) registry: Registry,
    pub(crate) health: Option<HealthRegistry>,
    state_dir: Option<PathBuf>,
    pub(crate) retention: Duration,
    pub(crate) data: Mutex<Data>,
    pub(crate) writer: Option<db::Writer>,
    status: db::Status,
    flush: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

impl Inner {
    pub(crate) fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self, w: db::Write) {
        if let Some(writer) = &self.writer {
            writer.send(w);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Data {
    pub(crate) breakers: HashMap<String, Ring<Minute>>,
    pub(crate) probes: HashMap<String, Ring<ProbeMinute>>,
    pub(crate) transitions: VecDeque<Transition>,
    pub(crate) probe_runs: VecDeque<ProbeRun>,
    /// By `<startedAt>-<id>`: one alert's latest state.
    pub(crate) alerts: BTreeMap<String, (u64, Value)>,
    pub(crate) changes: BTreeMap<(String, String), Value>,
}

impl Data {
    fn load(&mut self, loaded: db::Loaded, now: u64) {
        for (kind, name, json) in loaded.minutes {
            if kind == "probe" {
                if let Ok(m) = serde_json::from_str::<ProbeMinute>(&json) {
                    self.probes
                        .entry(name)
                        .or_insert_with(Ring::new)
                        .push(m, now);
                }
            } else if let Ok(m) = serde_json::from_str::<Minute>(&json) {
                self.breakers
                    .entry(name)
                    .or_insert_with(Ring::new)
                    .push(m, now);
            }
        }
        self.transitions = loaded
            .transitions
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect();
        while self.transitions.len() > MAX_KEPT_EVENTS {
            self.transitions.pop_front();
        }
        self.probe_runs = loaded
            .probe_runs
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect();
        while self.probe_runs.len() > MAX_KEPT_EVENTS {
            self.probe_runs.pop_front();
        }
        for json in loaded.alerts {
            if let Ok(alert) = serde_json::from_str::<Value>(&json) {
                let (key, at) = alert_key(&alert);
                self.alerts.insert(key, (at, alert));
            }
        }
        for (kind, name, json) in loaded.changes {
            if let Ok(value) = serde_json::from_str(&json) {
                self.changes.insert((kind, name), value);
            }
        }
    }
}

fn alert_key(alert: &Value) -> (String, u64) {
    let at = alert["startedAt"].as_u64().unwrap_or(0);
    (format!("{at}-{}", alert["id"]), at)
}

impl History {
    /// The history of `registry`'s breakers: start it with [`HistoryBuilder::start`].
    pub fn builder(registry: &Registry) -> HistoryBuilder {
        HistoryBuilder {
            registry: registry.clone(),
            health: None,
            state_dir: None,
            retention: DEFAULT_RETENTION,
        }
    }

    /// Closes the current minute so far (what happened since the last sample shows at once;
    /// the rest of the minute is added to it later) and waits until the state dir has it.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.flush.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes, then closes the state dir's file (so that another process may open it) and
    /// stops recording; the history kept so far is still served. For a graceful shutdown.
    pub async fn close(&self) {
        self.flush().await;
        self.task.0.abort();
        if let Some(writer) = &self.inner.writer {
            let (tx, rx) = tokio::sync::oneshot::channel();
            writer.send(db::Write::Close(tx));
            let _ = rx.await;
        }
    }

    fn since(&self, hours: u32) -> u64 {
        let now = self.inner.registry.clock().epoch_millis();
        now.saturating_sub(u64::from(hours) * 3_600_000)
    }

    /// The last `hours` of the breaker `name`, or `None` if there is no such breaker and
    /// nothing kept of one.
    pub fn breaker(&self, name: &str, hours: u32) -> Option<BreakerHistory> {
        let since = self.since(hours);
        let data = self.inner.data();
        let ring = data.breakers.get(name);
        if ring.is_none() && self.inner.registry.get(name).is_none() {
            return None;
        }
        Some(BreakerHistory {
            circuit: name.to_owned(),
            hours,
            minutes: ring.map(|r| r.since(since)).unwrap_or_default(),
            transitions: data
                .transitions
                .iter()
                .filter(|t| t.circuit == name && t.at >= since)
                .cloned()
                .collect(),
            alerts: alerts_of(&data, name, since),
        })
    }

    /// The last `hours` of the probe `name`, or `None` if there is no such probe and nothing
    /// kept of one.
    pub fn probe(&self, name: &str, hours: u32) -> Option<ProbeHistory> {
        let since = self.since(hours);
        let data = self.inner.data();
        let ring = data.probes.get(name);
        let known = self
            .inner
            .health
            .as_ref()
            .is_some_and(|h| h.probe(name).is_some());
        if ring.is_none() && !known {
            return None;
        }
        Some(ProbeHistory {
            probe: name.to_owned(),
            hours,
            minutes: ring.map(|r| r.since(since)).unwrap_or_default(),
            runs: data
                .probe_runs
                .iter()
                .filter(|r| r.probe == name && r.at >= since)
                .cloned()
                .collect(),
            alerts: alerts_of(&data, name, since),
        })
    }

    /// The calls of breaker `name` in the last `minutes` whole minutes kept (plus the minute
    /// so far, as of the last sample): `(good, bad)`, a refusal or a failure being bad.
    pub fn totals(&self, name: &str, minutes: u32) -> (u64, u64) {
        let now = self.inner.registry.clock().epoch_millis();
        let since = now.saturating_sub(u64::from(minutes) * MINUTE_MS);
        let data = self.inner.data();
        let Some(ring) = data.breakers.get(name) else {
            return (0, 0);
        };
        ring.since(since).iter().fold((0, 0), |(good, bad), m| {
            (good + m.successes, bad + m.failures + m.refused)
        })
    }

    /// Keeps an alert's latest state (as the alerting engine serializes it: `id`, `circuit`,
    /// `startedAt`, …).
    pub fn record_alert(&self, alert: Value) {
        let (key, at) = alert_key(&alert);
        let json = alert.to_string();
        let mut data = self.inner.data();
        data.alerts.insert(key.clone(), (at, alert));
        while data.alerts.len() > MAX_KEPT_EVENTS {
            data.alerts.pop_first();
        }
        drop(data);
        self.inner.write(db::Write::Alert { key, at, json });
    }

    /// Keeps a run-time change, replacing the previous one of its kind and name.
    pub fn record_change(&self, change: Change) {
        let at = self.inner.registry.clock().epoch_millis();
        let json = change.value.to_string();
        self.inner
            .data()
            .changes
            .insert((change.kind.clone(), change.name.clone()), change.value);
        self.inner.write(db::Write::Change {
            kind: change.kind,
            name: change.name,
            at,
            json,
        });
    }

    /// The run-time changes kept (read back from the state dir at start), to make again.
    pub fn changes(&self) -> Vec<Change> {
        self.inner
            .data()
            .changes
            .iter()
            .map(|((kind, name), value)| Change {
                kind: kind.clone(),
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// Where the history is kept, and whether that works.
    pub fn status(&self) -> HistoryStatus {
        let s = self.inner.status.lock().unwrap_or_else(|e| e.into_inner());
        HistoryStatus {
            state_dir: self
                .inner
                .state_dir
                .as_ref()
                .map(|d| d.display().to_string()),
            persistent: self.inner.writer.is_some(),
            problem: s.problem.clone(),
            written: s.written,
            dropped: s.dropped,
        }
    }

    /// Adds the `state_dir` check to `health` (non-critical): `pass` while the state dir
    /// takes the history, `warn` saying why when it does not.
    pub fn add_health_check(&self, health: &HealthRegistry) {
        if self.inner.state_dir.is_none() {
            return;
        }
        let history = self.clone();
        health.add_check("state_dir", false, move || {
            let s = history.status();
            match (&s.problem, s.persistent) {
                (None, true) => CheckResult::pass(),
                (Some(why), _) => CheckResult::warn(why.clone()),
                (None, false) => CheckResult::warn("not in use"),
            }
            .with_observed(s.written, Some("rows"))
        });
    }
}

fn alerts_of(data: &Data, name: &str, since: u64) -> Vec<Value> {
    let mut v: Vec<&(u64, Value)> = data
        .alerts
        .values()
        .filter(|(at, a)| a["circuit"] == name && a["lastSeenAt"].as_u64().unwrap_or(*at) >= since)
        .collect();
    v.sort_by_key(|(at, _)| *at);
    v.into_iter().map(|(_, a)| a.clone()).collect()
}
