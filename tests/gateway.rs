//! End to end: the example gateway on a free port in front of an upstream the test controls.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const TOKEN: &str = "e2e-token";

/// An upstream that answers 200 (the path, as JSON) or 500, counting requests.
struct Upstream {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        let down = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (down.clone(), hits.clone());
        let app = Router::new().fallback(any(move |req: axum::extract::Request| {
            // The gateway's health probe asks for `/`: count API requests only.
            if req.uri().path() != "/" {
                h.fetch_add(1, Ordering::SeqCst);
            }
            let down = d.load(Ordering::SeqCst);
            async move {
                if down {
                    (StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned())
                } else {
                    (
                        StatusCode::OK,
                        format!("{{\"path\":\"{}\"}}", req.uri().path()),
                    )
                }
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, down, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    async fn send(&self, method: Method, path: &str, token: Option<&str>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }
}

/// A strict reading of the Prometheus text: every line a comment of a known kind or a
/// well-formed sample; returns the samples as `name{labels}` → value.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split(' ').next().unwrap();
            assert!(
                ["TYPE", "HELP", "UNIT"].contains(&kind),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn gateway_end_to_end() {
    let up = Upstream::start().await;
    let gw = gateway::start(gateway::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: Some(format!("http://{}", up.addr).parse().unwrap()),
        ops_token: TOKEN.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let http = Http {
        base: format!("http://{}", gw.addr),
        client: Client::builder(TokioExecutor::new()).build_http(),
    };

    // Healthy: the API answers through the gateway, /api stripped.
    let r = http.get("/api/items").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/items");
    let health = http.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.header("content-type"),
        Some("application/health+json")
    );
    assert_eq!(health.json()["status"], "pass");

    // The upstream goes down: an endpoint fails three times, then its breaker refuses.
    up.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let r = http.get("/api/items/1").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let before = up.hits();
    let r = http.get("/api/items/1").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("3"));
    assert_eq!(r.json()["code"], "CIRCUIT_OPEN");
    assert_eq!(r.json()["circuit"], "read:GET /api/items/{id}");
    assert_eq!(
        up.hits(),
        before,
        "a refused call never reaches the upstream"
    );
    // Another endpoint still reaches the upstream; the list keeps its stale answer.
    let r = http.get("/api/items").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-fallback"), Some("stale"));
    assert!(r.header("warning").unwrap().starts_with("110"));
    assert_eq!(r.json()["path"], "/items");

    let degraded = http.get("/health").await;
    assert_eq!(degraded.status, StatusCode::OK);
    assert_eq!(degraded.json()["status"], "warn");

    // Enough failures for the critical service breaker: /health fails.
    for _ in 0..5 {
        let r = http.send(Method::POST, "/api/orders", None).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let metrics = http.get("/v1/circuit-breaker/metrics").await.json();
    let upstream = &metrics["circuits"]["upstream"];
    assert_eq!(upstream["state"], "OPEN", "{metrics}");
    assert_eq!(upstream["failures"], 9);
    assert_eq!(upstream["successes"], 1);
    let items = &metrics["circuits"]["read:GET /api/items/{id}"];
    assert_eq!(items["state"], "OPEN");
    assert_eq!(items["failures"], 3);
    assert_eq!(items["notPermittedCalls"], 1);
    assert_eq!(metrics["circuits"]["write:POST /api/orders"]["failures"], 5);
    assert!(
        metrics["summary"]["openCircuits"]
            .as_array()
            .unwrap()
            .contains(&Value::from("upstream"))
    );

    let failing = http.get("/health").await;
    assert_eq!(failing.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failing.json()["status"], "fail");
    assert_eq!(
        failing.json()["checks"]["upstream:circuitBreaker"][0]["status"],
        "fail"
    );
    assert_eq!(
        http.get("/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(http.get("/health/live").await.status, StatusCode::OK);
    let r = http.get("/api/anything/else").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["circuit"], "upstream");
    assert!(r.header("retry-after").is_some());

    // Prometheus agrees with the JSON.
    let prom = http.get("/metrics").await;
    assert_eq!(prom.status, StatusCode::OK);
    let samples = parse_prometheus(&prom.text);
    let sample = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series} in\n{}", prom.text))
    };
    assert_eq!(
        sample(
            "resilience_circuit_breaker_calls_total{circuit_breaker_name=\"upstream\",circuit_breaker_outcome=\"failure\"}"
        ),
        9.0
    );
    assert_eq!(
        sample(
            "resilience_circuit_breaker_calls_total{circuit_breaker_name=\"upstream\",circuit_breaker_outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            "resilience_circuit_breaker_state{circuit_breaker_name=\"upstream\",circuit_breaker_state=\"open\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            "resilience_circuit_breaker_calls_total{circuit_breaker_name=\"read:GET /api/items/{id}\",circuit_breaker_outcome=\"rejected\"}"
        ),
        1.0
    );
    // Every circuit of the JSON, every counter, agrees (no calls in between).
    let metrics = http.get("/v1/circuit-breaker/metrics").await.json();
    let circuits = metrics["circuits"].as_object().unwrap();
    assert!(circuits.len() >= 5, "{circuits:?}");
    assert!(
        circuits.keys().all(|name| !name.ends_with(":<overflow>")),
        "an unused overflow breaker is not listed: {circuits:?}"
    );
    for (name, c) in circuits {
        for (outcome, field) in [
            ("success", "successes"),
            ("failure", "failures"),
            ("rejected", "notPermittedCalls"),
        ] {
            let series = format!(
                "resilience_circuit_breaker_calls_total{{circuit_breaker_name=\"{name}\",circuit_breaker_outcome=\"{outcome}\"}}"
            );
            assert_eq!(sample(&series), c[field].as_f64().unwrap(), "{series}");
        }
        let state = c["state"].as_str().unwrap().to_ascii_lowercase();
        let series = format!(
            "resilience_circuit_breaker_state{{circuit_breaker_name=\"{name}\",circuit_breaker_state=\"{state}\"}}"
        );
        assert_eq!(sample(&series), 1.0, "{series}");
    }

    // Reset: a token is needed; with it the breaker is CLOSED again.
    let r = http
        .send(Method::POST, "/v1/circuit-breaker/reset/upstream", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["code"], "UNAUTHORIZED");
    let r = http
        .send(
            Method::POST,
            "/v1/circuit-breaker/reset/upstream",
            Some(TOKEN),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["previousState"], "OPEN");
    assert_eq!(r.json()["currentState"], "CLOSED");
    up.down.store(false, Ordering::SeqCst);
    let r = http.get("/api/anything/else").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["path"], "/anything/else");
    let events = http.get("/v1/circuit-breaker/events").await.json();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "FALLBACK_USED" && e["strategy"] == "stale")
    );
}

#[tokio::test]
async fn the_simulation_can_be_changed_at_run_time() {
    let gw = gateway::start(gateway::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: None,
        ops_token: TOKEN.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", gw.addr);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let put = |body: &'static str| {
        Request::put(format!("{base}/sim"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let res = client.request(put("{\"failureRate\": 1}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .request(
            Request::get(format!("{base}/api/items"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let res = client.request(put("{\"failureRate\": 7}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = client
        .request(put("{\"failureRate\": 0, \"latencyMs\": 0}"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(gw.simulation.is_some());
}

#[tokio::test]
async fn alerts_are_posted_to_the_webhook_as_they_fire() {
    // A Slack-shaped receiver on loopback.
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let receiver = Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let up = Upstream::start().await;
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://{}", up.addr),
        "--alert-webhook",
        &format!("http://{hook}/hook"),
        "--alert-format",
        "slack",
    ]
    .map(str::to_owned);
    let gw = gateway::start(gateway::Options::parse(args, |_| None).unwrap())
        .await
        .unwrap();
    let http = Http {
        base: format!("http://{}", gw.addr),
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    up.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        http.get("/api/items/4").await;
    }
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), got.recv())
        .await
        .expect("a webhook within 10 s")
        .unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("read:GET /api/items/{id}") && text.contains("fired"),
        "{text}"
    );
    gw.shut_down().await;
}

#[test]
fn alert_flags_are_checked() {
    let parse =
        |args: &[&str]| gateway::Options::parse(args.iter().map(|a| (*a).to_owned()), |_| None);
    let ok = parse(&[
        "--alert-webhook",
        "http://127.0.0.1:9/e",
        "--alert-format",
        "pagerduty",
        "--alert-routing-key",
        "K",
    ])
    .unwrap();
    assert!(ok.alert_webhook.is_some());
    for (args, names) in [
        (vec!["--alert-format", "slack"], "--alert-webhook"),
        (vec!["--alert-webhook", "ftp://x/"], "--alert-webhook"),
        (
            vec![
                "--alert-webhook",
                "http://127.0.0.1:9/",
                "--alert-format",
                "teams",
            ],
            "--alert-format",
        ),
        (
            vec![
                "--alert-webhook",
                "http://127.0.0.1:9/",
                "--alert-format",
                "pagerduty",
            ],
            "--alert-routing-key",
        ),
    ] {
        let err = parse(&args).unwrap_err();
        assert!(err.contains(names), "{err}");
    }
}

#[test]
fn redis_and_state_dir_flags_are_checked() {
    let parse =
        |args: &[&str]| gateway::Options::parse(args.iter().map(|a| (*a).to_owned()), |_| None);
    let on = parse(&[
        "--redis",
        "redis://127.0.0.1:6379/",
        "--replica-id",
        "gw-1",
        "--redis-quorum",
        "2",
        "--redis-shared-window-s",
        "30",
    ])
    .unwrap()
    .redis
    .unwrap();
    assert_eq!(on.namespace, "breakwater");
    assert_eq!(on.replica_id.as_deref(), Some("gw-1"));
    assert_eq!(on.quorum, Some(2));
    assert_eq!(on.shared_window, Some(std::time::Duration::from_secs(30)));
    let env = gateway::Options::parse(Vec::<String>::new(), |k| {
        (k == "BREAKWATER_REDIS_URL").then(|| "redis://10.0.0.1/".to_owned())
    })
    .unwrap();
    assert_eq!(env.redis.unwrap().url, "redis://10.0.0.1/");
    let dir = parse(&["--state-dir", "/var/lib/gw"]).unwrap().state_dir;
    assert_eq!(dir, Some(std::path::PathBuf::from("/var/lib/gw")));
    let from_env = gateway::Options::parse(Vec::<String>::new(), |k| {
        (k == "BREAKWATER_STATE_DIR").then(|| "/srv/state".to_owned())
    })
    .unwrap();
    assert_eq!(
        from_env.state_dir,
        Some(std::path::PathBuf::from("/srv/state"))
    );
    assert_eq!(parse(&[]).unwrap().state_dir, None);
    for (args, names) in [
        (vec!["--replica-id", "x"], "--replica-id needs --redis"),
        (
            vec!["--redis", "redis://h/", "--redis-quorum", "0"],
            "--redis-quorum",
        ),
        (
            vec!["--redis", "redis://h/", "--redis-shared-window-s", "x"],
            "--redis-shared-window-s",
        ),
    ] {
        let err = parse(&args).unwrap_err();
        assert!(err.contains(names), "{err}");
    }
}
