//! The README's server (`examples/server.rs`) on a free port: its breakers, fallback, health and
//! ops API, over HTTP; and the README shows that file as it is.

#[path = "../examples/server.rs"]
mod server;

use std::net::SocketAddr;

use breakwater::Registry;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const TOKEN: &str = "t";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Http {
    addr: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Http {
    async fn send(&self, method: Method, path: &str, token: Option<&str>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = self
            .client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }
}

#[tokio::test]
async fn the_readme_server_trips_falls_back_and_is_operated() {
    let registry = Registry::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server::app(&registry, TOKEN);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = Http {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };

    assert_eq!(http.get("/items").await.status, StatusCode::OK);
    assert_eq!(http.get("/items/1").await.status, StatusCode::OK);
    // The broken item's route trips after five failures; its breaker then answers.
    for _ in 0..5 {
        assert_eq!(
            http.get("/items/13").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let refused = http.get("/items/13").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json()["code"], "CIRCUIT_OPEN");
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(
        http.get("/items/2").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "one breaker per route template"
    );
    // Other routes are untouched.
    let list = http.get("/items").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.headers.contains_key("x-fallback"));

    let metrics = http.get("/v1/circuit-breaker/metrics").await.json();
    assert_eq!(
        metrics["circuits"]["endpoints:GET /items/{id}"]["state"],
        "OPEN"
    );
    assert_eq!(
        metrics["circuits"]["endpoints:GET /items"]["state"],
        "CLOSED"
    );
    assert_eq!(metrics["circuits"]["service"]["state"], "CLOSED");

    // An operator force-opens the whole service: the list is answered from the stale cache,
    // health fails (the service breaker is critical), and the ops API still answers.
    let forced = http
        .send(
            Method::POST,
            "/v1/circuit-breaker/force-open/service",
            Some(TOKEN),
        )
        .await;
    assert_eq!(forced.json()["currentState"], "FORCED_OPEN");
    let stale = http.get("/items").await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.headers["x-fallback"], "stale");
    assert_eq!(stale.body, "[1, 2, 3]\n");
    let health = http.get("/health").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["status"], "fail");
    assert_eq!(
        health.json()["checks"]["service:circuitBreaker"][0]["status"],
        "fail"
    );
    let released = http
        .send(
            Method::POST,
            "/v1/circuit-breaker/release/service",
            Some(TOKEN),
        )
        .await;
    assert_eq!(released.json()["currentState"], "CLOSED");
    assert_eq!(http.get("/health").await.status, StatusCode::OK);
    assert!(!http.get("/items").await.headers.contains_key("x-fallback"));

    // Writes need the token; unknown paths get the app's own answer.
    let denied = http
        .send(Method::POST, "/v1/circuit-breaker/reset", None)
        .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    let unknown = http.get("/nowhere").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body, "no such page\n");
}

#[test]
fn the_readme_shows_the_server_example_as_it_is() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/server.rs");
    assert!(
        readme.contains(&format!("```rust,no_run\n{example}```")),
        "README.md must show examples/server.rs verbatim in a `rust,no_run` block"
    );
}
