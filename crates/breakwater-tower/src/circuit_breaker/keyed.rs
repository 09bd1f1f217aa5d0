use std::cell::Cell;
use std::sync::{Arc, OnceLock};

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
///
/// A keyed layer remembers the first key served through it (by any of the services it makes,
/// or their clones) and that key's breaker: while a request's key is that one and its breaker
/// has not been evicted (idle), the breaker is used without the family's map (no hashing, no
/// map guard). Other keys, and that key once its breaker was evicted, go through the map. A
/// layer per route (as the gateway example builds its routes) gives each route that path.
#[derive(Debug)]
pub struct Keyed<F> {
    shared: Arc<KeyedShared>,
    pub(crate) key: F,
    buf: String,
}

#[derive(Debug)]
struct KeyedShared {
    family: KeyedFamily,
    first: OnceLock<Remembered>,
}

/// The first key served through a layer, and its breaker (the key's member until evicted).
#[derive(Debug)]
struct Remembered {
    key: Box<str>,
    breaker: CircuitBreaker,
}

/// The longest key a layer remembers (it keeps a copy).
const REMEMBERED_KEY_LEN: usize = 256;

impl<F> Keyed<F> {
    pub(crate) fn new(family: KeyedFamily, key: F) -> Self {
        Self {
            shared: Arc::new(KeyedShared {
                family,
                first: OnceLock::new(),
            }),
            key,
            buf: String::new(),
        }
    }
}

impl<F: Clone> Clone for Keyed<F> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            key: self.key.clone(),
            buf: String::new(),
        }
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
        let shared = &*self.shared;
        let acquired = match shared.first.get() {
            Some(r) if *r.key == *self.buf && !r.breaker.is_evicted() => permit_of(&r.breaker),
            Some(_) => shared.family.with(&self.buf, permit_of),
            None => shared.remember(&self.buf),
        };
        if self.buf.capacity() > KEEP_KEY_BUFFER {
            self.buf = String::new();
        }
        acquired
    }
}

impl KeyedShared {
    /// The first key's permit, its breaker remembered (unless the key is long, or its breaker
    /// is the family's overflow breaker, which is never evicted while keys come and go).
    #[cold]
    #[inline(never)]
    fn remember(&self, key: &str) -> Result<OwnedPermit, CircuitOpen> {
        let breaker = self.family.get(key);
        let acquired = permit_of(&breaker);
        if key.len() <= REMEMBERED_KEY_LEN && !breaker.ptr_eq(self.family.overflow()) {
            let _ = self.first.set(Remembered {
                key: Box::from(key),
                breaker,
            });
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
    use std::time::Duration;

    use breakwater_core::{Config, FamilyOptions, ManualClock, Registry};

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
        assert_eq!(second.shared.family.len(), 1);
    }

    #[test]
    fn the_first_key_is_remembered_until_its_breaker_is_evicted() {
        let clock = ManualClock::new();
        let registry = Registry::builder().clock(clock.clone()).build();
        let options = FamilyOptions::new(Config::default()).idle_eviction(Duration::from_secs(60));
        let family = registry.family("t", options);
        let mut k = Keyed::new(family.clone(), |req: &Request<()>, buf: &mut String| {
            buf.push_str(req.uri().path())
        });
        k.acquire(&request("/a")).unwrap().success();
        let first = family.get_existing("/a").unwrap();
        assert!(k.shared.first.get().unwrap().breaker.ptr_eq(&first));
        // Another key goes through the map; the first stays remembered.
        k.acquire(&request("/b")).unwrap().success();
        k.acquire(&request("/a")).unwrap().success();
        assert_eq!(first.snapshot().window.successful_calls, 2);
        // "/a" idle and evicted: the next call makes and uses its new member, not the old one.
        family.evict_idle();
        clock.advance(Duration::from_secs(61));
        assert_eq!(family.evict_idle(), 2);
        k.acquire(&request("/a")).unwrap().success();
        let second = family.get_existing("/a").expect("made again");
        assert!(!second.ptr_eq(&first));
        assert_eq!(second.snapshot().window.successful_calls, 1);
        assert_eq!(first.snapshot().window.successful_calls, 2);
    }

    #[test]
    fn a_key_sent_to_the_overflow_breaker_is_not_remembered() {
        let clock = ManualClock::new();
        let registry = Registry::builder().clock(clock.clone()).build();
        let options = FamilyOptions::new(Config::default())
            .max_keys(1)
            .idle_eviction(Duration::from_secs(60));
        let family = registry.family("t", options);
        let path = |req: &Request<()>, buf: &mut String| buf.push_str(req.uri().path());
        let (mut a, mut b) = (
            Keyed::new(family.clone(), path),
            Keyed::new(family.clone(), path),
        );
        a.acquire(&request("/x")).unwrap().success();
        b.acquire(&request("/y")).unwrap().success();
        assert_eq!(family.overflow().snapshot().window.successful_calls, 1);
        family.evict_idle();
        clock.advance(Duration::from_secs(61));
        // "/y" finds room: "/x" is idle and swept to make it.
        b.acquire(&request("/y")).unwrap().success();
        let y = family.get_existing("/y").expect("a member of its own");
        assert_eq!(y.snapshot().window.successful_calls, 1);
        assert_eq!(family.overflow().snapshot().window.successful_calls, 1);
    }

    #[test]
    fn clones_share_the_remembered_key() {
        let family = Registry::new().family("t", FamilyOptions::new(Config::default()));
        let layer_source = Keyed::new(family, |req: &Request<()>, buf: &mut String| {
            buf.push_str(req.uri().path())
        });
        let (mut a, mut b) = (layer_source.clone(), layer_source.clone());
        a.acquire(&request("/a")).unwrap().success();
        b.acquire(&request("/b")).unwrap().success();
        for k in [&layer_source, &a, &b] {
            assert_eq!(&*k.shared.first.get().unwrap().key, "/a");
        }
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
