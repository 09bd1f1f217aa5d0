use breakwater_core::{CircuitBreaker, KeyedFamily, OwnedPermit};
use http::Request;

use crate::error::CircuitOpen;

mod sealed {
    pub trait Sealed {}
}

/// Where a request's breaker comes from: one breaker for the service ([`Single`]) or one per key
/// from a family ([`Keyed`]).
pub trait BreakerSource<B>: sealed::Sealed + Clone {
    /// A permit for this request, or the rejection.
    #[doc(hidden)]
    fn acquire(&mut self, req: &Request<B>) -> Result<OwnedPermit, CircuitOpen>;

    /// In `poll_ready`: a permit or a rejection before the request is known, when the breaker
    /// does not depend on the request and does not admit calls freely.
    #[doc(hidden)]
    fn acquire_early(&mut self) -> Option<Result<OwnedPermit, CircuitOpen>> {
        None
    }

    /// In `poll_ready`, once the inner service is ready: the next call's permit, when the breaker
    /// does not depend on the request (then `call` hands the request straight on).
    #[doc(hidden)]
    #[inline(always)]
    fn acquire_ready(&mut self) -> Option<Result<OwnedPermit, CircuitOpen>> {
        None
    }
}

/// One breaker for every request.
#[derive(Debug, Clone)]
pub struct Single(pub(crate) CircuitBreaker);

impl sealed::Sealed for Single {}

impl<B> BreakerSource<B> for Single {
    #[inline(always)]
    fn acquire(&mut self, _req: &Request<B>) -> Result<OwnedPermit, CircuitOpen> {
        self.0
            .try_acquire_owned()
            .map_err(|r| CircuitOpen::new(&self.0, r))
    }

    #[inline(always)]
    fn acquire_early(&mut self) -> Option<Result<OwnedPermit, CircuitOpen>> {
        // While calls flow freely, the permit is taken in `call` (one load here).
        if self.0.state().allows_calls() {
            return None;
        }
        Some(
            self.0
                .try_acquire_owned()
                .map_err(|r| CircuitOpen::new(&self.0, r)),
        )
    }

    #[inline(always)]
    fn acquire_ready(&mut self) -> Option<Result<OwnedPermit, CircuitOpen>> {
        Some(
            self.0
                .try_acquire_owned()
                .map_err(|r| CircuitOpen::new(&self.0, r)),
        )
    }
}

/// One breaker per key of a [`KeyedFamily`]; the key is written by a [`KeyFn`] into a buffer
/// the service reuses, so a known key costs no allocation.
#[derive(Debug)]
pub struct Keyed<F> {
    pub(crate) family: KeyedFamily,
    pub(crate) key: F,
    buf: String,
}

impl<F> Keyed<F> {
    pub(crate) fn new(family: KeyedFamily, key: F) -> Self {
        Self {
            family,
            key,
            buf: String::new(),
        }
    }
}

impl<F: Clone> Clone for Keyed<F> {
    fn clone(&self) -> Self {
        Self::new(self.family.clone(), self.key.clone())
    }
}

impl<F> sealed::Sealed for Keyed<F> {}

impl<B, F: KeyFn<B>> BreakerSource<B> for Keyed<F> {
    #[inline]
    fn acquire(&mut self, req: &Request<B>) -> Result<OwnedPermit, CircuitOpen> {
        self.buf.clear();
        self.key.key(req, &mut self.buf);
        self.family.with(&self.buf, |b| {
            b.try_acquire_owned().map_err(|r| CircuitOpen::new(b, r))
        })
    }
}

/// Writes a request's key into `buf` (which arrives empty).
///
/// Provided: [`GrpcMethod`], [`Authority`], [`RawPath`], [`MethodAndRoute`] (with the `axum`
/// feature), and any `Fn(&Request<B>, &mut String) + Clone`.
pub trait KeyFn<B>: Clone {
    /// Writes the key.
    fn key(&self, req: &Request<B>, buf: &mut String);
}

impl<B, F> KeyFn<B> for F
where
    F: Fn(&Request<B>, &mut String) + Clone,
{
    fn key(&self, req: &Request<B>, buf: &mut String) {
        self(req, buf)
    }
}

/// The gRPC method: the path, `/package.Service/Method`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMethod;

impl<B> KeyFn<B> for GrpcMethod {
    fn key(&self, req: &Request<B>, buf: &mut String) {
        buf.push_str(req.uri().path());
    }
}

/// The host (per host, for clients): the URI's authority, else the `Host` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Authority;

impl<B> KeyFn<B> for Authority {
    fn key(&self, req: &Request<B>, buf: &mut String) {
        match req.uri().authority() {
            Some(a) => buf.push_str(a.as_str()),
            None => match req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                Some(h) => buf.push_str(h),
                None => buf.push_str("<no host>"),
            },
        }
    }
}

/// Method and raw path (`GET /items/42`). Only for clients whose paths are bounded: on a server
/// the path is chosen by the caller (the family's key cap still bounds memory).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawPath;

impl<B> KeyFn<B> for RawPath {
    fn key(&self, req: &Request<B>, buf: &mut String) {
        buf.push_str(req.method().as_str());
        buf.push(' ');
        buf.push_str(req.uri().path());
    }
}

/// Method and axum's matched route template (`GET /items/{id}`), never the raw path; requests
/// no route matched share `METHOD <unmatched>`.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodAndRoute;

#[cfg(feature = "axum")]
impl<B> KeyFn<B> for MethodAndRoute {
    fn key(&self, req: &Request<B>, buf: &mut String) {
        buf.push_str(req.method().as_str());
        buf.push(' ');
        match req.extensions().get::<axum::extract::MatchedPath>() {
            Some(p) => buf.push_str(p.as_str()),
            None => buf.push_str("<unmatched>"),
        }
    }
}
