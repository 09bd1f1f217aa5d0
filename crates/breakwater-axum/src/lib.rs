//! Breakwater's ops API on axum: health, metrics, Prometheus text, events, resets and state
//! changes, secured by a bearer token.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod alerts;
pub mod config_patch;
mod error;
#[cfg(feature = "history")]
mod history;
mod ops;
pub mod prometheus;
pub mod webhook;

pub use alerts::{
    Alert, AlertBook, AlertChange, AlertFilter, AlertRules, AlertStatus, BurnRate, ErrorBudget,
    Notifier, Rule, Severity,
};
pub use error::ApiError;
pub use ops::{DEFAULT_BODY_LIMIT, OpsApi, metrics_json, not_found};
