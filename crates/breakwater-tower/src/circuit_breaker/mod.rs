//! A circuit breaker around any HTTP or gRPC service, client or server: one per service, or one
//! per endpoint, stacked.
//!
//! - Client side (the default): a refused call fails fast with [`CircuitOpen`](crate::CircuitOpen)
//!   in a [`BoxError`](crate::BoxError), without calling the inner service.
//! - Server side ([`respond_when_open`](CircuitBreakerLayer::respond_when_open)): every call
//!   gets an answer and the service never fails, so it fits axum's `Router::layer` and tonic's
//!   `Server::builder().layer`: a refused call gets 503 with `Retry-After` and the
//!   `CIRCUIT_OPEN` JSON body (gRPC: status UNAVAILABLE); an inner error, the inner service's
//!   failure, is answered 504 `UPSTREAM_TIMEOUT` when it is a timeout and 502 `UPSTREAM_ERROR`
//!   otherwise (gRPC: DEADLINE_EXCEEDED, UNAVAILABLE). In an axum app,
//!   [`for_axum`](CircuitBreakerLayer::for_axum) answers the same way and gives axum its own
//!   `Body`, which axum then need not box again.
//! - A time limit is tower's `TimeoutLayer` inside the breaker: a call over it is cancelled
//!   (its future dropped), counted as a failure (and as slow, where a slow-call policy is on),
//!   and answered 504 by a server-side breaker or handed to a
//!   [`FallbackLayer`](crate::FallbackLayer) outside with `on_timeouts`; a hung half-open probe
//!   gives its permit back at its limit.
//! - What fails is decided by a tower-http [`MakeClassifier`](crate::MakeClassifier):
//!   [`HttpFailures`](crate::HttpFailures) by default (5xx, decided at the response head: a
//!   client-side layer hands back the inner service's body as it is),
//!   [`grpc_failures`](crate::grpc_failures) for gRPC (status in headers, or in trailers when the
//!   stream ends; the body is watched and the outcome recorded then, and a body dropped early
//!   counts as nothing). See [`WatchEos`](crate::WatchEos) for which classifiers fit.
//! - Stacked layers each record their own outcomes; an inner breaker's rejection is ignored by
//!   the outer ones, so one open endpoint cannot open the whole service.
//!
//! Which form, where:
//!
//! | where | form |
//! |---|---|
//! | an axum `Router` (`layer`, `route_layer`) | `.for_axum()` |
//! | a tonic or hyper server | `.respond_when_open()` |
//! | a client (`ServiceBuilder` around hyper's client, a tonic channel) | as built |
//!
//! In an axum app the client form does not compile: axum reports ``the trait bound
//! `Infallible: From<Box<dyn Error + Send + Sync>>` is not satisfied`` for `Router::layer` or
//! `Router::route_layer`. Add `.for_axum()`.
//!
//! # Example: a client with one breaker per host
//!
//! ```
//! use breakwater::{Config, FamilyOptions, Registry};
//! use breakwater::tower::{Authority, CircuitBreakerLayer};
//! use tower::ServiceBuilder;
//! # type Body = http_body_util::Empty<bytes::Bytes>;
//! # let client = tower::service_fn(|_: http::Request<Body>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(Body::new()))
//! # });
//!
//! let registry = Registry::new();
//! let hosts = registry.family("upstreams", FamilyOptions::new(Config::default()).max_keys(100));
//! let client = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::keyed(hosts, Authority))
//!     .service(client);
//! # let _ = client;
//! ```
//!
//! # Example: an axum server, with a time limit
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use breakwater::{CircuitBreaker, Config};
//! use breakwater::tower::CircuitBreakerLayer;
//! use tower::ServiceBuilder;
//!
//! let breaker = CircuitBreaker::new("api", Config::default());
//! let app: Router = Router::new()
//!     .route("/items", get(|| async { "[]" }))
//!     .route_layer(
//!         ServiceBuilder::new()
//!             .layer(CircuitBreakerLayer::new(breaker).for_axum())
//!             .timeout(Duration::from_secs(2)), // over it: 504 UPSTREAM_TIMEOUT, a failure
//!     );
//! ```

mod body;
mod future;
mod keyed;
mod layer;
mod on_open;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
#[cfg(feature = "axum")]
pub use keyed::MethodAndRoute;
pub use keyed::{Authority, BreakerSource, GrpcMethod, KeyFn, Keyed, RawPath, Single};
pub use layer::CircuitBreakerLayer;
#[cfg(feature = "axum")]
pub use on_open::ForAxum;
pub use on_open::{ErrorOnOpen, OnOpen, RespondOnOpen};
pub use service::CircuitBreakerService;
pub(crate) use service::is_grpc;
