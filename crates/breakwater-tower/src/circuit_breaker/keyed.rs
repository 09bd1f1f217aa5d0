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
/// kept per thread, so a known key costs no allocation, and the service holds nothing of its
/// own but the layer's shared state: services cloned for every request (as axum's router and
/// hyper's server clone them) cost one reference count.
///
/// A keyed layer remembers the first key served through it (by any of the services it makes,
/// or their clones) and that key's breaker: while a request's key is that one and its breaker
/// has not been evicted (idle), the breaker is used without the family's map (no hashing, no
/// map guard) and, with a key function that tells keys in place ([`KeyFn::is_key`]), without
/// writing the key. Other keys, and that key once its breaker was evicted, go through the map. A
/// layer per route (as the gateway example builds its routes) gives each route that path.
#[derive(Debug)]
pub struct Keyed<F> {
    shared: Arc<KeyedShared>,
    pub(crate) key: F,
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
        }
    }
}

impl<F: Clone> Clone for Keyed<F> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            key: self.key.clone(),
        }
    }
}

impl<F> sealed::Sealed for Keyed<F> {}

/// A buffer grown past this is not kept (keys are short; a long attacker-chosen one should not
/// stay in memory).
const KEEP_KEY_BUFFER: usize = 4 * 1024;

thread_local! {
    /// The key buffer of the keyed services on this thread.
    static KEY: Cell<String> = const { Cell::new(String::new()) };
}

impl<B, F: KeyFn<B>> BreakerSource<B> for Keyed<F> {
    const PER_REQUEST: bool = true;

    #[inline]
    fn acquire(&mut self, req: &Request<B>) -> Result<OwnedPermit, CircuitOpen> {
        if let Some(r) = self.shared.first.get()
            && self.key.is_key(req, &r.key) == Some(true)
            && !r.breaker.is_evicted()
        {
            return permit_of(&r.breaker);
        }
        self.acquire_written(req)
    }
}

impl<F> Keyed<F> {
    /// The request's breaker found by its key written into the buffer.
    #[inline]
    fn acquire_written<B>(&self, req: &Request<B>) -> Result<OwnedPermit, CircuitOpen>
    where
        F: KeyFn<B>,
    {
        // Taken, not borrowed: a key function that calls a keyed service finds none, and
        // writes into a new one. Gone only while the thread is exiting: then a new one too.
        let mut buf = KEY.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        self.key.key(req, &mut buf);
        let shared = &*self.shared;
        let acquired = match shared.first.get() {
            Some(r) if *r.key == *buf && !r.breaker.is_evicted() => permit_of(&r.breaker),
            Some(_) => shared.family.with(&buf, permit_of),
            None => shared.remember(&buf),
        };
        if buf.capacity() <= KEEP_KEY_BUFFER {
            let _ = KEY.try_with(|k| k.set(buf));
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
/// feature), and any `Fn(&Request<B>, &mut String) + Clone`. The provided ones also tell a
/// key in place ([`is_key`](KeyFn::is_key)), so a request with the layer's remembered key
/// writes nothing; a closure's key is written for every request.
pub trait KeyFn<B>: Clone {
    /// Writes the key.
    fn key(&self, req: &Request<B>, buf: &mut String);

    /// Whether the request's key is `key`, told without writing it; `None` (the default) when
    /// this key function cannot tell (then the key is written and compared). The layer asks it
    /// for the key it remembers, so the usual request costs no write.
    ///
    /// ```
    /// use breakwater_tower::KeyFn;
    /// use http::Request;
    ///
    /// /// The first path segment (`/users/7` → `users`).
    /// #[derive(Clone)]
    /// struct Section;
    ///
    /// fn section<B>(req: &Request<B>) -> &str {
    ///     req.uri().path().trim_start_matches('/').split('/').next().unwrap_or("")
    /// }
    ///
    /// impl<B> KeyFn<B> for Section {
    ///     fn key(&self, req: &Request<B>, buf: &mut String) {
    ///         buf.push_str(section(req));
    ///     }
    ///
    ///     fn is_key(&self, req: &Request<B>, key: &str) -> Option<bool> {
    ///         Some(section(req) == key)
    ///     }
    /// }
    ///
    /// let req = Request::get("/users/7").body(()).unwrap();
    /// assert_eq!(Section.is_key(&req, "users"), Some(true));
    /// ```
    #[inline]
    fn is_key(&self, req: &Request<B>, key: &str) -> Option<bool> {
        let _ = (req, key);
        None
    }
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

    #[inline]
    fn is_key(&self, req: &Request<B>, key: &str) -> Option<bool> {
        Some(req.uri().path() == key)
    }
}

/// The host (per host, for clients): the URI's authority, else the `Host` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Authority;

impl<B> KeyFn<B> for Authority {
    fn key(&self, req: &Request<B>, buf: &mut String) {
        buf.push_str(host(req));
    }

    #[inline]
    fn is_key(&self, req: &Request<B>, key: &str) -> Option<bool> {
        Some(host(req) == key)
    }
}

/// The URI's authority, else the `Host` header, else `<no host>`.
fn host<B>(req: &Request<B>) -> &str {
    match req.uri().authority() {
        Some(a) => a.as_str(),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("<no host>"),
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

    #[inline]
    fn is_key(&self, req: &Request<B>, key: &str) -> Option<bool> {
        Some(is_joined(key, req.method().as_str(), req.uri().path()))
    }
}

/// Whether `key` is `first`, a space, then `second`.
#[inline]
fn is_joined(key: &str, first: &str, second: &str) -> bool {
    key.len() == first.len() + 1 + second.len()
        && key.as_bytes()[first.len()] == b' '
        && key.starts_with(first)
        && key.ends_with(second)
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
        buf.push_str(route(req));
    }

    #[inline]
    fn is_key(&self, req: &Request<B>, key: &str) -> Option<bool> {
        Some(is_joined(key, req.method().as_str(), route(req)))
    }
}

/// The matched route template, or `<unmatched>`.
#[cfg(feature = "axum")]
#[inline]
fn route<B>(req: &Request<B>) -> &str {
    match req.extensions().get::<axum::extract::MatchedPath>() {
        Some(p) => p.as_str(),
        None => "<unmatched>",
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

    /// The thread's key buffer: where its bytes are, and its capacity.
    fn thread_buffer() -> (*const u8, usize) {
        KEY.with(|k| {
            let buf = k.take();
            let seen = (buf.as_ptr(), buf.capacity());
            k.set(buf);
            seen
        })
    }

    #[test]
    fn services_on_a_thread_share_one_key_buffer() {
        let mut first = keyed().clone();
        first.acquire(&request("/a")).unwrap().success();
        let (ptr, capacity) = thread_buffer();
        assert!(capacity > 0);
        drop(first);
        let mut second = keyed();
        second.acquire(&request("/b")).unwrap().success();
        assert_eq!(thread_buffer(), (ptr, capacity));
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
        assert_eq!(thread_buffer().1, 0);
        k.acquire(&request("/short")).unwrap().success();
        let capacity = thread_buffer().1;
        assert!(capacity > 0 && capacity <= KEEP_KEY_BUFFER);
    }

    /// The path as the key, told in place; counts the keys it writes.
    #[derive(Clone, Default)]
    struct CountedPath(Arc<std::sync::atomic::AtomicUsize>);

    impl<B> KeyFn<B> for CountedPath {
        fn key(&self, req: &Request<B>, buf: &mut String) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            buf.push_str(req.uri().path());
        }

        fn is_key(&self, req: &Request<B>, key: &str) -> Option<bool> {
            Some(req.uri().path() == key)
        }
    }

    #[test]
    fn the_remembered_key_told_in_place_is_not_written() {
        let clock = ManualClock::new();
        let registry = Registry::builder().clock(clock.clone()).build();
        let options = FamilyOptions::new(Config::default()).idle_eviction(Duration::from_secs(60));
        let family = registry.family("t", options);
        let key = CountedPath::default();
        let writes = || key.0.load(std::sync::atomic::Ordering::Relaxed);
        let mut k = Keyed::new(family.clone(), key.clone());
        for _ in 0..3 {
            k.acquire(&request("/a")).unwrap().success();
        }
        assert_eq!(writes(), 1, "only the first call writes the key");
        k.acquire(&request("/b")).unwrap().success();
        assert_eq!(writes(), 2, "another key is written");
        let successes = |key: &str| {
            let member = family.get_existing(key).expect("a member");
            member.snapshot().window.successful_calls
        };
        assert_eq!(successes("/a"), 3);
        // Evicted: "/a" is written again and its new member used.
        family.evict_idle();
        clock.advance(Duration::from_secs(61));
        assert_eq!(family.evict_idle(), 2);
        k.acquire(&request("/a")).unwrap().success();
        assert_eq!(writes(), 3);
        assert_eq!(successes("/a"), 1);
    }

    /// Each provided key function tells in place what it writes.
    fn tells_what_it_writes<F: KeyFn<()>>(f: &F, req: &Request<()>, other: &Request<()>) {
        let mut written = String::new();
        f.key(req, &mut written);
        assert_eq!(f.is_key(req, &written), Some(true), "{written:?}");
        let mut other_key = String::new();
        f.key(other, &mut other_key);
        assert_eq!(f.is_key(other, &written), Some(written == other_key));
        assert_eq!(f.is_key(req, &format!("{written}x")), Some(false));
        assert_eq!(f.is_key(req, &written[..written.len() - 1]), Some(false));
    }

    proptest::proptest! {
        #[test]
        fn provided_key_functions_tell_what_they_write(
            method in "(GET|POST|PUT|DELETE|PATCH|[A-Z]{1,8})",
            path in "/[a-z0-9 ]{0,6}",
            other_path in "/[a-z0-9 ]{0,6}",
            host in proptest::option::of("[a-z]{1,5}(:[0-9]{1,4})?"),
        ) {
            let path = path.replace(' ', "%20");
            let other_path = other_path.replace(' ', "%20");
            let make = |method: &str, path: &str| {
                let mut b = Request::builder().method(method).uri(path);
                if let Some(h) = &host {
                    b = b.header(http::header::HOST, h.as_str());
                }
                b.body(()).unwrap()
            };
            let req = make(&method, &path);
            let other = make("GET", &other_path);
            tells_what_it_writes(&GrpcMethod, &req, &other);
            tells_what_it_writes(&RawPath, &req, &other);
            tells_what_it_writes(&Authority, &req, &other);
            #[cfg(feature = "axum")]
            tells_what_it_writes(&MethodAndRoute, &req, &other);
        }
    }

    #[test]
    fn a_closure_cannot_tell_in_place() {
        let f = |req: &Request<()>, buf: &mut String| buf.push_str(req.uri().path());
        assert_eq!(KeyFn::is_key(&f, &request("/a"), "/a"), None);
    }
}
