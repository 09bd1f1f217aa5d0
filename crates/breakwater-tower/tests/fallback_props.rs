//! Whatever the inner service does, a fallback layer whose chain ends in a fixed answer gives a
//! response, never an error, and a readable body.

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use breakwater_core::{CircuitBreaker, Config};
use breakwater_tower::fallback::{FallbackLayer, StaleCache, X_FALLBACK};
use breakwater_tower::{BoxError, CircuitBreakerLayer};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Answers with this status.
    Status(u16),
    /// Fails with an I/O error.
    IoError,
    /// Fails with tower's timeout error.
    Timeout,
    /// Fails in `poll_ready`.
    NotReady,
    /// Answers with a body that fails half way.
    BrokenBody,
}

/// A dependency that does what it is told.
#[derive(Clone)]
struct Dependency(Behaviour);

type DepBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

impl Service<Request<Full<Bytes>>> for Dependency {
    type Response = Response<DepBody>;
    type Error = BoxError;
    type Future = Ready<Result<Response<DepBody>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.0 {
            Behaviour::NotReady => Poll::Ready(Err("connection pool closed".into())),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
        ready(match self.0 {
            Behaviour::Status(s) => {
                let mut res = Response::new(
                    Full::new(Bytes::from_static(b"dependency"))
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                );
                *res.status_mut() = StatusCode::from_u16(s).unwrap();
                Ok(res)
            }
            Behaviour::IoError => Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "refused",
            ))),
            Behaviour::Timeout => Err(Box::new(tower::timeout::error::Elapsed::new())),
            Behaviour::NotReady => unreachable!("not ready"),
            Behaviour::BrokenBody => {
                let stream = tokio_stream::iter([
                    Ok(http_body::Frame::data(Bytes::from_static(b"half"))),
                    Err::<_, BoxError>("reset".into()),
                ]);
                Ok(Response::new(
                    http_body_util::StreamBody::new(stream).boxed_unsync(),
                ))
            }
        })
    }
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        prop::sample::select(vec![200u16, 204, 301, 404, 408, 429, 500, 502, 503, 504])
            .prop_map(Behaviour::Status),
        Just(Behaviour::IoError),
        Just(Behaviour::Timeout),
        Just(Behaviour::NotReady),
        Just(Behaviour::BrokenBody),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Prefix {
    Stale,
    FailingBackup,
    RefusedBackup,
    Function,
}

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        Just(Prefix::Stale),
        Just(Prefix::FailingBackup),
        Just(Prefix::RefusedBackup),
        Just(Prefix::Function),
    ]
}

type Reply = Result<Response<Full<Bytes>>, BoxError>;

fn failing_backup() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = Ready<Reply>,
> + Clone {
    tower::service_fn(|_: Request<Full<Bytes>>| {
        ready(Err::<Response<Full<Bytes>>, BoxError>("backup down".into()))
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_final_fixed_answer_always_answers(
        behaviour in behaviour(),
        open in any::<bool>(),
        prefixes in prop::collection::vec(prefix(), 0..4),
        method in prop::sample::select(vec!["GET", "POST", "PUT"]),
    ) {
        let breaker = CircuitBreaker::new("dep", Config::default());
        if open {
            breaker.force_open();
        }
        let refused = CircuitBreaker::new("refused", Config::default());
        refused.force_open();
        let mut layer = FallbackLayer::new().on_errors().on_failed_responses();
        let mut with_function = false;
        for p in &prefixes {
            layer = match p {
                Prefix::Stale => layer.stale_if_error(StaleCache::new()),
                Prefix::FailingBackup => layer.backup(failing_backup()),
                Prefix::RefusedBackup => layer.backup(
                    ServiceBuilder::new()
                        .layer(CircuitBreakerLayer::new(refused.clone()))
                        .service(failing_backup()),
                ),
                Prefix::Function => {
                    with_function = true;
                    layer.function(|_, failure| {
                        Response::new(Bytes::from(failure.kind().as_str()))
                    })
                }
            };
        }
        let layer = layer.fixed(Response::new("fixed"));
        let svc = ServiceBuilder::new()
            .layer(layer)
            .layer(CircuitBreakerLayer::new(breaker))
            .service(Dependency(behaviour));
        let req = Request::builder()
            .method(method)
            .uri("http://dep.test/x")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();

        let rt = runtime();
        let (status, strategy, body) = rt.block_on(async {
            let res = svc.oneshot(req).await.expect("infallible");
            let strategy = res.headers().get(X_FALLBACK).map(|v| v.to_str().unwrap().to_owned());
            let status = res.status();
            let body = res.into_body().collect().await;
            (status, strategy, body)
        });

        let failed = open
            || !matches!(behaviour, Behaviour::Status(s) if s < 500 && s != 408)
                && !matches!(behaviour, Behaviour::BrokenBody);
        if failed {
            let expected = if with_function { "function" } else { "fixed" };
            prop_assert_eq!(strategy.as_deref(), Some(expected));
            prop_assert_eq!(status, StatusCode::OK);
            prop_assert!(body.is_ok());
        } else {
            prop_assert_eq!(strategy, None);
            // The dependency's own body, which may itself fail (a broken stream is passed on).
            if !matches!(behaviour, Behaviour::BrokenBody) {
                prop_assert_eq!(&body.unwrap().to_bytes()[..], b"dependency");
            }
        }
    }
}

#[test]
fn not_ready_dependency_is_answered_without_a_call() {
    let rt = runtime();
    let mut svc = FallbackLayer::new()
        .on_errors()
        .fixed(Response::new("fixed"))
        .layer(Dependency(Behaviour::NotReady));
    rt.block_on(async {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(Full::new(Bytes::new())))
            .await
            .unwrap();
        assert_eq!(res.headers()[X_FALLBACK], "fixed");
    });
}
