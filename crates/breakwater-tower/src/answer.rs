//! Every error answer the layers and the ops API give, built in one place: the JSON error
//! contract `{"code": "...", "message": "..."}` (plus fields of the error's own, such as the
//! refused circuit), and its gRPC form, a trailers-only response built by tonic's [`Status`]
//! (which also percent-encodes `grpc-message`).
//!
//! | error | HTTP | gRPC |
//! |---|---|---|
//! | a refusal by an open circuit | 503 `CIRCUIT_OPEN`, `Retry-After` | UNAVAILABLE |
//! | a call over its time limit | 504 `UPSTREAM_TIMEOUT` | DEADLINE_EXCEEDED |
//! | any other failed call | 502 `UPSTREAM_ERROR` | UNAVAILABLE |
//! | a request body that could not be read | 400 `BAD_REQUEST` | INVALID_ARGUMENT |
//!
//! ```
//! use breakwater::tower::answer;
//! use http::StatusCode;
//!
//! let res = answer::json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such circuit");
//! assert_eq!(res.status(), 404);
//! assert_eq!(res.headers()["content-type"], "application/json");
//! assert_eq!(&res.body()[..], br#"{"code":"NOT_FOUND","message":"no such circuit"}"#);
//! ```
//!
//! [`Status`]: tonic::Status

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value};
use tonic::{Code, Status};

/// The JSON error answer: `status`, `{"code": code, "message": message}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    json_error_with(status, code, message, Map::new())
}

/// The JSON error answer with more fields after `code` and `message`.
pub(crate) fn json_error_with(
    status: StatusCode,
    code: &str,
    message: &str,
    more: Map<String, Value>,
) -> Response<Bytes> {
    let mut body = Map::new();
    body.insert("code".into(), code.into());
    body.insert("message".into(), message.into());
    body.extend(more);
    let mut res = Response::new(Bytes::from(Value::Object(body).to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The gRPC error answer: a trailers-only response with `code` and `message`.
pub(crate) fn grpc_error(code: Code, message: &str) -> Response<Bytes> {
    let mut res: Response<Bytes> = Status::new(code, message).into_http();
    // The status itself rides along as an extension: keep only the headers.
    res.extensions_mut().clear();
    res
}

/// A failed call's answer when nothing else answered for it: 504 `UPSTREAM_TIMEOUT` or 502
/// `UPSTREAM_ERROR` (gRPC: DEADLINE_EXCEEDED or UNAVAILABLE), listing in `fallback` why each
/// fallback strategy could not help.
pub(crate) fn upstream_error(
    timeout: bool,
    message: &str,
    grpc: bool,
    skipped: &[String],
) -> Response<Bytes> {
    if grpc {
        let code = if timeout {
            Code::DeadlineExceeded
        } else {
            Code::Unavailable
        };
        return grpc_error(code, message);
    }
    let (status, code) = if timeout {
        (StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT")
    } else {
        (StatusCode::BAD_GATEWAY, "UPSTREAM_ERROR")
    };
    json_error_with(status, code, message, skipped_field(skipped))
}

/// An inner service's error, answered (504 or 502) by a server-side breaker; kept in the
/// answer's extensions, so that a fallback outside sees the failure it was.
#[derive(Debug, Clone)]
pub(crate) struct AnsweredError {
    pub(crate) timeout: bool,
    pub(crate) message: Arc<str>,
}

/// The answer to an inner service's error: 504 `UPSTREAM_TIMEOUT` for a timeout, else 502
/// `UPSTREAM_ERROR` (gRPC: DEADLINE_EXCEEDED or UNAVAILABLE), marked with [`AnsweredError`].
#[cold]
pub(crate) fn for_error(error: &(dyn std::error::Error + 'static), grpc: bool) -> Response<Bytes> {
    let timeout = is_timeout(error);
    let message = error.to_string();
    let mut res = upstream_error(timeout, &message, grpc, &[]);
    res.extensions_mut().insert(AnsweredError {
        timeout,
        message: message.into(),
    });
    res
}

/// Whether `error` (or anything in its source chain) is a timeout: tower's `Elapsed` or an I/O
/// `TimedOut` error.
pub(crate) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = e {
        if err.is::<tower::timeout::error::Elapsed>()
            || err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        e = err.source();
    }
    false
}

/// The caller's own request body could not be read: 400 `BAD_REQUEST` (gRPC:
/// INVALID_ARGUMENT).
pub(crate) fn unreadable_body(message: &str, grpc: bool) -> Response<Bytes> {
    if grpc {
        return grpc_error(Code::InvalidArgument, message);
    }
    json_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

/// `{"fallback": [...]}` when strategies were skipped, else nothing.
pub(crate) fn skipped_field(skipped: &[String]) -> Map<String, Value> {
    let mut more = Map::new();
    if !skipped.is_empty() {
        more.insert("fallback".into(), skipped.into());
    }
    more
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_are_trailers_only_with_an_encoded_message() {
        let res = grpc_error(Code::Unavailable, "circuit `a b` is 100% OPEN\n");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert_eq!(res.headers()["grpc-status"], "14");
        let message = res.headers()["grpc-message"].to_str().unwrap();
        assert!(
            !message.contains(' ') && !message.contains('\n'),
            "{message}"
        );
        assert!(res.body().is_empty());
        assert!(res.extensions().is_empty());
    }

    #[test]
    fn upstream_errors_follow_the_table() {
        let timeout = upstream_error(true, "slow", false, &["stale: nothing kept".into()]);
        assert_eq!(timeout.status(), 504);
        let v: Value = serde_json::from_slice(timeout.body()).unwrap();
        assert_eq!(v["code"], "UPSTREAM_TIMEOUT");
        assert_eq!(v["fallback"][0], "stale: nothing kept");
        let other = upstream_error(false, "refused", false, &[]);
        assert_eq!(other.status(), 502);
        let v: Value = serde_json::from_slice(other.body()).unwrap();
        assert_eq!(v["code"], "UPSTREAM_ERROR");
        assert!(v.get("fallback").is_none());
        assert_eq!(
            upstream_error(true, "", true, &[]).headers()["grpc-status"],
            "4"
        );
        assert_eq!(unreadable_body("x", true).headers()["grpc-status"], "3");
        assert_eq!(unreadable_body("x", false).status(), 400);
    }
}
