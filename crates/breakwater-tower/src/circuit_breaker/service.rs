use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use tower_http::classify::{ClassifyResponse, MakeClassifier};
use tower_service::Service;

use super::future::ResponseFuture;
use super::keyed::BreakerSource;
use super::on_open::OnOpen;
use crate::admission::{Admission, Refusal};
use crate::classify::WatchEos;
use crate::error::CircuitOpen;
use breakwater_core::OwnedPermit;

/// Middleware that sends each request through a circuit breaker.
///
/// With one breaker for the service, an open circuit makes the service ready at once (the call
/// then fails fast) without waiting for the inner service's readiness, which a failing
/// dependency may never give. The next call's permit is taken in `poll_ready` (so `call` hands
/// the request straight on); while the inner service is not ready, a HALF_OPEN probe permit is
/// kept and a CLOSED one is given back and taken again once it is ready (so the call is judged
/// by the state, and timed from, the moment it can go), as in
/// [`ResultBreaker`](crate::ResultBreaker). A ready clone dropped without a call gives its
/// permit back.
/// Per-endpoint breakers depend on the request, so they are consulted in `call` (inline: the
/// request is not moved once more on its way to the inner service).
///
/// See [`CircuitBreakerLayer`](super::CircuitBreakerLayer) for how to build one.
#[derive(Debug)]
#[must_use]
pub struct CircuitBreakerService<S, K, M, O> {
    pub(crate) inner: S,
    pub(crate) source: K,
    pub(crate) make_classifier: M,
    /// The next call's permit or refusal, decided in `poll_ready` (one breaker only). Per
    /// clone: readiness is not shared.
    pub(crate) admission: Admission,
    pub(crate) _on_open: PhantomData<fn() -> O>,
}

impl<S: Clone, K: Clone, M: Clone, O> Clone for CircuitBreakerService<S, K, M, O> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            source: self.source.clone(),
            make_classifier: self.make_classifier.clone(),
            admission: Admission::new(),
            _on_open: PhantomData,
        }
    }
}

impl<S, K, M, O> CircuitBreakerService<S, K, M, O> {
    define_inner_service_accessors!();
}

/// Whether a request is a gRPC call (gRPC-Web included): always a POST, with an
/// `application/grpc…` content type. The method is checked first: it is one comparison, and
/// spares other requests the header lookup.
#[inline(always)]
pub(crate) fn is_grpc<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

impl<S, K, M, O, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreakerService<S, K, M, O>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes>,
    K: BreakerSource<ReqBody>,
    M: MakeClassifier<ClassifyEos: WatchEos>,
    O: OnOpen<S::Error, ResBody, M::ClassifyEos>,
{
    type Response = Response<O::Body>;
    type Error = O::Error;
    type Future = ResponseFuture<S::Future, M::Classifier, O>;

    #[inline(always)]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.admission.undecided() {
            self.admission.decide(self.source.acquire_early());
        }
        if self.admission.refused() {
            return Poll::Ready(Ok(()));
        }
        match self.admission.inner_ready(self.inner.poll_ready(cx)) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => match O::ready_error(e) {
                Ok(error) => Poll::Ready(Err(error)),
                Err(answer_it) => {
                    // A form that answers errors answers the next call with it.
                    self.admission.broke(answer_it);
                    Poll::Ready(Ok(()))
                }
            },
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline(always)]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if K::PER_REQUEST {
            // A breaker per endpoint: `poll_ready` took nothing, the request picks the breaker,
            // and an admitted call goes on as if `poll_ready` had admitted it.
            if self.admission.refused() {
                return self.call_unadmitted(req);
            }
            match self.source.acquire(&req) {
                Ok(permit) => self.admission.decide(Some(Ok(permit))),
                Err(open) => return refuse(open, &req),
            }
        }
        if self.admission.admitted() {
            // Admitted: the request goes straight in, and the permit is taken only then.
            let grpc = O::ANSWERS && is_grpc(&req);
            let classifier = self.make_classifier.make_classifier(&req);
            let future = self.inner.call(req);
            // After the inner call: the span record there would make the request be copied
            // once more (measured with callgrind), so with breakers stacked the outermost
            // breaker's name is the one kept.
            self.admission.trace_admitted();
            let Some(permit) = self.admission.take_permit() else {
                unreachable!("checked above")
            };
            return ResponseFuture::called(future, classifier, permit, grpc);
        }
        self.call_unadmitted(req)
    }
}

/// The answer to a refused request, out of line (the admitted path copies the request once less).
#[cold]
#[inline(never)]
fn refuse<F, C: ClassifyResponse, O, B>(
    open: CircuitOpen,
    req: &Request<B>,
) -> ResponseFuture<F, C, O> {
    ResponseFuture::rejected(Refusal::Open(open), is_grpc(req))
}

impl<S, K, M, O> CircuitBreakerService<S, K, M, O> {
    /// A call `poll_ready` did not admit: refused there, after the inner service failed to get
    /// ready, or `call` without a `poll_ready` before it.
    #[inline(never)]
    fn call_unadmitted<ReqBody, ResBody>(
        &mut self,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, M::Classifier, O>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        K: BreakerSource<ReqBody>,
        M: MakeClassifier,
        O: OnOpen<S::Error, ResBody, M::ClassifyEos>,
    {
        let source = &mut self.source;
        match self.admission.take_or(|| source.acquire(&req)) {
            Ok(permit) => self.call_with(permit, req),
            Err(refusal) => ResponseFuture::rejected(refusal, is_grpc(&req)),
        }
    }

    /// Calls the inner service under `permit`.
    #[inline(always)]
    fn call_with<ReqBody, ResBody>(
        &mut self,
        permit: OwnedPermit,
        req: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, M::Classifier, O>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        M: MakeClassifier,
        O: OnOpen<S::Error, ResBody, M::ClassifyEos>,
    {
        let grpc = O::ANSWERS && is_grpc(&req);
        let classifier = self.make_classifier.make_classifier(&req);
        let future = self.inner.call(req);
        if tracing::dispatcher::has_been_set() {
            crate::span::admitted(permit.circuit());
        }
        ResponseFuture::called(future, classifier, permit, grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, content_type: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method);
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn grpc_calls_are_posts_with_a_grpc_content_type() {
        assert!(is_grpc(&req(Method::POST, Some("application/grpc"))));
        assert!(is_grpc(&req(Method::POST, Some("application/grpc+proto"))));
        assert!(is_grpc(&req(
            Method::POST,
            Some("application/grpc-web+proto")
        )));
        assert!(!is_grpc(&req(Method::POST, Some("application/json"))));
        assert!(!is_grpc(&req(Method::POST, None)));
        assert!(!is_grpc(&req(Method::GET, Some("application/grpc"))));
    }
}
