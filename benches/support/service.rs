//! The HTTP service the layer benches wrap (it answers at once), and how they drive it.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::Service;

/// Polls a service once with a no-op waker: enough for services that answer at once.
pub(crate) fn drive<S, B>(svc: &mut S) -> bool
where
    S: Service<Request<()>, Response = Response<B>>,
{
    drive_with(svc, Request::new)
}

/// [`drive`] with the request `request` makes (once the service is ready).
#[inline(always)]
pub(crate) fn drive_with<S, B>(svc: &mut S, request: impl FnOnce(()) -> Request<()>) -> bool
where
    S: Service<Request<()>, Response = Response<B>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    let mut fut = pin!(svc.call(request(())));
    matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_)))
}

/// A service that answers at once with an empty body.
#[allow(clippy::type_complexity)]
pub(crate) fn inner() -> impl Service<
    Request<()>,
    Response = Response<Empty<Bytes>>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Empty<Bytes>>, Infallible>>,
> + Clone {
    tower::service_fn(|_req: Request<()>| std::future::ready(Ok(Response::new(Empty::new()))))
}

/// A row of `support::interleaved`: `svc` driven `n` times.
pub(crate) fn row<'a, S, B>(svc: &'a mut S) -> impl FnMut(u32) + 'a
where
    S: Service<Request<()>, Response = Response<B>>,
{
    super::times(move || {
        black_box(drive(svc));
    })
}
