//! Health: what the service reports about itself and its dependencies.
//!
//! A [`HealthRegistry`] gathers the breakers of a breaker registry, active [`Probe`]s of the
//! dependencies and custom checks into an `application/health+json` [`HealthReport`]
//! (draft-inadarei-api-health-check-06); [`HealthLayer`] answers `/health`, `/health/live` and
//! `/health/ready` from it in front of any HTTP service. With the `grpc-health` feature,
//! [`sync_grpc_health`] keeps a tonic-health reporter in step.
//!
//! An open breaker degrades a service, it does not make it unhealthy: only checks marked
//! critical fail readiness (and `/health`); liveness never depends on dependencies.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use breakwater::Registry;
//! use breakwater::tower::health::{HealthLayer, HealthRegistry, Probe};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let registry = Registry::new();
//! let health = HealthRegistry::new(&registry);
//! health.add_probe(
//!     Probe::builder("inventory", || async { Ok(()) })
//!         .interval(Duration::from_secs(5))
//!         .critical(true)
//!         .build()
//!         .unwrap(),
//! );
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(HealthLayer::new(health));
//! # let _ = app;
//! # }
//! ```

#[cfg(feature = "grpc-health")]
mod grpc;
mod layer;
mod probe;
mod registry;
mod report;

#[cfg(feature = "grpc-health")]
pub use grpc::sync_grpc_health;
pub use layer::{HealthLayer, HealthService, ResponseFuture, health_response};
pub use probe::{
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_HISTORY, DEFAULT_INTERVAL, DEFAULT_SUCCESS_THRESHOLD,
    DEFAULT_TIMEOUT, Probe, ProbeBuilder, ProbeCounts, ProbeResult, ProbeSettings, ProbeView,
};
pub use registry::HealthRegistry;
pub use report::{CheckEntry, CheckResult, HEALTH_JSON, HealthReport, Status};
