//! The gateway's history across a restart: traffic, an outage, operators' changes, a probe
//! run on request; then the same state dir read back by a new gateway. And a state dir that
//! cannot be used: the gateway serves, and `/health` says why.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::any;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const TOKEN: &str = "history-token";
const ITEMS: &str = "read%3AGET%20%2Fapi%2Fitems%2F%7Bid%7D";

fn temp_dir(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("breakwater-{what}-{}-{nanos}", std::process::id()))
}

async fn upstream(failing: Arc<AtomicBool>) -> SocketAddr {
    let app = Router::new().fallback(any(move |req: axum::extract::Request| {
        let failing = failing.clone();
        async move {
            if req.uri().path() != "/" && failing.load(Ordering::SeqCst) {
                (StatusCode::INTERNAL_SERVER_ERROR, "down")
            } else {
                (StatusCode::OK, "[1,2,3]")
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn gateway(up: SocketAddr, dir: &std::path::Path) -> gateway::Gateway {
    let options = gateway::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: Some(format!("http://{up}").parse().unwrap()),
        ops_token: TOKEN.into(),
        state_dir: Some(dir.to_owned()),
        ..gateway::Options::default()
    };
    gateway::start(options).await.unwrap()
}

async fn call(
    gw: &gateway::Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let res = Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_alerts_and_operators_changes_survive_a_restart() {
    let dir = temp_dir("history");
    let failing = Arc::new(AtomicBool::new(false));
    let up = upstream(failing.clone()).await;
    let gw = gateway(up, &dir).await;

    // Traffic, then an outage that opens the route's breaker and raises an alert.
    for i in 0..5 {
        let (status, _) = call(&gw, Method::GET, &format!("/api/items/{i}"), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    failing.store(true, Ordering::SeqCst);
    let mut opened = false;
    for i in 0..50 {
        let (status, _) = call(&gw, Method::GET, &format!("/api/items/{}", 100 + i), None).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            opened = true;
            break;
        }
    }
    assert!(opened);
    let mut alerted = false;
    for _ in 0..1_000 {
        let (_, alerts) = call(&gw, Method::GET, "/v1/alerts", None).await;
        if alerts["alerts"].as_array().is_some_and(|a| !a.is_empty()) {
            alerted = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(alerted, "an alert fired");

    // Operators' changes: a config, a forced state, a probe's settings; a probe run now.
    let (status, _) = call(
        &gw,
        Method::PUT,
        "/v1/circuit-breaker/catch-all/config",
        Some(json!({"failureRateThreshold": 25})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &gw,
        Method::POST,
        "/v1/circuit-breaker/force-open/catch-all",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &gw,
        Method::PUT,
        "/v1/probes/upstream/config",
        Some(json!({"intervalMs": 7000})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, mut rules) = call(&gw, Method::GET, "/v1/alerts/rules", None).await;
    rules["flappingWindowMs"] = json!(123_000);
    let (status, e) = call(&gw, Method::PUT, "/v1/alerts/rules", Some(rules)).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let (status, checked) = call(&gw, Method::POST, "/v1/probes/upstream/check", None).await;
    assert_eq!(status, StatusCode::OK, "{checked}");
    assert_eq!(checked["result"]["ok"], true, "{checked}");

    // Before the restart, the history is already served.
    let (status, before) = call(
        &gw,
        Method::GET,
        &format!("/v1/circuit-breaker/{ITEMS}/history?hours=1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{before}");
    gw.shut_down().await;

    // A new gateway on the same state dir.
    let gw = gateway(up, &dir).await;
    let (status, h) = call(
        &gw,
        Method::GET,
        &format!("/v1/circuit-breaker/{ITEMS}/history?hours=1"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let minutes = h["minutes"].as_array().unwrap();
    let sum = |field: &str| {
        minutes
            .iter()
            .map(|m| m[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(sum("successes") >= 5 && sum("failures") >= 1, "{h}");
    assert!(
        minutes
            .iter()
            .any(|m| m["timeInState"]["open"].as_u64().unwrap() > 0),
        "time in OPEN: {h}"
    );
    let transitions = h["transitions"].as_array().unwrap();
    assert!(
        transitions
            .iter()
            .any(|t| t["from"] == "CLOSED" && t["to"] == "OPEN"),
        "{h}"
    );
    assert!(!h["alerts"].as_array().unwrap().is_empty(), "{h}");

    let (_, catch_all) = call(&gw, Method::GET, "/v1/circuit-breaker/catch-all", None).await;
    assert_eq!(catch_all["state"], "FORCED_OPEN", "{catch_all}");
    assert_eq!(catch_all["config"]["failureRateThreshold"], 25.0);
    let (_, probe) = call(&gw, Method::GET, "/v1/probes/upstream", None).await;
    assert_eq!(probe["settings"]["intervalMs"], 7000, "{probe}");
    let (_, rules) = call(&gw, Method::GET, "/v1/alerts/rules", None).await;
    assert_eq!(rules["flappingWindowMs"], 123_000, "{rules}");
    let (status, ph) = call(
        &gw,
        Method::GET,
        "/v1/probes/upstream/history?hours=1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ok: u64 = ph["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ok"].as_u64().unwrap())
        .sum();
    assert!(ok >= 1, "{ph}");
    assert!(
        ph["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ok"] == true),
        "{ph}"
    );

    // Bad requests name the parameter; unknown names are 404.
    for q in ["hours=0", "hours=25", "hours=x", "days=1"] {
        let (status, e) = call(
            &gw,
            Method::GET,
            &format!("/v1/circuit-breaker/upstream/history?{q}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {e}");
        assert_eq!(e["code"], "BAD_REQUEST");
        let named = if q.starts_with("days") {
            "days"
        } else {
            "hours"
        };
        assert!(e["message"].as_str().unwrap().contains(named), "{e}");
    }
    let (status, _) = call(&gw, Method::GET, "/v1/circuit-breaker/nope/history", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&gw, Method::POST, "/v1/probes/nope/check", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, health) = call(&gw, Method::GET, "/health", None).await;
    assert_eq!(
        health["checks"]["state_dir:custom"][0]["status"], "pass",
        "{health}"
    );
    gw.shut_down().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_dir_never_stops_the_gateway() {
    let up = upstream(Arc::new(AtomicBool::new(false))).await;
    // Corrupt: not a database. Locked: another process (here, another gateway) holds it.
    let corrupt = temp_dir("corrupt");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::write(
        corrupt.join(breakwater::history::FILE_NAME),
        vec![0x42; 8192],
    )
    .unwrap();
    let locked = temp_dir("locked");
    let holder = gateway(up, &locked).await;
    // Not creatable: its parent is a file.
    let file = temp_dir("file");
    std::fs::write(&file, b"not a dir").unwrap();
    let uncreatable = file.join("state");
    for dir in [&corrupt, &locked, &uncreatable] {
        let gw = gateway(up, dir).await;
        let (status, _) = call(&gw, Method::GET, "/api/items/1", None).await;
        assert_eq!(status, StatusCode::OK);
        let (_, health) = call(&gw, Method::GET, "/health", None).await;
        let check = &health["checks"]["state_dir:custom"][0];
        assert_eq!(check["status"], "warn", "{health}");
        assert!(!check["output"].as_str().unwrap().is_empty());
        assert!(!gw.history.status().persistent);
        // The history is still kept, in memory.
        gw.history.flush().await;
        let (status, _) = call(
            &gw,
            Method::GET,
            "/v1/circuit-breaker/upstream/history",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        gw.shut_down().await;
    }
    holder.shut_down().await;
    let _ = std::fs::remove_dir_all(&corrupt);
    let _ = std::fs::remove_dir_all(&locked);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_an_outage_are_applied_once_after_recovery_across_a_restart() {
    let dir = temp_dir("queue");
    // An upstream that tells each order it applies.
    let (tx, mut applied) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let app = Router::new().fallback(any(move |req: axum::extract::Request| {
        let tx = tx.clone();
        async move {
            if req.uri().path() == "/orders" {
                let key = req
                    .headers()
                    .get("idempotency-key")
                    .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let _ = tx.send((key, String::from_utf8_lossy(&body).into_owned()));
            }
            (StatusCode::OK, "{}")
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let gw = gateway(up, &dir).await;
    assert_eq!(
        call(
            &gw,
            Method::POST,
            "/v1/circuit-breaker/force-open/upstream",
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let order = |key: Option<&str>, n: u32| {
        let mut req = Request::post(format!("http://{}/api/orders", gw.addr))
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req.body(Body::from(format!("{{\"order\":{n}}}"))).unwrap()
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let mut ids = Vec::new();
    for (key, n) in [(Some("a"), 1), (Some("b"), 2), (None, 3), (Some("b"), 2)] {
        let res = client.request(order(key, n)).await.unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let body: Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["code"], "QUEUED");
        ids.push(body["id"].as_i64().unwrap());
    }
    assert_eq!(ids[1], ids[3], "the same key is one entry");
    // Reads are not queued: refused as usual.
    assert_eq!(
        call(&gw, Method::GET, "/api/items/1", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, queue) = call(&gw, Method::GET, "/v1/queue", None).await;
    assert_eq!(queue["queuedCount"], 3, "{queue}");
    assert!(applied.try_recv().is_err());
    gw.shut_down().await;

    // Restarted on the same dir: still open (the operator's forced state is kept), still queued.
    let gw = gateway(up, &dir).await;
    let (_, upstream) = call(&gw, Method::GET, "/v1/circuit-breaker/upstream", None).await;
    assert_eq!(upstream["state"], "FORCED_OPEN");
    let (_, queue) = call(&gw, Method::GET, "/v1/queue", None).await;
    assert_eq!(queue["queuedCount"], 3, "{queue}");
    assert!(applied.try_recv().is_err());
    // Released: every write is applied, in order, once.
    assert_eq!(
        call(
            &gw,
            Method::POST,
            "/v1/circuit-breaker/release/upstream",
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let mut got = Vec::new();
    while got.len() < 3 {
        let (key, body) = tokio::time::timeout(Duration::from_secs(10), applied.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(format!("{key} {body}"));
    }
    assert_eq!(
        got,
        ["a {\"order\":1}", "b {\"order\":2}", "- {\"order\":3}"]
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, queue) = call(&gw, Method::GET, "/v1/queue", None).await;
        if queue["applied"] == 3 {
            assert_eq!(queue["queuedCount"], 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{queue}");
    }
    assert!(applied.try_recv().is_err(), "each once");
    gw.shut_down().await;
    let _ = std::fs::remove_dir_all(&dir);
}
