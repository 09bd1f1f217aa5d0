//! A hyper client with one circuit breaker per host, against two local servers it starts
//! itself: `flaky` fails for a while and then heals, `steady` always answers.
//!
//! Run with:
//!
//! ```text
//! cargo run --example http_client --features full
//! ```
//!
//! Watch the `flaky` host's breaker open after three 500s, refuse calls without touching the
//! network, probe after 300 ms, and close once the server is back, while `steady` is never
//! affected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use breakwater::tower::{Authority, CircuitBreakerLayer, CircuitOpen};
use breakwater::{Config, EventKind, FamilyOptions, Registry};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

/// Serves on 127.0.0.1; the flaky one answers 500 to its requests number 3 to 7.
async fn server(flaky: bool) -> SocketAddr {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/",
        get(move || {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            async move {
                if flaky && (3..8).contains(&n) {
                    (StatusCode::INTERNAL_SERVER_ERROR, "down")
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flaky = server(true).await;
    let steady = server(false).await;

    let registry = Registry::new();
    let config = Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(3)
        .wait_in_open(Duration::from_millis(300))
        .permitted_calls_in_half_open(1)
        .success_threshold(2)
        .build()?;
    let hosts = registry.family("hosts", FamilyOptions::new(config).max_keys(100));
    let events = registry.subscribe();

    let client = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::keyed(hosts, Authority))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    let start = Instant::now();
    for round in 0..40 {
        for (name, addr) in [("flaky", flaky), ("steady", steady)] {
            let req = http::Request::get(format!("http://{addr}/")).body(Empty::new())?;
            let outcome = match client.clone().oneshot(req).await {
                Ok(res) => format!("{}", res.status()),
                Err(e) => match e.downcast_ref::<CircuitOpen>() {
                    Some(open) => format!("refused fast ({})", open.state()),
                    None => format!("error: {e}"),
                },
            };
            if name == "flaky" || round % 10 == 0 {
                println!("{:>5} ms  {name:<6} {outcome}", start.elapsed().as_millis());
            }
        }
        while let Some(event) = events.try_recv() {
            if let EventKind::StateTransition { from, to, trigger } = event.kind {
                println!("          >> {}: {from} -> {to} ({trigger})", event.circuit);
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }

    println!();
    for s in registry.snapshots() {
        println!(
            "{:<30} {:<9} {} successes, {} failures, {} refused, opened {} times",
            s.name, s.state, s.successes, s.failures, s.not_permitted_calls, s.circuit_opens
        );
    }
    Ok(())
}
