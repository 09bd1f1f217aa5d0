//! What counts as a failure, built on tower-http's [`classify`](tower_http::classify):
//! [`HttpFailures`] (5xx, optionally 429) and [`grpc_failures`] (a set of gRPC codes, read from
//! headers or from trailers at the end of the stream). Any other [`MakeClassifier`] works too.
//!
//! Transport errors and timeouts (`tower::timeout::Elapsed`, tower-http's timeout 408 is a 4xx
//! and so not a failure unless you classify it) are failures: the inner service returned an
//! error. A rejection by an inner circuit breaker is neither.

use std::fmt;

use http::{Response, StatusCode};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, GrpcCode, GrpcErrorsAsFailures, NeverClassifyEos,
    SharedClassifier,
};

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
