//! Breakwater: circuit breakers for Rust services.
//!
//! This crate is the one dependency users need: it re-exports the engine
//! ([`breakwater_core`]) at its root, and switches further parts on by feature.
//!
//! # Example
//!
//! ```
//! use breakwater::{CircuitBreaker, Config, State};
//!
//! let breaker = CircuitBreaker::new(
//!     "upstream",
//!     Config::builder().consecutive_failures(2).build().unwrap(),
//! );
//! for _ in 0..2 {
//!     breaker.try_acquire().unwrap().failure();
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let err = breaker.try_acquire().unwrap_err();
//! assert!(err.retry_after().is_some());
//! ```
//!
//! # Feature flags
//!
//! - `tokio`: timers on tokio for automatic OPEN → HALF_OPEN and the max wait in HALF_OPEN.
//! - `http`: the tower layers ([`tower`]), for HTTP and gRPC clients and servers.
//! - `grpc`: gRPC classification and keys (part of `http`).
//! - `axum`: `CircuitOpen` answers as an axum response; keys by matched route; health checks
//!   and probes (`tower::health`); the ops API ([`ops`]).
//! - `full`: everything.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use breakwater_core::*;

/// The engine crate, for paths like `breakwater::core::clock::TimerTask`.
pub use breakwater_core as core;

/// The tower layers: `CircuitBreakerLayer` for HTTP and gRPC clients and servers,
/// `FallbackLayer`, and (with `axum`) health.
#[cfg(feature = "http")]
pub use breakwater_tower as tower;

/// The ops API on axum: `OpsApi`, Prometheus text, alerts.
#[cfg(feature = "axum")]
pub use breakwater_axum as ops;
