//! The ops API on a real server on 127.0.0.1, driven over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use breakwater_axum::{OpsApi, not_found};
use breakwater_core::{Config, FamilyOptions, HealthMode, ManualClock, Registry, State};
use breakwater_tower::CircuitBreakerLayer;
use breakwater_tower::health::{HealthRegistry, Probe};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const TOKEN: &str = "t0ken";

struct Api {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    json: Value,
}

impl Api {
    /// The ops router served on its own, with the JSON fallback.
    async fn start(router: axum::Router) -> Self {
        Self::serve(router.fallback(not_found)).await
    }

    async fn serve(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let res = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None, Bytes::new()).await
    }

    async fn post(&self, path: &str) -> Answer {
        self.send(Method::POST, path, Some(TOKEN), None, Bytes::new())
            .await
    }

    async fn put_json(&self, path: &str, body: Value) -> Answer {
        self.send(
            Method::PUT,
            path,
            Some(TOKEN),
            Some("application/json"),
            body.to_string(),
        )
        .await
    }
}

#[tokio::test]
async fn merges_into_an_app_with_its_own_fallback_outside_its_breakers() {
    use axum::routing::get;
    let (registry, _clock) = registry();
    let service = registry.breaker_with("service", consecutive(2));
    let app = axum::Router::new()
        .route("/items", get(|| async { "[]" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "the app's own 404") })
        .layer(CircuitBreakerLayer::new(service.clone()).for_axum())
        .merge(OpsApi::new(&registry).token(TOKEN).router());
    let api = Api::serve(app).await;

    assert_eq!(api.get("/items").await.status, StatusCode::OK);
    let unknown = api.get("/nowhere").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json, Value::Null, "the app's fallback answered");
    assert_eq!(
        api.get("/v1/circuit-breaker/nope").await.json["code"],
        "NOT_FOUND"
    );

    let forced = api.post("/v1/circuit-breaker/force-open/service").await;
    assert_eq!(forced.json["currentState"], "FORCED_OPEN");
    assert_eq!(
        api.get("/items").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(api.get("/health").await.status, StatusCode::OK);
    let released = api.post("/v1/circuit-breaker/release/service").await;
    assert_eq!(released.json["currentState"], "CLOSED");
    assert_eq!(api.get("/items").await.status, StatusCode::OK);
}

fn consecutive(n: u32) -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(n)
        .wait_in_open(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn registry() -> (Registry, ManualClock) {
    let clock = ManualClock::with_epoch_millis(1_700_000_000_000);
    let registry = Registry::builder().clock(clock.clone()).build();
    (registry, clock)
}

#[tokio::test]
async fn metrics_and_one_circuit_follow_the_contract() {
    let (registry, _clock) = registry();
    let a = registry.breaker_with("payments", consecutive(2));
    let b = registry.breaker_with("search", consecutive(5));
    a.try_acquire().unwrap().success();
    a.try_acquire().unwrap().failure();
    a.try_acquire().unwrap().failure();
    let _ = a.try_acquire();
    b.try_acquire().unwrap().success();
    let api = Api::start(OpsApi::new(&registry).router()).await;

    let m = api.get("/v1/circuit-breaker/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert_eq!(m.json["timestamp"], 1_700_000_000_000u64);
    let p = &m.json["circuits"]["payments"];
    assert_eq!(p["state"], "OPEN");
    assert_eq!(p["failures"], 2);
    assert_eq!(p["successes"], 1);
    assert_eq!(p["notPermittedCalls"], 1);
    assert_eq!(p["totalRequests"], 4);
    assert_eq!(p["circuitOpens"], 1);
    assert_eq!(p["consecutiveFailures"], 2);
    assert!(p["openedAt"].is_u64());
    for field in [
        "slowCalls",
        "consecutiveSuccesses",
        "lastFailureTime",
        "lastSuccessTime",
        "failureRate",
        "slowCallRate",
        "bufferedCalls",
        "uptime",
    ] {
        assert!(p.get(field).is_some(), "missing {field}");
    }
    let s = &m.json["summary"];
    assert_eq!(s["totalFailures"], 2);
    assert_eq!(s["totalSuccesses"], 2);
    assert_eq!(s["totalRequests"], 5);
    assert_eq!(s["openCircuits"], json!(["payments"]));

    let one = api.get("/v1/circuit-breaker/payments").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json["name"], "payments");
    assert_eq!(one.json["config"]["consecutiveFailures"], 2);

    let missing = api.get("/v1/circuit-breaker/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json["code"], "NOT_FOUND");
    assert!(registry.get("nope").is_none(), "never creates a breaker");
}

#[tokio::test]
async fn a_breaker_reopened_by_its_probes_shows_their_rates() {
    let (registry, clock) = registry();
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(breakwater_core::SlidingWindow::Count(4))
        .minimum_number_of_calls(4)
        .permitted_calls_in_half_open(4)
        .wait_in_open(Duration::from_secs(10))
        .build()
        .unwrap();
    let b = registry.breaker_with("ledger", config);
    for _ in 0..4 {
        b.try_acquire().unwrap().failure();
    }
    clock.advance(Duration::from_secs(11));
    b.try_acquire().unwrap().success();
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    let api = Api::start(OpsApi::new(&registry).router()).await;
    let m = api.get("/v1/circuit-breaker/metrics").await;
    let c = &m.json["circuits"]["ledger"];
    assert_eq!(c["state"], "OPEN");
    assert_eq!(c["failureRate"], 0.75);
    assert_eq!(c["bufferedCalls"], 4);
    let one = api.get("/v1/circuit-breaker/ledger").await;
    assert_eq!(one.json["failureRate"], 0.75);
}

#[tokio::test]
async fn writes_need_the_token_and_answer_the_write_contract() {
    let (registry, _clock) = registry();
    let cb = registry.breaker_with("orders", consecutive(2));

    // No token configured: writes are off.
    let api = Api::start(OpsApi::new(&registry).router()).await;
    let r = api.post("/v1/circuit-breaker/force-open/orders").await;
    assert_eq!(
        (r.status, r.json["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("OPS_DISABLED"))
    );
    assert_eq!(cb.state(), State::Closed);

    let api = Api::start(OpsApi::new(&registry).token(TOKEN).router()).await;
    for token in [None, Some("wrong"), Some("t0ke"), Some("t0ken2")] {
        let r = api
            .send(
                Method::POST,
                "/v1/circuit-breaker/force-open/orders",
                token,
                None,
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(r.json["code"], "UNAUTHORIZED");
        assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    // Unauthenticated requests learn nothing, not even whether the circuit exists.
    let r = api
        .send(
            Method::POST,
            "/v1/circuit-breaker/reset/ghost",
            None,
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(cb.state(), State::Closed);

    let steps = [
        ("force-open", State::Closed, State::ForcedOpen),
        ("force-open", State::ForcedOpen, State::ForcedOpen),
        ("release", State::ForcedOpen, State::Closed),
        ("disable", State::Closed, State::Disabled),
        ("metrics-only", State::Disabled, State::MetricsOnly),
        ("release", State::MetricsOnly, State::Closed),
        ("release", State::Closed, State::Closed),
        ("reset", State::Closed, State::Closed),
    ];
    for (action, from, to) in steps {
        let r = api
            .post(&format!("/v1/circuit-breaker/{action}/orders"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{action}: {}", r.json);
        assert_eq!(r.json["name"], "orders");
        assert_eq!(r.json["action"], action);
        assert_eq!(r.json["previousState"], json!(from));
        assert_eq!(r.json["currentState"], json!(to));
        assert_eq!(r.json["at"], 1_700_000_000_000u64);
        assert_eq!(cb.state(), to);
    }

    cb.try_acquire().unwrap().failure();
    cb.try_acquire().unwrap().failure();
    assert_eq!(cb.state(), State::Open);
    let r = api.post("/v1/circuit-breaker/reset").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["circuits"][0]["previousState"], "OPEN");
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().failures, 0);
}

#[tokio::test]
async fn names_in_paths_are_percent_decoded() {
    let (registry, _clock) = registry();
    let family = registry.family("endpoints", FamilyOptions::new(consecutive(1)));
    family
        .get("GET /items/{id}")
        .try_acquire()
        .unwrap()
        .failure();
    let api = Api::start(OpsApi::new(&registry).token(TOKEN).router()).await;
    let path = "/v1/circuit-breaker/endpoints%3AGET%20%2Fitems%2F%7Bid%7D";
    let r = api.get(path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["name"], "endpoints:GET /items/{id}");
    assert_eq!(r.json["state"], "OPEN");
    let r = api
        .post("/v1/circuit-breaker/reset/endpoints%3AGET%20%2Fitems%2F%7Bid%7D")
        .await;
    assert_eq!(r.json["currentState"], "CLOSED");
    let r = api
        .get("/v1/circuit-breaker/endpoints%3A%3Coverflow%3E")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api
        .get("/v1/circuit-breaker/endpoints%3AGET%20%2Fother")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(family.len(), 1, "lookups never create members");
}

#[tokio::test]
async fn config_changes_are_partial_and_validated() {
    let (registry, _clock) = registry();
    let cb = registry.breaker_with("inventory", consecutive(3));
    let api = Api::start(OpsApi::new(&registry).token(TOKEN).router()).await;
    let path = "/v1/circuit-breaker/inventory/config";

    let r = api
        .put_json(
            path,
            json!({"failureRateThreshold": 25, "waitInOpenMs": 3000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["action"], "config");
    assert_eq!(r.json["config"]["failureRateThreshold"], 25.0);
    assert_eq!(r.json["config"]["waitInOpenMs"], 3000);
    assert_eq!(
        cb.config().consecutive_failures(),
        Some(3),
        "the rest is kept"
    );
    assert_eq!(cb.config().failure_rate_threshold(), Some(25.0));

    for (body, field) in [
        (json!({"failureRateThreshold": 101}), "failureRateThreshold"),
        (json!({"unknownThing": 1}), "unknownThing"),
        (json!({"consecutiveFailures": -3}), "consecutiveFailures"),
        (json!({"slidingWindowSize": 7}), "slidingWindowType"),
        (
            json!({"stateAfterMaxWaitInHalfOpen": "HALF_OPEN"}),
            "stateAfterMaxWaitInHalfOpen",
        ),
        (json!({"waitInOpenMultiplier": 0.5}), "waitInOpenMs"),
    ] {
        let before = cb.config();
        let r = api.put_json(path, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json["code"], "INVALID_CONFIG", "{body}");
        let message = r.json["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")) || message.contains(field),
            "{body}: {message}"
        );
        assert_eq!(cb.config(), before, "nothing changed for {body}");
    }
}

/// Method, path, token, content type, body; expected status and code.
type Case = (
    Method,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Bytes,
    StatusCode,
    &'static str,
);

#[tokio::test]
async fn bad_requests_get_their_documented_codes_and_change_nothing() {
    let (registry, _clock) = registry();
    let cb = registry.breaker_with("db", consecutive(3));
    let api = Api::start(OpsApi::new(&registry).token(TOKEN).router()).await;
    let huge = vec![b' '; 70_000];
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            "/v1/circuit-breaker/db/config",
            Some(TOKEN),
            Some("application/json"),
            Bytes::from_static(b"{not json"),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            Method::PUT,
            "/v1/circuit-breaker/db/config",
            Some(TOKEN),
            Some("application/json"),
            Bytes::from_static(b"[1,2]"),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            Method::PUT,
            "/v1/circuit-breaker/db/config",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            Method::PUT,
            "/v1/circuit-breaker/db/config",
            Some(TOKEN),
            Some("text/plain"),
            Bytes::from_static(b"{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            Method::PUT,
            "/v1/circuit-breaker/db/config",
            Some(TOKEN),
            Some("application/json"),
            Bytes::from(huge.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            Method::POST,
            "/v1/circuit-breaker/force-open/db",
            Some(TOKEN),
            Some("application/json"),
            Bytes::from(huge),
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            Method::POST,
            "/v1/circuit-breaker/force-open/db",
            Some(TOKEN),
            Some("application/json"),
            Bytes::from_static(b"{oops"),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            Method::POST,
            "/v1/circuit-breaker/force-open/nope",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::PUT,
            "/v1/circuit-breaker/nope/config",
            Some(TOKEN),
            Some("application/json"),
            Bytes::from_static(b"{}"),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            "/v1/circuit-breaker/half-open/db",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            "/v1/alerts/42/resolve",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::POST,
            "/v1/alerts/not-a-number/resolve",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::DELETE,
            "/v1/circuit-breaker/metrics",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            Method::GET,
            "/v1/circuit-breaker/force-open/db",
            None,
            None,
            Bytes::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            Method::POST,
            "/v1/circuit-breaker/db",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            Method::PATCH,
            "/v1/circuit-breaker/db/config",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
        (
            Method::GET,
            "/v1/nothing-here",
            None,
            None,
            Bytes::new(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            Method::GET,
            "/v1/circuit-breaker/%FF%FE",
            None,
            None,
            Bytes::new(),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            Method::POST,
            "/v1/circuit-breaker/reset/%FF",
            Some(TOKEN),
            None,
            Bytes::new(),
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
        ),
        (
            Method::GET,
            "/v1/probes/none",
            None,
            None,
            Bytes::new(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
    ];
    for (method, path, token, ct, body, status, code) in cases {
        let before = (cb.state(), cb.config(), cb.generation());
        let r = api.send(method.clone(), path, token, ct, body).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.json);
        if !code.is_empty() {
            assert_eq!(r.json["code"], code, "{method} {path}");
        }
        assert!(
            r.json["message"].is_string() || code.is_empty(),
            "{method} {path}"
        );
        assert_eq!(
            (cb.state(), cb.config(), cb.generation()),
            before,
            "{method} {path} changed something"
        );
    }
}

#[tokio::test]
async fn events_alerts_and_the_live_stream() {
    let (registry, _clock) = registry();
    let cb = registry.breaker_with(
        "db",
        Config::builder()
            .consecutive_failures(1)
            .health(HealthMode::Critical)
            .build()
            .unwrap(),
    );
    let api = Api::start(OpsApi::new(&registry).token(TOKEN).router()).await;

    // Subscribe to the stream before anything happens.
    let req = Request::get(format!(
        "http://{}/v1/circuit-breaker/events/stream",
        api.addr
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let res = api.client.request(req).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut stream = res.into_body();

    cb.try_acquire().unwrap().failure();
    let mut seen = String::new();
    while !seen.contains("\"to\":\"OPEN\"") {
        let frame = stream.frame().await.unwrap().unwrap();
        if let Some(data) = frame.data_ref() {
            seen.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    assert!(seen.contains("event: STATE_TRANSITION"), "{seen}");

    let events = api.get("/v1/circuit-breaker/events").await;
    let kinds: Vec<_> = events.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"STATE_TRANSITION".to_owned()), "{kinds:?}");

    let alerts = api.get("/v1/alerts").await;
    let alert = &alerts.json["alerts"][0];
    assert_eq!(alert["circuit"], "db");
    assert_eq!(alert["severity"], "CRITICAL");
    assert_eq!(alert["status"], "firing");
    let id = alert["id"].as_u64().unwrap();

    // Closing resolves it by itself; a new opening raises a new one, resolved by hand.
    api.post("/v1/circuit-breaker/reset/db").await;
    let alerts = api.get("/v1/alerts").await;
    assert_eq!(alerts.json["alerts"][0]["status"], "resolved");
    assert_eq!(alerts.json["alerts"][0]["resolvedBy"], "auto");
    api.post("/v1/circuit-breaker/force-open/db").await;
    let alerts = api.get("/v1/alerts").await;
    let new_id = alerts.json["alerts"][0]["id"].as_u64().unwrap();
    assert_ne!(new_id, id);
    let r = api.post(&format!("/v1/alerts/{new_id}/resolve")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "resolved");
    assert_eq!(r.json["resolvedBy"], "manual");
}

#[tokio::test(start_paused = true)]
async fn probes_are_listed_and_tuned_at_run_time() {
    let (registry, _clock) = registry();
    let health = HealthRegistry::new(&registry);
    let probe = Probe::builder("cache", || async { Err::<(), _>("refused".to_owned()) })
        .interval(Duration::from_secs(5))
        .failure_threshold(1)
        .critical(true)
        .build()
        .unwrap();
    let mut changes = health.probe_changes();
    health.add_probe(probe.clone());
    changes.changed().await.unwrap();
    let api = Api::start(OpsApi::new(&registry).health(health).token(TOKEN).router()).await;

    let r = api.get("/v1/probes/cache").await;
    assert_eq!(r.json["status"], "fail");
    assert_eq!(r.json["history"][0]["error"], "refused");
    let ready = api.get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.headers[header::CONTENT_TYPE],
        "application/health+json"
    );

    let r = api
        .put_json(
            "/v1/probes/cache/config",
            json!({"intervalMs": 250, "failureThreshold": 4}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(probe.settings().interval, Duration::from_millis(250));
    let r = api
        .put_json("/v1/probes/cache/config", json!({"timeoutMs": 0}))
        .await;
    assert_eq!(r.json["code"], "INVALID_CONFIG");
    assert!(r.json["message"].as_str().unwrap().contains("timeoutMs"));
    let r = api
        .put_json("/v1/probes/cache/config", json!({"running": false}))
        .await;
    assert_eq!(r.json["running"], false);
    assert!(!probe.is_running());
}

#[tokio::test]
async fn read_token_guards_reads_but_not_health() {
    let (registry, _clock) = registry();
    registry.breaker("db");
    let api = Api::start(
        OpsApi::new(&registry)
            .token(TOKEN)
            .read_token("reader")
            .router(),
    )
    .await;
    let r = api.get("/v1/circuit-breaker/metrics").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for token in ["reader", TOKEN] {
        let r = api
            .send(
                Method::GET,
                "/v1/circuit-breaker/metrics",
                Some(token),
                None,
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = api
        .send(
            Method::POST,
            "/v1/circuit-breaker/reset/db",
            Some("reader"),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the read token cannot write"
    );
    assert_eq!(api.get("/health").await.status, StatusCode::OK);
}
