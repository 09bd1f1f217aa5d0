//! Prometheus text exposition of a registry.
//!
//! The names are the OpenTelemetry → Prometheus translation of Breakwater's instruments, so a
//! scrape of `/metrics` and an OTLP push give the same series. Every series carries
//! `circuit_breaker_name`; state names are snake_case (`closed`, `half_open`, …).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `resilience_circuit_breaker_state` | gauge, 1 for the current state | `circuit_breaker_state` |
//! | `resilience_circuit_breaker_calls_total` | counter | `circuit_breaker_outcome` = `success`, `failure`, `ignored`, `rejected` |
//! | `resilience_circuit_breaker_slow_calls_total` | counter | |
//! | `resilience_circuit_breaker_failure_ratio` | gauge 0..1, absent while unknown | |
//! | `resilience_circuit_breaker_slow_call_ratio` | gauge 0..1, absent while unknown | |
//! | `resilience_circuit_breaker_failure_ratio_threshold` | gauge 0..1, absent while that policy is off | |
//! | `resilience_circuit_breaker_slow_call_ratio_threshold` | gauge 0..1, absent while that policy is off | |
//! | `resilience_circuit_breaker_buffered_calls` | gauge | |
//! | `resilience_circuit_breaker_transitions_total` | counter | `from_state`, `to_state`, `trigger` |
//! | `resilience_circuit_breaker_call_duration_seconds` | histogram of recorded call durations (`record_call_durations`; absent until one) | |
//!
//! Counters count from the breaker's creation or its last manual reset. The ops API also serves
//! its probes ([`ProbeCollector`]) and the fallbacks it was given ([`FallbackCollector`]):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `resilience_probe_results_total` | counter | `probe_name`, `probe_result` = `ok`, `slow`, `failed` |
//! | `resilience_probe_duration_seconds` | gauge: the latest run's latency | `probe_name` |
//! | `resilience_fallback_invocations_total` | counter | `fallback_name`, `fallback_strategy` = `fixed`, `function`, `stale`, `backup`, `none` |
//!
//! With breakers shared across replicas, the state store's counters ([`StoreCollector`]), each
//! labelled `store` (`redis`) and `replica`:
//!
//! | metric | type | what |
//! |---|---|---|
//! | `resilience_state_store_up` | gauge 0/1 | subscribed and answering |
//! | `resilience_state_store_errors_total` | counter | failed store calls (timeouts included) |
//! | `resilience_state_store_timeouts_total` | counter | store calls that did not answer in time |
//! | `resilience_state_store_reconnects_total` | counter | subscriptions made again |
//! | `resilience_state_store_published_total` | counter | local transitions published |
//! | `resilience_state_store_adopted_total` | counter | other replicas' states adopted |
//! | `resilience_state_store_dropped_events_total` | counter | local events lost to a full queue |

use breakwater_core::fleet::{StoreStats, StoreStatsView};
use breakwater_core::{DURATION_BUCKETS, Registry, Snapshot, State};
use breakwater_tower::fallback::FallbackStats;
use breakwater_tower::health::HealthRegistry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label value of a state.
pub fn state_label(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::ForcedOpen => "forced_open",
        State::Disabled => "disabled",
        State::MetricsOnly => "metrics_only",
    }
}

/// A `prometheus-client` collector reading a breaker registry at scrape time: register it in
/// a `prometheus_client::registry::Registry` of your own to serve these series beside others.
#[derive(Debug, Clone)]
pub struct RegistryCollector {
    registry: Registry,
}

impl RegistryCollector {
    /// A collector over `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            registry: registry.clone(),
        }
    }
}

const NAME: &str = "circuit_breaker_name";

struct Breaker {
    snapshot: Snapshot,
    transitions: Vec<breakwater_core::TransitionCount>,
    durations: breakwater_core::DurationHistogram,
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // One consistent read per breaker per scrape.
        let breakers: Vec<Breaker> = self
            .registry
            .breakers()
            .iter()
            .map(|b| Breaker {
                snapshot: b.snapshot(),
                transitions: b.transition_counts(),
                durations: b.duration_histogram(),
            })
            .collect();

        let mut family = encoder.encode_descriptor(
            "resilience_circuit_breaker_state",
            "The breaker's state: 1 for the current one, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for b in &breakers {
            let name = b.snapshot.name.as_str();
            for state in State::ALL {
                let labels = [(NAME, name), ("circuit_breaker_state", state_label(state))];
                let value = i64::from(state == b.snapshot.state);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "resilience_circuit_breaker_calls",
            "Calls by outcome; rejected calls were not permitted by the breaker.",
            None,
            MetricType::Counter,
        )?;
        for b in &breakers {
            let s = &b.snapshot;
            for (outcome, n) in [
                ("success", s.successes),
                ("failure", s.failures),
                ("ignored", s.ignored_calls),
                ("rejected", s.not_permitted_calls),
            ] {
                let labels = [
                    (NAME, s.name.as_str()),
                    ("circuit_breaker_outcome", outcome),
                ];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "resilience_circuit_breaker_slow_calls",
            "Calls slower than the slow-call threshold.",
            None,
            MetricType::Counter,
        )?;
        for b in &breakers {
            let labels = [(NAME, b.snapshot.name.as_str())];
            ConstCounter::new(b.snapshot.slow_calls).encode(family.encode_family(&labels)?)?;
        }

        for (metric, help, rate) in [
            (
                "resilience_circuit_breaker_failure_ratio",
                "The window's failure rate, 0..1 (absent while fewer than the minimum calls).",
                (|s: &Snapshot| s.failure_rate) as fn(&Snapshot) -> Option<f64>,
            ),
            (
                "resilience_circuit_breaker_slow_call_ratio",
                "The window's slow-call rate, 0..1 (absent while fewer than the minimum calls).",
                |s: &Snapshot| s.slow_call_rate,
            ),
        ] {
            let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for b in &breakers {
                if let Some(r) = rate(&b.snapshot) {
                    let labels = [(NAME, b.snapshot.name.as_str())];
                    ConstGauge::new(r).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        for (metric, help, threshold) in [
            (
                "resilience_circuit_breaker_failure_ratio_threshold",
                "The failure rate that trips, 0..1 (absent while that policy is off).",
                (|s: &Snapshot| s.config.failure_rate_threshold) as fn(&Snapshot) -> Option<f32>,
            ),
            (
                "resilience_circuit_breaker_slow_call_ratio_threshold",
                "The slow-call rate that trips, 0..1 (absent while that policy is off).",
                |s: &Snapshot| s.config.slow_call_rate_threshold,
            ),
        ] {
            let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for b in &breakers {
                if let Some(percent) = threshold(&b.snapshot) {
                    let labels = [(NAME, b.snapshot.name.as_str())];
                    ConstGauge::new(f64::from(percent) / 100.0)
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "resilience_circuit_breaker_buffered_calls",
            "Calls in the sliding window.",
            None,
            MetricType::Gauge,
        )?;
        for b in &breakers {
            let labels = [(NAME, b.snapshot.name.as_str())];
            let n = i64::try_from(b.snapshot.buffered_calls).unwrap_or(i64::MAX);
            ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "resilience_circuit_breaker_transitions",
            "State transitions, by from and to state and what triggered them.",
            None,
            MetricType::Counter,
        )?;
        for b in &breakers {
            for t in &b.transitions {
                let labels = [
                    (NAME, b.snapshot.name.as_str()),
                    ("from_state", state_label(t.from)),
                    ("to_state", state_label(t.to)),
                    ("trigger", t.trigger.as_str()),
                ];
                ConstCounter::new(t.count).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "resilience_circuit_breaker_call_duration",
            "Durations of the calls the breaker recorded (record_call_durations).",
            Some(&prometheus_client::registry::Unit::Seconds),
            MetricType::Histogram,
        )?;
        for b in breakers.iter().filter(|b| b.durations.count > 0) {
            let labels = [(NAME, b.snapshot.name.as_str())];
            let h = &b.durations;
            let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
            let mut previous = 0;
            for (bound, cumulative) in DURATION_BUCKETS.iter().zip(h.cumulative) {
                // prometheus-client takes per-bucket counts and accumulates them.
                buckets.push((*bound, cumulative - previous));
                previous = cumulative;
            }
            buckets.push((f64::INFINITY, h.count - previous));
            family
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    h.sum.as_secs_f64(),
                    h.count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// A `prometheus-client` collector reading a health registry's probes at scrape time.
#[derive(Debug, Clone)]
pub struct ProbeCollector {
    health: HealthRegistry,
}

impl ProbeCollector {
    /// A collector over the probes of `health`.
    pub fn new(health: &HealthRegistry) -> Self {
        Self {
            health: health.clone(),
        }
    }
}

impl Collector for ProbeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let probes = self.health.probes();
        let mut family = encoder.encode_descriptor(
            "resilience_probe_results",
            "Probe runs by result: ok, slow (succeeded, but slowly) or failed.",
            None,
            MetricType::Counter,
        )?;
        for p in &probes {
            let c = p.counts();
            for (result, n) in [("ok", c.ok), ("slow", c.slow), ("failed", c.failed)] {
                let labels = [("probe_name", p.name()), ("probe_result", result)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "resilience_probe_duration",
            "How long the probe's latest run took (the timeout, when it timed out).",
            Some(&prometheus_client::registry::Unit::Seconds),
            MetricType::Gauge,
        )?;
        for p in &probes {
            if let Some(last) = p.last() {
                let labels = [("probe_name", p.name())];
                ConstGauge::new(last.latency.as_secs_f64())
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A `prometheus-client` collector reading fallback layers' counters at scrape time, each under
/// a name of your choice.
#[derive(Debug, Clone, Default)]
pub struct FallbackCollector {
    fallbacks: Vec<(String, FallbackStats)>,
}

impl FallbackCollector {
    /// No fallbacks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a fallback layer's counters ([`FallbackLayer::stats`](breakwater_tower::fallback::FallbackLayer::stats)).
    #[must_use]
    pub fn fallback(mut self, name: &str, stats: FallbackStats) -> Self {
        self.fallbacks.push((name.to_owned(), stats));
        self
    }

    /// Whether it has no fallback to report.
    pub fn is_empty(&self) -> bool {
        self.fallbacks.is_empty()
    }
}

impl Collector for FallbackCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "resilience_fallback_invocations",
            "Answers given by each fallback strategy; `none`: no strategy could answer.",
            None,
            MetricType::Counter,
        )?;
        for (name, stats) in &self.fallbacks {
            for strategy in ["fixed", "function", "stale", "backup", "none"] {
                let n = if strategy == "none" {
                    stats.unanswered()
                } else {
                    stats.uses(strategy)
                };
                let labels = [
                    ("fallback_name", name.as_str()),
                    ("fallback_strategy", strategy),
                ];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// A collector shared with whoever gave it (`OpsApi::collector`).
#[derive(Debug)]
pub(crate) struct Shared(pub(crate) std::sync::Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

/// One counter of a store's view.
type StoreCount = fn(&StoreStatsView) -> u64;

/// A `prometheus-client` collector reading fleets' state-store counters at scrape time.
#[derive(Debug, Clone, Default)]
pub struct StoreCollector {
    stores: Vec<StoreStats>,
}

impl StoreCollector {
    /// A collector over these stores' counters.
    pub fn new(stores: Vec<StoreStats>) -> Self {
        Self { stores }
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let views: Vec<_> = self.stores.iter().map(StoreStats::view).collect();
        let mut family = encoder.encode_descriptor(
            "resilience_state_store_up",
            "1 while the state store is subscribed and answering, 0 while replicas use local state.",
            None,
            MetricType::Gauge,
        )?;
        for v in &views {
            let labels = [("store", v.store), ("replica", v.replica.as_str())];
            ConstGauge::new(i64::from(v.healthy)).encode(family.encode_family(&labels)?)?;
        }
        let counters: [(&str, &str, StoreCount); 6] = [
            (
                "errors",
                "Failed state-store calls, timeouts included.",
                |v| v.errors,
            ),
            (
                "timeouts",
                "State-store calls that did not answer in time.",
                |v| v.timeouts,
            ),
            (
                "reconnects",
                "State-store subscriptions made again after one was lost.",
                |v| v.reconnects,
            ),
            (
                "published",
                "Local transitions published to the fleet.",
                |v| v.published,
            ),
            ("adopted", "Other replicas' states adopted.", |v| v.adopted),
            (
                "dropped_events",
                "Local events lost to a full queue.",
                |v| v.dropped,
            ),
        ];
        for (name, help, value) in counters {
            let name = format!("resilience_state_store_{name}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for v in &views {
                let labels = [("store", v.store), ("replica", v.replica.as_str())];
                ConstCounter::new(value(v)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The whole exposition of `registry` (OpenMetrics text, ending with `# EOF`).
///
/// ```
/// use breakwater::Registry;
///
/// let registry = Registry::new();
/// registry.breaker("db").try_acquire().unwrap().success();
/// let text = breakwater::ops::prometheus::render(&registry);
/// assert!(text.contains(
///     "resilience_circuit_breaker_calls_total{circuit_breaker_name=\"db\",circuit_breaker_outcome=\"success\"} 1"
/// ));
/// ```
pub fn render(registry: &Registry) -> String {
    let mut prom = prometheus_client::registry::Registry::default();
    prom.register_collector(Box::new(RegistryCollector::new(registry)));
    encode(&prom)
}

/// The exposition of a `prometheus-client` registry (OpenMetrics text, ending with `# EOF`).
pub fn encode(prom: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, prom).is_err() {
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}
