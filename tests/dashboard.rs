//! The live page at `/v1/dashboard` in headless Chromium (driven over WebDriver by
//! `chromedriver`), against a running gateway: a breaker that trips shows OPEN without a reload.
//! Its reset button asks for the token and resets the breaker. With
//! `BREAKWATER_SCREENSHOT=path.png` the test also saves what the page looks like while open.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::any;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// `chromedriver` on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Driver {
    fn start() -> Self {
        // A free port: taken from the OS, given back, then handed to chromedriver.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("chromedriver")
            .args([
                format!("--port={port}"),
                "--allowed-ips=127.0.0.1".to_owned(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) is installed");
        // It says so once it listens: "ChromeDriver was started successfully on port N."
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("chromedriver started")
                .expect("its output");
            if line.contains("started successfully") {
                break;
            }
        }
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap();
        let res = self.http.request(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        v["value"].clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64, as WebDriver encodes screenshots.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && *c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_breaker_open_without_a_reload() {
    // An upstream the test turns down.
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let app = Router::new().fallback(any(move || {
        let down = d.load(Ordering::SeqCst);
        async move {
            if down {
                (StatusCode::INTERNAL_SERVER_ERROR, "down")
            } else {
                (StatusCode::OK, "[]")
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://{upstream}"),
        "--ops-token",
        "t",
    ]
    .map(str::to_owned);
    let gw = gateway::start(gateway::Options::parse(args, |_| None).unwrap())
        .await
        .unwrap();
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &str| {
        let req = Request::get(format!("http://{}{path}", gw.addr))
            .body(Body::empty())
            .unwrap();
        let client = client.clone();
        async move {
            let res = client.request(req).await.unwrap();
            let status = res.status();
            let _ = res.into_body().collect().await;
            status
        }
    };
    assert_eq!(get("/api/items/1").await, StatusCode::OK);
    let circuit = "read:GET /api/items/{id}";

    let driver = Driver::start();
    let session = driver
        .call(
            Method::POST,
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync",
                             "--window-size=1200,800"],
                },
            }}})),
        )
        .await;
    let id = session["sessionId"].as_str().unwrap().to_owned();
    let s = format!("/session/{id}");
    // Element lookups wait (up to 10 s) for the element to appear: the page's own updates are
    // what the test waits for.
    driver
        .call(
            Method::POST,
            &format!("{s}/timeouts"),
            Some(json!({"implicit": 10_000})),
        )
        .await;
    driver
        .call(
            Method::POST,
            &format!("{s}/url"),
            Some(json!({"url": format!("http://{}/v1/dashboard", gw.addr)})),
        )
        .await;
    let find = |state: &'static str| {
        let selector = format!("tr[data-circuit=\"{circuit}\"][data-state=\"{state}\"]");
        let driver = &driver;
        let path = format!("{s}/element");
        async move {
            driver
                .call(
                    Method::POST,
                    &path,
                    Some(json!({"using": "css selector", "value": selector})),
                )
                .await
        }
    };
    find("CLOSED").await;
    let title = driver.call(Method::GET, &format!("{s}/title"), None).await;
    assert_eq!(title, "Breakwater");

    // Trip the endpoint breaker (preset `read`: 3 failures in a row); the page learns it from the
    // event stream, without a reload.
    down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        get("/api/items/1").await;
    }
    assert_eq!(
        gw.registry
            .get(circuit)
            .expect("the endpoint breaker")
            .state(),
        breakwater::State::Open
    );
    find("OPEN").await;
    let url = driver.call(Method::GET, &format!("{s}/url"), None).await;
    assert!(url.as_str().unwrap().ends_with("/v1/dashboard"));

    // The reset button asks for the token, then resets the breaker.
    let button = driver
        .call(
            Method::POST,
            &format!("{s}/element"),
            Some(json!({
                "using": "css selector",
                "value": format!("tr[data-circuit=\"{circuit}\"] button[data-action=\"reset\"]"),
            })),
        )
        .await;
    let button_id = button["element-6066-11e4-a52e-4f735466cecf"]
        .as_str()
        .unwrap()
        .to_owned();
    let shot_before_reset = match std::env::var("BREAKWATER_SCREENSHOT") {
        Ok(path) => {
            let shot = driver
                .call(Method::GET, &format!("{s}/screenshot"), None)
                .await;
            Some((path, base64_decode(shot.as_str().unwrap())))
        }
        Err(_) => None,
    };
    driver
        .call(
            Method::POST,
            &format!("{s}/element/{button_id}/click"),
            Some(json!({})),
        )
        .await;
    driver
        .call(
            Method::POST,
            &format!("{s}/alert/text"),
            Some(json!({"text": "t"})),
        )
        .await;
    driver
        .call(Method::POST, &format!("{s}/alert/accept"), Some(json!({})))
        .await;
    find("CLOSED").await;
    assert_eq!(
        gw.registry.get(circuit).unwrap().state(),
        breakwater::State::Closed
    );

    if let Some((path, png)) = shot_before_reset {
        assert!(png.starts_with(b"\x89PNG"));
        std::fs::write(path, png).unwrap();
    }
    driver.call(Method::DELETE, &s, None).await;
    gw.shut_down().await;
}

#[test]
fn base64_decodes_as_webdriver_encodes() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
}
