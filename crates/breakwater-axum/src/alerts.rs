//! Alerts: raised when a breaker opens, resolved when it closes again or by an operator.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use breakwater_core::{Clock, EventKind, HealthMode, Registry, State, Subscription};
use serde::Serialize;

/// How many alerts are kept (the oldest resolved ones go first).
pub const MAX_ALERTS: usize = 1_000;

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
    /// `critical` for breakers whose health is critical, `warning` otherwise.
    pub severity: &'static str,
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

#[derive(Debug)]
struct Book {
    events: Subscription,
    lost: u64,
    alerts: VecDeque<Alert>,
    next_id: u64,
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
            })),
        };
        book.reconcile(&mut book.lock());
        book
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
                let id = book.next_id;
                book.next_id += 1;
                book.alerts.push_back(Alert {
                    id,
                    circuit: circuit.to_owned(),
                    severity: if critical { "critical" } else { "warning" },
                    status: AlertStatus::Active,
                    message: format!("circuit `{circuit}` is {to}"),
                    started_at: at,
                    resolved_at: None,
                    resolved_by: None,
                });
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
            }
            _ => {}
        }
    }
}
