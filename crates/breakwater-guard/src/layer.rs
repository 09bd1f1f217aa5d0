//! The guards as tower layers: [`AuthGuardLayer`] and [`RateLimitLayer`]. A refused request
//! gets `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up) and a JSON
//! body `{"code", "message"}`: `TOO_MANY_AUTH_FAILURES` or `RATE_LIMITED`. A request whose
//! client is unknown (no peer address in its extensions) goes through.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::client::{TrustedProxies, client_of};
use crate::{AuthGuard, RateLimit};

/// The refusal of a guard.
fn too_many<B: From<Bytes>>(code: &str, message: &str, retry_after: Duration) -> Response<B> {
    let body = format!("{{\"code\":\"{code}\",\"message\":\"{message}\"}}");
    let mut res = Response::new(B::from(Bytes::from(body)));
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
}

/// Refuses clients with too many authentication failures; counts each `401`/`403` answer as
/// one of theirs. Put it on the authentication routes.
#[derive(Debug, Clone)]
pub struct AuthGuardLayer {
    guard: AuthGuard,
    trusted: TrustedProxies,
}

impl AuthGuardLayer {
    /// The layer over `guard`; clients are peers unless [`trusted`](Self::trusted) is set.
    pub fn new(guard: AuthGuard) -> Self {
        Self {
            guard,
            trusted: TrustedProxies::none(),
        }
    }

    /// Believes `Forwarded`/`X-Forwarded-For` from these proxies.
    #[must_use]
    pub fn trusted(mut self, proxies: TrustedProxies) -> Self {
        self.trusted = proxies;
        self
    }
}

impl<S> Layer<S> for AuthGuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            kind: Kind::Auth(self.guard.clone()),
            trusted: self.trusted.clone(),
        }
    }
}

/// Limits each client's requests to a rate.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limit: RateLimit,
    trusted: TrustedProxies,
}

impl RateLimitLayer {
    /// The layer over `limit`; clients are peers unless [`trusted`](Self::trusted) is set.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            trusted: TrustedProxies::none(),
        }
    }

    /// Believes `Forwarded`/`X-Forwarded-For` from these proxies.
    #[must_use]
    pub fn trusted(mut self, proxies: TrustedProxies) -> Self {
        self.trusted = proxies;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            kind: Kind::Rate(self.limit.clone()),
            trusted: self.trusted.clone(),
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Auth(AuthGuard),
    Rate(RateLimit),
}

/// The service of [`AuthGuardLayer`] and [`RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    kind: Kind,
    trusted: TrustedProxies,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Guarded<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: From<Bytes>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let Some(client) = client_of(req.headers(), req.extensions(), &self.trusted) else {
            return GuardFuture::inner(self.inner.call(req), None);
        };
        match &self.kind {
            Kind::Auth(guard) => match guard.check(client) {
                Ok(()) => GuardFuture::inner(self.inner.call(req), Some((guard.clone(), client))),
                Err(wait) => GuardFuture::refused(too_many(
                    "TOO_MANY_AUTH_FAILURES",
                    "too many failed authentications from this client; retry later",
                    wait,
                )),
            },
            Kind::Rate(limit) => match limit.check(client) {
                Ok(()) => GuardFuture::inner(self.inner.call(req), None),
                Err(wait) => GuardFuture::refused(too_many(
                    "RATE_LIMITED",
                    "too many requests from this client; retry later",
                    wait,
                )),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Guarded`]: a refusal, or the inner service's answer (an
    /// authentication failure counted).
    pub struct GuardFuture<F, B> {
        #[pin]
        kind: FutureKind<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = FutureProj]
    enum FutureKind<F, B> {
        Refused { res: Option<Response<B>> },
        Inner { #[pin] fut: F, record: Option<(AuthGuard, IpAddr)> },
    }
}

impl<F, B> GuardFuture<F, B> {
    fn inner(fut: F, record: Option<(AuthGuard, IpAddr)>) -> Self {
        Self {
            kind: FutureKind::Inner { fut, record },
        }
    }

    fn refused(res: Response<B>) -> Self {
        Self {
            kind: FutureKind::Refused { res: Some(res) },
        }
    }
}

impl<F, B> std::fmt::Debug for GuardFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuardFuture")
    }
}

impl<F, B, E> Future for GuardFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureProj::Refused { res } => Poll::Ready(Ok(res
                .take()
                .expect("a guard's future polled after it ended"))),
            FutureProj::Inner { fut, record } => {
                let out = std::task::ready!(fut.poll(cx));
                if let (Ok(res), Some((guard, client))) = (&out, record.take()) {
                    let failed = matches!(
                        res.status(),
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                    );
                    guard.record(client, failed);
                }
                Poll::Ready(out)
            }
        }
    }
}
