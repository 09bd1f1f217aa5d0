//! An axum server with Breakwater: a breaker per route, one for the whole service, a fallback,
//! health and the ops API.
//!
//! `cargo run --example server --features full`, then `curl localhost:3000/items/13` six
//! times (five 500s, then the route's breaker answers 503 `CIRCUIT_OPEN`), `curl
//! localhost:3000/items` (still 200), `curl localhost:3000/health` and
//! `curl localhost:3000/v1/circuit-breaker/metrics`.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use breakwater::ops::OpsApi;
use breakwater::tower::fallback::{FallbackLayer, StaleCache};
use breakwater::tower::health::HealthRegistry;
use breakwater::tower::{CircuitBreakerLayer, MethodAndRoute};
use breakwater::{Config, FamilyOptions, HealthMode, Registry};
use tower::ServiceBuilder;

/// The app: its routes behind the breakers and the fallback, then the ops API beside them.
pub(crate) fn app(registry: &Registry, ops_token: &str) -> Router {
    // One breaker per route template (`GET /items/{id}`, never the raw path): each trips
    // after 5 failures in a row and stays open 10 s.
    let endpoints = registry.family(
        "endpoints",
        FamilyOptions::new(
            Config::builder()
                .no_failure_rate_threshold()
                .consecutive_failures(5)
                .wait_in_open(Duration::from_secs(10))
                .build()
                .expect("valid config"),
        ),
    );
    // One breaker for the whole service: it trips when half of the last 100 calls failed
    // (thresholds are percent), judged from the 20th call; the service's health fails while
    // it is open.
    let service = registry.breaker_with(
        "service",
        Config::builder()
            .failure_rate_threshold(50.0)
            .minimum_number_of_calls(20)
            .wait_in_open(Duration::from_secs(30))
            .health(HealthMode::Critical)
            .build()
            .expect("valid config"),
    );

    // Layers run outside in: the fallback, then the service breaker, then the route's breaker
    // (`route_layer`: only requests that matched a route, so the key is the route template).
    // `for_axum()` makes each layer answer refusals itself, as axum needs.
    let api = Router::new()
        .route("/items", get(items))
        .route("/items/{id}", get(item))
        .route_layer(CircuitBreakerLayer::keyed(endpoints, MethodAndRoute).for_axum())
        .layer(
            ServiceBuilder::new()
                .layer(
                    FallbackLayer::new()
                        .events(registry)
                        .stale_if_error(StaleCache::new())
                        .for_axum(),
                )
                .layer(CircuitBreakerLayer::new(service).for_axum()),
        );

    // The ops API answers /health (the breakers, by their `health` mode, and any probes
    // added to `health`), /metrics and /v1/...; merged after the layers, outside them, so
    // force-opening the service breaker never locks operators out.
    let health = HealthRegistry::new(registry);
    api.merge(
        OpsApi::new(registry)
            .health(health)
            .token(ops_token)
            .router(),
    )
    .fallback(|| async { (StatusCode::NOT_FOUND, "no such page\n") })
}

async fn items() -> &'static str {
    "[1, 2, 3]\n"
}

/// Item 13 is broken: asking for it fails every time.
async fn item(Path(id): Path<u32>) -> Result<String, StatusCode> {
    match id {
        13 => Err(StatusCode::INTERNAL_SERVER_ERROR),
        _ => Ok(format!("{{\"id\": {id}}}\n")),
    }
}

#[allow(dead_code)] // (a test serves `app` itself)
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let registry = Registry::new();
    let token = std::env::var("BREAKWATER_OPS_TOKEN").unwrap_or_else(|_| "change-me".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(&registry, &token)).await
}
