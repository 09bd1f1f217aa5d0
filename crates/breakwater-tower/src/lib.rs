//! Breakwater's tower layers: [`CircuitBreakerLayer`] around HTTP and gRPC clients and servers,
//! and [`ResultBreakerLayer`] around any other tower service.
//!
//! See the [`circuit_breaker`] and [`result`] modules for examples.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod circuit_breaker;
pub mod classify;
mod error;
pub mod result;

#[cfg(feature = "axum")]
pub use circuit_breaker::MethodAndRoute;
pub use circuit_breaker::{
    Authority, CircuitBreakerLayer, CircuitBreakerService, ErrorOnOpen, GrpcMethod, KeyFn, RawPath,
    RespondOnOpen, ResponseBody, ResponseFuture,
};
pub use classify::{
    DEFAULT_GRPC_FAILURE_CODES, HttpFailureClass, HttpFailures, MakeClassifier, grpc_failures,
};
pub use error::{BoxError, CircuitOpen};
pub use result::{
    ClassifyResult, ErrorsAsFailures, ResultBreaker, ResultBreakerLayer, ResultFuture,
};
pub use tower_http::classify::GrpcCode;
