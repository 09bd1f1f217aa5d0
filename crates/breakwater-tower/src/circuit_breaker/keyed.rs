use std::cell::Cell;

use breakwater_core::{CircuitBreaker, KeyedFamily, OwnedPermit};
use http::Request;

use crate::admission::permit_of;
use crate::error::CircuitOpen;

mod sealed {
    pub trait Sealed {}
}

/// Where a request's breaker comes from: one breaker for the service ([`Single`]) or one per key
/// from a family ([`Keyed`]).
pub trait BreakerSource<B>: sealed::Sealed + Clone {
    /// Whether the breaker depends on the request (then every permit is taken in `call`).
    #[doc(hidden)]
    const PER_REQUEST: bool = false;

    /// A permit for this request, or the rejection.
    #[doc(hidden)]
    fn acquire(&mut self, req: &Request<B>) -> Result<OwnedPermit, CircuitOpen>;

    /// In `poll_ready`, before the inner service's readiness: the next call's permit or its
    /// rejection, when the breaker does not depend on the request (then `call` hands the request
    /// straight on).
    #[doc(hidden)]
    fn acquire_early(&mut self) -> Option<Result<OwnedPermit, CircuitOpen>> {
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
        permit_of(&self.0)
    }

    #[inline(always)]
    fn acquire_early(&mut self) -> Option<Result<OwnedPermit, CircuitOpen>> {
        Some(permit_of(&self.0))
    }
}

/// One breaker per key of a [`KeyedFamily`]; the key is written by a [`KeyFn`] into a buffer
/// the service reuses, so a known key costs no allocation. A clone starts without a buffer and
/// borrows one kept per thread, which it gives back when dropped: services cloned for every
/// request (as axum's router and hyper's server clone them) allocate nothing either.
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

impl<F> Drop for Keyed<F> {
    fn drop(&mut self) {
        if self.buf.capacity() != 0 {
            let buf = std::mem::take(&mut self.buf);
            // Gone only while the thread is exiting: then the buffer is simply freed.
            let _ = KEY.try_with(|k| k.set(buf));
        }
    }
}

impl<F> sealed::Sealed for Keyed<F> {}

/// A buffer grown past this is not kept (keys are short; a long attacker-chosen one should not
/// stay in memory).
const KEEP_KEY_BUFFER: usize = 4 * 1024;

thread_local! {
    /// A key buffer for the next keyed service on this thread that has none.
    static KEY: Cell<String> = const { Cell::new(String::new()) };
}

impl<B, F: KeyFn<B>> BreakerSource<B> for Keyed<F> {
    const PER_REQUEST: bool = true;

    #[inline]
    fn acquire(&mut self, req: &Request<B>) -> Result<OwnedPermit, CircuitOpen> {
        if self.buf.capacity() == 0 {
            self.buf = KEY.try_with(Cell::take).unwrap_or_default();
        }
        self.buf.clear();
        self.key.key(req, &mut self.buf);
        let acquired = self.family.with(&self.buf, permit_of);
        if self.buf.capacity() > KEEP_KEY_BUFFER {
            self.buf = String::new();
        }
        acquired
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

#[cfg(test)]
mod tests {
    use breakwater_core::{Config, FamilyOptions, Registry};

    use super::*;

    fn keyed() -> Keyed<fn(&Request<()>, &mut String)> {
        let family = Registry::new().family("t", FamilyOptions::new(Config::default()));
        Keyed::new(family, |req: &Request<()>, buf: &mut String| {
            buf.push_str(req.uri().path())
        })
    }

    fn request(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn a_dropped_clone_lends_its_buffer_to_the_next() {
        let mut first = keyed().clone();
        first.acquire(&request("/a")).unwrap().success();
        let ptr = first.buf.as_ptr();
        drop(first);
        let mut second = keyed().clone();
        second.acquire(&request("/b")).unwrap().success();
        assert_eq!(second.buf.as_ptr(), ptr);
        assert_eq!(second.family.len(), 1);
    }

    #[test]
    fn a_buffer_grown_by_a_long_key_is_not_kept() {
        let mut k = keyed();
        let long = format!("/{}", "x".repeat(2 * KEEP_KEY_BUFFER));
        k.acquire(&request(&long)).unwrap().success();
        assert_eq!(k.buf.capacity(), 0);
        k.acquire(&request("/short")).unwrap().success();
        assert!(k.buf.capacity() > 0 && k.buf.capacity() <= KEEP_KEY_BUFFER);
    }
}
