//! Alerts: raised when a breaker opens, resolved when it closes again or by an operator, and
//! told to notifiers (a webhook, Slack, PagerDuty: [`crate::webhook`]) as they change.
//!
//! Every change is also a `tracing` event on target `breakwater::alerts` (warn when an alert
//! fires, info when it resolves).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use breakwater_core::{Clock, EventKind, HealthMode, Registry, State, Subscription};
use serde::Serialize;

/// How many alerts are kept (the oldest resolved ones go first).
pub const MAX_ALERTS: usize = 1_000;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// An operator's own doing (a forced state).
    Low,
    /// Worth a look.
    Medium,
    /// A dependency is failing: calls are refused.
    High,
    /// A dependency marked critical is failing.
    Critical,
}

impl Severity {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to an alert, as told to a [`Notifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChange {
    /// It was raised.
    Fired,
    /// It was resolved (the circuit closed, or an operator resolved it).
    Resolved,
}

/// Told of every alert change. Called with the alert book's lock held: it must return at once
/// (queue the work, never wait on the network).
pub trait Notifier: Send + Sync + 'static {
    /// `alert` changed as `change` says.
    fn notify(&self, alert: &Alert, change: AlertChange);
}

/// An alert's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The circuit is still open.
    Active,
    /// The circuit closed, or an operator resolved it.
    Resolved,
}

/// A breaker that opened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Its id.
    pub id: u64,
    /// The breaker.
    pub circuit: String,
    /// `critical` for an opened breaker whose health is critical, `high` for another opened
    /// breaker, `low` for one forced open by an operator.
    pub severity: Severity,
    /// Active or resolved.
    pub status: AlertStatus,
    /// What happened.
    pub message: String,
    /// When it was raised (ms since the epoch).
    pub started_at: u64,
    /// When it was resolved.
    pub resolved_at: Option<u64>,
    /// `auto` (the circuit closed) or `manual`.
    pub resolved_by: Option<&'static str>,
}

/// The alerts of a registry, brought up to date from its events whenever they are read.
#[derive(Debug, Clone)]
pub struct AlertBook {
    registry: Registry,
    inner: Arc<Mutex<Book>>,
}

struct Book {
    events: Subscription,
    lost: u64,
    alerts: VecDeque<Alert>,
    next_id: u64,
    notifiers: Vec<Arc<dyn Notifier>>,
}

impl fmt::Debug for Book {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Book")
            .field("alerts", &self.alerts.len())
            .field("notifiers", &self.notifiers.len())
            .finish_non_exhaustive()
    }
}

impl Book {
    fn tell(&self, alert: &Alert, change: AlertChange) {
        match change {
            AlertChange::Fired => tracing::warn!(
                target: "breakwater::alerts",
                alert = alert.id,
                circuit = %alert.circuit,
                severity = alert.severity.as_str(),
                "alert fired: {}", alert.message
            ),
            AlertChange::Resolved => tracing::info!(
                target: "breakwater::alerts",
                alert = alert.id,
                circuit = %alert.circuit,
                resolved_by = alert.resolved_by.unwrap_or("auto"),
                "alert resolved: {}", alert.message
            ),
        }
        for n in &self.notifiers {
            n.notify(alert, change);
        }
    }
}

impl AlertBook {
    /// Follows `registry`'s events from now on (and raises alerts for breakers open now).
    pub fn new(registry: &Registry) -> Self {
        let book = Self {
            registry: registry.clone(),
            inner: Arc::new(Mutex::new(Book {
                events: registry.subscribe_with_capacity(4_096),
                lost: 0,
                alerts: VecDeque::new(),
                next_id: 1,
                notifiers: Vec::new(),
            })),
        };
        book.reconcile(&mut book.lock());
        book
    }

    /// Tells `notifier` of every change from now on.
    pub fn add_notifier(&self, notifier: Arc<dyn Notifier>) {
        self.lock().notifiers.push(notifier);
    }

    /// Keeps the book up to date in a task on the current tokio runtime, so that notifiers hear
    /// of a change when it happens rather than at the next read. The task ends when the registry
    /// and every clone of this book are gone.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let wake = self.registry.subscribe_with_capacity(64);
        let book = Arc::downgrade(&self.inner);
        let registry = self.registry.clone();
        tokio::spawn(async move {
            // Each event only wakes the task: the book reads its own subscription.
            while wake.recv().await.is_some() {
                while wake.try_recv().is_some() {}
                let Some(inner) = book.upgrade() else { return };
                let this = AlertBook {
                    registry: registry.clone(),
                    inner,
                };
                let mut b = this.lock();
                this.catch_up(&mut b);
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every alert, newest first.
    pub fn list(&self) -> Vec<Alert> {
        let mut book = self.lock();
        self.catch_up(&mut book);
        book.alerts.iter().rev().cloned().collect()
    }

    /// Resolves alert `id` by hand; `None` if there is no such alert. Resolving a resolved alert
    /// changes nothing.
    pub fn resolve(&self, id: u64) -> Option<Alert> {
        let now = self.registry.clock().epoch_millis();
        let mut book = self.lock();
        self.catch_up(&mut book);
        let alert = book.alerts.iter_mut().find(|a| a.id == id)?;
        if alert.status == AlertStatus::Active {
            alert.status = AlertStatus::Resolved;
            alert.resolved_at = Some(now);
            alert.resolved_by = Some("manual");
            let alert = alert.clone();
            book.tell(&alert, AlertChange::Resolved);
            return Some(alert);
        }
        Some(alert.clone())
    }

    fn catch_up(&self, book: &mut Book) {
        while let Some(event) = book.events.try_recv() {
            if let EventKind::StateTransition { to, .. } = event.kind {
                self.apply(book, &event.circuit, to, event.at);
            }
        }
        let lost = book.events.lost();
        if lost != book.lost {
            book.lost = lost;
            self.reconcile(book);
        }
    }

    /// Events were lost: align the alerts with the breakers' states now.
    fn reconcile(&self, book: &mut Book) {
        let now = self.registry.clock().epoch_millis();
        for breaker in self.registry.breakers() {
            self.apply(book, breaker.name(), breaker.state(), now);
        }
    }

    fn apply(&self, book: &mut Book, circuit: &str, to: State, at: u64) {
        let active = book
            .alerts
            .iter_mut()
            .find(|a| a.status == AlertStatus::Active && a.circuit == circuit);
        match (to, active) {
            (State::Open | State::ForcedOpen, None) => {
                let critical = self
                    .registry
                    .get(circuit)
                    .is_some_and(|b| b.config().health() == HealthMode::Critical);
                let severity = match (to, critical) {
                    (State::ForcedOpen, _) => Severity::Low,
                    (_, true) => Severity::Critical,
                    _ => Severity::High,
                };
                let id = book.next_id;
                book.next_id += 1;
                let alert = Alert {
                    id,
                    circuit: circuit.to_owned(),
                    severity,
                    status: AlertStatus::Active,
                    message: format!("circuit `{circuit}` is {to}"),
                    started_at: at,
                    resolved_at: None,
                    resolved_by: None,
                };
                book.tell(&alert, AlertChange::Fired);
                book.alerts.push_back(alert);
                if book.alerts.len() > MAX_ALERTS {
                    let drop = book
                        .alerts
                        .iter()
                        .position(|a| a.status == AlertStatus::Resolved)
                        .unwrap_or(0);
                    book.alerts.remove(drop);
                }
            }
            (State::Closed | State::Disabled | State::MetricsOnly, Some(alert)) => {
                alert.status = AlertStatus::Resolved;
                alert.resolved_at = Some(at);
                alert.resolved_by = Some("auto");
                let alert = alert.clone();
                book.tell(&alert, AlertChange::Resolved);
            }
            _ => {}
        }
    }
}
