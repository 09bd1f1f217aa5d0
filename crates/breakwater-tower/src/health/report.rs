//! The `application/health+json` document (draft-inadarei-api-health-check-06).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

/// The media type of health answers.
pub const HEALTH_JSON: &str = "application/health+json";

/// A health status: `pass`, `warn` or `fail`, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy.
    Pass,
    /// Healthy, with concerns (degraded).
    Warn,
    /// Unhealthy.
    Fail,
}

impl Status {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    /// The HTTP status of a health answer: 200 for pass and warn, 503 for fail.
    pub fn http_status(self) -> http::StatusCode {
        match self {
            Status::Fail => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::OK,
        }
    }
}

/// The result of one check, as a custom check returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Its status.
    pub status: Status,
    /// What was observed (a state, a latency, a count…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<serde_json::Value>,
    /// The unit of `observed_value` (`ms`, `s`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_unit: Option<String>,
    /// A message, e.g. the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

impl CheckResult {
    /// A result with just a status.
    pub fn new(status: Status) -> Self {
        Self {
            status,
            observed_value: None,
            observed_unit: None,
            output: None,
        }
    }

    /// Passing.
    pub fn pass() -> Self {
        Self::new(Status::Pass)
    }

    /// Degraded, saying why.
    pub fn warn(output: impl Into<String>) -> Self {
        Self::new(Status::Warn).with_output(output)
    }

    /// Failing, saying why.
    pub fn fail(output: impl Into<String>) -> Self {
        Self::new(Status::Fail).with_output(output)
    }

    /// With a message.
    #[must_use]
    pub fn with_output(mut self, output: impl Into<String>) -> Self {
        self.output = Some(output.into());
        self
    }

    /// With an observed value and its unit.
    #[must_use]
    pub fn with_observed(
        mut self,
        value: impl Into<serde_json::Value>,
        unit: Option<&str>,
    ) -> Self {
        self.observed_value = Some(value.into());
        self.observed_unit = unit.map(str::to_owned);
        self
    }
}

/// One entry of a report's `checks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckEntry {
    /// `circuitBreaker`, `probe`, `custom`, `store` or `system`.
    pub component_type: &'static str,
    /// Whether this check can fail readiness.
    pub critical: bool,
    /// The result.
    #[serde(flatten)]
    pub result: CheckResult,
    /// When the result was observed (RFC 3339).
    pub time: String,
}

/// A health answer: the overall status and each check, keyed `<name>:<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The overall status: `fail` only when a critical check fails, otherwise the worst of the
    /// checks with a non-critical failure counting as `warn`.
    pub status: Status,
    /// The checks, by `<name>:circuitBreaker`, `<name>:probe`, `<name>:custom`, `<kind>:store`
    /// and `uptime`.
    pub checks: BTreeMap<String, Vec<CheckEntry>>,
}

impl HealthReport {
    pub(crate) fn new() -> Self {
        Self {
            status: Status::Pass,
            checks: BTreeMap::new(),
        }
    }

    pub(crate) fn add(&mut self, key: String, entry: CheckEntry) {
        let effective = match (entry.result.status, entry.critical) {
            (Status::Fail, false) => Status::Warn,
            (s, _) => s,
        };
        self.status = self.status.max(effective);
        self.checks.entry(key).or_default().push(entry);
    }

    /// The document as JSON bytes.
    pub fn to_json(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// RFC 3339 with milliseconds, from ms since the epoch.
pub(crate) fn rfc3339(epoch_ms: u64) -> String {
    // RFC 3339 ends with the year 9999.
    let ms = epoch_ms.min(253_402_300_799_999);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: Status, critical: bool) -> CheckEntry {
        CheckEntry {
            component_type: "custom",
            critical,
            result: CheckResult::new(status),
            time: rfc3339(0),
        }
    }

    #[test]
    fn only_critical_failures_fail_the_report() {
        let mut r = HealthReport::new();
        r.add("a:custom".into(), entry(Status::Fail, false));
        assert_eq!(r.status, Status::Warn);
        r.add("b:custom".into(), entry(Status::Pass, true));
        assert_eq!(r.status, Status::Warn);
        r.add("c:custom".into(), entry(Status::Fail, true));
        assert_eq!(r.status, Status::Fail);
        assert_eq!(r.status.http_status(), 503);
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
