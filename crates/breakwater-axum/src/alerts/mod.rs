//! Alerts: raised by rules ([`AlertRules`]) from the breakers' events and a look at their
//! snapshots and the probes, de-duplicated (one active alert per rule and circuit, with a
//! `count` and `lastSeenAt`), acknowledged and resolved by operators or resolved when their
//! condition clears, escalated while nobody acknowledges them, and told to notifiers (a
//! webhook, Slack, PagerDuty: [`crate::webhook`]) as they change.
//!
//! Evaluation never touches a call's path: it reads events and snapshots, when the alerts are
//! read and, once [`AlertBook::watch`] runs (the ops router starts it on the tokio runtime it
//! is built on), on every event and every second. Every change is also a `tracing` event on target
//! `breakwater::alerts` (warn when an alert fires or escalates, info otherwise).

mod rules;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use breakwater_core::{Clock, EventKind, HealthMode, Registry, State, Subscription};
use breakwater_tower::health::{HealthRegistry, Status};
use serde::{Deserialize, Serialize};

pub use rules::{AlertRules, BurnRate, Rule};

/// How many alerts are kept (the oldest resolved ones go first).
pub const MAX_ALERTS: usize = 1_000;

/// How often a watching book looks at the breakers and probes, besides on every event.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// How urgent an alert is (in JSON `LOW`, `MEDIUM`, `HIGH`, `CRITICAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// An operator's own doing (a forced state).
    Low,
    /// Worth a look: a trend, a slow probe, a flapping circuit.
    Medium,
    /// A dependency is failing: calls are refused.
    High,
    /// A dependency marked critical is failing, or several are.
    Critical,
}

impl Severity {
    /// The name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// One step up (critical stays critical).
    #[must_use]
    pub fn raised(self) -> Severity {
        match self {
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
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
    /// An operator acknowledged it.
    Acknowledged,
    /// Still firing after the escalation time: its severity rose.
    Escalated,
    /// Its condition cleared, or an operator resolved it.
    Resolved,
}

impl AlertChange {
    /// `fired`, `acknowledged`, `escalated` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertChange::Fired => "fired",
            AlertChange::Acknowledged => "acknowledged",
            AlertChange::Escalated => "escalated",
            AlertChange::Resolved => "resolved",
        }
    }
}

/// Told of every alert change. Called with the alert book's lock held: it must return at once
/// (queue the work, never wait on the network).
pub trait Notifier: Send + Sync + 'static {
    /// `alert` changed as `change` says.
    fn notify(&self, alert: &Alert, change: AlertChange);
}

/// An alert's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Its condition holds, and nobody acknowledged it yet.
    Firing,
    /// Its condition holds; an operator knows.
    Acknowledged,
    /// Its condition cleared, or an operator resolved it.
    Resolved,
}

impl AlertStatus {
    /// Whether it is not resolved.
    pub fn is_active(self) -> bool {
        self != AlertStatus::Resolved
    }
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Its id.
    pub id: u64,
    /// The rule that raised it.
    pub rule: Rule,
    /// The breaker (or the probe, for probe rules; `*` for several circuits open).
    pub circuit: String,
    /// How urgent (raised by escalation).
    pub severity: Severity,
    /// Firing, acknowledged or resolved.
    pub status: AlertStatus,
    /// What happened.
    pub message: String,
    /// How many times its condition came about while it was active.
    pub count: u64,
    /// When it was raised (ms since the epoch).
    pub started_at: u64,
    /// When its condition was last seen holding.
    pub last_seen_at: u64,
    /// When it was acknowledged, and the operator's note.
    pub acknowledged_at: Option<u64>,
    /// The note given with the acknowledgement.
    pub acknowledge_note: Option<String>,
    /// How many times it escalated.
    pub escalations: u32,
    /// When it was resolved.
    pub resolved_at: Option<u64>,
    /// `auto` (its condition cleared) or `manual`.
    pub resolved_by: Option<&'static str>,
    /// The note given with a manual resolution.
    pub resolve_note: Option<String>,
    #[serde(skip)]
    seen: bool,
    #[serde(skip)]
    escalated_at: u64,
}

impl Alert {
    /// A new alert, firing since `at` (ms since the epoch): how a book raises one, and how a
    /// notifier's tests can make one.
    pub fn firing(
        id: u64,
        rule: Rule,
        circuit: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
        at: u64,
    ) -> Self {
        Self {
            id,
            rule,
            circuit: circuit.into(),
            severity,
            status: AlertStatus::Firing,
            message: message.into(),
            count: 1,
            started_at: at,
            last_seen_at: at,
            acknowledged_at: None,
            acknowledge_note: None,
            escalations: 0,
            resolved_at: None,
            resolved_by: None,
            resolve_note: None,
            seen: true,
            escalated_at: at,
        }
    }
}

/// Which alerts a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only in this state.
    pub status: Option<AlertStatus>,
    /// Only of this severity.
    pub severity: Option<Severity>,
    /// Only about this circuit (or probe).
    pub circuit: Option<String>,
}

impl AlertFilter {
    fn keeps(&self, a: &Alert) -> bool {
        self.status.is_none_or(|s| s == a.status)
            && self.severity.is_none_or(|s| s == a.severity)
            && self.circuit.as_ref().is_none_or(|c| *c == a.circuit)
    }
}

/// The alerts of a registry and its probes: see the [module](self).
#[derive(Debug, Clone)]
pub struct AlertBook {
    registry: Registry,
    health: HealthRegistry,
    inner: Arc<Mutex<Book>>,
}

struct Book {
    events: Subscription,
    alerts: VecDeque<Alert>,
    next_id: u64,
    notifiers: Vec<Arc<dyn Notifier>>,
    rules: AlertRules,
    /// Recent openings per circuit (ms since the epoch), for the flapping rule.
    openings: HashMap<String, VecDeque<u64>>,
    /// Where the burn-rate rules read a breaker's calls.
    budget: Option<Arc<dyn ErrorBudget>>,
}

/// Where the burn-rate rules read a breaker's recent calls (the ops API gives its
/// `History`).
pub trait ErrorBudget: Send + Sync + 'static {
    /// `(good, bad)` calls of `circuit` in the last `minutes` minutes.
    fn totals(&self, circuit: &str, minutes: u32) -> (u64, u64);
}

impl fmt::Debug for Book {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Book")
            .field("alerts", &self.alerts.len())
            .field("notifiers", &self.notifiers.len())
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// A condition that holds now.
struct Condition {
    rule: Rule,
    circuit: String,
    severity: Severity,
    message: String,
}

impl Book {
    fn tell(&self, alert: &Alert, change: AlertChange) {
        match change {
            AlertChange::Fired | AlertChange::Escalated => tracing::warn!(
                target: "breakwater::alerts",
                alert = alert.id,
                rule = ?alert.rule,
                circuit = %alert.circuit,
                severity = alert.severity.as_str(),
                "alert {}: {}", change.as_str(), alert.message
            ),
            AlertChange::Acknowledged | AlertChange::Resolved => tracing::info!(
                target: "breakwater::alerts",
                alert = alert.id,
                rule = ?alert.rule,
                circuit = %alert.circuit,
                "alert {}: {}", change.as_str(), alert.message
            ),
        }
        for n in &self.notifiers {
            n.notify(alert, change);
        }
    }

    fn active_mut(&mut self, rule: Rule, circuit: &str) -> Option<&mut Alert> {
        self.alerts
            .iter_mut()
            .find(|a| a.status.is_active() && a.rule == rule && a.circuit == circuit)
    }

    /// The condition holds at `at`: a new alert, or the active one seen again (`again`: it came
    /// about anew, as a circuit opening again, and counts once more).
    fn raise(&mut self, c: Condition, at: u64, again: bool) {
        if let Some(a) = self.active_mut(c.rule, &c.circuit) {
            if again {
                a.count += 1;
            }
            a.seen = true;
            a.last_seen_at = at;
            // Its condition now holds at a higher severity (a faster burn): it rises.
            if c.severity > a.severity {
                a.severity = c.severity;
                a.message = c.message;
                let risen = a.clone();
                self.tell(&risen, AlertChange::Escalated);
            }
            return;
        }
        let alert = Alert::firing(self.next_id, c.rule, c.circuit, c.severity, c.message, at);
        self.next_id += 1;
        self.tell(&alert, AlertChange::Fired);
        self.alerts.push_back(alert);
        if self.alerts.len() > MAX_ALERTS {
            let drop = self
                .alerts
                .iter()
                .position(|a| a.status == AlertStatus::Resolved)
                .unwrap_or(0);
            self.alerts.remove(drop);
        }
    }
}

/// The most severe burn-rate rule that holds for `circuit`, if it has an objective.
fn burn_rate(
    budget: &dyn ErrorBudget,
    rules: &AlertRules,
    circuit: &str,
    objective: Option<f64>,
) -> Option<Condition> {
    let allowed = 1.0 - objective?;
    let burn = |minutes| {
        let (good, bad) = budget.totals(circuit, minutes);
        let all = good + bad;
        (all > 0).then(|| bad as f64 / all as f64 / allowed)
    };
    let mut holding = rules.slo_burn_rates.iter().filter_map(|r| {
        let long = burn(r.long_minutes)?;
        let short = burn(r.short_minutes)?;
        (long >= r.burn_rate && short >= r.burn_rate).then(|| Condition {
            rule: Rule::SloBurnRate,
            circuit: circuit.to_owned(),
            severity: r.severity,
            message: format!(
                "circuit `{circuit}` burns its error budget {long:.1}x over {} min and {short:.1}x over {} min (objective {}, alert at {}x)",
                r.long_minutes,
                r.short_minutes,
                objective.unwrap_or_default(),
                r.burn_rate
            ),
        })
    });
    let first = holding.next()?;
    Some(holding.fold(first, |a, b| if b.severity > a.severity { b } else { a }))
}

fn circuit_open(circuit: &str, critical: bool) -> Condition {
    Condition {
        rule: Rule::CircuitOpen,
        circuit: circuit.to_owned(),
        severity: if critical {
            Severity::Critical
        } else {
            Severity::High
        },
        message: format!("circuit `{circuit}` is open"),
    }
}

fn forced(circuit: &str, state: State) -> Condition {
    Condition {
        rule: Rule::Forced,
        circuit: circuit.to_owned(),
        severity: Severity::Low,
        message: format!("circuit `{circuit}` is {state} by an operator"),
    }
}

impl AlertBook {
    /// Follows the events of `health`'s breakers from now on, and looks at them and its probes
    /// (raising alerts for breakers open now), with the default rules.
    pub fn new(health: &HealthRegistry) -> Self {
        let registry = health.breakers().clone();
        let book = Self {
            inner: Arc::new(Mutex::new(Book {
                events: registry.subscribe_with_capacity(4_096),
                alerts: VecDeque::new(),
                next_id: 1,
                notifiers: Vec::new(),
                rules: AlertRules::default(),
                openings: HashMap::new(),
                budget: None,
            })),
            registry,
            health: health.clone(),
        };
        book.evaluate();
        book
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the burn-rate rules' call counts from `budget` (without one, those rules raise
    /// nothing).
    pub fn error_budget(&self, budget: Arc<dyn ErrorBudget>) {
        self.lock().budget = Some(budget);
        self.evaluate();
    }

    /// Tells `notifier` of every change from now on.
    pub fn add_notifier(&self, notifier: Arc<dyn Notifier>) {
        self.lock().notifiers.push(notifier);
    }

    /// The rules in force.
    pub fn rules(&self) -> AlertRules {
        self.lock().rules.clone()
    }

    /// Replaces the rules (validated first: the error names the field), and evaluates them.
    pub fn set_rules(&self, rules: AlertRules) -> Result<(), String> {
        rules.validate()?;
        self.lock().rules = rules;
        self.evaluate();
        Ok(())
    }

    /// The alerts `filter` keeps, newest first (evaluated first).
    pub fn list(&self, filter: &AlertFilter) -> Vec<Alert> {
        let mut book = self.lock();
        self.evaluate_locked(&mut book);
        book.alerts
            .iter()
            .rev()
            .filter(|a| filter.keeps(a))
            .cloned()
            .collect()
    }

    /// Acknowledges alert `id` (with an operator's note); `None` if there is no such alert.
    /// Acknowledging an acknowledged or resolved alert changes nothing.
    pub fn acknowledge(&self, id: u64, note: Option<String>) -> Option<Alert> {
        let now = self.registry.clock().epoch_millis();
        let mut book = self.lock();
        self.evaluate_locked(&mut book);
        let alert = book.alerts.iter_mut().find(|a| a.id == id)?;
        if alert.status != AlertStatus::Firing {
            return Some(alert.clone());
        }
        alert.status = AlertStatus::Acknowledged;
        alert.acknowledged_at = Some(now);
        alert.acknowledge_note = note;
        let alert = alert.clone();
        book.tell(&alert, AlertChange::Acknowledged);
        Some(alert)
    }

    /// Resolves alert `id` by hand (with an operator's note); `None` if there is no such alert.
    /// Resolving a resolved alert changes nothing. If its condition still holds, the next
    /// evaluation raises a new alert.
    pub fn resolve(&self, id: u64, note: Option<String>) -> Option<Alert> {
        let now = self.registry.clock().epoch_millis();
        let mut book = self.lock();
        self.evaluate_locked(&mut book);
        let alert = book.alerts.iter_mut().find(|a| a.id == id)?;
        if alert.status == AlertStatus::Resolved {
            return Some(alert.clone());
        }
        alert.status = AlertStatus::Resolved;
        alert.resolved_at = Some(now);
        alert.resolved_by = Some("manual");
        alert.resolve_note = note;
        let alert = alert.clone();
        book.tell(&alert, AlertChange::Resolved);
        Some(alert)
    }

    /// Brings the alerts up to date now: the events since the last look, then every rule
    /// against the breakers' snapshots and the probes.
    pub fn evaluate(&self) {
        let mut book = self.lock();
        self.evaluate_locked(&mut book);
    }

    /// Keeps the book up to date in a task on the current tokio runtime (on every transition,
    /// and every [`EVALUATE_EVERY`]), so that notifiers hear of a change when it happens and
    /// escalations come on time. The task ends once every clone of this book is gone.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let wake = self.registry.subscribe_with_capacity(64);
        let inner = Arc::downgrade(&self.inner);
        let registry = self.registry.clone();
        let health = self.health.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVALUATE_EVERY);
            loop {
                tokio::select! {
                    event = wake.recv() => match event {
                        None => return,
                        // Only transitions change what the rules see at once (refusals, one
                        // per refused call, wait for the tick).
                        Some(e) if !matches!(e.kind, EventKind::StateTransition { .. }) => {
                            continue;
                        }
                        Some(_) => while wake.try_recv().is_some() {},
                    },
                    _ = tick.tick() => {}
                }
                let Some(inner) = inner.upgrade() else { return };
                let book = AlertBook {
                    registry: registry.clone(),
                    health: health.clone(),
                    inner,
                };
                book.evaluate();
            }
        })
    }

    fn evaluate_locked(&self, book: &mut Book) {
        let now = self.registry.clock().epoch_millis();
        // Events first: each opening counts (and fires even if the circuit closed since).
        while let Some(event) = book.events.try_recv() {
            let EventKind::StateTransition { to, .. } = event.kind else {
                continue;
            };
            let circuit = event.circuit.to_string();
            match to {
                State::Open => {
                    book.openings
                        .entry(circuit.clone())
                        .or_default()
                        .push_back(event.at);
                    if book.rules.circuit_open {
                        let critical = self.is_critical(&circuit);
                        book.raise(circuit_open(&circuit, critical), event.at, true);
                    }
                }
                State::ForcedOpen | State::Disabled if book.rules.forced => {
                    book.raise(forced(&circuit, to), event.at, true);
                }
                _ => {}
            }
        }

        let conditions = self.conditions(book, now);
        for c in conditions {
            book.raise(c, now, false);
        }
        // Whatever was not seen now has cleared.
        let mut cleared = Vec::new();
        for a in book.alerts.iter_mut().filter(|a| a.status.is_active()) {
            if !a.seen {
                a.status = AlertStatus::Resolved;
                a.resolved_at = Some(now);
                a.resolved_by = Some("auto");
                cleared.push(a.clone());
            }
        }
        for a in &cleared {
            book.tell(a, AlertChange::Resolved);
        }
        // Escalation of what is still firing.
        if let Some(after) = book.rules.escalate_after_ms {
            let mut escalated = Vec::new();
            for a in book.alerts.iter_mut() {
                if a.status == AlertStatus::Firing
                    && a.severity != Severity::Critical
                    && now.saturating_sub(a.escalated_at) >= after
                {
                    a.severity = a.severity.raised();
                    a.escalations += 1;
                    a.escalated_at = now;
                    escalated.push(a.clone());
                }
            }
            for a in &escalated {
                book.tell(a, AlertChange::Escalated);
            }
        }
        for a in book.alerts.iter_mut() {
            a.seen = false;
        }
    }

    fn is_critical(&self, circuit: &str) -> bool {
        self.registry
            .get(circuit)
            .is_some_and(|b| b.config().health() == HealthMode::Critical)
    }

    /// Every condition that holds now.
    fn conditions(&self, book: &mut Book, now: u64) -> Vec<Condition> {
        let rules = book.rules.clone();
        let mut out = Vec::new();
        let mut open = 0;
        for s in self.registry.snapshots() {
            let name = s.name.as_str();
            match s.state {
                State::Open | State::HalfOpen if rules.circuit_open => {
                    out.push(circuit_open(name, s.config.health == HealthMode::Critical));
                }
                State::ForcedOpen | State::Disabled if rules.forced => {
                    out.push(forced(name, s.state));
                }
                _ => {}
            }
            if s.state == State::Open {
                open += 1;
            }
            if s.state == State::Closed {
                for (rule, fraction, rate, threshold, what) in [
                    (
                        Rule::FailureRateWarning,
                        rules.failure_rate_warning,
                        s.failure_rate,
                        s.config.failure_rate_threshold,
                        "failure",
                    ),
                    (
                        Rule::SlowCallRateWarning,
                        rules.slow_call_rate_warning,
                        s.slow_call_rate,
                        s.config.slow_call_rate_threshold,
                        "slow-call",
                    ),
                ] {
                    if let (Some(f), Some(rate), Some(t)) = (fraction, rate, threshold)
                        && rate >= f * f64::from(t) / 100.0
                    {
                        out.push(Condition {
                            rule,
                            circuit: name.to_owned(),
                            severity: Severity::Medium,
                            message: format!(
                                "circuit `{name}` may open soon: {what} rate {:.1} % of {t} %",
                                rate * 100.0
                            ),
                        });
                    }
                }
            }
        }
        if let Some(n) = rules.circuits_open
            && open >= n
        {
            out.push(Condition {
                rule: Rule::CircuitsOpen,
                circuit: "*".into(),
                severity: Severity::Critical,
                message: format!("{open} circuits are open at once"),
            });
        }
        // Flapping: openings within the window.
        let since = now.saturating_sub(rules.flapping_window_ms);
        book.openings.retain(|_, times| {
            while times.front().is_some_and(|t| *t < since) {
                times.pop_front();
            }
            !times.is_empty()
        });
        if let Some(n) = rules.flapping_openings {
            for (circuit, times) in &book.openings {
                if times.len() >= n as usize {
                    out.push(Condition {
                        rule: Rule::Flapping,
                        circuit: circuit.clone(),
                        severity: Severity::Medium,
                        message: format!(
                            "circuit `{circuit}` opened {} times in {} s",
                            times.len(),
                            rules.flapping_window_ms / 1_000
                        ),
                    });
                }
            }
        }
        if let Some(budget) = book.budget.clone() {
            for s in self.registry.snapshots() {
                if let Some(c) = burn_rate(&*budget, &rules, &s.name, s.config.slo_objective) {
                    out.push(c);
                }
            }
        }
        for p in self.health.probes() {
            let name = p.name();
            if rules.probe_failing && p.status() == Status::Fail {
                out.push(Condition {
                    rule: Rule::ProbeFailing,
                    circuit: name.to_owned(),
                    severity: Severity::High,
                    message: format!("probe `{name}` fails"),
                });
            } else if rules.probe_slow && p.last().is_some_and(|r| r.ok && r.slow) {
                out.push(Condition {
                    rule: Rule::ProbeSlow,
                    circuit: name.to_owned(),
                    severity: Severity::Medium,
                    message: format!("probe `{name}` is slow"),
                });
            }
        }
        out
    }
}
