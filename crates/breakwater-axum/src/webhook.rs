//! A webhook [`Notifier`]: each alert change as a JSON POST, in one of three shapes (a generic
//! one, a Slack incoming webhook's, PagerDuty Events v2's).
//!
//! Nothing waits on it: a change is put on a bounded queue (when it is full the change is
//! dropped and counted) and a task sends them one by one, each with a time limit, retried with
//! exponential backoff and jitter, through a circuit breaker of its own (while the receiver
//! keeps failing, changes are dropped and counted instead of piling up).
//!
//! ```no_run
//! # async fn run() {
//! use std::sync::Arc;
//! use breakwater::ops::webhook::{WebhookFormat, WebhookNotifier};
//! use breakwater::ops::OpsApi;
//! use breakwater::Registry;
//!
//! let registry = Registry::new();
//! let slack = WebhookNotifier::builder("https://hooks.slack.com/services/T0/B0/XYZ".parse().unwrap())
//!     .format(WebhookFormat::Slack)
//!     .spawn();
//! let ops = OpsApi::new(&registry).notifier(Arc::new(slack)).router();
//! # let _ = ops;
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Config, Outcome};
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::alerts::{Alert, AlertChange, Notifier, Severity};

/// The body a webhook is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"event": "fired" | "acknowledged" | "escalated" | "resolved", "alert": {…the alert
    /// as `/v1/alerts` shows it…}}`.
    Generic,
    /// A Slack incoming webhook's `{"text": …}`.
    Slack,
    /// PagerDuty Events API v2: `trigger` when an alert fires or escalates, `acknowledge` and
    /// `resolve`, with the `routing_key` given and a `dedup_key` stable per alert
    /// (`breakwater-<id>`).
    PagerDuty {
        /// The integration's routing key.
        routing_key: String,
    },
}

impl WebhookFormat {
    /// The body for `change` of `alert`.
    pub fn body(&self, alert: &Alert, change: AlertChange) -> Value {
        let event = change.as_str();
        match self {
            WebhookFormat::Generic => json!({ "event": event, "alert": alert }),
            WebhookFormat::Slack => {
                let icon = match change {
                    AlertChange::Fired | AlertChange::Escalated => ":red_circle:",
                    AlertChange::Acknowledged => ":eyes:",
                    AlertChange::Resolved => ":large_green_circle:",
                };
                json!({
                    "text": format!(
                        "{icon} [{}] {} ({event})",
                        alert.severity.as_str(),
                        alert.message
                    )
                })
            }
            WebhookFormat::PagerDuty { routing_key } => {
                // An escalation triggers the same incident again, at its new severity.
                let action = match change {
                    AlertChange::Fired | AlertChange::Escalated => "trigger",
                    AlertChange::Acknowledged => "acknowledge",
                    AlertChange::Resolved => "resolve",
                };
                let severity = match alert.severity {
                    Severity::Critical => "critical",
                    Severity::High => "error",
                    Severity::Medium => "warning",
                    Severity::Low => "info",
                };
                json!({
                    "routing_key": routing_key,
                    "event_action": action,
                    "dedup_key": format!("breakwater-{}", alert.id),
                    "payload": {
                        "summary": alert.message,
                        "source": "breakwater",
                        "severity": severity,
                        "component": alert.circuit,
                        "custom_details": alert,
                    },
                })
            }
        }
    }
}

/// Builds a [`WebhookNotifier`]: see [`WebhookNotifier::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct WebhookBuilder {
    url: Uri,
    format: WebhookFormat,
    timeout: Duration,
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    queue: usize,
}

impl WebhookBuilder {
    /// The body's shape (default [`WebhookFormat::Generic`]).
    pub fn format(mut self, format: WebhookFormat) -> Self {
        self.format = format;
        self
    }

    /// The time limit of one attempt (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attempts per change, the first included (default 4; at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry, doubled for each next one up to `max` (default 200 ms
    /// and 5 s), each wait drawn between half and all of it (jitter).
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// Changes waiting to be sent, at most (default 256; at least 1).
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = capacity.max(1);
        self
    }

    /// Starts the sending task on the current tokio runtime.
    pub fn spawn(self) -> WebhookNotifier {
        let (tx, rx) = mpsc::channel(self.queue);
        let stats = Arc::new(Counters::default());
        let breaker = CircuitBreaker::new(
            "alert-webhook",
            Config::builder()
                .consecutive_failures(3)
                .no_failure_rate_threshold()
                .no_slow_call_rate_threshold()
                .wait_in_open(Duration::from_secs(30))
                .build()
                .expect("a valid config"),
        );
        tokio::spawn(send_all(self.clone(), rx, stats.clone(), breaker.clone()));
        WebhookNotifier {
            tx,
            stats,
            breaker,
            format: self.format,
        }
    }
}

/// A webhook notifier: see the [module](self).
#[derive(Debug, Clone)]
pub struct WebhookNotifier {
    tx: mpsc::Sender<Value>,
    stats: Arc<Counters>,
    breaker: CircuitBreaker,
    format: WebhookFormat,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// What a webhook notifier did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStats {
    /// Changes the receiver accepted (a 2xx answer).
    pub sent: u64,
    /// Attempts made again after a failed one.
    pub retries: u64,
    /// Changes given up after every attempt failed.
    pub failed: u64,
    /// Changes dropped without an attempt: the queue was full, or the receiver's breaker open.
    pub dropped: u64,
}

impl WebhookNotifier {
    /// A notifier posting to `url` (http; for https put a TLS-terminating proxy in front).
    pub fn builder(url: Uri) -> WebhookBuilder {
        WebhookBuilder {
            url,
            format: WebhookFormat::Generic,
            timeout: Duration::from_secs(5),
            attempts: 4,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            queue: 256,
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> WebhookStats {
        let s = &self.stats;
        WebhookStats {
            sent: s.sent.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
        }
    }

    /// The breaker guarding the receiver.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl Notifier for WebhookNotifier {
    fn notify(&self, alert: &Alert, change: AlertChange) {
        if self.tx.try_send(self.format.body(alert, change)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn send_all(
    settings: WebhookBuilder,
    mut rx: mpsc::Receiver<Value>,
    stats: Arc<Counters>,
    breaker: CircuitBreaker,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    while let Some(body) = rx.recv().await {
        let body = Bytes::from(body.to_string());
        let mut wait = settings.backoff;
        for attempt in 1..=settings.attempts {
            let Ok(permit) = breaker.try_acquire_owned() else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let req = Request::post(settings.url.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()));
            let ok = match req {
                Ok(req) => matches!(
                    tokio::time::timeout(settings.timeout, client.request(req)).await,
                    Ok(Ok(res)) if res.status().is_success()
                ),
                Err(_) => false,
            };
            if ok {
                permit.record(Outcome::Success);
                stats.sent.fetch_add(1, Ordering::Relaxed);
                break;
            }
            permit.record(Outcome::Failure);
            if attempt == settings.attempts {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "breakwater::alerts", url = %settings.url, "webhook: gave up after {attempt} attempts");
                break;
            }
            stats.retries.fetch_add(1, Ordering::Relaxed);
            // Between half and all of the wait: replicas retrying together spread out.
            let jittered = wait.mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::time::sleep(jittered).await;
            wait = (wait * 2).min(settings.max_backoff);
        }
    }
}
