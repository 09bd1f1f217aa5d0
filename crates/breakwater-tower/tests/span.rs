//! The layers record the breaker, the refusing state and the fallback's strategy on the
//! request span of a real axum server (tower-http's `TraceLayer`), as `tracing` fields.

mod support;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use breakwater::tower::CircuitBreakerLayer;
use breakwater::tower::fallback::FallbackLayer;
use breakwater::tower::span;
use breakwater::{CircuitBreaker, Config};
use http::{Request, Response};
use support::*;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, field::Empty};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Keeps the recorded fields of every `request` span, in the order the spans closed.
#[derive(Clone, Default)]
struct Spans {
    open: Arc<Mutex<BTreeMap<u64, BTreeMap<String, String>>>>,
    closed: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        if attrs.metadata().name() == "request" {
            let mut f = Fields::default();
            attrs.record(&mut f);
            self.open.lock().unwrap().insert(id.into_u64(), f.0);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(fields) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            let mut f = Fields(std::mem::take(fields));
            values.record(&mut f);
            *fields = f.0;
        }
    }
    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        if let Some(fields) = self.open.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(fields);
        }
    }
}

impl Spans {
    fn take(&self) -> Vec<BTreeMap<String, String>> {
        std::mem::take(&mut *self.closed.lock().unwrap())
    }
}

#[tokio::test]
async fn the_request_span_shows_which_breaker_refused_and_which_fallback_answered() {
    let spans = Spans::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let orders = CircuitBreaker::new("orders", Config::default());
    let stock = CircuitBreaker::new("stock", Config::default());
    let service = CircuitBreaker::new("service", Config::default());
    let endpoint = CircuitBreaker::new("endpoint", Config::default());
    let app = Router::new()
        .route(
            "/orders",
            get(|| async { "[]" }).layer(CircuitBreakerLayer::new(orders.clone()).for_axum()),
        )
        .route(
            "/stock",
            get(|| async { "[]" }).layer(
                ServiceBuilder::new()
                    .layer(
                        FallbackLayer::new()
                            .fixed(Response::new("cached"))
                            .for_axum(),
                    )
                    .layer(CircuitBreakerLayer::new(stock.clone()).for_axum()),
            ),
        )
        .route(
            "/stacked",
            get(|| async { "[]" }).layer(
                ServiceBuilder::new()
                    .layer(CircuitBreakerLayer::new(service.clone()).for_axum())
                    .layer(CircuitBreakerLayer::new(endpoint.clone()).for_axum()),
            ),
        )
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                tracing::info_span!(
                    "request",
                    path = %req.uri().path(),
                    circuit_breaker.name = Empty,
                    circuit_breaker.state = Empty,
                    fallback.strategy = Empty,
                )
            }),
        );
    let addr = serve(app).await;
    let client = client();
    let get = |path: &str| {
        let req = request(&format!("http://{addr}{path}"));
        let client = client.clone();
        async move {
            let res = client.request(req).await.unwrap();
            let status = res.status();
            body_bytes(res.into_body()).await;
            status
        }
    };

    // Let through: the name only.
    assert_eq!(get("/orders").await, 200);
    // Refused: the name and the state.
    orders.force_open();
    assert_eq!(get("/orders").await, 503);
    // Refused and answered by the fallback.
    stock.force_open();
    assert_eq!(get("/stock").await, 200);

    // Stacked: the outer breaker's name when both let the call through; the refusing one's
    // when the inner refuses.
    assert_eq!(get("/stacked").await, 200);
    endpoint.force_open();
    assert_eq!(get("/stacked").await, 503);

    let got = spans.take();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[3][span::CIRCUIT_BREAKER_NAME], "service");
    assert!(!got[3].contains_key(span::CIRCUIT_BREAKER_STATE));
    assert_eq!(got[4][span::CIRCUIT_BREAKER_NAME], "endpoint");
    assert_eq!(got[4][span::CIRCUIT_BREAKER_STATE], "FORCED_OPEN");
    assert_eq!(got[0][span::CIRCUIT_BREAKER_NAME], "orders");
    assert!(!got[0].contains_key(span::CIRCUIT_BREAKER_STATE));
    assert_eq!(got[1][span::CIRCUIT_BREAKER_NAME], "orders");
    assert_eq!(got[1][span::CIRCUIT_BREAKER_STATE], "FORCED_OPEN");
    assert_eq!(got[2][span::CIRCUIT_BREAKER_NAME], "stock");
    assert_eq!(got[2][span::CIRCUIT_BREAKER_STATE], "FORCED_OPEN");
    assert_eq!(got[2][span::FALLBACK_STRATEGY], "fixed");
}
