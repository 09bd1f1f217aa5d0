//! Guards against abusive clients, as tower layers:
//!
//! - [`AuthGuardLayer`]: an authentication-failure circuit per client. Each `401`/`403`
//!   answer counts against the client; after `failures` of them within `window`, the client
//!   is refused `429` with `Retry-After` for `block`; other clients are untouched. Memory is
//!   bounded at `max_clients` (1,000,000 by default).
//! - [`RateLimitLayer`]: a per-client rate limit (GCRA, `governor`'s keyed limiter), `429`
//!   with `Retry-After`.
//!
//! The client is the connection's peer ([`PeerAddr`] in the request's extensions; with the
//! `axum` feature also axum's `ConnectInfo`), or, when the peer is one of the
//! [`TrustedProxies`], the client their header (`X-Forwarded-For` by default, or
//! `Forwarded`: [`ForwardedHeader`]) names. Both guards run on
//! a breakwater clock (a `ManualClock` in tests) and count what they do ([`GuardCollector`]
//! for `/metrics`).
//!
//! ```
//! use breakwater::guard::{AuthGuard, AuthGuardLayer, RateLimit, RateLimitLayer, TrustedProxies};
//! use tower::ServiceBuilder;
//!
//! let trusted = TrustedProxies::parse("127.0.0.1").unwrap();
//! let logins = AuthGuard::builder().failures(10).build().unwrap();
//! let limit = RateLimit::builder(100).burst(20).build().unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limit).trusted(trusted.clone()))
//!     .layer(AuthGuardLayer::new(logins).trusted(trusted))
//!     .service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
//!     });
//! # let _ = svc;
//! ```

mod auth;
mod client;
mod layer;
mod metrics;
mod rate;

pub use auth::{AuthGuard, AuthGuardBuilder, AuthGuardCounts};
pub use client::{ForwardedHeader, PeerAddr, TrustedProxies, client_ip};
pub use layer::{AuthGuardLayer, GuardFuture, Guarded, RateLimitLayer};
pub use metrics::GuardCollector;
pub use rate::{RateLimit, RateLimitBuilder, RateLimitCounts};

/// Clients tracked at most by default, by either guard.
pub const DEFAULT_MAX_CLIENTS: usize = auth::DEFAULT_MAX_CLIENTS;
