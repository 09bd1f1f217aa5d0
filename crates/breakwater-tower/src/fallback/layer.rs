use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use breakwater_core::Registry;
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use super::cache::StaleCache;
use super::service::{FallbackService, NoBodyReplay, ReplayBodies};
use super::strategy::{Failure, FallbackStats, Fixed, Shared, Strategy};
use crate::classify::HttpFailures;
use crate::error::BoxError;

/// Layer that applies [`FallbackService`]: what callers get when a circuit is open or, when
/// configured, when the dependency failed.
///
/// Strategies are tried in the order they are added; the first that answers wins. See the
/// [module docs](super) for an example.
///
/// `R` says whether request bodies are buffered for replay ([`NoBodyReplay`], the default, or
/// [`ReplayBodies`]); `A` is `()` (responses carry a [`FallbackBody`](super::FallbackBody)) or,
/// with the `axum` feature, `ForAxum` (axum's own `Body`, see
/// [`for_axum`](FallbackLayer::for_axum)).
#[must_use]
#[derive(Clone)]
pub struct FallbackLayer<R = NoBodyReplay, A = ()> {
    /// The settings, as every service of this layer shares them: axum clones a handler's
    /// layers and applies them on every request, so cloning and applying must be cheap.
    shared: Arc<Shared>,
    replay: R,
    _body: PhantomData<fn() -> A>,
}

impl<R: std::fmt::Debug, A> std::fmt::Debug for FallbackLayer<R, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.shared;
        let strategies: Vec<_> = s.strategies.iter().map(Strategy::name).collect();
        f.debug_struct("FallbackLayer")
            .field("name", &s.name)
            .field("strategies", &strategies)
            .field("on_errors", &s.on_errors)
            .field("on_timeouts", &s.on_timeouts)
            .field("failed_responses", &s.failed_responses)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl Default for FallbackLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl FallbackLayer {
    /// No strategy yet, applying to refused calls ([`CircuitOpen`](crate::CircuitOpen)) only:
    /// a refusal becomes the 503 `CIRCUIT_OPEN` answer (gRPC: UNAVAILABLE), any other error a
    /// 502 `UPSTREAM_ERROR` (504 `UPSTREAM_TIMEOUT` for a timeout), so the service is
    /// infallible.
    pub fn new() -> Self {
        FallbackLayer {
            shared: Arc::new(Shared {
                name: Arc::from("fallback"),
                ..Shared::default()
            }),
            replay: NoBodyReplay,
            _body: PhantomData,
        }
    }
}

impl<A> FallbackLayer<NoBodyReplay, A> {
    /// Buffers request bodies of a known size up to `limit` bytes before the call, so a
    /// request with a body (a POST, say) can be replayed to a [`backup`](Self::backup). Larger
    /// or streamed bodies are not buffered; such a request does not fail over, and the answer
    /// says why. Needs a body type that can be rebuilt from bytes (axum's `Body`,
    /// `Full<Bytes>`) and a `Clone` inner service; the response future is then boxed.
    pub fn replay_bodies(self, limit: usize) -> FallbackLayer<ReplayBodies, A> {
        self.convert(|_| ReplayBodies { limit })
    }
}

impl<R> FallbackLayer<R> {
    /// In an axum app: the responses carry axum's own `Body`, so axum has no body of another
    /// type to box once more per response. A good answer's body is passed on as it is (axum's
    /// `Body` stays unboxed); a fallback's body, or one being recorded for stale-if-error, is
    /// boxed.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use breakwater::{CircuitBreaker, Config};
    /// use breakwater::tower::CircuitBreakerLayer;
    /// use breakwater::tower::fallback::FallbackLayer;
    /// use http::Response;
    /// use tower::ServiceBuilder;
    ///
    /// let breaker = CircuitBreaker::new("items", Config::default());
    /// let app: Router = Router::new().route("/items", get(|| async { "[1,2,3]" })).layer(
    ///     ServiceBuilder::new()
    ///         .layer(FallbackLayer::new().fixed(Response::new("[]")).for_axum())
    ///         .layer(CircuitBreakerLayer::new(breaker).for_axum()),
    /// );
    /// # let _ = app;
    /// ```
    #[cfg(feature = "axum")]
    pub fn for_axum(self) -> FallbackLayer<R, crate::ForAxum> {
        self.convert(|replay| replay)
    }
}

impl<R, A> FallbackLayer<R, A> {
    fn convert<R2, A2>(self, replay: impl FnOnce(R) -> R2) -> FallbackLayer<R2, A2> {
        FallbackLayer {
            shared: self.shared,
            replay: replay(self.replay),
            _body: PhantomData,
        }
    }

    /// The name events carry when no circuit is involved (default `fallback`); a refusal's
    /// events carry the refusing circuit's name.
    pub fn named(mut self, name: impl AsRef<str>) -> Self {
        self.settings().name = Arc::from(name.as_ref());
        self
    }

    /// Emits [`EventKind::FallbackUsed`](breakwater_core::EventKind::FallbackUsed) into
    /// `registry`'s event stream on every use.
    pub fn events(mut self, registry: &Registry) -> Self {
        self.settings().events = Some(registry.clone());
        self
    }

    /// Also falls back when the inner service fails with any error (transport errors,
    /// timeouts).
    pub fn on_errors(mut self) -> Self {
        self.settings().on_errors = true;
        self
    }

    /// Also falls back on timeouts: tower's `Elapsed` or an I/O `TimedOut` error anywhere in the
    /// error's chain, or a 408 or 504 answer (tower-http's `TimeoutLayer` answers 408).
    pub fn on_timeouts(mut self) -> Self {
        self.settings().on_timeouts = true;
        self
    }

    /// Also falls back on answers [`HttpFailures`] calls failures (5xx, 408). When no strategy
    /// answers, the dependency's own answer is passed on.
    pub fn on_failed_responses(self) -> Self {
        self.on_failed_responses_with(HttpFailures::new())
    }

    /// Also falls back on answers `classifier` calls failures (e.g. with 429).
    pub fn on_failed_responses_with(mut self, classifier: HttpFailures) -> Self {
        self.settings().failed_responses = Some(classifier);
        self
    }

    /// Answers with a fixed response (its status, headers and body), e.g. 200 `[]` for a list.
    ///
    /// ```
    /// use breakwater::tower::fallback::FallbackLayer;
    /// use http::{Response, header};
    ///
    /// let layer = FallbackLayer::new().fixed(
    ///     Response::builder()
    ///         .header(header::CONTENT_TYPE, "application/json")
    ///         .body("[]")
    ///         .unwrap(),
    /// );
    /// # let _ = layer;
    /// ```
    pub fn fixed<T: Into<Bytes>>(mut self, response: Response<T>) -> Self {
        self.add(Strategy::Fixed(Arc::new(Fixed::from_response(response))));
        self
    }

    /// Answers with a function of the request's head and the failure.
    pub fn function<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts, &Failure) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.add(Strategy::Function(Arc::new(move |parts, failure| {
            Box::pin(std::future::ready(f(parts, failure)))
        })));
        self
    }

    /// Answers with an async function of the request's head and the failure.
    pub fn async_function<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(&Parts, &Failure) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Bytes>> + Send + 'static,
    {
        self.add(Strategy::Function(Arc::new(move |parts, failure| {
            Box::pin(f(parts, failure))
        })));
        self
    }

    /// Keeps the last good answer to each GET and HEAD request in `cache` and serves it while
    /// the dependency is unavailable, with `x-fallback: stale`, `Warning: 110` and `Age`.
    pub fn stale_if_error(mut self, cache: StaleCache) -> Self {
        self.add(Strategy::Stale(cache));
        self
    }

    /// Sends the request to `service` instead (failover), e.g. a second upstream with its own
    /// breaker. Requests without a body replay when idempotent; others need
    /// [`replay_bodies`](FallbackLayer::replay_bodies). The backup's answer is taken unless its
    /// own circuit refused, it failed, or (with [`on_failed_responses`](Self::on_failed_responses))
    /// it is a failure too; then the next strategy is tried.
    pub fn backup<S, B, RB>(mut self, service: S) -> Self
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: From<Bytes> + 'static,
        RB: Body<Data = Bytes> + Send + 'static,
        RB::Error: Into<BoxError>,
    {
        let service = tower::ServiceBuilder::new()
            .map_request(|req: Request<Bytes>| req.map(B::from))
            .map_response(|res: Response<RB>| res.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into)
            .service(service);
        self.add(Strategy::Backup(BoxCloneSyncService::new(service)));
        self
    }

    /// How often each strategy answered; shared by every service this layer makes.
    pub fn stats(&self) -> FallbackStats {
        self.shared.stats.clone()
    }

    /// The settings, to change (copied first if another layer shares them).
    fn settings(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.shared)
    }

    fn add(&mut self, strategy: Strategy) {
        let s = self.settings();
        s.strategies.push(strategy);
        s.keep_parts = s
            .strategies
            .iter()
            .any(|s| matches!(s, Strategy::Function(_) | Strategy::Backup(_)));
        s.stale = s.strategies.iter().find_map(|s| match s {
            Strategy::Stale(cache) => Some(cache.clone()),
            _ => None,
        });
    }
}

impl<R: Clone, A> FallbackLayer<R, A> {
    fn service<S>(&self, inner: S) -> FallbackService<S, R> {
        FallbackService {
            inner,
            shared: self.shared.clone(),
            replay: self.replay.clone(),
            not_ready: None,
        }
    }
}

impl<S, R: Clone> Layer<S> for FallbackLayer<R> {
    type Service = FallbackService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        self.service(inner)
    }
}

#[cfg(feature = "axum")]
impl<S, R: Clone> Layer<S> for FallbackLayer<R, crate::ForAxum> {
    type Service = super::AxumBodyService<FallbackService<S, R>>;

    fn layer(&self, inner: S) -> Self::Service {
        super::AxumBodyService {
            inner: self.service(inner),
        }
    }
}
