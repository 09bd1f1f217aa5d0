use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum_core::body::Body as AxumBody;
use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::FallbackBody;
use crate::error::BoxError;

/// [`FallbackService`](super::FallbackService) for an axum app: its responses carry axum's own
/// `Body`. Made by [`FallbackLayer::for_axum`](super::FallbackLayer::for_axum).
#[derive(Debug, Clone)]
#[must_use]
pub struct AxumBodyService<S> {
    pub(crate) inner: S,
}

impl<S> AxumBodyService<S> {
    define_inner_service_accessors!();
}

impl<S, Req, B> Service<Req> for AxumBodyService<S>
where
    S: Service<Req, Response = Response<FallbackBody<B>>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<AxumBody>;
    type Error = S::Error;
    type Future = AxumBodyFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        AxumBodyFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// Response future of [`AxumBodyService`].
    #[derive(Debug)]
    pub struct AxumBodyFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B, E> Future for AxumBodyFuture<F>
where
    F: Future<Output = Result<Response<FallbackBody<B>>, E>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<AxumBody>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(self.project().inner.poll(cx));
        Poll::Ready(result.map(|res| res.map(FallbackBody::into_axum)))
    }
}
