//! The guards' counters on `/metrics` (a `prometheus-client` collector; give it to
//! `OpsApi::collector`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `resilience_auth_guard_failures_total` | counter | `guard_name` |
//! | `resilience_auth_guard_blocked_total` | counter: clients that reached the limit | `guard_name` |
//! | `resilience_auth_guard_refused_total` | counter: requests refused with 429 | `guard_name` |
//! | `resilience_auth_guard_untracked_total` | counter: failures not counted, the map full | `guard_name` |
//! | `resilience_auth_guard_clients` | gauge | `guard_name` |
//! | `resilience_rate_limiter_calls_total` | counter | `rate_limiter_name`, `outcome` = `permitted`, `rejected` |
//! | `resilience_rate_limiter_clients` | gauge | `rate_limiter_name` |

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::{AuthGuard, AuthGuardCounts, RateLimit};

/// Reads guards' counters at scrape time.
#[derive(Debug, Clone, Default)]
pub struct GuardCollector {
    auth: Vec<(String, AuthGuard)>,
    rate: Vec<(String, RateLimit)>,
}

impl GuardCollector {
    /// No guards yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an authentication-failure guard under `name`.
    #[must_use]
    pub fn auth(mut self, name: &str, guard: &AuthGuard) -> Self {
        self.auth.push((name.to_owned(), guard.clone()));
        self
    }

    /// Adds a rate limit under `name`.
    #[must_use]
    pub fn rate_limit(mut self, name: &str, limit: &RateLimit) -> Self {
        self.rate.push((name.to_owned(), limit.clone()));
        self
    }
}

type AuthCount = fn(&AuthGuardCounts) -> u64;

impl Collector for GuardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<(&str, AuthGuardCounts)> = self
            .auth
            .iter()
            .map(|(n, g)| (n.as_str(), g.counts()))
            .collect();
        let counters: [(&str, &str, AuthCount); 4] = [
            (
                "failures",
                "Authentication failures counted per client.",
                |c| c.failures,
            ),
            ("blocked", "Clients that reached the failure limit.", |c| {
                c.blocked
            }),
            (
                "refused",
                "Requests refused with 429 after too many failures.",
                |c| c.refused,
            ),
            (
                "untracked",
                "Failures not counted: the map was full.",
                |c| c.untracked,
            ),
        ];
        for (name, help, value) in counters {
            let name = format!("resilience_auth_guard_{name}");
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (guard, c) in &counts {
                ConstCounter::new(value(c))
                    .encode(family.encode_family(&[("guard_name", *guard)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "resilience_auth_guard_clients",
            "Clients tracked.",
            None,
            MetricType::Gauge,
        )?;
        for (guard, c) in &counts {
            ConstGauge::new(c.clients as i64)
                .encode(family.encode_family(&[("guard_name", *guard)])?)?;
        }
        let rates: Vec<_> = self
            .rate
            .iter()
            .map(|(n, r)| (n.as_str(), r.counts()))
            .collect();
        let mut family = encoder.encode_descriptor(
            "resilience_rate_limiter_calls",
            "Requests by outcome: permitted, or rejected with 429.",
            None,
            MetricType::Counter,
        )?;
        for (name, c) in &rates {
            for (outcome, n) in [("permitted", c.permitted), ("rejected", c.limited)] {
                let labels = [("rate_limiter_name", *name), ("outcome", outcome)];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "resilience_rate_limiter_clients",
            "Clients with limiter state.",
            None,
            MetricType::Gauge,
        )?;
        for (name, c) in &rates {
            ConstGauge::new(c.clients as i64)
                .encode(family.encode_family(&[("rate_limiter_name", *name)])?)?;
        }
        Ok(())
    }
}
