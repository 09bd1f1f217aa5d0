//! Two gateway processes sharing their breakers through one `redis-server`, over HTTP: a trip
//! on one is refused on the other, a reset on the other closes the first, a forced open
//! holds, and with Redis killed both serve on their own and report it in `/health`.

#[path = "../crates/breakwater-redis/tests/support/server.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::any;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use redis_server::RedisServer;
use serde_json::Value;

const TOKEN: &str = "fleet-token";
const WAIT: Duration = Duration::from_secs(15);

/// A gateway process (the example's own binary, built by `cargo test`), killed when dropped.
struct Process {
    child: Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(upstream: SocketAddr, redis: &str, replica: &str) -> Process {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join("gateway");
    let mut child = Command::new(&bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{upstream}"),
        ])
        .args(["--ops-token", TOKEN, "--redis", redis])
        .args(["--redis-namespace", "gateways", "--replica-id", replica])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap();
    Process {
        child,
        base: format!("http://{addr}"),
    }
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn call(method: Method, url: String) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let res = client().request(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The ops API's live events of a gateway, read as they come.
struct Events(
    http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>,
    String,
);

impl Events {
    async fn open(base: &str) -> Events {
        let req = Request::get(format!("{base}/v1/circuit-breaker/events/stream"))
            .body(Body::empty())
            .unwrap();
        let res = client().request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        Events(res.into_body().boxed(), String::new())
    }

    /// Waits for `circuit` to enter `to` by the fleet's word.
    async fn adopted(&mut self, circuit: &str, to: &str) {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(end) = self.1.find("\n\n") {
                    let event: String = self.1.drain(..end + 2).collect();
                    let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                        continue;
                    };
                    let e: Value = serde_json::from_str(data.trim()).unwrap();
                    if e["circuit"] == circuit && e["to"] == to && e["trigger"] == "fleet" {
                        return;
                    }
                }
                let frame = self.0.frame().await.expect("the stream goes on").unwrap();
                if let Ok(data) = frame.into_data() {
                    self.1.push_str(&String::from_utf8_lossy(&data));
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{circuit} never went {to} by the fleet"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_share_trips_resets_and_forced_states_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The upstream: failing on demand (its probe path `/` always answers).
    let failing = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let (f, h) = (failing.clone(), hits.clone());
    let app = Router::new().fallback(any(move |req: axum::extract::Request| {
        let (f, h) = (f.clone(), h.clone());
        async move {
            if req.uri().path() == "/" {
                return (StatusCode::OK, "up");
            }
            h.fetch_add(1, Ordering::SeqCst);
            if f.load(Ordering::SeqCst) {
                (StatusCode::INTERNAL_SERVER_ERROR, "down")
            } else {
                (StatusCode::OK, "[1,2,3]")
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let a = start_gateway(upstream, &redis.url(), "gw-a");
    let b = start_gateway(upstream, &redis.url(), "gw-b");
    let mut a_events = Events::open(&a.base).await;
    let mut b_events = Events::open(&b.base).await;
    for gw in [&a, &b] {
        let (_, health) = call(Method::GET, format!("{}/health", gw.base)).await;
        assert_eq!(
            health["checks"]["redis:store"][0]["status"], "pass",
            "{health}"
        );
    }

    // The upstream fails; A's calls trip A's breakers.
    failing.store(true, Ordering::SeqCst);
    let mut tripped = false;
    for _ in 0..200 {
        let (status, _) = call(Method::GET, format!("{}/api/items/1", a.base)).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tripped = true;
            break;
        }
    }
    assert!(tripped, "A's breakers opened");
    let (_, metrics) = call(
        Method::GET,
        format!("{}/v1/circuit-breaker/metrics", a.base),
    )
    .await;
    let open: Vec<String> = metrics["summary"]["openCircuits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert!(!open.is_empty());
    for circuit in &open {
        b_events.adopted(circuit, "OPEN").await;
    }
    // B refuses without calling the upstream once.
    let before = hits.load(Ordering::SeqCst);
    let (status, body) = call(Method::GET, format!("{}/api/items/1", b.base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "CIRCUIT_OPEN");
    assert_eq!(hits.load(Ordering::SeqCst), before);

    // A reset on B closes A.
    failing.store(false, Ordering::SeqCst);
    let (status, _) = call(Method::POST, format!("{}/v1/circuit-breaker/reset", b.base)).await;
    assert_eq!(status, StatusCode::OK);
    for circuit in &open {
        a_events.adopted(circuit, "CLOSED").await;
    }
    let (status, _) = call(Method::GET, format!("{}/api/items/1", a.base)).await;
    assert_eq!(status, StatusCode::OK);

    // A forced open on A holds on B.
    let url = format!("{}/v1/circuit-breaker/force-open/upstream", a.base);
    assert_eq!(call(Method::POST, url).await.0, StatusCode::OK);
    b_events.adopted("upstream", "FORCED_OPEN").await;
    let (status, body) = call(Method::GET, format!("{}/api/items/2", b.base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let url = format!("{}/v1/circuit-breaker/release/upstream", b.base);
    assert_eq!(call(Method::POST, url).await.0, StatusCode::OK);
    a_events.adopted("upstream", "CLOSED").await;

    // The store's counters, in the metrics JSON and on /metrics.
    let (_, metrics) = call(
        Method::GET,
        format!("{}/v1/circuit-breaker/metrics", a.base),
    )
    .await;
    let store = &metrics["stores"][0];
    assert_eq!(
        (store["store"].as_str(), store["replica"].as_str()),
        (Some("redis"), Some("gw-a"))
    );
    assert!(store["published"].as_u64().unwrap() >= 2, "{store}");
    assert!(store["adopted"].as_u64().unwrap() >= 2, "{store}");
    let req = Request::get(format!("{}/metrics", b.base))
        .body(Body::empty())
        .unwrap();
    let text = client()
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains("resilience_state_store_up{store=\"redis\",replica=\"gw-b\"} 1"),
        "{text}"
    );

    // Redis killed: both serve on their own, and say so in /health.
    drop(redis);
    for gw in [&a, &b] {
        let mut warned = false;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !warned && tokio::time::Instant::now() < deadline {
            let (_, health) = call(Method::GET, format!("{}/health", gw.base)).await;
            warned = health["checks"]["redis:store"][0]["status"] == "warn";
        }
        assert!(warned, "{} warns about the store", gw.base);
        let (status, _) = call(Method::GET, format!("{}/api/items/3", gw.base)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, metrics) = call(
        Method::GET,
        format!("{}/v1/circuit-breaker/metrics", a.base),
    )
    .await;
    assert!(metrics["stores"][0]["errors"].as_u64().unwrap() >= 1);
}
