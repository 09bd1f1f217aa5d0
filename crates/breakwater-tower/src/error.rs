//! The rejection a caller sees when a circuit is open.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use breakwater_core::{CallNotPermitted, CircuitBreaker, State};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value};

use crate::answer;

/// The boxed error type of the client-side layer (as tower's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A call was refused by an open circuit: the inner service was not called.
///
/// The client-side layer returns it boxed in a [`BoxError`]; downcast to find it:
///
/// ```
/// # use breakwater::tower::{BoxError, CircuitOpen};
/// fn is_open(e: &BoxError) -> bool {
///     e.downcast_ref::<CircuitOpen>().is_some()
/// }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitOpen {
    name: Arc<str>,
    state: State,
    retry_after: Option<Duration>,
    #[cfg(feature = "grpc")]
    status: Option<Arc<tonic::Status>>,
}

impl CircuitOpen {
    #[cold]
    #[inline(never)]
    pub(crate) fn new(breaker: &CircuitBreaker, rejected: CallNotPermitted) -> Self {
        Self {
            name: breaker.shared_name().clone(),
            state: rejected.state(),
            retry_after: rejected.retry_after(),
            #[cfg(feature = "grpc")]
            status: None,
        }
    }

    /// Attaches the gRPC status UNAVAILABLE as this error's source, where tonic looks for it.
    #[cfg(feature = "grpc")]
    pub(crate) fn with_grpc_status(mut self) -> Self {
        self.status = Some(Arc::new(tonic::Status::unavailable(self.to_string())));
        self
    }

    /// The gRPC status this rejection maps to: UNAVAILABLE with the message.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::unavailable(self.to_string())
    }

    /// The circuit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state that refused the call (OPEN, FORCED_OPEN, or HALF_OPEN with every probe taken).
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until a probe will be admitted, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after
            .map_or(1, |d| d.as_millis().div_ceil(1000).max(1) as u64)
    }

    /// The JSON body: `{"code":"CIRCUIT_OPEN","message":…,"circuit":…,"state":…,"retryAfterMs":…}`.
    pub fn json_body(&self) -> Bytes {
        self.http_response().into_body()
    }

    /// The HTTP answer: 503, `Retry-After`, the JSON body; the refusal itself in the
    /// extensions.
    pub fn http_response(&self) -> Response<Bytes> {
        self.http_response_with(Map::new())
    }

    /// The HTTP answer with more JSON fields (e.g. the fallback strategies that were skipped).
    pub(crate) fn http_response_with(&self, more: Map<String, Value>) -> Response<Bytes> {
        let mut fields = Map::new();
        fields.insert("circuit".into(), (*self.name).into());
        fields.insert("state".into(), self.state.as_str().into());
        fields.insert(
            "retryAfterMs".into(),
            self.retry_after.map(|d| d.as_millis() as u64).into(),
        );
        fields.extend(more);
        let message = self.to_string();
        let mut res = answer::json_error_with(
            StatusCode::SERVICE_UNAVAILABLE,
            "CIRCUIT_OPEN",
            &message,
            fields,
        );
        res.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs()),
        );
        res.extensions_mut().insert(self.clone());
        res
    }

    /// The gRPC answer: a trailers-only response with status UNAVAILABLE (14) and the message;
    /// the refusal itself in the extensions.
    pub fn grpc_response(&self) -> Response<Bytes> {
        let mut res = answer::grpc_error(tonic::Code::Unavailable, &self.to_string());
        res.extensions_mut().insert(self.clone());
        res
    }

    /// The refusal an answer carries (from [`http_response`](Self::http_response),
    /// [`grpc_response`](Self::grpc_response), or a layer that answers refusals), if any. This
    /// and [`in_error`](Self::in_error) are how every layer recognises a refusal.
    #[inline]
    pub fn in_response<B>(res: &Response<B>) -> Option<&CircuitOpen> {
        res.extensions().get::<CircuitOpen>()
    }

    /// Whether `res` can carry a refusal, told from its status alone: refusals are answered
    /// 503, and gRPC calls' (`grpc`) with gRPC's own status in an HTTP 200, so a 2xx answer to
    /// any other call is none. The layers ask this before [`in_response`](Self::in_response),
    /// so that a good answer costs no look-up in its extensions; the same holds for the 502
    /// and 504 answers a server-side breaker gives for its inner service's errors.
    #[inline(always)]
    pub(crate) fn may_be_in<B>(res: &Response<B>, grpc: bool) -> bool {
        grpc || !res.status().is_success()
    }

    /// The refusal anywhere in an error's source chain, if any.
    pub fn in_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a CircuitOpen> {
        let mut e = Some(error);
        while let Some(err) = e {
            if let Some(open) = err.downcast_ref::<CircuitOpen>() {
                return Some(open);
            }
            e = err.source();
        }
        None
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{}` is {}", self.name, self.state)?;
        if let Some(d) = self.retry_after {
            write!(f, "; retry after {} ms", d.as_millis())?;
        }
        Ok(())
    }
}

impl std::error::Error for CircuitOpen {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        #[cfg(feature = "grpc")]
        if let Some(status) = &self.status {
            return Some(&**status);
        }
        None
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for CircuitOpen {
    fn into_response(self) -> axum_core::response::Response {
        self.http_response().map(axum_core::body::Body::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> CircuitOpen {
        CircuitOpen {
            name: "db reads".into(),
            state: State::Open,
            retry_after: Some(Duration::from_millis(2_001)),
            #[cfg(feature = "grpc")]
            status: None,
        }
    }

    #[test]
    fn http_response_follows_the_contract() {
        let res = open().http_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["code"], "CIRCUIT_OPEN");
        assert_eq!(v["circuit"], "db reads");
        assert_eq!(v["state"], "OPEN");
        assert_eq!(v["retryAfterMs"], 2001);
        assert!(res.extensions().get::<CircuitOpen>().is_some());
    }

    #[cfg(feature = "axum")]
    #[test]
    fn into_response_is_the_503_contract() {
        use axum_core::response::IntoResponse;
        let res = open().into_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn grpc_response_is_unavailable() {
        let res = open().grpc_response();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "14");
        // As a gRPC client reads it (the message is percent-encoded on the wire).
        let status = tonic::Status::from_header_map(res.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("db reads"),
            "{}",
            status.message()
        );
        assert!(res.extensions().get::<CircuitOpen>().is_some());
    }
}
