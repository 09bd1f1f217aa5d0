//! Breakwater's tower layers: [`CircuitBreakerLayer`] around HTTP and gRPC clients and servers,
//! [`ResultBreakerLayer`] around any other tower service, and [`FallbackLayer`] for what
//! callers get when a dependency is down; with the `time-limit` feature,
//! [`time_limit::TimeLimitLayer`], a cheaper time limit per call than tower's `Timeout`.
//!
//! See the [`circuit_breaker`], [`result`] and [`fallback`] modules for examples.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

mod admission;
pub mod answer;

pub mod circuit_breaker;
pub mod classify;
mod error;
pub mod fallback;
#[cfg(feature = "health")]
pub mod health;
pub mod result;
pub mod span;
#[cfg(feature = "time-limit")]
pub mod time_limit;

pub use circuit_breaker::{
    Authority, CircuitBreakerLayer, CircuitBreakerService, ErrorOnOpen, GrpcMethod, KeyFn, RawPath,
    RespondOnOpen, ResponseBody, ResponseFuture,
};
#[cfg(feature = "axum")]
pub use circuit_breaker::{ForAxum, MethodAndRoute};
pub use classify::{
    DEFAULT_GRPC_FAILURE_CODES, HttpFailureClass, HttpFailures, MakeClassifier, Watch, WatchEos,
    grpc_failures,
};
pub use error::{BoxError, CircuitOpen};
pub use fallback::{FallbackLayer, FallbackService, StaleCache};
pub use result::{
    ClassifyResult, ErrorsAsFailures, ResultBreaker, ResultBreakerLayer, ResultFuture,
};
pub use tower_http::classify::GrpcCode;
