//! Graceful degradation and failover: what a caller gets when a circuit is open or a call
//! failed.
//!
//! [`FallbackLayer`] sits outside one or more
//! [`CircuitBreakerLayer`](crate::CircuitBreakerLayer)s and turns a refusal
//! ([`CircuitOpen`](crate::CircuitOpen), as an error or as the 503 answer of
//! [`respond_when_open`](crate::CircuitBreakerLayer::respond_when_open)) and, when asked, errors,
//! timeouts and failed answers (5xx) into a response. Its service is infallible, so it fits
//! axum's `Router::layer`; there, [`for_axum`](FallbackLayer::for_axum) also gives axum its own
//! `Body`, which axum then need not box again.
//!
//! Strategies, tried in the order they are added, the first that answers winning:
//!
//! - [`backup`](FallbackLayer::backup): failover to another service (another upstream with its
//!   own breaker); idempotent requests without a body always, others when their body was
//!   buffered ([`replay_bodies`](FallbackLayer::replay_bodies));
//! - [`stale_if_error`](FallbackLayer::stale_if_error): the last good answer to the same GET
//!   ([`StaleCache`]: bounded in entries, bytes and age);
//! - [`function`](FallbackLayer::function) / [`async_function`](FallbackLayer::async_function):
//!   computed from the request's head and the [`Failure`];
//! - [`fixed`](FallbackLayer::fixed): a fixed response.
//!
//! Every fallback answer carries `x-fallback: <strategy>` (`backup`, `stale`, `function`,
//! `fixed`); each use is counted ([`FallbackStats`]) and, with [`events`](FallbackLayer::events),
//! emitted as [`EventKind::FallbackUsed`](breakwater_core::EventKind::FallbackUsed). When no
//! strategy answers, a refusal becomes the 503 `CIRCUIT_OPEN` JSON answer (gRPC: UNAVAILABLE),
//! another error 502 `UPSTREAM_ERROR` or 504 `UPSTREAM_TIMEOUT`, and a failed answer is passed
//! on; strategies that could not help say why in `x-fallback-skipped` (and in the JSON body's
//! `fallback` list).
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use breakwater::{CircuitBreaker, Config};
//! use breakwater::tower::CircuitBreakerLayer;
//! use breakwater::tower::fallback::{FallbackLayer, StaleCache};
//! use http::{Response, StatusCode, header};
//! use tower::ServiceBuilder;
//!
//! let breaker = CircuitBreaker::new("items", Config::default());
//! let app: Router = Router::new().route("/items", get(|| async { "[1,2,3]" })).layer(
//!     ServiceBuilder::new()
//!         .layer(
//!             FallbackLayer::new()
//!                 .on_failed_responses()
//!                 .stale_if_error(StaleCache::new())
//!                 .fixed(
//!                     Response::builder()
//!                         .status(StatusCode::OK)
//!                         .header(header::CONTENT_TYPE, "application/json")
//!                         .body("[]")
//!                         .unwrap(),
//!                 ),
//!         )
//!         .layer(CircuitBreakerLayer::new(breaker)),
//! );
//! # let _ = app;
//! ```

#[cfg(feature = "axum")]
mod axum_body;
mod body;
mod cache;
mod future;
mod layer;
mod service;
mod strategy;

#[cfg(feature = "axum")]
pub use axum_body::{AxumBodyFuture, AxumBodyService};
pub use body::FallbackBody;
pub use cache::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, DEFAULT_REFRESH_AFTER,
    DEFAULT_TTL, StaleCache, StaleCacheBuilder,
};
pub use future::ResponseFuture;
pub use layer::FallbackLayer;
pub use service::{FallbackService, NoBodyReplay, ReplayBodies};
pub use strategy::{Failure, FailureKind, FallbackStats, X_FALLBACK, X_FALLBACK_SKIPPED};

use http::Response;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse};

use crate::classify::HttpFailures;

/// Whether `classifier` calls `res` a failure at its head.
pub(crate) fn is_failed_response<B>(classifier: HttpFailures, res: &Response<B>) -> bool {
    matches!(
        classifier.classify_response(res),
        ClassifiedResponse::Ready(Err(_))
    )
}
