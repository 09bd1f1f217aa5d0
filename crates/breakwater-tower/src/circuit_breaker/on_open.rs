use http::Response;

use super::body::ResponseBody;
use crate::error::{BoxError, CircuitOpen};

mod sealed {
    pub trait Sealed {}
}

/// What the service returns when a circuit refuses a call: see [`ErrorOnOpen`] and
/// [`RespondOnOpen`].
pub trait OnOpen<E>: sealed::Sealed {
    /// The service's error type.
    type Error;

    #[doc(hidden)]
    fn rejected<B, C>(
        open: CircuitOpen,
        grpc: bool,
    ) -> Result<Response<ResponseBody<B, C>>, Self::Error>;

    /// Converts the inner service's error, and says whether it was an inner circuit's rejection.
    #[doc(hidden)]
    fn error(e: E) -> (Self::Error, bool);
}

/// Client side (the default): a refused call fails with [`CircuitOpen`] in a [`BoxError`], and
/// so does any inner error (boxed).
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorOnOpen;

/// Server side: a refused call gets an answer, the inner service's error type is kept (axum
/// needs `Infallible`): 503 with `Retry-After` and the `CIRCUIT_OPEN` JSON body, or for a gRPC
/// request (`content-type: application/grpc…`) status UNAVAILABLE.
#[derive(Debug, Clone, Copy, Default)]
pub struct RespondOnOpen;

impl sealed::Sealed for ErrorOnOpen {}
impl sealed::Sealed for RespondOnOpen {}

impl<E: Into<BoxError>> OnOpen<E> for ErrorOnOpen {
    type Error = BoxError;

    fn rejected<B, C>(
        open: CircuitOpen,
        grpc: bool,
    ) -> Result<Response<ResponseBody<B, C>>, BoxError> {
        #[cfg(feature = "grpc")]
        let open = if grpc { open.with_grpc_status() } else { open };
        let _ = grpc;
        Err(Box::new(open))
    }

    fn error(e: E) -> (BoxError, bool) {
        let e = e.into();
        let open = e.is::<CircuitOpen>();
        (e, open)
    }
}

impl<E> OnOpen<E> for RespondOnOpen {
    type Error = E;

    fn rejected<B, C>(open: CircuitOpen, grpc: bool) -> Result<Response<ResponseBody<B, C>>, E> {
        let res = if grpc {
            open.grpc_response()
        } else {
            open.http_response()
        };
        Ok(res.map(ResponseBody::full))
    }

    fn error(e: E) -> (E, bool) {
        (e, false)
    }
}
