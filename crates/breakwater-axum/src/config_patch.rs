//! A partial configuration change from JSON: the fields of [`ConfigView`] in camelCase.
//!
//! [`ConfigView`]: breakwater_core::ConfigView

use std::time::Duration;

use breakwater_core::{Config, ConfigError, HealthMode, SlidingWindow, State, WaitInOpen};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Every field a change may name.
pub const FIELDS: [&str; 18] = [
    "failureRateThreshold",
    "slowCallRateThreshold",
    "slowCallDurationThresholdMs",
    "consecutiveFailures",
    "slidingWindowType",
    "slidingWindowSize",
    "minimumNumberOfCalls",
    "permittedCallsInHalfOpen",
    "successThreshold",
    "maxWaitInHalfOpenMs",
    "stateAfterMaxWaitInHalfOpen",
    "waitInOpenMs",
    "maxWaitInOpenMs",
    "waitInOpenMultiplier",
    "waitInOpenJitter",
    "automaticTransitionToHalfOpen",
    "recordCallDurations",
    "health",
];

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_config(format!("invalid `{field}`: {message}"))
}

/// The JSON name of a builder field (`wait_in_open` → `waitInOpenMs`).
pub fn json_field(field: &str) -> String {
    let ms = matches!(
        field,
        "slow_call_duration_threshold" | "max_wait_in_half_open" | "wait_in_open"
    );
    let mut out = String::with_capacity(field.len() + 2);
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    if ms {
        out.push_str("Ms");
    }
    if field == "sliding_window" {
        out.push_str("Type");
    }
    out
}

/// A [`ConfigError`] as the API's 400 `INVALID_CONFIG`, naming the JSON field.
pub fn config_error(e: &ConfigError) -> ApiError {
    invalid(&json_field(e.field()), e.message())
}

/// A probe setting's [`ConfigError`] as 400 `INVALID_CONFIG`, naming the JSON field.
pub fn probe_error(e: &ConfigError) -> ApiError {
    let field = match e.field() {
        "interval" => "intervalMs".to_owned(),
        "timeout" => "timeoutMs".to_owned(),
        other => json_field(other),
    };
    invalid(&field, e.message())
}

fn number(field: &str, v: &Value) -> Result<f64, ApiError> {
    v.as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| invalid(field, "must be a number"))
}

fn unsigned(field: &str, v: &Value) -> Result<u64, ApiError> {
    v.as_u64()
        .ok_or_else(|| invalid(field, "must be a non-negative integer"))
}

fn small(field: &str, v: &Value) -> Result<u32, ApiError> {
    u32::try_from(unsigned(field, v)?).map_err(|_| invalid(field, "is too large"))
}

fn flag(field: &str, v: &Value) -> Result<bool, ApiError> {
    v.as_bool()
        .ok_or_else(|| invalid(field, "must be true or false"))
}

fn ms(field: &str, v: &Value) -> Result<Duration, ApiError> {
    Ok(Duration::from_millis(unsigned(field, v)?))
}

fn percent(field: &str, v: &Value) -> Result<f32, ApiError> {
    Ok(number(field, v)? as f32)
}

/// `current` with the fields of `patch` changed. Unknown fields, wrong types and invalid values
/// are refused naming the field.
pub fn apply(current: &Config, patch: &Map<String, Value>) -> Result<Config, ApiError> {
    if let Some(unknown) = patch.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(
            unknown,
            format!("unknown field; known: {}", FIELDS.join(", ")),
        ));
    }
    let mut b = current.to_builder();
    let get = |k: &str| patch.get(k);
    if let Some(v) = get("failureRateThreshold") {
        b = match v {
            Value::Null => b.no_failure_rate_threshold(),
            v => b.failure_rate_threshold(percent("failureRateThreshold", v)?),
        };
    }
    if let Some(v) = get("slowCallRateThreshold") {
        b = match v {
            Value::Null => b.no_slow_call_rate_threshold(),
            v => b.slow_call_rate_threshold(percent("slowCallRateThreshold", v)?),
        };
    }
    if let Some(v) = get("slowCallDurationThresholdMs") {
        b = b.slow_call_duration_threshold(ms("slowCallDurationThresholdMs", v)?);
    }
    if let Some(v) = get("consecutiveFailures") {
        b = match v {
            Value::Null => b.no_consecutive_failures(),
            v => b.consecutive_failures(small("consecutiveFailures", v)?),
        };
    }
    if get("slidingWindowType").is_some() || get("slidingWindowSize").is_some() {
        let kind = match get("slidingWindowType") {
            None => match current.sliding_window() {
                SlidingWindow::Count(_) => "COUNT_BASED",
                SlidingWindow::Time(_) => "TIME_BASED",
            },
            Some(Value::String(s)) if s == "COUNT_BASED" || s == "TIME_BASED" => s.as_str(),
            Some(_) => {
                return Err(invalid(
                    "slidingWindowType",
                    "must be COUNT_BASED or TIME_BASED",
                ));
            }
        };
        let size = match get("slidingWindowSize") {
            Some(v) => unsigned("slidingWindowSize", v)?,
            None => match current.sliding_window() {
                SlidingWindow::Count(n) => u64::from(n),
                SlidingWindow::Time(d) => d.as_secs(),
            },
        };
        let window = if kind == "COUNT_BASED" {
            SlidingWindow::Count(
                u32::try_from(size).map_err(|_| invalid("slidingWindowSize", "is too large"))?,
            )
        } else {
            SlidingWindow::Time(Duration::from_secs(size))
        };
        b = b.sliding_window(window);
    }
    if let Some(v) = get("minimumNumberOfCalls") {
        b = b.minimum_number_of_calls(small("minimumNumberOfCalls", v)?);
    }
    if let Some(v) = get("permittedCallsInHalfOpen") {
        b = b.permitted_calls_in_half_open(small("permittedCallsInHalfOpen", v)?);
    }
    if let Some(v) = get("successThreshold") {
        b = match v {
            Value::Null => b.no_success_threshold(),
            v => b.success_threshold(small("successThreshold", v)?),
        };
    }
    if let Some(v) = get("maxWaitInHalfOpenMs") {
        b = match v {
            Value::Null => b.no_max_wait_in_half_open(),
            v => b.max_wait_in_half_open(ms("maxWaitInHalfOpenMs", v)?),
        };
    }
    if let Some(v) = get("stateAfterMaxWaitInHalfOpen") {
        let state = match v.as_str() {
            Some("OPEN") => State::Open,
            Some("CLOSED") => State::Closed,
            _ => {
                return Err(invalid(
                    "stateAfterMaxWaitInHalfOpen",
                    "must be OPEN or CLOSED",
                ));
            }
        };
        b = b.state_after_max_wait_in_half_open(state);
    }
    let wait_fields = [
        "waitInOpenMs",
        "maxWaitInOpenMs",
        "waitInOpenMultiplier",
        "waitInOpenJitter",
    ];
    if wait_fields.iter().any(|f| get(f).is_some()) {
        let view = current.view();
        let initial = match get("waitInOpenMs") {
            Some(v) => ms("waitInOpenMs", v)?,
            None => Duration::from_millis(view.wait_in_open_ms),
        };
        let multiplier = match get("waitInOpenMultiplier") {
            Some(v) => number("waitInOpenMultiplier", v)?,
            None => view.wait_in_open_multiplier,
        };
        let jitter = match get("waitInOpenJitter") {
            Some(v) => number("waitInOpenJitter", v)?,
            None => view.wait_in_open_jitter,
        };
        let max = match get("maxWaitInOpenMs") {
            Some(v) => ms("maxWaitInOpenMs", v)?,
            // A fixed wait changed alone stays fixed.
            None if matches!(current.wait_in_open(), WaitInOpen::Fixed(_)) => initial,
            None => Duration::from_millis(view.max_wait_in_open_ms),
        };
        let wait = if multiplier == 1.0 && jitter == 0.0 && max == initial {
            WaitInOpen::Fixed(initial)
        } else {
            WaitInOpen::exponential(initial, multiplier, max).with_jitter(jitter)
        };
        b = b.wait_in_open(wait);
    }
    if let Some(v) = get("automaticTransitionToHalfOpen") {
        b = b.automatic_transition_to_half_open(flag("automaticTransitionToHalfOpen", v)?);
    }
    if let Some(v) = get("recordCallDurations") {
        b = b.record_call_durations(flag("recordCallDurations", v)?);
    }
    if let Some(v) = get("health") {
        let mode = match v.as_str() {
            Some("ignore") => HealthMode::Ignore,
            Some("report") => HealthMode::Report,
            Some("critical") => HealthMode::Critical,
            _ => return Err(invalid("health", "must be ignore, report or critical")),
        };
        b = b.health(mode);
    }
    b.build().map_err(|e| config_error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn builder_fields_become_json_fields() {
        assert_eq!(json_field("failure_rate_threshold"), "failureRateThreshold");
        assert_eq!(json_field("wait_in_open"), "waitInOpenMs");
        assert_eq!(json_field("sliding_window"), "slidingWindowType");
    }

    #[test]
    fn partial_changes_keep_the_rest() {
        let current = Config::builder().consecutive_failures(5).build().unwrap();
        let c = apply(
            &current,
            &patch(serde_json::json!({"failureRateThreshold": 25, "waitInOpenMs": 3000})),
        )
        .unwrap();
        assert_eq!(c.failure_rate_threshold(), Some(25.0));
        assert_eq!(c.consecutive_failures(), Some(5));
        assert_eq!(*c.wait_in_open(), WaitInOpen::Fixed(Duration::from_secs(3)));
    }

    #[test]
    fn bad_fields_are_named() {
        let current = Config::default();
        for (body, field) in [
            (serde_json::json!({"nope": 1}), "`nope`"),
            (
                serde_json::json!({"failureRateThreshold": 150}),
                "`failureRateThreshold`",
            ),
            (
                serde_json::json!({"consecutiveFailures": "x"}),
                "`consecutiveFailures`",
            ),
            (serde_json::json!({"health": "maybe"}), "`health`"),
            (
                serde_json::json!({"slowCallRateThreshold": -1}),
                "`slowCallRateThreshold`",
            ),
        ] {
            let e = apply(&current, &patch(body)).unwrap_err();
            assert_eq!(e.code(), "INVALID_CONFIG");
            assert!(e.message().contains(field), "{}", e.message());
        }
    }
}
