use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::registry::HealthRegistry;
use super::report::{HEALTH_JSON, HealthReport};

#[derive(Debug, Clone)]
struct Paths {
    health: Arc<str>,
    live: Arc<str>,
    ready: Arc<str>,
}

/// Layer that applies [`HealthService`]: answers `GET /health`, `/health/live` and
/// `/health/ready` from a [`HealthRegistry`] in `application/health+json`, without calling the
/// inner service; every other request passes through untouched.
///
/// `/health` reports everything (200 for pass and warn, 503 for fail), `/health/ready` the
/// critical checks only, `/health/live` only that the process answers. Answers carry
/// `Cache-Control: max-age=2`.
///
/// In an axum app, [`OpsApi`](https://docs.rs/breakwater-axum)'s router answers the same paths
/// and needs no `HealthLayer`; use the layer for hyper or tonic servers, or for an axum app
/// without the ops API, with [`for_axum`](HealthLayer::for_axum) so that its responses carry
/// axum's own `Body` (axum then boxes no response body once more).
///
/// ```
/// use axum::{Router, routing::get};
/// use breakwater::Registry;
/// use breakwater::tower::health::{HealthLayer, HealthRegistry};
///
/// let health = HealthRegistry::new(&Registry::new());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(HealthLayer::new(health).for_axum());
/// # let _ = app;
/// ```
#[derive(Debug)]
#[must_use]
pub struct HealthLayer<A = ()> {
    registry: HealthRegistry,
    paths: Paths,
    _answer: PhantomData<fn() -> A>,
}

impl<A> Clone for HealthLayer<A> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            paths: self.paths.clone(),
            _answer: PhantomData,
        }
    }
}

impl HealthLayer {
    /// Answers on `/health`, `/health/live` and `/health/ready`.
    pub fn new(registry: HealthRegistry) -> Self {
        Self {
            registry,
            paths: Paths {
                health: Arc::from("/health"),
                live: Arc::from("/health/live"),
                ready: Arc::from("/health/ready"),
            },
            _answer: PhantomData,
        }
    }

    /// For an axum app: the responses carry axum's own `Body` (the inner service's passes
    /// through as it is), instead of an `Either` that axum would box on every response.
    #[cfg(feature = "axum")]
    pub fn for_axum(self) -> HealthLayer<crate::ForAxum> {
        HealthLayer {
            registry: self.registry,
            paths: self.paths,
            _answer: PhantomData,
        }
    }
}

impl<A> HealthLayer<A> {
    /// Answers the full report on `path` instead of `/health`.
    pub fn health_path(mut self, path: &str) -> Self {
        self.paths.health = Arc::from(path);
        self
    }

    /// Answers liveness on `path` instead of `/health/live`.
    pub fn live_path(mut self, path: &str) -> Self {
        self.paths.live = Arc::from(path);
        self
    }

    /// Answers readiness on `path` instead of `/health/ready`.
    pub fn ready_path(mut self, path: &str) -> Self {
        self.paths.ready = Arc::from(path);
        self
    }
}

impl<S, A> Layer<S> for HealthLayer<A> {
    type Service = HealthService<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        HealthService {
            inner,
            registry: self.registry.clone(),
            paths: self.paths.clone(),
            _answer: PhantomData,
        }
    }
}

/// Middleware that answers health requests; see [`HealthLayer`].
#[derive(Debug)]
#[must_use]
pub struct HealthService<S, A = ()> {
    inner: S,
    registry: HealthRegistry,
    paths: Paths,
    _answer: PhantomData<fn() -> A>,
}

impl<S: Clone, A> Clone for HealthService<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            paths: self.paths.clone(),
            _answer: PhantomData,
        }
    }
}

impl<S, A> HealthService<S, A> {
    define_inner_service_accessors!();

    /// The future for `req`: the health answer, or the inner service's.
    fn respond<ReqBody>(&mut self, req: Request<ReqBody>) -> ResponseFuture<S::Future, A>
    where
        S: Service<Request<ReqBody>>,
    {
        let method = req.method();
        if (method == Method::GET || method == Method::HEAD)
            && let Some(report) = self.answer(req.uri().path())
        {
            let res = health_response(&report, method == Method::HEAD);
            return ResponseFuture {
                kind: Kind::Answer { res: Some(res) },
                _answer: PhantomData,
            };
        }
        ResponseFuture {
            kind: Kind::Inner {
                future: self.inner.call(req),
            },
            _answer: PhantomData,
        }
    }

    fn answer(&self, path: &str) -> Option<HealthReport> {
        if path == &*self.paths.health {
            Some(self.registry.report())
        } else if path == &*self.paths.ready {
            Some(self.registry.readiness())
        } else if path == &*self.paths.live {
            Some(self.registry.liveness())
        } else {
            None
        }
    }
}

/// The answer to a health request.
pub fn health_response(report: &HealthReport, head: bool) -> Response<Full<Bytes>> {
    let body = if head { Bytes::new() } else { report.to_json() };
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = report.status.http_status();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=2"));
    res
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HealthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<Either<Full<Bytes>, ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.respond(req)
    }
}

#[cfg(feature = "axum")]
impl<S, ReqBody> Service<Request<ReqBody>> for HealthService<S, crate::ForAxum>
where
    S: Service<Request<ReqBody>, Response = Response<axum_core::body::Body>>,
{
    type Response = Response<axum_core::body::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, crate::ForAxum>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.respond(req)
    }
}

pin_project! {
    /// Response future of [`HealthService`].
    pub struct ResponseFuture<F, A = ()> {
        #[pin]
        kind: Kind<F>,
        _answer: PhantomData<fn() -> A>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Answer { res: Option<Response<Full<Bytes>>> },
        Inner { #[pin] future: F },
    }
}

impl<F, A> std::fmt::Debug for ResponseFuture<F, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<Full<Bytes>, B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Answer { res } => {
                let res = res.take().expect("polled after completion");
                Poll::Ready(Ok(res.map(Either::Left)))
            }
            KindProj::Inner { future } => {
                future.poll(cx).map(|r| r.map(|res| res.map(Either::Right)))
            }
        }
    }
}

#[cfg(feature = "axum")]
impl<F, E> Future for ResponseFuture<F, crate::ForAxum>
where
    F: Future<Output = Result<Response<axum_core::body::Body>, E>>,
{
    type Output = Result<Response<axum_core::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Answer { res } => {
                let res = res.take().expect("polled after completion");
                Poll::Ready(Ok(res.map(axum_core::body::Body::new)))
            }
            KindProj::Inner { future } => future.poll(cx),
        }
    }
}
