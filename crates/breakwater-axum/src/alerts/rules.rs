//! The alerting rules: which conditions raise an alert, at which severity, and when an alert
//! still firing escalates. Their JSON (camelCase, durations in ms) is what
//! `GET /v1/alerts/rules` shows and `PUT /v1/alerts/rules` replaces (unknown fields refused).

use serde::{Deserialize, Serialize};

/// Every rule, each with its own switch and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AlertRules {
    /// A circuit opened: `critical` for breakers whose health is critical, `high` for others.
    /// It stays active through HALF_OPEN and resolves when the circuit closes.
    pub circuit_open: bool,
    /// A circuit forced open or disabled by an operator: `low`.
    pub forced: bool,
    /// The "may open soon" warning: a CLOSED circuit whose known failure rate reached this
    /// fraction of its trip threshold (`medium`; 0 < f <= 1; `null`: off).
    pub failure_rate_warning: Option<f64>,
    /// The same for the slow-call rate.
    pub slow_call_rate_warning: Option<f64>,
    /// At least this many circuits open at once: `critical` (`null`: off; at least 2).
    pub circuits_open: Option<u32>,
    /// A probe failing (`high`).
    pub probe_failing: bool,
    /// A probe's latest run succeeded but slowly (`medium`).
    pub probe_slow: bool,
    /// A circuit that opened at least this many times within `flapping_window_ms`: `medium`
    /// (`null`: off; at least 2).
    pub flapping_openings: Option<u32>,
    /// The window of the flapping rule, in ms (at least 1,000).
    pub flapping_window_ms: u64,
    /// An alert still firing (not acknowledged) this long after it fired, or after its last
    /// escalation, rises one severity and is told again (`null`: never; at least 1,000 ms).
    pub escalate_after_ms: Option<u64>,
    /// Error-budget burn-rate rules for breakers with an SLO objective in their config (the
    /// SRE workbook's multi-window, multi-burn-rate alerts): each fires when the error rate
    /// over both its long and its short window is at least `burnRate` times the budget
    /// (1 − objective). From the breakers' history (with `OpsApi::history`); one alert per
    /// breaker, at the severity of the most severe rule that holds (it rises when a faster
    /// burn joins). Default: 14.4× over 1 h and 5 min (`CRITICAL`: 2 % of a 30-day
    /// budget in an hour), 6× over 6 h and 30 min (`HIGH`: 5 % in six hours). `[]`: off.
    pub slo_burn_rates: Vec<BurnRate>,
}

/// One burn-rate rule: `burnRate` times the error budget over `longMinutes` and over
/// `shortMinutes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BurnRate {
    /// How many times the budget's rate.
    pub burn_rate: f64,
    /// The long window, minutes (at most 1,440: the history kept in memory).
    pub long_minutes: u32,
    /// The short window, minutes (less than the long one).
    pub short_minutes: u32,
    /// The alert's severity.
    pub severity: super::Severity,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            circuit_open: true,
            forced: true,
            failure_rate_warning: Some(0.5),
            slow_call_rate_warning: Some(0.5),
            circuits_open: Some(2),
            probe_failing: true,
            probe_slow: true,
            flapping_openings: Some(3),
            flapping_window_ms: 600_000,
            escalate_after_ms: Some(900_000),
            slo_burn_rates: vec![
                BurnRate {
                    burn_rate: 14.4,
                    long_minutes: 60,
                    short_minutes: 5,
                    severity: super::Severity::Critical,
                },
                BurnRate {
                    burn_rate: 6.0,
                    long_minutes: 360,
                    short_minutes: 30,
                    severity: super::Severity::High,
                },
            ],
        }
    }
}

impl AlertRules {
    /// Checks every threshold; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("failureRateWarning", self.failure_rate_warning),
            ("slowCallRateWarning", self.slow_call_rate_warning),
        ] {
            if let Some(f) = v
                && !(f > 0.0 && f <= 1.0)
            {
                return Err(format!("`{field}` must be above 0 and at most 1, not {f}"));
            }
        }
        if let Some(n) = self.circuits_open
            && n < 2
        {
            return Err(format!("`circuitsOpen` must be at least 2, not {n}"));
        }
        if let Some(n) = self.flapping_openings
            && n < 2
        {
            return Err(format!("`flappingOpenings` must be at least 2, not {n}"));
        }
        if self.flapping_window_ms < 1_000 {
            return Err(format!(
                "`flappingWindowMs` must be at least 1000, not {}",
                self.flapping_window_ms
            ));
        }
        if let Some(ms) = self.escalate_after_ms
            && ms < 1_000
        {
            return Err(format!("`escalateAfterMs` must be at least 1000, not {ms}"));
        }
        for (i, b) in self.slo_burn_rates.iter().enumerate() {
            if !(b.burn_rate > 0.0 && b.burn_rate.is_finite()) {
                return Err(format!("`sloBurnRates[{i}].burnRate` must be above 0"));
            }
            if b.long_minutes == 0 || b.long_minutes > 1_440 {
                return Err(format!("`sloBurnRates[{i}].longMinutes` must be 1 to 1440"));
            }
            if b.short_minutes == 0 || b.short_minutes >= b.long_minutes {
                return Err(format!(
                    "`sloBurnRates[{i}].shortMinutes` must be at least 1 and below longMinutes"
                ));
            }
        }
        Ok(())
    }
}

/// The rule an alert comes from (its JSON name is the rule's field name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    /// See [`AlertRules::circuit_open`].
    CircuitOpen,
    /// See [`AlertRules::forced`].
    Forced,
    /// See [`AlertRules::failure_rate_warning`].
    FailureRateWarning,
    /// See [`AlertRules::slow_call_rate_warning`].
    SlowCallRateWarning,
    /// See [`AlertRules::circuits_open`] (its alert's circuit is `*`).
    CircuitsOpen,
    /// See [`AlertRules::probe_failing`] (its alert's circuit is the probe's name).
    ProbeFailing,
    /// See [`AlertRules::probe_slow`].
    ProbeSlow,
    /// See [`AlertRules::flapping_openings`].
    Flapping,
    /// See [`AlertRules::slo_burn_rates`].
    SloBurnRate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        assert_eq!(AlertRules::default().validate(), Ok(()));
        let bad = |f: fn(&mut AlertRules)| {
            let mut r = AlertRules::default();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(bad(|r| r.failure_rate_warning = Some(0.0)).contains("failureRateWarning"));
        assert!(bad(|r| r.failure_rate_warning = Some(1.5)).contains("failureRateWarning"));
        assert!(bad(|r| r.slow_call_rate_warning = Some(f64::NAN)).contains("slowCallRateWarning"));
        assert!(bad(|r| r.circuits_open = Some(1)).contains("circuitsOpen"));
        assert!(bad(|r| r.flapping_openings = Some(1)).contains("flappingOpenings"));
        assert!(bad(|r| r.flapping_window_ms = 10).contains("flappingWindowMs"));
        assert!(bad(|r| r.escalate_after_ms = Some(5)).contains("escalateAfterMs"));
        let r = AlertRules {
            failure_rate_warning: Some(1.0),
            circuits_open: None,
            escalate_after_ms: None,
            ..AlertRules::default()
        };
        assert_eq!(r.validate(), Ok(()));
    }
}
