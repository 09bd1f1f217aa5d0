//! The gateway pushes its breakers' instruments over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set: a local receiver decodes what arrives
//! (`opentelemetry-proto`) while a breaker trips, and finds the instruments with the values of
//! the metrics JSON.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::routing::{any, post};
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use tokio::sync::mpsc;

/// One exported series: (metric name, attributes) → value, and the metric's unit.
#[derive(Debug, Default)]
struct Export {
    service_name: Option<String>,
    values: HashMap<(String, BTreeMap<String, String>), f64>,
    units: HashMap<String, String>,
}

fn string_of(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn decode(body: &[u8]) -> Export {
    let req = ExportMetricsServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut out = Export::default();
    for rm in &req.resource_metrics {
        if let Some(r) = &rm.resource {
            for kv in &r.attributes {
                if kv.key == "service.name" {
                    out.service_name = Some(string_of(&kv.value));
                }
            }
        }
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                out.units.insert(m.name.clone(), m.unit.clone());
                let points = match &m.data {
                    Some(metric::Data::Sum(s)) => &s.data_points,
                    Some(metric::Data::Gauge(g)) => &g.data_points,
                    _ => continue,
                };
                for p in points {
                    let attrs = p
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), string_of(&kv.value)))
                        .collect();
                    let v = match p.value {
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        None => continue,
                    };
                    out.values.insert((m.name.clone(), attrs), v);
                }
            }
        }
    }
    out
}

impl Export {
    fn get(&self, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
        let attrs = attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.values.get(&(name.to_owned(), attrs)).copied()
    }
}

/// The request spans in a traces body: each one's attributes.
fn decode_spans(body: &[u8]) -> Vec<BTreeMap<String, String>> {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| s.name == "request")
        .map(|s| {
            s.attributes
                .iter()
                .map(|kv| (kv.key.clone(), string_of(&kv.value)))
                .collect()
        })
        .collect()
}

type Spans = mpsc::UnboundedReceiver<Vec<BTreeMap<String, String>>>;

/// A collector stand-in on 127.0.0.1: every metrics body, decoded, goes to the first channel,
/// every traces body's request spans to the second.
async fn receiver() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Export>, Spans) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (spans_tx, spans_rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/v1/metrics",
            post(move |body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(decode(&body));
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/v1/traces",
            post(move |body: Bytes| {
                let tx = spans_tx.clone();
                async move {
                    let _ = tx.send(decode_spans(&body));
                    StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rx, spans_rx)
}

/// An upstream that always fails.
async fn failing_upstream() -> std::net::SocketAddr {
    let app = Router::new().fallback(any(|| async {
        (StatusCode::INTERNAL_SERVER_ERROR, "down")
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_exports_its_breakers_over_otlp() {
    let (collector, mut exports, mut spans) = receiver().await;
    let upstream = failing_upstream().await;
    let env: HashMap<&str, String> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        ("OTEL_METRIC_EXPORT_INTERVAL", "100".to_owned()),
        ("OTEL_SERVICE_NAME", "gateway-under-test".to_owned()),
    ]
    .into();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://{upstream}"),
        "--ops-token",
        "t",
    ]
    .map(str::to_owned);
    let options = gateway::Options::parse(args, |k| env.get(k).cloned()).unwrap();
    // The process's subscriber, as the gateway's `main` sets it: request spans become traces.
    let tracer = gateway::telemetry::init_tracing(options.otel.as_ref())
        .unwrap()
        .expect("a tracer provider with OTLP on");
    let gw = gateway::start(options).await.unwrap();

    // Trip the endpoint breaker of `GET /items/{id}` (preset `read`: 3 failures).
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{}/api/items/9", gw.addr);
    for _ in 0..6 {
        let res = client
            .request(Request::get(&url).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let _ = res.into_body().collect().await;
    }
    let open = gw
        .registry
        .snapshots()
        .into_iter()
        .find(|s| s.state == breakwater::State::Open && s.name.starts_with("read:"))
        .expect("an open endpoint breaker");
    let name = open.name.clone();

    // Exports arrive every 100 ms: wait (bounded) for one taken after the trip.
    let deadline = Instant::now() + Duration::from_secs(20);
    let export = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, exports.recv())
            .await
            .expect("an export within 20 s")
            .expect("the receiver runs");
        let state = e.get(
            "resilience.circuit_breaker.state",
            &[
                ("circuit_breaker.name", &name),
                ("circuit_breaker.state", "open"),
            ],
        );
        let rejected = e.get(
            "resilience.circuit_breaker.calls",
            &[
                ("circuit_breaker.name", &name),
                ("circuit_breaker.outcome", "rejected"),
            ],
        );
        if state == Some(1.0) && rejected == Some(open.not_permitted_calls as f64) {
            break e;
        }
    };
    assert_eq!(export.service_name.as_deref(), Some("gateway-under-test"));
    let json = breakwater::ops::metrics_json(&gw.registry);
    let c = &json["circuits"][name.as_str()];
    let calls = |outcome: &str| {
        export.get(
            "resilience.circuit_breaker.calls",
            &[
                ("circuit_breaker.name", &name),
                ("circuit_breaker.outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("failure"), c["failures"].as_f64());
    assert_eq!(calls("success"), c["successes"].as_f64());
    assert_eq!(calls("rejected"), c["notPermittedCalls"].as_f64());
    assert!(calls("rejected").unwrap() >= 1.0);
    assert_eq!(
        export.get(
            "resilience.circuit_breaker.failure_ratio",
            &[("circuit_breaker.name", &name)]
        ),
        c["failureRate"].as_f64()
    );
    assert_eq!(
        export.get(
            "resilience.circuit_breaker.transitions",
            &[
                ("circuit_breaker.name", &name),
                ("from_state", "closed"),
                ("to_state", "open"),
                ("trigger", "consecutive_failures"),
            ]
        ),
        Some(1.0)
    );
    assert_eq!(export.units["resilience.circuit_breaker.calls"], "{call}");
    // The gateway's fallback and probe are there too.
    assert!(
        export
            .values
            .keys()
            .any(|(m, a)| m == "resilience.fallback.invocations"
                && a.get("fallback.name").map(String::as_str) == Some("gateway"))
    );
    assert!(
        export
            .values
            .keys()
            .any(|(m, a)| m == "resilience.probe.results"
                && a.get("probe.name").map(String::as_str) == Some("upstream"))
    );

    // The traces: flushed, then the refused request's span names the breaker and its state.
    let flushed = tokio::task::spawn_blocking(move || {
        let r = tracer.force_flush();
        (tracer, r)
    });
    let (tracer, flush) = flushed.await.unwrap();
    flush.unwrap();
    // The exporter waits for the receiver's answer, and the receiver queues a body before it
    // answers: after the flush, every span is queued.
    let mut seen = Vec::new();
    while let Ok(batch) = spans.try_recv() {
        seen.extend(batch);
    }
    assert!(seen.len() >= 6, "a span per request: {seen:?}");
    let refused = seen
        .iter()
        .find(|a| a.get("circuit_breaker.state").map(String::as_str) == Some("OPEN"))
        .unwrap_or_else(|| panic!("a refused request's span: {seen:?}"));
    assert_eq!(refused["circuit_breaker.name"], name);
    assert_eq!(refused["url.path"], "/items/9");
    gw.shut_down().await;
    let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
}

#[test]
fn otlp_settings_come_from_the_standard_variables_and_bad_ones_are_refused() {
    let parse = |vars: &[(&str, &str)]| {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        gateway::Options::parse(Vec::<String>::new(), |k| env.get(k).cloned())
    };
    assert_eq!(parse(&[]).unwrap().otel, None, "off without the endpoint");
    let o = parse(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")])
        .unwrap()
        .otel
        .unwrap();
    assert_eq!(o.endpoint, "http://127.0.0.1:4318");
    assert!(!o.json);
    assert_eq!(o.service_name, "breakwater-gateway");
    assert_eq!(o.interval, Duration::from_secs(60));
    let o = parse(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_SERVICE_NAME", "edge"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
    ])
    .unwrap()
    .otel
    .unwrap();
    assert!(o.json);
    assert_eq!(o.service_name, "edge");
    assert_eq!(o.interval, Duration::from_secs(5));
    for (vars, names) in [
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ],
            "OTEL_METRIC_EXPORT_INTERVAL",
        ),
    ] {
        let err = parse(&vars).unwrap_err();
        assert!(err.contains(names), "{err}");
    }
}
