//! The alert rules on a manual clock, and the alerts' lifecycle through the ops API on
//! 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::tower::health::{HealthRegistry, Probe};
use breakwater::{Config, HealthMode, ManualClock, Registry, SlidingWindow, State};
use breakwater_axum::{
    Alert, AlertBook, AlertChange, AlertFilter, AlertRules, AlertStatus, Notifier, OpsApi, Rule,
    Severity,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Remembers every change it is told.
#[derive(Default)]
struct Told(Mutex<Vec<(u64, Rule, AlertChange, Severity)>>);

impl Notifier for Told {
    fn notify(&self, alert: &Alert, change: AlertChange) {
        self.0
            .lock()
            .unwrap()
            .push((alert.id, alert.rule, change, alert.severity));
    }
}

impl Told {
    fn take(&self) -> Vec<(u64, Rule, AlertChange, Severity)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn setup() -> (Registry, ManualClock, HealthRegistry, AlertBook, Arc<Told>) {
    let clock = ManualClock::with_epoch_millis(1_000_000);
    let registry = Registry::builder().clock(clock.clone()).build();
    let health = HealthRegistry::new(&registry);
    let book = AlertBook::new(&health);
    let told = Arc::new(Told::default());
    book.add_notifier(told.clone());
    (registry, clock, health, book, told)
}

fn trips_at(n: u32) -> Config {
    Config::builder()
        .consecutive_failures(n)
        .no_failure_rate_threshold()
        .wait_in_open(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn active(book: &AlertBook) -> Vec<Alert> {
    book.list(&AlertFilter::default())
        .into_iter()
        .filter(|a| a.status.is_active())
        .collect()
}

#[test]
fn an_opening_fires_once_counts_reopenings_and_resolves_when_closed() {
    let (registry, clock, _health, book, told) = setup();
    let db = registry.breaker_with("db", trips_at(1));
    db.try_acquire().unwrap().failure();
    book.evaluate();
    let a = active(&book);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].rule, a[0].severity, a[0].count),
        (Rule::CircuitOpen, Severity::High, 1)
    );
    assert_eq!(
        told.take(),
        [(
            a[0].id,
            Rule::CircuitOpen,
            AlertChange::Fired,
            Severity::High
        )]
    );

    // A failed trial re-opens it: the same alert, counted again; HALF_OPEN keeps it active.
    clock.advance(Duration::from_secs(11));
    db.try_acquire().unwrap().failure();
    assert_eq!(db.state(), State::Open);
    book.evaluate();
    let b = active(&book);
    assert_eq!((b.len(), b[0].id, b[0].count), (1, a[0].id, 2));
    assert_eq!(b[0].last_seen_at, 1_011_000);
    assert!(told.take().is_empty(), "a sighting is no change");

    db.reset();
    book.evaluate();
    assert!(active(&book).is_empty());
    let all = book.list(&AlertFilter::default());
    assert_eq!(
        (all[0].status, all[0].resolved_by),
        (AlertStatus::Resolved, Some("auto"))
    );
    assert_eq!(told.take()[0].2, AlertChange::Resolved);
}

#[test]
fn critical_breakers_page_and_operators_states_are_low() {
    let (registry, _clock, _health, book, _told) = setup();
    let pay = registry.breaker_with(
        "payments",
        trips_at(1)
            .to_builder()
            .health(HealthMode::Critical)
            .build()
            .unwrap(),
    );
    let cache = registry.breaker_with("cache", trips_at(1));
    pay.try_acquire().unwrap().failure();
    cache.force_open();
    book.evaluate();
    let mut a: Vec<_> = active(&book)
        .into_iter()
        .map(|a| (a.circuit, a.rule, a.severity))
        .collect();
    a.sort();
    assert_eq!(
        a,
        [
            ("cache".to_owned(), Rule::Forced, Severity::Low),
            ("payments".to_owned(), Rule::CircuitOpen, Severity::Critical),
        ]
    );
}

#[test]
fn a_failure_rate_at_half_its_threshold_warns_while_closed_and_only_once_known() {
    let (registry, _clock, _health, book, _told) = setup();
    let config = Config::builder()
        .sliding_window(SlidingWindow::Count(10))
        .minimum_number_of_calls(10)
        .failure_rate_threshold(50.0)
        .no_consecutive_failures()
        .build()
        .unwrap();
    let db = registry.breaker_with("db", config);
    // 3 failures in 9 calls: 33 %, but unknown (fewer than the minimum): no warning.
    for i in 0..9 {
        let p = db.try_acquire().unwrap();
        if i < 3 { p.failure() } else { p.success() }
    }
    book.evaluate();
    assert!(active(&book).is_empty());
    // The tenth: 30 % of calls failed, known, at or above 25 %: "may open soon".
    db.try_acquire().unwrap().success();
    book.evaluate();
    let a = active(&book);
    assert_eq!(
        (a.len(), a[0].rule, a[0].severity),
        (1, Rule::FailureRateWarning, Severity::Medium)
    );
    assert!(a[0].message.contains("may open soon"), "{}", a[0].message);
    // With the warning at 70 % of the threshold (35 %), 30 % is under it: the alert clears.
    book.set_rules(AlertRules {
        failure_rate_warning: Some(0.7),
        ..AlertRules::default()
    })
    .unwrap();
    assert!(
        active(&book).is_empty(),
        "30 % is under 70 % of 50 %: cleared"
    );
}

#[test]
fn several_circuits_open_and_a_flapping_one_are_alerts_of_their_own() {
    let (registry, clock, _health, book, _told) = setup();
    let a = registry.breaker_with("a", trips_at(1));
    let b = registry.breaker_with("b", trips_at(1));
    a.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    book.evaluate();
    let several: Vec<_> = active(&book)
        .into_iter()
        .filter(|x| x.rule == Rule::CircuitsOpen)
        .collect();
    assert_eq!(several.len(), 1);
    assert_eq!(
        (several[0].circuit.as_str(), several[0].severity),
        ("*", Severity::Critical)
    );

    // `a` opens twice more within ten minutes: flapping.
    for _ in 0..2 {
        a.reset();
        clock.advance(Duration::from_secs(60));
        a.try_acquire().unwrap().failure();
    }
    book.evaluate();
    assert!(
        active(&book)
            .iter()
            .any(|x| x.rule == Rule::Flapping && x.circuit == "a")
    );
    // Ten minutes later the openings are out of the window.
    a.reset();
    b.reset();
    clock.advance(Duration::from_secs(601));
    book.evaluate();
    assert!(active(&book).is_empty(), "{:?}", active(&book));
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_and_a_slow_one_alert() {
    let (registry, _clock, health, book, _told) = setup();
    let _ = registry;
    let failing = Probe::builder("dns", || async { Err::<(), _>("no answer".to_owned()) })
        .failure_threshold(1)
        .build()
        .unwrap();
    let slow = Probe::builder("db", || async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<(), String>(())
    })
    .slow_threshold(Duration::from_millis(10))
    .build()
    .unwrap();
    health.add_probe(failing.clone());
    health.add_probe(slow.clone());
    failing.run_once().await;
    slow.run_once().await;
    book.evaluate();
    let mut a: Vec<_> = active(&book)
        .into_iter()
        .map(|a| (a.circuit, a.rule, a.severity))
        .collect();
    a.sort();
    assert_eq!(
        a,
        [
            ("db".to_owned(), Rule::ProbeSlow, Severity::Medium),
            ("dns".to_owned(), Rule::ProbeFailing, Severity::High),
        ]
    );
}

#[test]
fn an_alert_nobody_acknowledges_escalates_and_an_acknowledged_one_does_not() {
    let (registry, clock, _health, book, told) = setup();
    book.set_rules(AlertRules {
        escalate_after_ms: Some(60_000),
        ..AlertRules::default()
    })
    .unwrap();
    let a = registry.breaker_with("a", trips_at(1));
    let b = registry.breaker_with("b", trips_at(1));
    a.force_open();
    b.force_open();
    book.evaluate();
    let ids: Vec<u64> = active(&book).iter().map(|x| x.id).collect();
    let (id_b, id_a) = (ids[0], ids[1]);
    book.acknowledge(id_b, Some("on it".into())).unwrap();
    told.take();

    clock.advance(Duration::from_secs(60));
    book.evaluate();
    let a_alert = book.list(&AlertFilter {
        circuit: Some("a".into()),
        ..Default::default()
    });
    assert_eq!(
        (a_alert[0].severity, a_alert[0].escalations),
        (Severity::Medium, 1)
    );
    let b_alert = book.list(&AlertFilter {
        circuit: Some("b".into()),
        ..Default::default()
    });
    assert_eq!(
        (b_alert[0].severity, b_alert[0].status),
        (Severity::Low, AlertStatus::Acknowledged)
    );
    assert_eq!(b_alert[0].acknowledge_note.as_deref(), Some("on it"));
    assert_eq!(
        told.take(),
        [(id_a, Rule::Forced, AlertChange::Escalated, Severity::Medium)]
    );
    // Again a minute later, one step more.
    clock.advance(Duration::from_secs(60));
    book.evaluate();
    let a_alert = book.list(&AlertFilter {
        circuit: Some("a".into()),
        ..Default::default()
    });
    assert_eq!(a_alert[0].severity, Severity::High);
}

struct Api {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, "Bearer t");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let res = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

#[tokio::test]
async fn the_lifecycle_filters_and_rules_through_the_api() {
    let clock = ManualClock::with_epoch_millis(1_000_000);
    let registry = Registry::builder().clock(clock.clone()).build();
    let db = registry.breaker_with("db", trips_at(1));
    let cache = registry.breaker_with("cache", trips_at(1));
    let router = OpsApi::new(&registry).token("t").router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let api = Api {
        base: format!("http://{addr}"),
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    db.try_acquire().unwrap().failure();
    cache.force_open();

    let (s, v) = api
        .send(Method::GET, "/v1/alerts?severity=high", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let alerts = v["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["circuit"], "db");
    assert_eq!(alerts[0]["status"], "firing");
    let id = alerts[0]["id"].as_u64().unwrap();

    let (s, v) = api
        .send(
            Method::POST,
            &format!("/v1/alerts/{id}/ack"),
            Some(json!({"note": "looking"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["status"].as_str(), v["acknowledgeNote"].as_str()),
        (Some("acknowledged"), Some("looking"))
    );
    let (_, v) = api
        .send(Method::GET, "/v1/alerts?status=acknowledged", None)
        .await;
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
    let (_, v) = api
        .send(Method::GET, "/v1/alerts?circuit=cache", None)
        .await;
    assert_eq!(v["alerts"][0]["rule"], "forced");

    let (s, v) = api
        .send(
            Method::POST,
            &format!("/v1/alerts/{id}/resolve"),
            Some(json!({"note": "failed over"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["resolvedBy"].as_str(), v["resolveNote"].as_str()),
        (Some("manual"), Some("failed over"))
    );

    // Bad requests name what is wrong.
    for (path, code, names) in [
        ("/v1/alerts?status=open", "BAD_REQUEST", "status"),
        ("/v1/alerts?severity=urgent", "BAD_REQUEST", "severity"),
        ("/v1/alerts?since=1", "BAD_REQUEST", "since"),
    ] {
        let (s, v) = api.send(Method::GET, path, None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{path}"
        );
        assert!(v["message"].as_str().unwrap().contains(names), "{v}");
    }
    let (s, v) = api
        .send(
            Method::POST,
            &format!("/v1/alerts/{id}/ack"),
            Some(json!({"note": 3})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BAD_REQUEST"))
    );

    // Rules: read, replaced, refused when invalid (naming the field), and a write needs the token.
    let (s, v) = api.send(Method::GET, "/v1/alerts/rules", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["circuitsOpen"], 2);
    let mut changed = v.clone();
    changed["circuitsOpen"] = json!(3);
    let (s, v) = api
        .send(Method::PUT, "/v1/alerts/rules", Some(changed))
        .await;
    assert_eq!((s, v["circuitsOpen"].as_u64()), (StatusCode::OK, Some(3)));
    for (body, field) in [
        (json!({"circuitsOpen": 1}), "circuitsOpen"),
        (json!({"failureRateWarning": 2}), "failureRateWarning"),
        (json!({"probeFailing": "yes"}), "probeFailing"),
        (json!({"unknownRule": true}), "unknownRule"),
    ] {
        let (s, v) = api
            .send(Method::PUT, "/v1/alerts/rules", Some(body.clone()))
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_CONFIG")),
            "{body}"
        );
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    let (_, v) = api.send(Method::GET, "/v1/alerts/rules", None).await;
    assert_eq!(v["circuitsOpen"], 3, "a refused change changes nothing");
    let req = Request::put(format!("{}/v1/alerts/rules", api.base))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from("{}")))
        .unwrap();
    let res = api.client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
