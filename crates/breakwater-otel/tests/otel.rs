//! The instruments as the OpenTelemetry SDK exports them, against the metrics JSON of the same
//! run: a scripted run on a manual clock (trip, reject, probe, close, fallback, timed calls).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use breakwater::otel::BreakerMetrics;
use breakwater::tower::CircuitBreakerLayer;
use breakwater::tower::fallback::FallbackLayer;
use breakwater::tower::health::{HealthRegistry, Probe};
use breakwater::{Config, FamilyOptions, ManualClock, Outcome, Registry, SlidingWindow, State};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};

/// One exported data point: its attributes (sorted) and value.
#[derive(Debug, Clone, PartialEq)]
enum Point {
    Int(i64),
    Float(f64),
    Histogram {
        count: u64,
        sum: f64,
        bounds: Vec<f64>,
        buckets: Vec<u64>,
    },
}

type Attrs = BTreeMap<String, String>;

#[derive(Debug, Default)]
struct Exported {
    /// name → (unit, points)
    metrics: BTreeMap<String, (String, Vec<(Attrs, Point)>)>,
}

impl Exported {
    fn collect(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Self {
        exporter.reset();
        provider.force_flush().unwrap();
        let all = exporter.get_finished_metrics().unwrap();
        let latest = all.last().expect("one export");
        let mut out = Exported::default();
        for scope in latest.scope_metrics() {
            for m in scope.metrics() {
                let points = points(m.data());
                out.metrics
                    .insert(m.name().to_owned(), (m.unit().to_owned(), points));
            }
        }
        out
    }

    fn unit(&self, name: &str) -> &str {
        &self.metrics[name].0
    }

    /// The value with exactly these attributes.
    fn value(&self, name: &str, attrs: &[(&str, &str)]) -> Option<Point> {
        let want: Attrs = attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.metrics
            .get(name)?
            .1
            .iter()
            .find(|(a, _)| *a == want)
            .map(|(_, p)| p.clone())
    }

    fn int(&self, name: &str, attrs: &[(&str, &str)]) -> i64 {
        match self.value(name, attrs) {
            Some(Point::Int(n)) => n,
            other => panic!("{name} {attrs:?}: {other:?}"),
        }
    }

    fn float(&self, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
        match self.value(name, attrs) {
            Some(Point::Float(v)) => Some(v),
            None => None,
            other => panic!("{name} {attrs:?}: {other:?}"),
        }
    }

    /// Every value of `attribute` in the points of `name`.
    fn values_of(&self, name: &str, attribute: &str) -> Vec<String> {
        let mut v: Vec<String> = self.metrics.get(name).map_or(Vec::new(), |(_, points)| {
            points
                .iter()
                .filter_map(|(a, _)| a.get(attribute).cloned())
                .collect()
        });
        v.sort();
        v.dedup();
        v
    }
}

fn attrs<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Attrs {
    kvs.map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn points(data: &AggregatedMetrics) -> Vec<(Attrs, Point)> {
    fn of<T: Copy>(data: &MetricData<T>, int: impl Fn(T) -> Point) -> Vec<(Attrs, Point)> {
        match data {
            MetricData::Gauge(g) => g
                .data_points()
                .map(|p| (attrs(p.attributes()), int(p.value())))
                .collect(),
            MetricData::Sum(s) => s
                .data_points()
                .map(|p| (attrs(p.attributes()), int(p.value())))
                .collect(),
            _ => Vec::new(),
        }
    }
    match data {
        AggregatedMetrics::U64(d) => of(d, |v| Point::Int(v as i64)),
        AggregatedMetrics::I64(d) => of(d, Point::Int),
        AggregatedMetrics::F64(MetricData::Histogram(h)) => h
            .data_points()
            .map(|p| {
                (
                    attrs(p.attributes()),
                    Point::Histogram {
                        count: p.count(),
                        sum: p.sum(),
                        bounds: p.bounds().collect(),
                        buckets: p.bucket_counts().collect(),
                    },
                )
            })
            .collect(),
        AggregatedMetrics::F64(d) => of(d, Point::Float),
    }
}

fn sdk() -> (SdkMeterProvider, InMemoryMetricExporter) {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

fn db_config() -> Config {
    Config::builder()
        .sliding_window(SlidingWindow::Count(4))
        .minimum_number_of_calls(2)
        .no_consecutive_failures()
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::from_secs(5))
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap()
}

const CALLS: &str = "resilience.circuit_breaker.calls";

/// The exported counters and gauges of `name` equal its entry in the metrics JSON.
fn assert_matches_json(exported: &Exported, json: &Value, name: &str) {
    let c = &json["circuits"][name];
    let n = [("circuit_breaker.name", name)];
    let calls = |outcome: &str| {
        exported.int(
            CALLS,
            &[
                ("circuit_breaker.name", name),
                ("circuit_breaker.outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("success"), c["successes"].as_i64().unwrap(), "{name}");
    assert_eq!(calls("failure"), c["failures"].as_i64().unwrap(), "{name}");
    assert_eq!(
        calls("rejected"),
        c["notPermittedCalls"].as_i64().unwrap(),
        "{name}"
    );
    assert_eq!(
        calls("success") + calls("failure") + calls("rejected") + calls("ignored"),
        c["totalRequests"].as_i64().unwrap(),
        "{name}"
    );
    assert_eq!(
        exported.int("resilience.circuit_breaker.slow_calls", &n),
        c["slowCalls"].as_i64().unwrap()
    );
    assert_eq!(
        exported.int("resilience.circuit_breaker.buffered_calls", &n),
        c["bufferedCalls"].as_i64().unwrap()
    );
    assert_eq!(
        exported.float("resilience.circuit_breaker.failure_ratio", &n),
        c["failureRate"].as_f64(),
        "{name}: absent exactly while the JSON says null"
    );
    assert_eq!(
        exported.float("resilience.circuit_breaker.slow_call_ratio", &n),
        c["slowCallRate"].as_f64()
    );
    let state = c["state"].as_str().unwrap().to_ascii_lowercase();
    for s in State::ALL {
        let value = breakwater::otel::state_value(s);
        assert_eq!(
            exported.int(
                "resilience.circuit_breaker.state",
                &[
                    ("circuit_breaker.name", name),
                    ("circuit_breaker.state", value)
                ]
            ),
            i64::from(value == state),
            "{name} {value}"
        );
    }
}

#[tokio::test]
async fn exported_instruments_equal_the_metrics_json_of_the_same_run() {
    let clock = ManualClock::new();
    let registry = Registry::builder().clock(clock.clone()).build();
    let db = registry.breaker_with("db", db_config());
    let timed = registry.breaker_with(
        "timed",
        Config::builder()
            .record_call_durations(true)
            .slow_call_duration_threshold(Duration::from_millis(100))
            .slow_call_rate_threshold(100.0)
            .build()
            .unwrap(),
    );

    // A fallback layer over the breaker, in front of an upstream that fails until told not to.
    let healthy = Arc::new(AtomicBool::new(false));
    let up = healthy.clone();
    let fallback = FallbackLayer::new()
        .named("db-fallback")
        .on_failed_responses()
        .fixed(Response::new("cached"));
    let stats = fallback.stats();
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(CircuitBreakerLayer::new(db.clone()))
        .service(tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let ok = up.load(Ordering::SeqCst);
            async move {
                let mut res = Response::new(Full::new(Bytes::from_static(b"live")));
                if !ok {
                    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
                Ok::<_, Infallible>(res)
            }
        }));
    let call = || {
        let svc = svc.clone();
        async move {
            let res = svc
                .oneshot(Request::new(Full::new(Bytes::new())))
                .await
                .unwrap();
            res.status()
        }
    };

    // A probe that passes, once slowly.
    let health = HealthRegistry::new(&registry);
    let probe = Probe::builder("dns", || async { Ok::<(), String>(()) })
        .build()
        .unwrap();
    health.add_probe(probe.clone());

    let (provider, exporter) = sdk();
    assert!(
        BreakerMetrics::builder(&registry)
            .probes(&health)
            .fallback("db-fallback", stats.clone())
            .register(&provider.meter("breakwater"))
    );

    // Before anything: every series is there, rates absent.
    let e = Exported::collect(&provider, &exporter);
    let json = breakwater::ops::metrics_json(&registry);
    assert_matches_json(&e, &json, "db");
    assert_eq!(
        e.float(
            "resilience.circuit_breaker.failure_ratio",
            &[("circuit_breaker.name", "db")]
        ),
        None
    );

    // Trip: two failures (answered by the fallback), then refusals (answered by it too).
    for _ in 0..2 {
        assert_eq!(call().await, StatusCode::OK);
    }
    assert_eq!(db.state(), State::Open);
    for _ in 0..3 {
        assert_eq!(call().await, StatusCode::OK);
    }
    let e = Exported::collect(&provider, &exporter);
    let json = breakwater::ops::metrics_json(&registry);
    assert_matches_json(&e, &json, "db");
    assert_eq!(
        e.int(
            CALLS,
            &[
                ("circuit_breaker.name", "db"),
                ("circuit_breaker.outcome", "rejected")
            ]
        ),
        3
    );
    assert_eq!(
        e.float(
            "resilience.circuit_breaker.failure_ratio",
            &[("circuit_breaker.name", "db")]
        ),
        Some(1.0),
        "OPEN keeps the window that opened it"
    );
    assert_eq!(
        e.float(
            "resilience.circuit_breaker.failure_ratio_threshold",
            &[("circuit_breaker.name", "db")]
        ),
        Some(0.5)
    );
    assert_eq!(
        e.float(
            "resilience.circuit_breaker.slow_call_ratio_threshold",
            &[("circuit_breaker.name", "timed")]
        ),
        Some(1.0)
    );
    assert_eq!(e.unit("resilience.circuit_breaker.failure_ratio"), "1");
    assert_eq!(e.unit("resilience.circuit_breaker.slow_call_ratio"), "1");
    assert_eq!(
        e.int(
            "resilience.fallback.invocations",
            &[
                ("fallback.name", "db-fallback"),
                ("fallback.strategy", "fixed")
            ]
        ),
        5
    );
    assert_eq!(stats.uses("fixed"), 5);

    // The wait, a probe call that succeeds, CLOSED again.
    clock.advance(Duration::from_millis(5_001));
    healthy.store(true, Ordering::SeqCst);
    assert_eq!(call().await, StatusCode::OK);
    assert_eq!(db.state(), State::Closed);

    // Timed calls: 3 ms, 40 ms, 250 ms (slow), recorded with their durations.
    for ms in [3, 40, 250] {
        timed
            .try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Success, Duration::from_millis(ms));
    }
    // And one timed by its permit: 7 ms on the clock between its acquire and its success.
    let permit = timed.try_acquire().unwrap();
    clock.advance(Duration::from_millis(7));
    permit.success();
    // The probe: two runs.
    probe.run_once().await;
    probe.run_once().await;

    let e = Exported::collect(&provider, &exporter);
    let json = breakwater::ops::metrics_json(&registry);
    for name in ["db", "timed"] {
        assert_matches_json(&e, &json, name);
    }
    let transitions = |from: &str, to: &str, trigger: &str| {
        e.int(
            "resilience.circuit_breaker.transitions",
            &[
                ("circuit_breaker.name", "db"),
                ("from_state", from),
                ("to_state", to),
                ("trigger", trigger),
            ],
        )
    };
    assert_eq!(transitions("closed", "open", "failure_ratio"), 1);
    assert_eq!(transitions("open", "half_open", "timer"), 1);
    assert_eq!(transitions("half_open", "closed", "probe"), 1);
    for t in db.transition_counts() {
        assert_eq!(
            transitions(
                breakwater::otel::state_value(t.from),
                breakwater::otel::state_value(t.to),
                t.trigger.as_str()
            ),
            t.count as i64
        );
    }
    assert_eq!(json["circuits"]["db"]["circuitOpens"], 1);

    // The histogram: the core's own, bucket for bucket.
    let h = timed.duration_histogram();
    let Some(Point::Histogram {
        count,
        sum,
        bounds,
        buckets,
    }) = e.value(
        "resilience.circuit_breaker.call.duration",
        &[("circuit_breaker.name", "timed")],
    )
    else {
        panic!("no histogram for `timed`")
    };
    assert_eq!(count, h.count);
    assert_eq!(count, 4);
    assert!((sum - h.sum.as_secs_f64()).abs() < 1e-9, "{sum}");
    assert_eq!(bounds, breakwater::DURATION_BUCKETS.to_vec());
    let mut cumulative = 0;
    for (i, n) in buckets.iter().take(bounds.len()).enumerate() {
        cumulative += n;
        assert_eq!(cumulative, h.cumulative[i], "bucket {i}");
    }
    assert_eq!(
        e.value(
            "resilience.circuit_breaker.call.duration",
            &[("circuit_breaker.name", "db")]
        ),
        None,
        "breakers that do not record durations have no histogram"
    );

    // Probes.
    assert_eq!(
        e.int(
            "resilience.probe.results",
            &[("probe.name", "dns"), ("probe.result", "ok")]
        ),
        probe.counts().ok as i64
    );
    assert_eq!(probe.counts().ok, 2);
    let latency = e
        .float("resilience.probe.duration", &[("probe.name", "dns")])
        .unwrap();
    assert_eq!(latency, probe.last().unwrap().latency.as_secs_f64());

    // Names and units.
    for (name, unit) in [
        (CALLS, "{call}"),
        ("resilience.circuit_breaker.slow_calls", "{call}"),
        ("resilience.circuit_breaker.state", "1"),
        ("resilience.circuit_breaker.transitions", "{transition}"),
        ("resilience.circuit_breaker.buffered_calls", "{call}"),
        ("resilience.circuit_breaker.call.duration", "s"),
        ("resilience.fallback.invocations", "{invocation}"),
        ("resilience.probe.results", "{run}"),
        ("resilience.probe.duration", "s"),
    ] {
        assert_eq!(e.unit(name), unit, "{name}");
    }
}

#[test]
fn evicted_family_members_leave_the_export() {
    let clock = ManualClock::new();
    let registry = Registry::builder().clock(clock.clone()).build();
    let hosts = registry.family(
        "hosts",
        FamilyOptions::new(Config::default()).idle_eviction(Duration::from_secs(60)),
    );
    let (provider, exporter) = sdk();
    BreakerMetrics::builder(&registry).register(&provider.meter("breakwater"));

    hosts.get("a.example").try_acquire().unwrap().success();
    hosts.get("b.example").try_acquire().unwrap().success();
    let e = Exported::collect(&provider, &exporter);
    assert_eq!(
        e.values_of(CALLS, "circuit_breaker.name"),
        ["hosts:a.example", "hosts:b.example"]
    );

    // A sweep notes the calls each member had; one with none since the last sweep and idle for
    // the idle time goes.
    let mut evicted = 0;
    for _ in 0..2 {
        clock.advance(Duration::from_secs(61));
        hosts.get("b.example").try_acquire().unwrap().success();
        evicted += hosts.evict_idle();
    }
    assert_eq!(evicted, 1);
    assert!(hosts.get_existing("a.example").is_none());
    let e = Exported::collect(&provider, &exporter);
    for name in [
        CALLS,
        "resilience.circuit_breaker.state",
        "resilience.circuit_breaker.buffered_calls",
    ] {
        assert_eq!(
            e.values_of(name, "circuit_breaker.name"),
            ["hosts:b.example"],
            "{name}"
        );
    }
}

#[test]
fn a_second_registration_leaves_the_histogram_to_the_first() {
    let registry = Registry::new();
    let (provider, _exporter) = sdk();
    let meter = provider.meter("breakwater");
    assert!(BreakerMetrics::builder(&registry).register(&meter));
    assert!(!BreakerMetrics::builder(&registry).register(&meter));
}
