//! The rejection a caller sees when a circuit is open.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use breakwater_core::{CallNotPermitted, CircuitBreaker, State};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// The boxed error type of the client-side layer (as tower's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A call was refused by an open circuit: the inner service was not called.
///
/// The client-side layer returns it boxed in a [`BoxError`]; downcast to find it:
///
/// ```
/// # use breakwater_tower::{BoxError, CircuitOpen};
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
    #[cfg(feature = "grpc")]
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
        Bytes::from(self.json_value().to_string())
    }

    pub(crate) fn json_value(&self) -> serde_json::Value {
        serde_json::json!({
            "code": "CIRCUIT_OPEN",
            "message": self.to_string(),
            "circuit": &*self.name,
            "state": self.state,
            "retryAfterMs": self.retry_after.map(|d| d.as_millis() as u64),
        })
    }

    /// The HTTP answer: 503, `Retry-After`, the JSON body.
    pub fn http_response(&self) -> Response<Bytes> {
        let mut res = Response::new(self.json_body());
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs()),
        );
        res.extensions_mut().insert(self.clone());
        res
    }

    /// The gRPC answer: a trailers-only response with status UNAVAILABLE (14) and the message.
    pub fn grpc_response(&self) -> Response<Bytes> {
        let mut res = Response::new(Bytes::new());
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("14"));
        let message = percent_encode(&self.to_string());
        if let Ok(v) = HeaderValue::from_str(&message) {
            h.insert("grpc-message", v);
        }
        res.extensions_mut().insert(self.clone());
        res
    }
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII except `%` stays.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        assert!(
            res.headers()["grpc-message"]
                .to_str()
                .unwrap()
                .contains("db reads")
        );
    }
}
