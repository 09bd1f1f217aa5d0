//! The last good response per request, for stale-if-error.

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use breakwater_core::{Clock, ClockHandle, ConfigError};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, Version, header};
use lru::LruCache;

/// Default [`StaleCacheBuilder::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 1_024;
/// Default [`StaleCacheBuilder::max_bytes`]: 16 MiB.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;
/// Default [`StaleCacheBuilder::max_body_bytes`]: 256 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 << 10;
/// Default [`StaleCacheBuilder::ttl`]: 5 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default [`StaleCacheBuilder::refresh_after`]: 1 second.
pub const DEFAULT_REFRESH_AFTER: Duration = Duration::from_secs(1);

/// What an entry costs beyond its key, headers and body (the map's node, the entry itself).
const ENTRY_OVERHEAD: usize = 128;

type KeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// A bounded cache of the last successful response to each GET and HEAD request, served by
/// [`FallbackLayer::stale_if_error`](super::FallbackLayer::stale_if_error) when the dependency
/// is unavailable.
///
/// Bounded three ways: entries, bytes (keys, headers and bodies, plus a fixed cost per entry;
/// least recently used entries go first) and age (an entry older than the TTL is never served).
/// A body larger than [`max_body_bytes`](StaleCacheBuilder::max_body_bytes) is never buffered:
/// the response streams through untouched and is not cached.
///
/// What is cached: 2xx responses other than 206 to GET and HEAD, unless the response says
/// `Cache-Control: no-store` or `private`, or the request carried `Authorization` and the
/// response is not marked `public` (as a shared HTTP cache would). The key is the method, the
/// authority (for absolute URIs) and the path with its query; [`key`](StaleCacheBuilder::key)
/// replaces it. Clones share the cache.
///
/// A kept answer is replaced by a newer one once it is
/// [`refresh_after`](StaleCacheBuilder::refresh_after) old (1 s by default): a key asked for
/// many times a second is copied into the cache about once a second, not on every request, so a
/// stale answer is at most that much older than the last good one. A request looks its key up
/// once, as it starts; if it fails, it is answered from the entry found then, while that is
/// within the TTL.
///
/// ```
/// use std::time::Duration;
/// use breakwater::tower::fallback::StaleCache;
///
/// let cache = StaleCache::builder()
///     .max_entries(10_000)
///     .max_bytes(64 << 20)
///     .ttl(Duration::from_secs(600))
///     .build()
///     .unwrap();
/// assert!(cache.is_empty());
///
/// let err = StaleCache::builder().max_entries(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_entries");
/// ```
#[derive(Clone)]
pub struct StaleCache {
    inner: Arc<Inner>,
}

struct Inner {
    lru: Mutex<Lru>,
    max_entries: usize,
    max_bytes: usize,
    max_body_bytes: usize,
    ttl: Duration,
    refresh_after: Duration,
    clock: ClockHandle,
    key: Option<Box<KeyFn>>,
}

struct Lru {
    map: LruCache<String, Arc<Entry>>,
    bytes: usize,
}

/// A cached response.
pub(crate) struct Entry {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    stored_at: Duration,
    size: usize,
}

impl fmt::Debug for StaleCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCache")
            .field("entries", &self.len())
            .field("bytes", &self.bytes())
            .field("max_entries", &self.inner.max_entries)
            .field("max_bytes", &self.inner.max_bytes)
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

impl Default for StaleCache {
    fn default() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }
}

impl StaleCache {
    /// A cache with the defaults: 1,024 entries, 16 MiB, bodies up to 256 KiB, 5 minutes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, starting from the defaults.
    pub fn builder() -> StaleCacheBuilder {
        StaleCacheBuilder {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ttl: DEFAULT_TTL,
            refresh_after: None,
            clock: ClockHandle::System,
            key: None,
        }
    }

    /// How many responses are cached.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many bytes the cached responses account for (never above
    /// [`max_bytes`](StaleCacheBuilder::max_bytes)).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Drops every entry.
    pub fn clear(&self) {
        let mut lru = self.lock();
        lru.map.clear();
        lru.bytes = 0;
    }

    pub(crate) fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        self.inner.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the key is a [`key`](StaleCacheBuilder::key) function's (which reads the
    /// request's `Parts`).
    pub(crate) fn has_key_fn(&self) -> bool {
        self.inner.key.is_some()
    }

    /// What the cache holds for a request whose response may be cached (by its key, read from
    /// `parts`), or `None`.
    pub(crate) fn look_up_parts(&self, parts: &Parts) -> Option<Cached> {
        if !is_cached_method(&parts.method) {
            return None;
        }
        match &self.inner.key {
            Some(f) => f(parts).map(|key| {
                let mut cached = self.look_up_key(&key, String::new);
                if let Some(record) = &mut cached.record {
                    record.key = key;
                }
                cached
            }),
            None => self.look_up(&parts.method, &parts.uri),
        }
    }

    /// What the cache holds for a request whose response may be cached, by the default key
    /// (method, authority, path and query; without a [`key`](StaleCacheBuilder::key)
    /// function), or `None`. The key is written into a buffer kept per thread: a request
    /// costs no allocation for it unless its answer is to be recorded.
    pub(crate) fn look_up(&self, method: &Method, uri: &Uri) -> Option<Cached> {
        if !is_cached_method(method) {
            return None;
        }
        let mut buf = KEY.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        write_default_key(&mut buf, method, uri);
        let cached = self.look_up_key(&buf, || buf.clone());
        if buf.capacity() <= KEEP_KEY_BUFFER {
            // Gone only while the thread is exiting: then the buffer is simply freed.
            let _ = KEY.try_with(|k| k.set(buf));
        }
        Some(cached)
    }

    /// The entry for `key` (an expired one is dropped), and `key` (from `owned`) when a good
    /// answer is to be recorded: no entry, or one at least `refresh_after` old (a fresher one
    /// counts as used, for the least-recently-used order).
    fn look_up_key(&self, key: &str, owned: impl FnOnce() -> String) -> Cached {
        let now = self.inner.clock.now();
        let entry = {
            let mut lru = self.lock();
            match lru.map.get(key) {
                Some(e) if now.saturating_sub(e.stored_at) > self.inner.ttl => {
                    let size = e.size;
                    lru.map.pop(key);
                    lru.bytes -= size;
                    None
                }
                e => e.cloned(),
            }
        };
        let refresh = entry.as_ref().is_none_or(|e| {
            self.inner.refresh_after.is_zero()
                || now.saturating_sub(e.stored_at) >= self.inner.refresh_after
        });
        Cached {
            entry,
            record: refresh.then(|| {
                Box::new(Record {
                    key: owned(),
                    authorized: false,
                })
            }),
        }
    }

    /// Whether `entry` may still be served (not older than the TTL).
    pub(crate) fn is_fresh(&self, entry: &Entry) -> bool {
        self.inner.clock.now().saturating_sub(entry.stored_at) <= self.inner.ttl
    }

    /// Whether a response may be cached (its status and `Cache-Control`); `authorized` when the
    /// request carried credentials.
    pub(crate) fn admits<B>(&self, res: &Response<B>, authorized: bool) -> bool {
        let status = res.status();
        if !status.is_success() || status == StatusCode::PARTIAL_CONTENT {
            return false;
        }
        let mut public = false;
        for v in res.headers().get_all(header::CACHE_CONTROL) {
            let Ok(v) = v.to_str() else { continue };
            for directive in v.split(',').map(str::trim) {
                if directive.eq_ignore_ascii_case("no-store")
                    || directive.eq_ignore_ascii_case("private")
                {
                    return false;
                }
                public |= directive.eq_ignore_ascii_case("public");
            }
        }
        if authorized && !public {
            return false;
        }
        res.headers().get(super::X_FALLBACK).is_none()
            && content_length(res).is_none_or(|n| n <= self.inner.max_body_bytes as u64)
    }

    pub(crate) fn insert(
        &self,
        key: String,
        status: StatusCode,
        version: Version,
        headers: HeaderMap,
        body: Bytes,
    ) {
        let header_bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        let size = ENTRY_OVERHEAD + key.len() + header_bytes + body.len();
        if size > self.inner.max_bytes || body.len() > self.inner.max_body_bytes {
            return;
        }
        let entry = Arc::new(Entry {
            status,
            version,
            headers,
            body,
            stored_at: self.inner.clock.now(),
            size,
        });
        let mut lru = self.lock();
        if let Some(old) = lru.map.put(key, entry) {
            lru.bytes -= old.size;
        }
        lru.bytes += size;
        while lru.bytes > self.inner.max_bytes || lru.map.len() > self.inner.max_entries {
            match lru.map.pop_lru() {
                Some((_, old)) => lru.bytes -= old.size,
                None => break,
            }
        }
    }

    /// The fresh entry for `key`; an expired one is dropped.
    #[cfg(test)]
    fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let cached = self.look_up_key(key, String::new);
        cached.entry.filter(|e| self.is_fresh(e))
    }

    /// The stale answer from `entry`, marked as such.
    pub(crate) fn response(&self, entry: &Entry) -> Response<Bytes> {
        let age = self
            .inner
            .clock
            .now()
            .saturating_sub(entry.stored_at)
            .as_secs();
        let mut res = Response::new(entry.body.clone());
        *res.status_mut() = entry.status;
        *res.version_mut() = entry.version;
        *res.headers_mut() = entry.headers.clone();
        let h = res.headers_mut();
        h.insert(header::AGE, HeaderValue::from(age));
        h.append(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
        res
    }
}

fn is_cached_method(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// What the cache held for a request when it started.
#[derive(Default)]
pub(crate) struct Cached {
    /// The entry kept for the request's key (served if the call fails while it is fresh).
    pub(crate) entry: Option<Arc<Entry>>,
    /// What a good answer is recorded under, when none is kept or the kept one is at least
    /// `refresh_after` old (boxed: the usual request records nothing, and carries this along).
    pub(crate) record: Option<Box<Record>>,
}

/// The key a good answer is recorded under, and whether the request carried credentials.
pub(crate) struct Record {
    pub(crate) key: String,
    pub(crate) authorized: bool,
}

/// A default key written out longer than this is not kept for the next (keys are short).
const KEEP_KEY_BUFFER: usize = 4 * 1024;

thread_local! {
    /// The buffer default keys are written into for a lookup.
    static KEY: Cell<String> = const { Cell::new(String::new()) };
}

/// `GET example.com/items?page=2`: method, authority when the URI has one, path and query.
fn write_default_key(key: &mut String, method: &Method, uri: &Uri) {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let authority = uri.authority().map_or("", |a| a.as_str());
    key.reserve(method.as_str().len() + 1 + authority.len() + pq.len());
    key.push_str(method.as_str());
    key.push(' ');
    key.push_str(authority);
    key.push_str(pq);
}

/// The declared `Content-Length`, if any.
fn content_length<B>(res: &Response<B>) -> Option<u64> {
    res.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Builds a [`StaleCache`]; see there.
#[must_use]
pub struct StaleCacheBuilder {
    max_entries: usize,
    max_bytes: usize,
    max_body_bytes: usize,
    ttl: Duration,
    refresh_after: Option<Duration>,
    clock: ClockHandle,
    key: Option<Box<KeyFn>>,
}

impl fmt::Debug for StaleCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCacheBuilder")
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("ttl", &self.ttl)
            .field("refresh_after", &self.refresh_after)
            .finish_non_exhaustive()
    }
}

impl StaleCacheBuilder {
    /// At most this many responses (least recently used go first).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// At most this many bytes in all.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// Bodies above this size are never buffered nor cached.
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Entries older than this are not served.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Keeps an answer until it is this old before a newer one replaces it (zero: every good
    /// answer replaces the kept one). Must be shorter than the TTL; by default
    /// [`DEFAULT_REFRESH_AFTER`], or half the TTL if that is shorter.
    pub fn refresh_after(mut self, age: Duration) -> Self {
        self.refresh_after = Some(age);
        self
    }

    /// The clock that ages entries (a [`ManualClock`](breakwater_core::ManualClock) in tests).
    pub fn clock(mut self, clock: impl Into<ClockHandle>) -> Self {
        self.clock = clock.into();
        self
    }

    /// The key of a GET or HEAD request, or `None` not to cache it.
    pub fn key(mut self, key: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.key = Some(Box::new(key));
        self
    }

    /// The cache, or the first invalid field.
    pub fn build(self) -> Result<StaleCache, ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::new("max_entries", "must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::new("max_bytes", "must be at least 1"));
        }
        if self.max_body_bytes > self.max_bytes {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must not exceed max_bytes ({})", self.max_bytes),
            ));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::new("ttl", "must be more than zero"));
        }
        let refresh_after = match self.refresh_after {
            Some(r) if r >= self.ttl => {
                return Err(ConfigError::new(
                    "refresh_after",
                    format!("must be shorter than the ttl ({:?})", self.ttl),
                ));
            }
            Some(r) => r,
            None => DEFAULT_REFRESH_AFTER.min(self.ttl / 2),
        };
        Ok(StaleCache {
            inner: Arc::new(Inner {
                lru: Mutex::new(Lru {
                    map: LruCache::unbounded(),
                    bytes: 0,
                }),
                max_entries: self.max_entries,
                max_bytes: self.max_bytes,
                max_body_bytes: self.max_body_bytes,
                ttl: self.ttl,
                refresh_after,
                clock: self.clock,
                key: self.key,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater_core::ManualClock;

    fn parts(method: Method, uri: &str) -> Parts {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn keys_are_method_authority_path_and_query() {
        let cache = StaleCache::new();
        let key = |method: Method, uri: &str| {
            let p = parts(method, uri);
            let key = |c: Cached| c.record.map(|r| r.key);
            let in_place = cache.look_up(&p.method, &p.uri).and_then(key);
            assert_eq!(in_place, cache.look_up_parts(&p).and_then(key));
            in_place
        };
        assert_eq!(
            key(Method::GET, "http://a.test/items?page=2").as_deref(),
            Some("GET a.test/items?page=2")
        );
        assert_eq!(key(Method::HEAD, "/x").as_deref(), Some("HEAD /x"));
        assert!(key(Method::POST, "/x").is_none());
    }

    #[test]
    fn a_lookup_finds_the_entry_and_asks_for_a_record_once_it_is_refresh_after_old() {
        let clock = ManualClock::new();
        let cache = StaleCache::builder()
            .refresh_after(Duration::from_secs(1))
            .clock(clock.clone())
            .build()
            .unwrap();
        let p = parts(Method::GET, "/items?page=2");
        let first = cache.look_up(&p.method, &p.uri).unwrap();
        assert!(first.entry.is_none());
        cache.insert(
            first.record.expect("nothing kept: record").key,
            StatusCode::OK,
            Version::HTTP_11,
            HeaderMap::new(),
            Bytes::from_static(b"kept"),
        );
        let fresh = cache.look_up(&p.method, &p.uri).unwrap();
        assert_eq!(fresh.entry.unwrap().body, "kept");
        assert!(fresh.record.is_none(), "fresh for refresh_after");
        clock.advance(Duration::from_secs(1));
        let old = cache.look_up(&p.method, &p.uri).unwrap();
        assert!(old.entry.is_some());
        assert_eq!(old.record.unwrap().key, "GET /items?page=2");
        let other = parts(Method::GET, "/items?page=3");
        assert!(cache.look_up_parts(&other).unwrap().entry.is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let clock = ManualClock::new();
        let cache = StaleCache::builder()
            .ttl(Duration::from_secs(10))
            .clock(clock.clone())
            .build()
            .unwrap();
        let put = |k: &str| {
            cache.insert(
                k.into(),
                StatusCode::OK,
                Version::HTTP_11,
                HeaderMap::new(),
                Bytes::from_static(b"hello"),
            )
        };
        put("GET /a");
        clock.advance(Duration::from_secs(10));
        let entry = cache.get("GET /a").expect("fresh at the TTL");
        assert_eq!(cache.response(&entry).headers()[header::AGE], "10");
        clock.advance(Duration::from_millis(1));
        assert!(cache.get("GET /a").is_none());
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn bounds_hold_and_least_recently_used_go_first() {
        let cache = StaleCache::builder()
            .max_entries(3)
            .max_bytes(10_000)
            .max_body_bytes(1_000)
            .build()
            .unwrap();
        for k in ["a", "b", "c"] {
            cache.insert(
                k.into(),
                StatusCode::OK,
                Version::HTTP_11,
                HeaderMap::new(),
                Bytes::new(),
            );
        }
        assert!(cache.get("a").is_some());
        cache.insert(
            "d".into(),
            StatusCode::OK,
            Version::HTTP_11,
            HeaderMap::new(),
            Bytes::new(),
        );
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert_eq!(cache.len(), 3);
        cache.insert(
            "big".into(),
            StatusCode::OK,
            Version::HTTP_11,
            HeaderMap::new(),
            Bytes::from(vec![0; 1_001]),
        );
        assert!(cache.get("big").is_none(), "over max_body_bytes");
    }

    #[test]
    fn invalid_builders_name_the_field() {
        for (b, field) in [
            (StaleCache::builder().max_bytes(0), "max_bytes"),
            (
                StaleCache::builder().max_bytes(10).max_body_bytes(11),
                "max_body_bytes",
            ),
            (StaleCache::builder().ttl(Duration::ZERO), "ttl"),
        ] {
            assert_eq!(b.build().unwrap_err().field(), field);
        }
    }
}
