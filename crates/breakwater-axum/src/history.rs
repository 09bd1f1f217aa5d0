//! The ops API's history routes, and what it keeps of operators' changes so that a restart
//! makes them again (with a [`History`](breakwater_history::History) given to
//! [`OpsApi::history`](crate::OpsApi::history)).

use std::collections::HashMap;

use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use breakwater_core::{CircuitBreaker, ConfigView, State};
use breakwater_history::{Change, History};
use serde_json::Value;

use crate::alerts::{Alert, AlertBook, AlertChange, Notifier};
use crate::error::ApiError;
use crate::ops::{Name, Shared, json_response};

/// The `hours` of a history request: 1 to 24 (what the rings keep); 24 when absent.
fn hours(query: &HashMap<String, String>) -> Result<u32, ApiError> {
    for key in query.keys() {
        if key != "hours" {
            return Err(ApiError::bad_request(format!(
                "unknown parameter `{key}` (only `hours`)"
            )));
        }
    }
    match query.get("hours") {
        None => Ok(24),
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=24) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "invalid `hours` {v:?}: expected a whole number from 1 to 24"
            ))),
        },
    }
}

pub(crate) async fn breaker_history(
    AxState(ops): AxState<Shared>,
    Name(name): Name,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    history_answer(&query, "circuit breaker", &name, |h| {
        ops.history
            .as_ref()
            .and_then(|history| history.breaker(&name, h))
    })
}

pub(crate) async fn probe_history(
    AxState(ops): AxState<Shared>,
    Name(name): Name,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    history_answer(&query, "probe", &name, |h| {
        ops.history
            .as_ref()
            .and_then(|history| history.probe(&name, h))
    })
}

/// The history `find` gives for the hours asked for, or 400 / 404.
fn history_answer<T: serde::Serialize>(
    query: &HashMap<String, String>,
    what: &str,
    name: &str,
    find: impl FnOnce(u32) -> Option<T>,
) -> Response {
    match hours(query).map(find) {
        Ok(Some(history)) => json_response(StatusCode::OK, &history),
        Ok(None) => ApiError::not_found(format!("no {what} named `{name}`")).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The write queue: what waits for its circuit to close.
pub(crate) async fn queue(AxState(ops): AxState<Shared>) -> Response {
    match &ops.queue {
        Some(q) => {
            let q = q.clone();
            match tokio::task::spawn_blocking(move || q.view()).await {
                Ok(view) => json_response(StatusCode::OK, &view),
                Err(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "QUEUE_UNAVAILABLE",
                    "the queue could not be read",
                )
                .into_response(),
            }
        }
        None => ApiError::not_found("no write queue (the gateway has none without a state dir)")
            .into_response(),
    }
}

/// Keeps a breaker's state or config after an operator's `action` on it.
pub(crate) fn keep_breaker(history: Option<&History>, breaker: &CircuitBreaker, action: &str) {
    let Some(history) = history else { return };
    let (kind, value) = if action == "config" {
        let view = breaker.config().view();
        (
            "breakerConfig",
            serde_json::to_value(view).unwrap_or(Value::Null),
        )
    } else {
        (
            "breakerState",
            Value::String(breaker.state().as_str().to_owned()),
        )
    };
    history.record_change(Change {
        kind: kind.into(),
        name: breaker.name().into(),
        value,
    });
}

/// Keeps any other change (`probeSettings`, `alertRules`).
pub(crate) fn keep(history: Option<&History>, kind: &str, name: &str, value: Value) {
    if let Some(history) = history {
        history.record_change(Change {
            kind: kind.into(),
            name: name.into(),
            value,
        });
    }
}

/// Makes again the changes `history` kept: configs, forced states, probe settings, alert
/// rules. One that no longer applies (an unknown name, a value this build refuses) is
/// skipped with a warning.
pub(crate) fn restore(history: &History, ops: &crate::ops::Ops) {
    for c in history.changes() {
        let done = match c.kind.as_str() {
            "breakerConfig" => ops.registry.get(&c.name).is_some_and(|b| {
                serde_json::from_value::<ConfigView>(c.value.clone())
                    .ok()
                    .and_then(|v| v.to_config().ok())
                    .is_some_and(|config| b.update_config(config).is_ok())
            }),
            "breakerState" => ops.registry.get(&c.name).is_some_and(|b| {
                match c.value.as_str().and_then(State::parse) {
                    Some(State::ForcedOpen) => b.force_open(),
                    Some(State::Disabled) => b.disable(),
                    Some(State::MetricsOnly) => b.metrics_only(),
                    Some(_) => {}
                    None => return false,
                }
                true
            }),
            "probeSettings" => ops.health.probe(&c.name).is_some_and(|p| {
                let mut value = c.value.clone();
                let running = value
                    .as_object_mut()
                    .and_then(|m| m.remove("running"))
                    .and_then(|r| r.as_bool());
                let Ok(settings) = serde_json::from_value(value) else {
                    return false;
                };
                let ok = p.update(|s| *s = settings).is_ok();
                match running {
                    Some(true) => p.start(),
                    Some(false) => p.stop(),
                    None => {}
                }
                ok
            }),
            "alertRules" => serde_json::from_value(c.value.clone())
                .ok()
                .is_some_and(|rules| ops.alerts.set_rules(rules).is_ok()),
            _ => false,
        };
        if done {
            tracing::info!(target: "breakwater::audit", kind = %c.kind, name = %c.name, "run-time change restored");
        } else {
            tracing::warn!(target: "breakwater", kind = %c.kind, name = %c.name, "a kept run-time change no longer applies");
        }
    }
}

/// Keeps every alert's changes in the history.
#[derive(Debug)]
pub(crate) struct KeepAlerts(pub(crate) History);

impl Notifier for KeepAlerts {
    fn notify(&self, alert: &Alert, _change: AlertChange) {
        if let Ok(value) = serde_json::to_value(alert) {
            self.0.record_alert(value);
        }
    }
}

/// Adds the history's alert keeper to `book`, and gives it the breakers' calls for the
/// burn-rate rules.
pub(crate) fn keep_alerts(history: &History, book: &AlertBook) {
    book.add_notifier(std::sync::Arc::new(KeepAlerts(history.clone())));
    book.error_budget(std::sync::Arc::new(Budget(history.clone())));
}

/// A breaker's recent calls, from its history.
struct Budget(History);

impl crate::alerts::ErrorBudget for Budget {
    fn totals(&self, circuit: &str, minutes: u32) -> (u64, u64) {
        self.0.totals(circuit, minutes)
    }
}
