//! What telemetry costs the layer, in one run of interleaved rounds: the per-service breaker
//! without telemetry, with OpenTelemetry's instruments registered (observable: nothing per
//! call), with call durations recorded (the engine's own histogram, and then also OpenTelemetry's
//! through the SDK), and with a `tracing` subscriber installed (console output at info, over a
//! request span, with and without the breaker's field declared on it), and with the registry's
//! history kept (its task sampling, writing to a state dir).
//!
//! Run with `cargo bench --bench telemetry --features full`.

use std::hint::black_box;

use breakwater::Registry;
use breakwater::otel::BreakerMetrics;
use breakwater_tower::CircuitBreakerLayer;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower::Layer;
use tracing::Dispatch;
use tracing_subscriber::layer::{Layer as _, SubscriberExt};

#[path = "support/mod.rs"]
mod support;

use support::service::{drive, inner, row};

use support::config;

fn timed() -> breakwater::Config {
    config()
        .to_builder()
        .record_call_durations(true)
        .build()
        .unwrap()
}

fn main() {
    let plain = Registry::new();
    let with_otel = Registry::new();
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter).build())
        .build();
    assert!(BreakerMetrics::builder(&with_otel).register(&provider.meter("breakwater")));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let with_history = Registry::new();
    let dir = std::env::temp_dir().join(format!("breakwater-bench-{}", std::process::id()));
    let history = runtime.block_on(async {
        breakwater::history::History::builder(&with_history)
            .state_dir(&dir)
            .start()
            .unwrap()
    });
    let mut layer_history =
        CircuitBreakerLayer::new(with_history.breaker_with("a", config())).layer(inner());

    let mut bare = inner();
    let mut layer = CircuitBreakerLayer::new(plain.breaker_with("a", config())).layer(inner());
    let mut layer_otel =
        CircuitBreakerLayer::new(with_otel.breaker_with("a", config())).layer(inner());
    let mut timed_layer = CircuitBreakerLayer::new(plain.breaker_with("t", timed())).layer(inner());
    let mut timed_otel =
        CircuitBreakerLayer::new(with_otel.breaker_with("t", timed())).layer(inner());
    let mut layer_sub = CircuitBreakerLayer::new(plain.breaker_with("s", config())).layer(inner());
    let mut layer_field =
        CircuitBreakerLayer::new(plain.breaker_with("f", config())).layer(inner());

    let subscriber = Dispatch::new(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        ),
    );
    // Only the span registry (no console): it keeps no recorded fields, so the row shows what
    // the layer itself does when a span declares the field.
    let spans_only = Dispatch::new(tracing_subscriber::registry());

    let mut sub_row = |n: u32| {
        tracing::dispatcher::with_default(&subscriber, || {
            let span = tracing::info_span!("request");
            let _e = span.enter();
            for _ in 0..n {
                black_box(drive(&mut layer_sub));
            }
        })
    };
    let mut field_row = |n: u32| {
        tracing::dispatcher::with_default(&spans_only, || {
            let span = tracing::info_span!("request", circuit_breaker.name = tracing::field::Empty);
            let _e = span.enter();
            for _ in 0..n {
                black_box(drive(&mut layer_field));
            }
        })
    };
    support::interleaved(
        "telemetry",
        20_000,
        &mut [
            ("bare_service", &mut row(&mut bare)),
            ("layer", &mut row(&mut layer)),
            ("layer_otel_registered", &mut row(&mut layer_otel)),
            ("layer_timed", &mut row(&mut timed_layer)),
            ("layer_timed_otel", &mut row(&mut timed_otel)),
            ("layer_subscriber_info", &mut sub_row),
            ("layer_span_with_field", &mut field_row),
            ("layer_history_kept", &mut row(&mut layer_history)),
        ],
    );
    runtime.block_on(history.close());
    let _ = std::fs::remove_dir_all(dir);
}
