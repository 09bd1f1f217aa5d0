//! Changes at run time from JSON, for breakers and probes alike: the settings' own JSON shape
//! (their serde view: [`ConfigView`], [`ProbeSettings`]) with the fields a request names
//! replaced, read back through serde. Unknown fields, wrong types and invalid values are
//! refused naming the field; the shape is described once, by the view's type.
//!
//! [`ConfigView`]: breakwater_core::ConfigView
//! [`ProbeSettings`]: breakwater_tower::health::ProbeSettings

use breakwater_core::{Config, ConfigError, WaitInOpen};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

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

/// `current`'s JSON shape with the fields of `patch` replaced, read back as a `T`. A field
/// `current` does not have is refused, naming it and the known ones; so is a value of the wrong
/// type, naming its field.
pub fn merge<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: &Map<String, Value>,
) -> Result<T, ApiError> {
    let Ok(Value::Object(mut merged)) = serde_json::to_value(current) else {
        return Err(ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "the settings have no JSON object shape",
        ));
    };
    if let Some(unknown) = patch.keys().find(|k| !merged.contains_key(k.as_str())) {
        let known: Vec<&str> = merged.keys().map(String::as_str).collect();
        return Err(invalid(
            unknown,
            format!("unknown field; known: {}", known.join(", ")),
        ));
    }
    for (k, v) in patch {
        merged.insert(k.clone(), v.clone());
    }
    serde_path_to_error::deserialize(Value::Object(merged))
        .map_err(|e| invalid(&e.path().to_string(), e.inner()))
}

/// `current` with the fields of `patch` changed (the JSON shape of [`Config::view`]). A fixed
/// wait in OPEN changed alone stays fixed: its maximum follows `waitInOpenMs` unless the change
/// names `maxWaitInOpenMs` too.
pub fn apply(current: &Config, patch: &Map<String, Value>) -> Result<Config, ApiError> {
    let mut patch = patch.clone();
    if matches!(current.wait_in_open(), WaitInOpen::Fixed(_))
        && !patch.contains_key("maxWaitInOpenMs")
        && let Some(wait) = patch.get("waitInOpenMs").cloned()
    {
        patch.insert("maxWaitInOpenMs".into(), wait);
    }
    merge(&current.view(), &patch)?
        .to_config()
        .map_err(|e| config_error(&e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
                serde_json::json!({"slowCallDurationThresholdMs": 1.5}),
                "`slowCallDurationThresholdMs`",
            ),
            (
                serde_json::json!({"recordCallDurations": "yes"}),
                "`recordCallDurations`",
            ),
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

    #[test]
    fn a_fixed_wait_changed_alone_stays_fixed_and_can_become_exponential() {
        let current = Config::default(); // a fixed 60 s wait
        let longer = apply(
            &current,
            &patch(serde_json::json!({"waitInOpenMs": 120_000})),
        );
        assert_eq!(
            *longer.unwrap().wait_in_open(),
            WaitInOpen::Fixed(Duration::from_secs(120))
        );
        let c = apply(
            &current,
            &patch(serde_json::json!({"waitInOpenMs": 5_000, "waitInOpenMultiplier": 2})),
        )
        .unwrap();
        assert_eq!(
            c.wait_in_open().max(),
            Duration::from_secs(5),
            "capped at the new wait"
        );
        let c = apply(
            &current,
            &patch(serde_json::json!({"waitInOpenMs": 120_000, "waitInOpenJitter": 0.1})),
        );
        assert!(c.is_ok(), "the maximum follows the longer wait");
        let c = apply(
            &current,
            &patch(serde_json::json!({
                "waitInOpenMs": 1_000, "waitInOpenMultiplier": 2, "maxWaitInOpenMs": 30_000
            })),
        )
        .unwrap();
        assert_eq!(c.wait_in_open().max(), Duration::from_secs(30));
    }

    #[test]
    fn null_turns_a_policy_off_and_other_settings_merge_the_same_way() {
        let current = Config::builder().consecutive_failures(5).build().unwrap();
        let c = apply(
            &current,
            &patch(serde_json::json!({"consecutiveFailures": null, "waitInOpenMultiplier": 2})),
        )
        .unwrap();
        assert_eq!(c.consecutive_failures(), None);
        assert!(matches!(c.wait_in_open(), WaitInOpen::Exponential { .. }));

        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Settings {
            interval_ms: u64,
            label: Option<String>,
        }
        let now = Settings {
            interval_ms: 5,
            label: None,
        };
        let merged = merge(&now, &patch(serde_json::json!({"label": "x"}))).unwrap();
        assert_eq!(merged.interval_ms, 5);
        assert_eq!(merged.label.as_deref(), Some("x"));
        let e = merge(&now, &patch(serde_json::json!({"intervalMs": -1}))).unwrap_err();
        assert!(
            e.message().starts_with("invalid `intervalMs`"),
            "{}",
            e.message()
        );
        let e = merge(&now, &patch(serde_json::json!({"other": 1}))).unwrap_err();
        assert!(
            e.message().contains("known: intervalMs, label"),
            "{}",
            e.message()
        );
    }
}
