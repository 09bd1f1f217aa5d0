//! The gateway's telemetry: logs on the console (`RUST_LOG`, default `info`), and with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, metrics and traces exported over OTLP/HTTP.
//!
//! Metrics are Breakwater's instruments (`breakwater::otel`) for the gateway's breakers, its
//! fallback and its probe, pushed every `OTEL_METRIC_EXPORT_INTERVAL`. Traces are the request
//! spans (`tracing-opentelemetry`), with the breaker that let each request through or refused
//! it (`circuit_breaker.name`, `circuit_breaker.state`) and the fallback that answered
//! (`fallback.strategy`). Without the variable, no exporter is built and nothing runs.

use breakwater::Registry;
use breakwater::otel::BreakerMetrics;
use breakwater::tower::fallback::FallbackStats;
use breakwater::tower::health::HealthRegistry;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::options::Otlp;

fn protocol(otlp: &Otlp) -> Protocol {
    if otlp.json {
        Protocol::HttpJson
    } else {
        Protocol::HttpBinary
    }
}

fn resource(otlp: &Otlp) -> Resource {
    Resource::builder()
        .with_service_name(otlp.service_name.clone())
        .build()
}

/// A meter provider pushing Breakwater's instruments to the collector every interval.
pub(crate) fn start_metrics(
    otlp: &Otlp,
    registry: &Registry,
    health: &HealthRegistry,
    fallback: FallbackStats,
) -> Result<SdkMeterProvider, String> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(protocol(otlp))
        .with_endpoint(format!("{}/v1/metrics", otlp.endpoint))
        .build()
        .map_err(|e| format!("cannot build the OTLP metric exporter: {e}"))?;
    let provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(otlp.interval)
                .build(),
        )
        .with_resource(resource(otlp))
        .build();
    BreakerMetrics::builder(registry)
        .probes(health)
        .fallback("gateway", fallback)
        .register(&provider.meter("breakwater"));
    Ok(provider)
}

/// The process's `tracing` subscriber: console logs filtered by `RUST_LOG`, and with `otlp` the
/// spans exported as traces. Returns the tracer provider, to flush at shutdown.
pub(crate) fn init_tracing(otlp: Option<&Otlp>) -> Result<Option<SdkTracerProvider>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let console = tracing_subscriber::fmt::layer().with_target(true);
    let Some(otlp) = otlp else {
        tracing_subscriber::registry()
            .with(filter)
            .with(console)
            .try_init()
            .map_err(|e| e.to_string())?;
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol(otlp))
        .with_endpoint(format!("{}/v1/traces", otlp.endpoint))
        .build()
        .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(otlp))
        .build();
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("breakwater-gateway"));
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(traces)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Some(provider))
}
