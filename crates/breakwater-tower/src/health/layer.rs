use std::future::Future;
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
/// ```
/// use axum::{Router, routing::get};
/// use breakwater_core::Registry;
/// use breakwater_tower::health::{HealthLayer, HealthRegistry};
///
/// let health = HealthRegistry::with_breakers(&Registry::new());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(HealthLayer::new(health));
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct HealthLayer {
    registry: HealthRegistry,
    paths: Paths,
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
        }
    }

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

impl<S> Layer<S> for HealthLayer {
    type Service = HealthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HealthService {
            inner,
            registry: self.registry.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// Middleware that answers health requests; see [`HealthLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HealthService<S> {
    inner: S,
    registry: HealthRegistry,
    paths: Paths,
}

impl<S> HealthService<S> {
    define_inner_service_accessors!();

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
        let method = req.method();
        if (method == Method::GET || method == Method::HEAD)
            && let Some(report) = self.answer(req.uri().path())
        {
            let res = health_response(&report, method == Method::HEAD);
            return ResponseFuture {
                kind: Kind::Answer { res: Some(res) },
            };
        }
        ResponseFuture {
            kind: Kind::Inner {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// Response future of [`HealthService`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Answer { res: Option<Response<Full<Bytes>>> },
        Inner { #[pin] future: F },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
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
