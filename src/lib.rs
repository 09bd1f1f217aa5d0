//! Breakwater: circuit breakers for Rust services.
//!
//! This crate is the one dependency users need. The engine is at its root; further parts are
//! switched on by feature:
//!
//! | module | feature | what |
//! |---|---|---|
//! | (root) | | [`CircuitBreaker`], [`Config`], [`Registry`] and keyed families, events, snapshots, clocks |
//! | [`tower`] | `http` | `CircuitBreakerLayer` for HTTP and gRPC clients and servers, `ResultBreakerLayer`, `FallbackLayer`; with `axum`, health |
//! | [`ops`] | `axum` | the ops API: an axum `Router` with metrics, state and config changes, events, alerts, probes, Prometheus text |
//! | [`otel`] | `otel` | OpenTelemetry instruments for a registry, its fallbacks and probes (`BreakerMetrics`) |
//! | [`fleet`], [`redis`] | `redis` | breaker states shared across replicas (`Fleet`) through Redis (`RedisStore`) |
//! | [`guard`] | `guard` | an authentication-failure circuit per client, a per-client rate limit |
//! | [`history`] | `history` | per-minute history of breakers and probes, run-time changes kept across restarts (SQLite) |
//!
//! Where to start: [`CircuitBreaker`] for the engine; [`tower::circuit_breaker`] for the
//! layers (an axum server: `.for_axum()` on each layer; a client: the layer as it is);
//! [`tower::fallback`]; [`ops::OpsApi`] and [`tower::health::HealthRegistry`] for operators.
//! The README has a complete axum server, a hyper client, gRPC, and the defaults with their
//! units.
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
//! - `otel`: OpenTelemetry instruments ([`otel`]); you bring the SDK and the exporter.
//! - `redis`: breaker states shared by the replicas of a service through Redis ([`redis`],
//!   driven by [`fleet::Fleet`]); nothing is added to a call's path.
//! - `history`: per-minute history of breakers and probes for 24 h, and with a state dir all
//!   of it plus operators' run-time changes in SQLite ([`history`]); with `axum`, its routes.
//! - `guard`: guards against abusive clients ([`guard`]): an authentication-failure circuit
//!   per client and a per-client rate limit, `429` with `Retry-After`.
//! - `full`: everything.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use breakwater_core::*;

#[doc(inline)]
pub use breakwater_core as core;

#[cfg(feature = "http")]
#[doc(inline)]
pub use breakwater_tower as tower;

#[cfg(feature = "axum")]
#[doc(inline)]
pub use breakwater_axum as ops;

#[cfg(feature = "otel")]
#[doc(inline)]
pub use breakwater_otel as otel;

#[cfg(feature = "redis")]
#[doc(inline)]
pub use breakwater_redis as redis;

#[cfg(feature = "history")]
#[doc(inline)]
pub use breakwater_history as history;

#[cfg(feature = "guard")]
#[doc(inline)]
pub use breakwater_guard as guard;

/// The README's code, compiled and run as doctests.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
