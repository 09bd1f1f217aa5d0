//! OpenTelemetry instruments for Breakwater's breakers, fallbacks and probes.
//!
//! [`BreakerMetrics`] registers instruments on an OpenTelemetry [`Meter`]: you bring the SDK and
//! the exporter (OTLP, Prometheus, stdout…). Everything but the duration histogram is an
//! *observable* instrument, read from the breakers' own atomics when the SDK collects: the hot
//! path pays nothing for them, and a breaker that leaves the registry (a family member evicted,
//! a breaker removed) leaves the export at the next collection.
//!
//! The call-duration histogram is the one instrument recorded per call, and only for breakers
//! with [`record_call_durations`](breakwater_core::ConfigBuilder::record_call_durations) on
//! (through [`Registry::observe_call_durations`]). OpenTelemetry has no observable histogram, so
//! each such call goes through the SDK's histogram: a lookup and a short lock inside the SDK,
//! no allocation. Series of that histogram stay as long as the SDK keeps them (it does not
//! forget attribute sets of synchronous instruments), up to its cardinality limit.
//!
//! # Names
//!
//! OpenTelemetry has no semantic convention for circuit breakers yet; these follow its general
//! naming rules in the `resilience.` namespace, and are the names that the ops API's
//! Prometheus text translates (`resilience.circuit_breaker.calls` is
//! `resilience_circuit_breaker_calls_total` there), so pushing OTLP and scraping `/metrics` give
//! the same series.
//!
//! | instrument | kind | unit | attributes |
//! |---|---|---|---|
//! | `resilience.circuit_breaker.calls` | counter | `{call}` | `circuit_breaker.name`, `circuit_breaker.outcome` = `success`, `failure`, `ignored`, `rejected` |
//! | `resilience.circuit_breaker.slow_calls` | counter | `{call}` | `circuit_breaker.name` |
//! | `resilience.circuit_breaker.state` | gauge, 1 for the current state and 0 for the others | `1` | `circuit_breaker.name`, `circuit_breaker.state` = `closed`, `open`, `half_open`, `forced_open`, `disabled`, `metrics_only` |
//! | `resilience.circuit_breaker.transitions` | counter | `{transition}` | `circuit_breaker.name`, `from_state`, `to_state`, `trigger` = `failure_ratio`, `slow_call_ratio`, `consecutive_failures`, `timer`, `probe`, `manual` |
//! | `resilience.circuit_breaker.failure_ratio` | gauge 0..1, absent while unknown | `1` | `circuit_breaker.name` |
//! | `resilience.circuit_breaker.slow_call_ratio` | gauge 0..1, absent while unknown | `1` | `circuit_breaker.name` |
//! | `resilience.circuit_breaker.failure_ratio_threshold`, `….slow_call_ratio_threshold` | gauge 0..1, absent while the policy is off | `1` | `circuit_breaker.name` |
//! | `resilience.circuit_breaker.buffered_calls` | gauge | `{call}` | `circuit_breaker.name` |
//! | `resilience.circuit_breaker.call.duration` | histogram (buckets: [`breakwater_core::DURATION_BUCKETS`]) | `s` | `circuit_breaker.name` |
//! | `resilience.fallback.invocations` | counter | `{invocation}` | `fallback.name`, `fallback.strategy` = `fixed`, `function`, `stale`, `backup`, `none` |
//! | `resilience.probe.results` | counter | `{run}` | `probe.name`, `probe.result` = `ok`, `slow`, `failed` |
//! | `resilience.probe.duration` | gauge: the latest run's latency | `s` | `probe.name` |
//!
//! Calls count from the breaker's creation or its last manual reset, as in the metrics JSON:
//! `success` + `failure` + `ignored` + `rejected` is the JSON's `totalRequests`; slow calls are
//! also successes or failures, so they are a counter of their own rather than an outcome.
//! `fallback.strategy = none` counts failures no strategy could answer.
//!
//! # Example
//!
//! ```
//! use breakwater::otel::BreakerMetrics;
//! use breakwater::Registry;
//! use opentelemetry::metrics::MeterProvider;
//! use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
//!
//! let exporter = InMemoryMetricExporter::default();
//! let provider = SdkMeterProvider::builder()
//!     .with_reader(PeriodicReader::builder(exporter.clone()).build())
//!     .build();
//!
//! let registry = Registry::new();
//! BreakerMetrics::builder(&registry).register(&provider.meter("breakwater"));
//!
//! registry.breaker("db").try_acquire().unwrap().success();
//! provider.force_flush().unwrap();
//! let exported = exporter.get_finished_metrics().unwrap();
//! let names: Vec<&str> = exported[0].scope_metrics().flat_map(|s| s.metrics()).map(|m| m.name()).collect();
//! assert!(names.contains(&"resilience.circuit_breaker.calls"));
//! ```

use std::sync::Arc;

use breakwater_core::{DURATION_BUCKETS, Registry, State};
use breakwater_tower::fallback::FallbackStats;
use breakwater_tower::health::HealthRegistry;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter};

/// Attribute: the breaker's name.
pub const CIRCUIT_BREAKER_NAME: &str = "circuit_breaker.name";
/// Attribute: a call's outcome.
pub const CIRCUIT_BREAKER_OUTCOME: &str = "circuit_breaker.outcome";
/// Attribute: a breaker state.
pub const CIRCUIT_BREAKER_STATE: &str = "circuit_breaker.state";

/// Registers Breakwater's instruments on a meter: see [`BreakerMetrics::builder`].
#[derive(Debug, Clone)]
pub struct BreakerMetrics {
    registry: Registry,
    health: Option<HealthRegistry>,
    fallbacks: Vec<(Arc<str>, FallbackStats)>,
}

/// The snake_case name of a state, as in the attributes.
pub fn state_value(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::ForcedOpen => "forced_open",
        State::Disabled => "disabled",
        State::MetricsOnly => "metrics_only",
    }
}

impl BreakerMetrics {
    /// Instruments for the breakers of `registry` (family members included).
    pub fn builder(registry: &Registry) -> Self {
        Self {
            registry: registry.clone(),
            health: None,
            fallbacks: Vec::new(),
        }
    }

    /// Also the probes of `health`.
    #[must_use]
    pub fn probes(mut self, health: &HealthRegistry) -> Self {
        self.health = Some(health.clone());
        self
    }

    /// Also the uses of a fallback layer's strategies, under `name` (a `FallbackLayer`'s
    /// [`stats`](breakwater_tower::fallback::FallbackLayer::stats)).
    #[must_use]
    pub fn fallback(mut self, name: &str, stats: FallbackStats) -> Self {
        self.fallbacks.push((Arc::from(name), stats));
        self
    }

    /// Registers the instruments on `meter`. They report for as long as the meter's provider
    /// lives. The duration histogram is fed through the registry's one
    /// [`observe_call_durations`](Registry::observe_call_durations) slot: if it is taken, the
    /// histogram stays empty (and `false` is returned).
    pub fn register(self, meter: &Meter) -> bool {
        register_breakers(&self.registry, meter);
        if !self.fallbacks.is_empty() {
            register_fallbacks(self.fallbacks, meter);
        }
        if let Some(health) = self.health {
            register_probes(health, meter);
        }
        let histogram = meter
            .f64_histogram("resilience.circuit_breaker.call.duration")
            .with_description("Durations of the calls the breakers recorded.")
            .with_unit("s")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        self.registry.observe_call_durations(move |name, d| {
            histogram.record(
                d.as_secs_f64(),
                &[KeyValue::new(CIRCUIT_BREAKER_NAME, name.clone())],
            );
        })
    }
}

fn name_attr(b: &breakwater_core::CircuitBreaker) -> KeyValue {
    KeyValue::new(CIRCUIT_BREAKER_NAME, b.shared_name().clone())
}

fn register_breakers(registry: &Registry, meter: &Meter) {
    let r = registry.clone();
    meter
        .u64_observable_counter("resilience.circuit_breaker.calls")
        .with_description("Calls by outcome; rejected calls were not permitted by the breaker.")
        .with_unit("{call}")
        .with_callback(move |obs| {
            for b in r.breakers() {
                let s = b.snapshot();
                for (outcome, n) in [
                    ("success", s.successes),
                    ("failure", s.failures),
                    ("ignored", s.ignored_calls),
                    ("rejected", s.not_permitted_calls),
                ] {
                    obs.observe(
                        n,
                        &[
                            name_attr(&b),
                            KeyValue::new(CIRCUIT_BREAKER_OUTCOME, outcome),
                        ],
                    );
                }
            }
        })
        .build();

    let r = registry.clone();
    meter
        .u64_observable_counter("resilience.circuit_breaker.slow_calls")
        .with_description("Calls slower than the slow-call threshold.")
        .with_unit("{call}")
        .with_callback(move |obs| {
            for b in r.breakers() {
                obs.observe(b.snapshot().slow_calls, &[name_attr(&b)]);
            }
        })
        .build();

    let r = registry.clone();
    meter
        .i64_observable_gauge("resilience.circuit_breaker.state")
        .with_description("The breaker's state: 1 for the current one, 0 for the others.")
        .with_unit("1")
        .with_callback(move |obs| {
            for b in r.breakers() {
                let current = b.state();
                for state in State::ALL {
                    obs.observe(
                        i64::from(state == current),
                        &[
                            name_attr(&b),
                            KeyValue::new(CIRCUIT_BREAKER_STATE, state_value(state)),
                        ],
                    );
                }
            }
        })
        .build();

    let r = registry.clone();
    meter
        .u64_observable_counter("resilience.circuit_breaker.transitions")
        .with_description("State transitions, by from and to state and what triggered them.")
        .with_unit("{transition}")
        .with_callback(move |obs| {
            for b in r.breakers() {
                for t in b.transition_counts() {
                    obs.observe(
                        t.count,
                        &[
                            name_attr(&b),
                            KeyValue::new("from_state", state_value(t.from)),
                            KeyValue::new("to_state", state_value(t.to)),
                            KeyValue::new("trigger", t.trigger.as_str()),
                        ],
                    );
                }
            }
        })
        .build();

    // Gauges 0..1 read from a snapshot, absent while `None` (a rate unknown, a policy off).
    type Ratio = fn(&breakwater_core::Snapshot) -> Option<f64>;
    for (name, description, ratio) in [
        (
            "resilience.circuit_breaker.failure_ratio",
            "The window's failure rate, 0..1 (absent while fewer than the minimum calls).",
            (|s: &breakwater_core::Snapshot| s.failure_rate) as Ratio,
        ),
        (
            "resilience.circuit_breaker.slow_call_ratio",
            "The window's slow-call rate, 0..1 (absent while fewer than the minimum calls).",
            |s| s.slow_call_rate,
        ),
        (
            "resilience.circuit_breaker.failure_ratio_threshold",
            "The failure rate that trips, 0..1 (absent while that policy is off).",
            |s| {
                s.config
                    .failure_rate_threshold
                    .map(|p| f64::from(p) / 100.0)
            },
        ),
        (
            "resilience.circuit_breaker.slow_call_ratio_threshold",
            "The slow-call rate that trips, 0..1 (absent while that policy is off).",
            |s| {
                s.config
                    .slow_call_rate_threshold
                    .map(|p| f64::from(p) / 100.0)
            },
        ),
    ] {
        let r = registry.clone();
        meter
            .f64_observable_gauge(name)
            .with_description(description)
            .with_unit("1")
            .with_callback(move |obs| {
                for b in r.breakers() {
                    if let Some(v) = ratio(&b.snapshot()) {
                        obs.observe(v, &[name_attr(&b)]);
                    }
                }
            })
            .build();
    }

    let r = registry.clone();
    meter
        .u64_observable_gauge("resilience.circuit_breaker.buffered_calls")
        .with_description("Calls in the sliding window.")
        .with_unit("{call}")
        .with_callback(move |obs| {
            for b in r.breakers() {
                obs.observe(b.snapshot().buffered_calls, &[name_attr(&b)]);
            }
        })
        .build();
}

fn register_fallbacks(fallbacks: Vec<(Arc<str>, FallbackStats)>, meter: &Meter) {
    meter
        .u64_observable_counter("resilience.fallback.invocations")
        .with_description(
            "Answers given by each fallback strategy; `none`: no strategy could answer.",
        )
        .with_unit("{invocation}")
        .with_callback(move |obs: &dyn AsyncInstrument<u64>| {
            for (name, stats) in &fallbacks {
                for strategy in ["fixed", "function", "stale", "backup", "none"] {
                    let n = if strategy == "none" {
                        stats.unanswered()
                    } else {
                        stats.uses(strategy)
                    };
                    obs.observe(
                        n,
                        &[
                            KeyValue::new("fallback.name", name.clone()),
                            KeyValue::new("fallback.strategy", strategy),
                        ],
                    );
                }
            }
        })
        .build();
}

fn register_probes(health: HealthRegistry, meter: &Meter) {
    let h = health.clone();
    meter
        .u64_observable_counter("resilience.probe.results")
        .with_description("Probe runs by result: ok, slow (succeeded, but slowly) or failed.")
        .with_unit("{run}")
        .with_callback(move |obs| {
            for p in h.probes() {
                let c = p.counts();
                let name: Arc<str> = Arc::from(p.name());
                for (result, n) in [("ok", c.ok), ("slow", c.slow), ("failed", c.failed)] {
                    obs.observe(
                        n,
                        &[
                            KeyValue::new("probe.name", name.clone()),
                            KeyValue::new("probe.result", result),
                        ],
                    );
                }
            }
        })
        .build();

    meter
        .f64_observable_gauge("resilience.probe.duration")
        .with_description("How long the probe's latest run took (the timeout, when it timed out).")
        .with_unit("s")
        .with_callback(move |obs| {
            for p in health.probes() {
                if let Some(last) = p.last() {
                    obs.observe(
                        last.latency.as_secs_f64(),
                        &[KeyValue::new("probe.name", p.name().to_owned())],
                    );
                }
            }
        })
        .build();
}
