//! Breakwater's ops API on axum: health, metrics, Prometheus text, events, resets and state
//! changes, secured by a bearer token.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod prometheus;
