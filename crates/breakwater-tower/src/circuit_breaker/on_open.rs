use std::convert::Infallible;

use http::Response;

use super::body::ResponseBody;
use crate::answer;
use crate::classify::WatchEos;
use crate::error::{BoxError, CircuitOpen};

mod sealed {
    pub trait Sealed {}
}

/// What the service returns when a circuit refuses a call, and the body its responses have:
/// see [`ErrorOnOpen`], [`RespondOnOpen`] and, with the `axum` feature, `ForAxum`.
///
/// `E` is the inner service's error, `B` its response body, `C` the end-of-stream classifier.
pub trait OnOpen<E, B, C>: sealed::Sealed {
    /// The service's error type.
    type Error;

    /// The service's response body type.
    type Body;

    /// Whether refusals and inner errors are answered (the server forms): then each call
    /// notes whether its request is gRPC, to answer in kind.
    #[doc(hidden)]
    const ANSWERS: bool;

    #[doc(hidden)]
    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, Self::Error>;

    /// The inner service's error from a call, as the service's error or its answer, and
    /// whether it was an inner circuit's rejection.
    #[doc(hidden)]
    fn error(e: E, grpc: bool) -> (Result<Response<Self::Body>, Self::Error>, bool);

    /// The inner service's readiness error: the service's own error, or (for a form that
    /// answers errors) the error to answer the next call with.
    #[doc(hidden)]
    fn ready_error(e: E) -> Result<Self::Error, BoxError>;

    /// The answer to a call made after the inner service failed to get ready.
    #[doc(hidden)]
    fn broken(e: BoxError, grpc: bool) -> Result<Response<Self::Body>, Self::Error>;

    /// The response body, from the inner service's body when nothing watches it.
    #[doc(hidden)]
    fn plain(body: B) -> Self::Body;

    /// The response body, from the inner service's body watched to its end.
    #[doc(hidden)]
    fn watched(body: ResponseBody<B, C>) -> Self::Body;
}

/// Client side (the default): a refused call fails with [`CircuitOpen`] in a [`BoxError`], and
/// so does any inner error (boxed). The response body is the inner service's own when the
/// classifier always decides at the response head (as [`HttpFailures`](crate::HttpFailures)
/// does), and a [`ResponseBody`] watching it otherwise (see [`WatchEos`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorOnOpen;

/// Server side: every call gets an answer, and the service never fails (axum needs
/// `Infallible`). A refused call gets 503 with `Retry-After` and the `CIRCUIT_OPEN` JSON body;
/// an inner error is the inner service's failure and is answered 504 `UPSTREAM_TIMEOUT` when it
/// is a timeout (tower's `Elapsed`, an I/O `TimedOut`), else 502 `UPSTREAM_ERROR`; a gRPC
/// request (`content-type: application/grpc…`) gets UNAVAILABLE or DEADLINE_EXCEEDED. So a
/// fallible layer such as tower's `TimeoutLayer` can go inside a server's breaker.
#[derive(Debug, Clone, Copy, Default)]
pub struct RespondOnOpen;

/// Server side in an axum app: as [`RespondOnOpen`], and the response body is axum's own
/// [`Body`](axum_core::body::Body).
///
/// axum turns every other body type into its `Body` by boxing it, once per response; here a
/// response whose outcome was settled at its head keeps the inner service's body as it is (with
/// axum's `Body` inside, nothing is boxed), and only a body that must be watched to its end (gRPC
/// trailers, or calls timed to the end of the body) is boxed.
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy, Default)]
pub struct ForAxum;

impl sealed::Sealed for ErrorOnOpen {}
impl sealed::Sealed for RespondOnOpen {}
#[cfg(feature = "axum")]
impl sealed::Sealed for ForAxum {}

impl<E: Into<BoxError>, B, C: WatchEos> OnOpen<E, B, C> for ErrorOnOpen {
    type Error = BoxError;
    type Body = C::Body<B>;
    const ANSWERS: bool = false;

    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, BoxError> {
        #[cfg(feature = "grpc")]
        let open = if grpc { open.with_grpc_status() } else { open };
        let _ = grpc;
        Err(Box::new(open))
    }

    fn error(e: E, _grpc: bool) -> (Result<Response<Self::Body>, BoxError>, bool) {
        let e = e.into();
        let open = CircuitOpen::in_error(&*e).is_some();
        (Err(e), open)
    }

    fn ready_error(e: E) -> Result<BoxError, BoxError> {
        Ok(e.into())
    }

    fn broken(e: BoxError, _grpc: bool) -> Result<Response<Self::Body>, BoxError> {
        Err(e)
    }

    #[inline(always)]
    fn plain(body: B) -> Self::Body {
        C::plain(body)
    }

    #[inline(always)]
    fn watched(body: ResponseBody<B, C>) -> Self::Body {
        C::watched(body)
    }
}

/// The refusal's answer: 503 JSON, or gRPC UNAVAILABLE.
fn refusal(open: &CircuitOpen, grpc: bool) -> Response<bytes::Bytes> {
    if grpc {
        open.grpc_response()
    } else {
        open.http_response()
    }
}

/// A server form's answer to the inner service's error: an inner circuit's refusal is answered
/// as a refusal (and says so), a timeout 504, any other error 502.
#[cold]
fn error_answer(e: BoxError, grpc: bool) -> (Response<bytes::Bytes>, bool) {
    match CircuitOpen::in_error(&*e) {
        Some(open) => (refusal(open, grpc), true),
        None => (answer::for_error(&*e, grpc), false),
    }
}

impl<E: Into<BoxError>, B, C> OnOpen<E, B, C> for RespondOnOpen {
    type Error = Infallible;
    type Body = ResponseBody<B, C>;
    const ANSWERS: bool = true;

    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, Infallible> {
        Ok(refusal(&open, grpc).map(ResponseBody::full))
    }

    fn error(e: E, grpc: bool) -> (Result<Response<Self::Body>, Infallible>, bool) {
        let (res, open) = error_answer(e.into(), grpc);
        (Ok(res.map(ResponseBody::full)), open)
    }

    fn ready_error(e: E) -> Result<Infallible, BoxError> {
        Err(e.into())
    }

    fn broken(e: BoxError, grpc: bool) -> Result<Response<Self::Body>, Infallible> {
        Ok(error_answer(e, grpc).0.map(ResponseBody::full))
    }

    #[inline(always)]
    fn plain(body: B) -> Self::Body {
        ResponseBody::inner(body)
    }

    #[inline(always)]
    fn watched(body: ResponseBody<B, C>) -> Self::Body {
        body
    }
}

#[cfg(feature = "axum")]
impl<E, B, C> OnOpen<E, B, C> for ForAxum
where
    E: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    C: tower_http::classify::ClassifyEos + Send + 'static,
{
    type Error = Infallible;
    type Body = axum_core::body::Body;
    const ANSWERS: bool = true;

    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, Infallible> {
        Ok(refusal(&open, grpc).map(axum_core::body::Body::from))
    }

    fn error(e: E, grpc: bool) -> (Result<Response<Self::Body>, Infallible>, bool) {
        let (res, open) = error_answer(e.into(), grpc);
        (Ok(res.map(axum_core::body::Body::from)), open)
    }

    fn ready_error(e: E) -> Result<Infallible, BoxError> {
        Err(e.into())
    }

    fn broken(e: BoxError, grpc: bool) -> Result<Response<Self::Body>, Infallible> {
        Ok(error_answer(e, grpc).0.map(axum_core::body::Body::from))
    }

    #[inline(always)]
    fn plain(body: B) -> Self::Body {
        axum_core::body::Body::new(body)
    }

    #[inline(always)]
    fn watched(body: ResponseBody<B, C>) -> Self::Body {
        axum_core::body::Body::new(body)
    }
}
