//! Alert notifications over webhooks, against a local receiver on 127.0.0.1: the generic, Slack
//! and PagerDuty shapes, retries, a full queue, and the webhook's own breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State as AxState;
use axum::http::{StatusCode, Uri};
use axum::routing::post;
use breakwater::{Config, HealthMode, Registry, State};
use breakwater_axum::webhook::{WebhookFormat, WebhookNotifier};
use breakwater_axum::{Alert, AlertChange, Notifier, OpsApi, Rule, Severity};
use serde_json::Value;
use tokio::sync::mpsc;

/// What the receiver got: the path and the JSON body.
type Received = mpsc::UnboundedReceiver<(String, Value)>;

struct Receiver {
    url: String,
    got: Received,
}

#[derive(Clone)]
struct Behaviour {
    tx: mpsc::UnboundedSender<(String, Value)>,
    /// Requests answered 500 before the first 200.
    fail_first: Arc<AtomicUsize>,
    /// Never answer.
    hang: bool,
}

async fn receive(AxState(b): AxState<Behaviour>, uri: Uri, body: axum::body::Bytes) -> StatusCode {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = b.tx.send((uri.path().to_owned(), json));
    if b.hang {
        std::future::pending::<()>().await;
    }
    let failing = b
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn receiver(fail_first: usize, hang: bool) -> Receiver {
    let (tx, got) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/{*path}", post(receive))
        .with_state(Behaviour {
            tx,
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            hang,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}"),
        got,
    }
}

impl Receiver {
    fn uri(&self, path: &str) -> Uri {
        format!("{}{path}", self.url).parse().unwrap()
    }

    /// The next body (bounded: 10 s).
    async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.got.recv())
            .await
            .expect("a webhook within 10 s")
            .expect("the receiver runs")
    }
}

fn trips_at_once(critical: bool) -> Config {
    let b = Config::builder().consecutive_failures(1);
    let b = if critical {
        b.health(HealthMode::Critical)
    } else {
        b
    };
    b.build().unwrap()
}

fn fast(url: Uri) -> breakwater_axum::webhook::WebhookBuilder {
    WebhookNotifier::builder(url).backoff(Duration::from_millis(1), Duration::from_millis(4))
}

#[tokio::test]
async fn alerts_are_posted_when_they_fire_and_when_they_resolve() {
    let mut rx = receiver(0, false).await;
    let registry = Registry::new();
    let db = registry.breaker_with("db", trips_at_once(false));
    let hook = fast(rx.uri("/hook")).spawn();
    let _router = OpsApi::new(&registry)
        .notifier(Arc::new(hook.clone()))
        .router();

    db.try_acquire().unwrap().failure();
    assert_eq!(db.state(), State::Open);
    let (path, body) = rx.next().await;
    assert_eq!(path, "/hook");
    assert_eq!(body["event"], "fired");
    assert_eq!(body["alert"]["circuit"], "db");
    assert_eq!(body["alert"]["severity"], "HIGH");
    assert_eq!(body["alert"]["status"], "firing");
    assert_eq!(body["alert"]["rule"], "circuitOpen");
    let id = body["alert"]["id"].clone();

    db.reset();
    let (_, body) = rx.next().await;
    assert_eq!(body["event"], "resolved");
    assert_eq!(body["alert"]["id"], id);
    assert_eq!(body["alert"]["resolvedBy"], "auto");
    assert_eq!(hook.stats().failed, 0);
}

#[tokio::test]
async fn slack_and_pagerduty_get_their_own_shapes() {
    let mut rx = receiver(0, false).await;
    let registry = Registry::new();
    let db = registry.breaker_with("db", trips_at_once(true));
    let slack = fast(rx.uri("/slack")).format(WebhookFormat::Slack).spawn();
    let pagerduty = fast(rx.uri("/pagerduty"))
        .format(WebhookFormat::PagerDuty {
            routing_key: "R0UT1NG".into(),
        })
        .spawn();
    let _router = OpsApi::new(&registry)
        .notifier(Arc::new(slack))
        .notifier(Arc::new(pagerduty))
        .router();

    db.try_acquire().unwrap().failure();
    let mut got = [rx.next().await, rx.next().await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let [(p1, pd), (p2, slack)] = got;
    assert_eq!((p1.as_str(), p2.as_str()), ("/pagerduty", "/slack"));
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("[CRITICAL]") && text.contains("db") && text.contains("fired"),
        "{text}"
    );
    assert_eq!(pd["routing_key"], "R0UT1NG");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(pd["payload"]["component"], "db");
    assert_eq!(pd["payload"]["source"], "breakwater");
    let dedup = pd["dedup_key"].clone();

    db.reset();
    let mut got = [rx.next().await, rx.next().await];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let [(_, pd), (_, slack)] = got;
    assert_eq!(pd["event_action"], "resolve");
    assert_eq!(
        pd["dedup_key"], dedup,
        "one incident, triggered then resolved"
    );
    assert!(slack["text"].as_str().unwrap().contains("resolved"));
}

fn alert(id: u64) -> Alert {
    Alert::firing(
        id,
        Rule::CircuitOpen,
        "db",
        Severity::High,
        "circuit `db` is open",
        0,
    )
}

#[tokio::test]
async fn a_failed_post_is_retried_with_backoff() {
    let mut rx = receiver(2, false).await;
    let hook = fast(rx.uri("/hook")).attempts(4).spawn();
    hook.notify(&alert(1), AlertChange::Fired);
    for _ in 0..3 {
        let (_, body) = rx.next().await;
        assert_eq!(body["alert"]["id"], 1);
    }
    // The third attempt was answered 200. The sender takes changes one by one: once the next
    // change arrives, it is done with the first.
    hook.notify(&alert(2), AlertChange::Fired);
    let (_, body) = rx.next().await;
    assert_eq!(body["alert"]["id"], 2);
    let s = hook.stats();
    assert_eq!((s.retries, s.failed, s.dropped), (2, 0, 0));
    assert!(s.sent >= 1, "{s:?}");
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_nothing_waits() {
    let mut rx = receiver(0, true).await;
    let hook = fast(rx.uri("/hook"))
        .queue(1)
        .timeout(Duration::from_secs(30))
        .spawn();
    hook.notify(&alert(1), AlertChange::Fired);
    // The sender holds the first change (its receiver never answers)...
    rx.next().await;
    // ...so one more fits in the queue and the rest are dropped (`notify` never waits: it is
    // a `try_send`).
    for id in 2..=6 {
        hook.notify(&alert(id), AlertChange::Fired);
    }
    assert_eq!(hook.stats().dropped, 4);
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_opens_the_webhooks_breaker() {
    let mut rx = receiver(usize::MAX, false).await;
    let hook = fast(rx.uri("/hook")).attempts(1).spawn();
    let events = hook.breaker().subscribe();
    for id in 1..=3 {
        hook.notify(&alert(id), AlertChange::Fired);
    }
    for _ in 0..3 {
        rx.next().await;
    }
    // Three failures in a row open it.
    while hook.breaker().state() != State::Open {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the breaker's events");
    }
    hook.notify(&alert(4), AlertChange::Fired);
    // Refused by the open breaker, so dropped without an attempt: the refusal is an event.
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the breaker's events")
            .unwrap();
        if matches!(e.kind, breakwater::EventKind::CallNotPermitted { .. }) {
            break;
        }
    }
    let s = hook.stats();
    assert_eq!((s.sent, s.failed), (0, 3));
    assert!(
        rx.got.try_recv().is_err(),
        "the receiver was not called again"
    );
}

#[tokio::test]
async fn from_a_transition_to_the_receivers_answer() {
    // The figure for the README: how long from a breaker opening to the webhook's 200 on
    // loopback (printed, not asserted: machines here are shared).
    let mut rx = receiver(0, false).await;
    let registry = Registry::new();
    let db = registry.breaker_with("db", trips_at_once(false));
    let hook = fast(rx.uri("/hook")).spawn();
    let _router = OpsApi::new(&registry)
        .notifier(Arc::new(hook.clone()))
        .router();
    let mut took = Vec::new();
    for _ in 0..100 {
        let start = Instant::now();
        db.force_open();
        let (_, body) = rx.next().await;
        took.push(start.elapsed());
        assert_eq!(body["event"], "fired");
        db.reset();
        let (_, body) = rx.next().await;
        assert_eq!(body["event"], "resolved");
    }
    took.sort();
    println!(
        "transition to webhook: p50 {:?}, p99 {:?}, max {:?} over {} alerts",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1],
        took.len()
    );
}
