//! What counts as a failure, built on tower-http's [`classify`](tower_http::classify):
//! [`HttpFailures`] (5xx, optionally 429) and [`grpc_failures`] (a set of gRPC codes, read from
//! headers or from trailers at the end of the stream). Any other [`MakeClassifier`] works too.
//!
//! The end-of-stream half of a classifier also decides the response body a client-side
//! [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) returns ([`WatchEos`]): with
//! [`HttpFailures`], and any classifier whose outcome is always known at the response head
//! ([`NeverClassifyEos`]), the inner service's body passes through as it is; with
//! [`grpc_failures`], or when calls are timed to the end of the body ([`Watch`]), the body is
//! watched to its end. A classifier with an end-of-stream half of its own goes in [`Watch`].
//!
//! Transport errors and timeouts (`tower::timeout::Elapsed`) are failures: the inner service
//! returned an error. tower-http's `TimeoutLayer` answers 408 instead, which [`HttpFailures`]
//! counts as a failure too unless told otherwise. A rejection by an inner circuit breaker is
//! neither.

use std::fmt;

use http::{HeaderMap, Request, Response, StatusCode};
use tower_http::classify::{
    ClassifiedResponse, ClassifyEos, ClassifyResponse, GrpcCode, GrpcEosErrorsAsFailures,
    GrpcErrorsAsFailures, NeverClassifyEos, SharedClassifier,
};

use crate::circuit_breaker::ResponseBody;

pub use tower_http::classify::MakeClassifier;

/// The gRPC codes that count as failures by default: the ones that say the dependency, not the
/// caller, is in trouble.
pub const DEFAULT_GRPC_FAILURE_CODES: [GrpcCode; 5] = [
    GrpcCode::Unavailable,
    GrpcCode::DeadlineExceeded,
    GrpcCode::Internal,
    GrpcCode::Unknown,
    GrpcCode::ResourceExhausted,
];

const ALL_GRPC_CODES: [GrpcCode; 17] = [
    GrpcCode::Ok,
    GrpcCode::Cancelled,
    GrpcCode::Unknown,
    GrpcCode::InvalidArgument,
    GrpcCode::DeadlineExceeded,
    GrpcCode::NotFound,
    GrpcCode::AlreadyExists,
    GrpcCode::PermissionDenied,
    GrpcCode::ResourceExhausted,
    GrpcCode::FailedPrecondition,
    GrpcCode::Aborted,
    GrpcCode::OutOfRange,
    GrpcCode::Unimplemented,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
    GrpcCode::Unauthenticated,
];

/// A classifier for gRPC where exactly `failure_codes` are failures (every other status,
/// including a missing one, is a success). The status is read from the headers
/// (trailers-only responses) or from the trailers when the stream ends.
pub fn grpc_failures(failure_codes: &[GrpcCode]) -> SharedClassifier<GrpcErrorsAsFailures> {
    let classifier = ALL_GRPC_CODES
        .into_iter()
        .filter(|c| !failure_codes.contains(c))
        .fold(GrpcErrorsAsFailures::new(), |c, code| c.with_success(code));
    SharedClassifier::new(classifier)
}

/// HTTP classification: 5xx is a failure (the dependency's fault); 4xx is the caller's and is a
/// success, except 408 (what tower-http's `TimeoutLayer` answers when the inner service was too
/// slow; on by default) and 429 (when [`with_too_many_requests`](Self::with_too_many_requests)
/// is on).
#[derive(Debug, Clone, Copy)]
pub struct HttpFailures {
    too_many_requests: bool,
    request_timeout: bool,
}

impl Default for HttpFailures {
    fn default() -> Self {
        Self {
            too_many_requests: false,
            request_timeout: true,
        }
    }
}

impl HttpFailures {
    /// 5xx and 408 are failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether 408 Request Timeout counts as a failure (default: yes).
    #[must_use]
    pub fn with_request_timeout(mut self, on: bool) -> Self {
        self.request_timeout = on;
        self
    }

    /// Whether 429 Too Many Requests also counts as a failure.
    #[must_use]
    pub fn with_too_many_requests(mut self, on: bool) -> Self {
        self.too_many_requests = on;
        self
    }

    /// As a [`MakeClassifier`].
    pub fn make_classifier(self) -> SharedClassifier<Self> {
        SharedClassifier::new(self)
    }
}

/// Why [`HttpFailures`] called a response a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFailureClass {
    /// The response had this status.
    Status(StatusCode),
    /// The service returned an error.
    Error(String),
}

impl fmt::Display for HttpFailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpFailureClass::Status(s) => write!(f, "status {s}"),
            HttpFailureClass::Error(e) => write!(f, "error: {e}"),
        }
    }
}

impl ClassifyResponse for HttpFailures {
    type FailureClass = HttpFailureClass;
    type ClassifyEos = NeverClassifyEos<HttpFailureClass>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        let status = res.status();
        if status.is_server_error()
            || (self.too_many_requests && status == StatusCode::TOO_MANY_REQUESTS)
            || (self.request_timeout && status == StatusCode::REQUEST_TIMEOUT)
        {
            ClassifiedResponse::Ready(Err(HttpFailureClass::Status(status)))
        } else {
            ClassifiedResponse::Ready(Ok(()))
        }
    }

    fn classify_error<E: fmt::Display + 'static>(self, error: &E) -> Self::FailureClass {
        HttpFailureClass::Error(error.to_string())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An end-of-stream classifier a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) can use:
/// it says whether the response body must be watched to its end, and so which body a
/// client-side layer returns.
///
/// Implemented for tower-http's [`NeverClassifyEos`] (the outcome is always known at the
/// response head: the inner service's body passes through as it is, nothing to wrap or watch),
/// for [`GrpcEosErrorsAsFailures`] (gRPC status in the trailers: the body is watched) and for
/// [`Watch`]'s. Sealed: a classifier with an end-of-stream classifier of another type goes in
/// [`Watch::new`].
pub trait WatchEos: ClassifyEos + Sized + sealed::Sealed {
    /// The response body of a client-side layer ([`ErrorOnOpen`](crate::ErrorOnOpen)) over an
    /// inner body `B`.
    type Body<B>;

    #[doc(hidden)]
    fn plain<B>(body: B) -> Self::Body<B>;

    #[doc(hidden)]
    fn watched<B>(body: ResponseBody<B, Self>) -> Self::Body<B>;

    /// Whether the call is timed to the end of the body rather than to the response head.
    #[doc(hidden)]
    fn to_end(&self) -> bool {
        false
    }

    /// The verdict, when it was already given at the response head (whether it was a success)
    /// and only the timing waits for the end of the body.
    #[doc(hidden)]
    fn head_verdict(&self) -> Option<bool> {
        None
    }
}

/// The [`WatchEos`] items of an end-of-stream classifier whose bodies are watched.
macro_rules! watched_bodies {
    () => {
        type Body<B> = ResponseBody<B, Self>;

        #[inline(always)]
        fn plain<B>(body: B) -> Self::Body<B> {
            ResponseBody::inner(body)
        }

        #[inline(always)]
        fn watched<B>(body: ResponseBody<B, Self>) -> Self::Body<B> {
            body
        }
    };
}

impl<T> sealed::Sealed for NeverClassifyEos<T> {}

impl<T> WatchEos for NeverClassifyEos<T> {
    type Body<B> = B;

    #[inline(always)]
    fn plain<B>(body: B) -> B {
        body
    }

    fn watched<B>(_: ResponseBody<B, Self>) -> B {
        unreachable!("a `NeverClassifyEos` is never made, so no body is watched with one")
    }
}

impl sealed::Sealed for GrpcEosErrorsAsFailures {}

impl WatchEos for GrpcEosErrorsAsFailures {
    watched_bodies!();
}

/// A classifier whose responses are watched to the end of their body: for timing calls to the
/// end of the body ([`CircuitBreakerLayer::measure_to_end_of_body`](crate::CircuitBreakerLayer::measure_to_end_of_body)),
/// and for a classifier with an end-of-stream classifier of its own type (tower-http's
/// [`ClassifyEos`]), which [`WatchEos`] does not list.
///
/// ```
/// use breakwater::{CircuitBreaker, Config};
/// use breakwater::tower::{CircuitBreakerLayer, classify::Watch};
/// use tower_http::classify::{GrpcErrorsAsFailures, SharedClassifier};
///
/// // Any `MakeClassifier`: here tower-http's own gRPC classifier.
/// let make = SharedClassifier::new(GrpcErrorsAsFailures::new());
/// let layer = CircuitBreakerLayer::new(CircuitBreaker::new("grpc", Config::default()))
///     .classifier(Watch::new(make));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Watch<M> {
    inner: M,
    to_end: bool,
}

impl<M> Watch<M> {
    /// Watches the bodies `inner` needs to see the end of; calls are timed to the response head.
    pub fn new(inner: M) -> Self {
        Self {
            inner,
            to_end: false,
        }
    }

    /// As [`new`](Self::new), and when `on`, every response is watched and calls are timed to the
    /// end of their body.
    pub fn to_end_of_body(inner: M, on: bool) -> Self {
        Self { inner, to_end: on }
    }
}

impl<M: MakeClassifier> MakeClassifier for Watch<M> {
    type FailureClass = WatchFailure<M::FailureClass>;
    type ClassifyEos = WatchedEos<M::ClassifyEos>;
    type Classifier = Watch<M::Classifier>;

    fn make_classifier<B>(&self, req: &Request<B>) -> Self::Classifier {
        Watch {
            inner: self.inner.make_classifier(req),
            to_end: self.to_end,
        }
    }
}

impl<C: ClassifyResponse> ClassifyResponse for Watch<C> {
    type FailureClass = WatchFailure<C::FailureClass>;
    type ClassifyEos = WatchedEos<C::ClassifyEos>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        match self.inner.classify_response(res) {
            ClassifiedResponse::Ready(verdict) if self.to_end => {
                ClassifiedResponse::RequiresEos(WatchedEos {
                    head: Some(verdict.map_err(WatchFailure::Class)),
                    eos: None,
                    to_end: true,
                })
            }
            ClassifiedResponse::Ready(verdict) => {
                ClassifiedResponse::Ready(verdict.map_err(WatchFailure::Class))
            }
            ClassifiedResponse::RequiresEos(eos) => ClassifiedResponse::RequiresEos(WatchedEos {
                head: None,
                eos: Some(eos),
                to_end: self.to_end,
            }),
        }
    }

    fn classify_error<E: fmt::Display + 'static>(self, error: &E) -> Self::FailureClass {
        WatchFailure::Class(self.inner.classify_error(error))
    }
}

/// The end-of-stream classifier of [`Watch`]: the inner one's, or the verdict already given at
/// the response head when the call is timed to the end of the body.
#[derive(Debug)]
pub struct WatchedEos<E: ClassifyEos> {
    head: Option<Result<(), WatchFailure<E::FailureClass>>>,
    eos: Option<E>,
    to_end: bool,
}

impl<E: ClassifyEos> ClassifyEos for WatchedEos<E> {
    type FailureClass = WatchFailure<E::FailureClass>;

    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Result<(), Self::FailureClass> {
        match (self.head, self.eos) {
            (Some(verdict), _) => verdict,
            (None, Some(eos)) => eos.classify_eos(trailers).map_err(WatchFailure::Class),
            (None, None) => Ok(()),
        }
    }

    fn classify_error<E2: fmt::Display + 'static>(self, error: &E2) -> Self::FailureClass {
        match self.eos {
            Some(eos) => WatchFailure::Class(eos.classify_error(error)),
            None => WatchFailure::Body(error.to_string()),
        }
    }
}

impl<E: ClassifyEos> sealed::Sealed for WatchedEos<E> {}

impl<E: ClassifyEos> WatchEos for WatchedEos<E> {
    watched_bodies!();

    fn to_end(&self) -> bool {
        self.to_end
    }

    fn head_verdict(&self) -> Option<bool> {
        self.head.as_ref().map(Result::is_ok)
    }
}

/// Why [`Watch`] called a response a failure: the inner classifier's verdict, or the body
/// failed after a good head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchFailure<F> {
    /// The inner classifier's failure.
    Class(F),
    /// The response body failed.
    Body(String),
}

impl<F: fmt::Display> fmt::Display for WatchFailure<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchFailure::Class(c) => c.fmt(f),
            WatchFailure::Body(e) => write!(f, "body: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_http::classify::ClassifyEos;

    fn status(s: u16) -> Response<()> {
        Response::builder().status(s).body(()).unwrap()
    }

    fn is_failure<C: ClassifyResponse>(c: C, res: &Response<()>) -> bool {
        matches!(c.classify_response(res), ClassifiedResponse::Ready(Err(_)))
    }

    #[test]
    fn http_5xx_fail_4xx_do_not_429_is_optional() {
        let c = HttpFailures::new();
        assert!(is_failure(c, &status(500)));
        assert!(is_failure(c, &status(503)));
        assert!(!is_failure(c, &status(404)));
        assert!(!is_failure(c, &status(429)));
        assert!(!is_failure(c, &status(200)));
        assert!(is_failure(c.with_too_many_requests(true), &status(429)));
        assert!(is_failure(c, &status(408)));
        assert!(!is_failure(c.with_request_timeout(false), &status(408)));
    }

    #[test]
    fn the_shared_classifier_keeps_its_settings() {
        let req = http::Request::new(());
        let make = HttpFailures::default()
            .with_too_many_requests(true)
            .make_classifier();
        assert!(is_failure(make.make_classifier(&req), &status(429)));
    }

    #[test]
    fn watch_failures_say_what_failed() {
        let class: WatchFailure<HttpFailureClass> =
            WatchFailure::Class(HttpFailureClass::Status(StatusCode::BAD_GATEWAY));
        assert_eq!(class.to_string(), "status 502 Bad Gateway");
        let body: WatchFailure<HttpFailureClass> = WatchFailure::Body("cut".into());
        assert_eq!(body.to_string(), "body: cut");
    }

    #[test]
    fn failure_classes_say_what_failed() {
        assert_eq!(
            HttpFailureClass::Status(StatusCode::BAD_GATEWAY).to_string(),
            "status 502 Bad Gateway"
        );
        assert_eq!(
            HttpFailureClass::Error("reset".into()).to_string(),
            "error: reset"
        );
    }

    #[test]
    fn grpc_codes_in_headers_and_trailers() {
        let make = grpc_failures(&DEFAULT_GRPC_FAILURE_CODES);
        let req = http::Request::new(());
        let grpc = |code: &str| {
            Response::builder()
                .header("grpc-status", code)
                .body(())
                .unwrap()
        };
        assert!(is_failure(make.make_classifier(&req), &grpc("14")));
        assert!(!is_failure(make.make_classifier(&req), &grpc("5")));
        assert!(!is_failure(make.make_classifier(&req), &grpc("0")));
        // No status in headers: decided by the trailers.
        match make
            .make_classifier(&req)
            .classify_response(&Response::new(()))
        {
            ClassifiedResponse::RequiresEos(eos) => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "13".parse().unwrap());
                assert!(eos.classify_eos(Some(&trailers)).is_err());
            }
            ClassifiedResponse::Ready(_) => panic!("needs the trailers"),
        }
    }
}
