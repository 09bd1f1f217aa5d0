//! The shipped dashboard and alerting rules (`deploy/`) ask only for series that a running
//! gateway serves at `/metrics`.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::collections::BTreeSet;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::any;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Every series name an OpenMetrics text declares (by its `# TYPE` lines: a series with no
/// sample yet, such as a rate still unknown, is still served), as queries name them.
fn served(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Every `resilience_…` series a query text names.
fn asked(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("resilience_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn dashboard_queries() -> String {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../deploy/grafana/breakwater.json")).unwrap();
    let mut queries = String::new();
    for panel in json["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            queries.push_str(t["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    for var in json["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str() {
            queries.push_str(q);
            queries.push('\n');
        }
    }
    queries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_query_uses_series_the_gateway_serves() {
    // An upstream that fails, so that breakers open and every kind of series exists.
    let app = Router::new().fallback(any(|| async {
        (StatusCode::INTERNAL_SERVER_ERROR, "down")
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://{upstream}"),
    ]
    .map(str::to_owned);
    let options = gateway::Options::parse(args, |_| None).unwrap();
    let gw = gateway::start(options).await.unwrap();
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let res = client
                .request(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        }
    };
    for _ in 0..30 {
        get(format!("http://{}/api/items/1", gw.addr)).await;
    }
    gw.health.probe("upstream").unwrap().run_once().await;
    let text =
        String::from_utf8(get(format!("http://{}/metrics", gw.addr)).await.to_vec()).unwrap();
    let served = served(&text);

    let dashboard = asked(&dashboard_queries());
    let rules = asked(include_str!("../deploy/prometheus/breakwater.rules.yml"));
    assert!(
        dashboard.len() >= 8 && rules.len() >= 4,
        "{dashboard:?} {rules:?}"
    );
    for name in dashboard.iter().chain(&rules) {
        assert!(
            served.contains(name),
            "`{name}` is not served; /metrics has {served:?}"
        );
    }
    gw.shut_down().await;
}
