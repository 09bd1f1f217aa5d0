use http::Response;

use super::body::ResponseBody;
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

    #[doc(hidden)]
    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, Self::Error>;

    /// Converts the inner service's error, and says whether it was an inner circuit's rejection.
    #[doc(hidden)]
    fn error(e: E) -> (Self::Error, bool);

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

/// Server side: a refused call gets an answer, the inner service's error type is kept (axum
/// needs `Infallible`): 503 with `Retry-After` and the `CIRCUIT_OPEN` JSON body, or for a gRPC
/// request (`content-type: application/grpc…`) status UNAVAILABLE.
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

    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, BoxError> {
        #[cfg(feature = "grpc")]
        let open = if grpc { open.with_grpc_status() } else { open };
        let _ = grpc;
        Err(Box::new(open))
    }

    fn error(e: E) -> (BoxError, bool) {
        let e = e.into();
        let open = CircuitOpen::in_error(&*e).is_some();
        (e, open)
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

impl<E, B, C> OnOpen<E, B, C> for RespondOnOpen {
    type Error = E;
    type Body = ResponseBody<B, C>;

    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, E> {
        Ok(refusal(&open, grpc).map(ResponseBody::full))
    }

    fn error(e: E) -> (E, bool) {
        (e, false)
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
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    C: tower_http::classify::ClassifyEos + Send + 'static,
{
    type Error = E;
    type Body = axum_core::body::Body;

    fn rejected(open: CircuitOpen, grpc: bool) -> Result<Response<Self::Body>, E> {
        Ok(refusal(&open, grpc).map(axum_core::body::Body::from))
    }

    fn error(e: E) -> (E, bool) {
        (e, false)
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
