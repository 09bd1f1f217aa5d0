//! For scale: the least a breaker layer can do per call in CLOSED, as a tower layer in the same
//! harness as the real one. Its future wraps the inner one, turns the error into a `BoxError`
//! (as the client-side breaker does), reads the response status and makes one `fetch_add` on a
//! counter the service shares. With `OWNED` the future also holds its own reference to the
//! shared counter (an `Arc` clone per call, dropped when the call ends), as any response future
//! that must outlive the service it came from holds the breaker.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http::Response;
use tower::{BoxError, Service};

/// The floor layer's service: see the module docs.
pub(crate) struct Floor<S, const OWNED: bool> {
    inner: S,
    counter: Arc<AtomicU64>,
    /// The same counter for the unowned form: a `'static` borrow, no reference count.
    unowned: &'static AtomicU64,
}

impl<S, const OWNED: bool> Floor<S, OWNED> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            counter: Arc::new(AtomicU64::new(0)),
            unowned: Box::leak(Box::new(AtomicU64::new(0))),
        }
    }
}

/// The floor layer's future.
pub(crate) struct FloorFuture<F> {
    inner: F,
    owned: Option<Arc<AtomicU64>>,
    unowned: &'static AtomicU64,
}

impl<S, B, Req, const OWNED: bool> Service<Req> for Floor<S, OWNED>
where
    S: Service<Req, Response = Response<B>, Error = Infallible, Future: Unpin>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = FloorFuture<S::Future>;

    #[inline(always)]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        FloorFuture {
            inner: self.inner.call(req),
            owned: OWNED.then(|| self.counter.clone()),
            unowned: self.unowned,
        }
    }
}

impl<F, B> Future for FloorFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>> + Unpin,
{
    type Output = Result<Response<B>, BoxError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Ok(res) = ready!(Pin::new(&mut this.inner).poll(cx));
        let failed = res.status().is_server_error();
        let counter = this.owned.as_deref().unwrap_or(this.unowned);
        counter.fetch_add(if failed { 1 << 32 } else { 1 }, Ordering::AcqRel);
        drop(this.owned.take());
        Poll::Ready(Ok(res))
    }
}

/// For scale: the least a keyed breaker layer can do per call, the same as [`Floor`] with
/// `OWNED` plus what any keyed layer must add: write the request's key (its path) into a
/// buffer the service reuses, find the key's counter in a concurrent map with lock-free reads
/// (papaya, hashed with foldhash, as the family's members are), and clone that counter's
/// reference for the future in `call`, the request in hand. No states, no window, no overflow.
pub(crate) struct FloorKeyed<S> {
    inner: S,
    map: Arc<papaya::HashMap<Box<str>, Arc<AtomicU64>, foldhash::fast::RandomState>>,
    buf: String,
}

impl<S> FloorKeyed<S> {
    /// With one counter, for `key`.
    pub(crate) fn new(inner: S, key: &str) -> Self {
        let map = papaya::HashMap::with_hasher(foldhash::fast::RandomState::default());
        map.pin()
            .insert(Box::from(key), Arc::new(AtomicU64::new(0)));
        Self {
            inner,
            map: Arc::new(map),
            buf: String::new(),
        }
    }
}

impl<S, B, ReqB> Service<http::Request<ReqB>> for FloorKeyed<S>
where
    S: Service<http::Request<ReqB>, Response = Response<B>, Error = Infallible, Future: Unpin>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = FloorFuture<S::Future>;

    #[inline(always)]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline(always)]
    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        self.buf.clear();
        self.buf.push_str(req.uri().path());
        let owned = self.map.pin().get(self.buf.as_str()).cloned();
        FloorFuture {
            inner: self.inner.call(req),
            owned,
            unowned: &UNKNOWN_KEY,
        }
    }
}

/// Where a key the map does not hold is counted.
static UNKNOWN_KEY: AtomicU64 = AtomicU64::new(0);
