//! The layer on a tonic client channel, against tonic-health's generated server and client, and
//! against a raw HTTP/2 server whose stream ends with an error status in its trailers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Config, ManualClock, State};
use breakwater_tower::circuit_breaker::BreakerSource;
use breakwater_tower::classify::Watch;
use breakwater_tower::{CircuitBreakerLayer, DEFAULT_GRPC_FAILURE_CODES, grpc_failures};
use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::service::InterceptorLayer;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_http::classify::{GrpcErrorsAsFailures, SharedClassifier};

fn config() -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(3)
        .wait_in_open(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .success_threshold(1)
        .build()
        .unwrap()
}

/// The health service with `svc` SERVING, and a listener on 127.0.0.1 to serve it on.
async fn health_parts() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    TcpListener,
    SocketAddr,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("svc", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (reporter, health, listener, addr)
}

/// Serves the health service behind the layer `$layer` on 127.0.0.1; evaluates to its address.
/// (A macro: the bounds tonic's server puts on a layer are long to write out.)
macro_rules! serve_health_with {
    ($layer:expr) => {{
        let layer = $layer;
        let (reporter, health, listener, addr) = health_parts().await;
        tokio::spawn(async move {
            let _reporter = reporter;
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        addr
    }};
}

/// A tonic server with the health service; `down` makes every call fail with UNAVAILABLE.
async fn health_server(down: Arc<AtomicBool>, hits: Arc<AtomicUsize>) -> SocketAddr {
    let interceptor = move |req: tonic::Request<()>| {
        hits.fetch_add(1, Ordering::SeqCst);
        if down.load(Ordering::SeqCst) {
            Err(tonic::Status::unavailable("dependency down"))
        } else {
            Ok(req)
        }
    };
    serve_health_with!(InterceptorLayer::new(interceptor))
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

type GuardedClient = HealthClient<
    breakwater_tower::CircuitBreakerService<
        Channel,
        breakwater_tower::circuit_breaker::Single,
        tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
        breakwater_tower::ErrorOnOpen,
    >,
>;

/// A health client whose channel goes through `cb`, gRPC codes deciding failures.
async fn guarded_client(cb: &CircuitBreaker, addr: SocketAddr) -> GuardedClient {
    let svc = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new(cb.clone())
                .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES)),
        )
        .service(channel(addr).await);
    HealthClient::new(svc)
}

/// A tonic health server behind its own breaker (server side: answers UNAVAILABLE when open).
async fn guarded_server(cb: &CircuitBreaker) -> SocketAddr {
    serve_health_behind(CircuitBreakerLayer::new(cb.clone())).await
}

/// A tonic health server behind `layer`, gRPC codes deciding failures, answering UNAVAILABLE
/// when open.
async fn serve_health_behind<K>(layer: CircuitBreakerLayer<K>) -> SocketAddr
where
    K: BreakerSource<tonic::body::Body> + Send + Sync + 'static,
{
    serve_health_with!(
        layer
            .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES))
            .respond_when_open()
    )
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test]
async fn unavailable_opens_the_client_breaker_ok_and_not_found_do_not() {
    let down = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = health_server(down.clone(), hits.clone()).await;
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("health", config(), clock.clone());
    let mut client = guarded_client(&cb, addr).await;

    // OK and NOT_FOUND are answers, not failures of the dependency.
    for _ in 0..5 {
        let res = client.check(check("svc")).await.unwrap();
        assert_eq!(res.into_inner().status, ServingStatus::Serving as i32);
        let err = client.check(check("unknown")).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().failures, 0);
    assert_eq!(cb.snapshot().successes, 10);

    // UNAVAILABLE three times opens it; then calls never reach the server.
    down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let err = client.check(check("svc")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    assert_eq!(cb.state(), State::Open);
    let before = hits.load(Ordering::SeqCst);
    for _ in 0..10 {
        let err = client.check(check("svc")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("circuit `health` is OPEN"), "{err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), before);

    // Back up: the probe closes it.
    down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(11));
    client.check(check("svc")).await.unwrap();
    assert_eq!(cb.state(), State::Closed);
}

/// A gRPC response body: one message, then trailers with `grpc-status`.
struct MessageThenTrailers {
    step: u8,
    status: &'static str,
}

impl http_body::Body for MessageThenTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.step += 1;
        Poll::Ready(match self.step {
            // HealthCheckResponse { status: SERVING }, length-prefixed, uncompressed.
            1 => Some(Ok(Frame::data(Bytes::from_static(&[
                0, 0, 0, 0, 2, 0x08, 0x01,
            ])))),
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", self.status.parse().unwrap());
                trailers.insert("grpc-message", "stream broke".parse().unwrap());
                Some(Ok(Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

async fn streaming_server(status: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let res = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(MessageThenTrailers { step: 0, status })
                        .unwrap();
                    Ok::<_, Infallible>(res)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn error_status_in_trailers_is_recorded_when_the_stream_ends() {
    let addr = streaming_server("13").await;
    let cb = CircuitBreaker::with_clock("stream", config(), ManualClock::new());
    let mut client = guarded_client(&cb, addr).await;

    let mut stream = client.watch(check("svc")).await.unwrap().into_inner();
    // The head arrived; the outcome is not known until the trailers.
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (0, 0));
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (1, 0));
}

#[tokio::test]
async fn a_classifier_in_watch_sees_the_trailers_and_can_time_to_the_end() {
    let addr = streaming_server("13").await;
    // tower-http's own gRPC classifier (every status but OK fails), through `Watch`, timed to
    // the end of the stream: as with `grpc_failures`, the outcome waits for the trailers.
    let make = SharedClassifier::new(GrpcErrorsAsFailures::new());
    let cb = CircuitBreaker::with_clock("watched", config(), ManualClock::new());
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()).classifier(Watch::to_end_of_body(make, true)))
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);

    let mut stream = client.watch(check("svc")).await.unwrap().into_inner();
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (0, 0));
    stream.message().await.unwrap().unwrap();
    assert_eq!(stream.message().await.unwrap_err().code(), Code::Internal);
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (1, 0));
}

#[tokio::test]
async fn ok_status_in_trailers_is_a_success_and_a_dropped_stream_counts_as_nothing() {
    let addr = streaming_server("0").await;
    let clock = ManualClock::new();
    let cb = CircuitBreaker::with_clock("stream", config(), clock.clone());
    let mut client = guarded_client(&cb, addr).await;

    let mut stream = client.watch(check("svc")).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    assert_eq!(cb.snapshot().successes, 1);

    // In HALF_OPEN with one permit, a stream dropped before its end gives the permit back.
    cb.transition_to(State::Open).unwrap();
    clock.advance(Duration::from_secs(11));
    for _ in 0..3 {
        let stream = client.watch(check("svc")).await.unwrap().into_inner();
        drop(stream);
        assert_eq!(cb.state(), State::HalfOpen);
    }
    let mut stream = client.watch(check("svc")).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    assert_eq!(cb.state(), State::Closed);
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (0, 2));
}

#[tokio::test]
async fn tonic_server_layer_answers_unavailable_when_open() {
    let cb = CircuitBreaker::with_clock("server", config(), ManualClock::new());
    let addr = guarded_server(&cb).await;
    let mut client = HealthClient::new(channel(addr).await);
    client.check(check("svc")).await.unwrap();
    assert_eq!(cb.snapshot().successes, 1);

    cb.force_open();
    let err = client.check(check("svc")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("circuit `server` is FORCED_OPEN"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_stops_serving_opens_the_client_breaker() {
    // The server's own breaker is forced open (it declares itself not serving): its answers
    // are UNAVAILABLE on the wire, and the client's breaker opens on them.
    let server = CircuitBreaker::with_clock("server", config(), ManualClock::new());
    let addr = guarded_server(&server).await;
    let client_cb = CircuitBreaker::with_clock("client", config(), ManualClock::new());
    let mut client = guarded_client(&client_cb, addr).await;
    client.check(check("svc")).await.unwrap();
    server.force_open();
    for _ in 0..3 {
        assert_eq!(
            client.check(check("svc")).await.unwrap_err().code(),
            Code::Unavailable
        );
    }
    assert_eq!(client_cb.state(), State::Open);
    let s = server.snapshot();
    assert_eq!(s.not_permitted_calls, 3);
}

#[tokio::test]
async fn a_fallback_gives_tonic_clients_unavailable_when_the_circuit_is_open() {
    let down = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = health_server(down, hits.clone()).await;
    let cb = CircuitBreaker::new("health", config());
    let svc = ServiceBuilder::new()
        .layer(breakwater_tower::FallbackLayer::new())
        .layer(
            CircuitBreakerLayer::new(cb.clone())
                .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES)),
        )
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);
    client.check(check("svc")).await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    cb.force_open();
    let status = client.check(check("svc")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("circuit `health`"),
        "{}",
        status.message()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the server was not called");
}

#[tokio::test]
async fn for_axum_watches_a_grpc_body_to_its_trailers() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    // An axum route answering like a gRPC server whose stream ends with INTERNAL: the outcome is
    // only known at the trailers, so the body is watched (and boxed into axum's `Body`).
    let cb = CircuitBreaker::with_clock("axum-grpc", config(), ManualClock::new());
    let app = axum::Router::new()
        .route(
            "/grpc.health.v1.Health/Watch",
            axum::routing::post(|| async {
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(axum::body::Body::new(MessageThenTrailers {
                        step: 0,
                        status: "13",
                    }))
                    .unwrap()
            }),
        )
        .layer(
            CircuitBreakerLayer::new(cb.clone())
                .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES))
                .for_axum(),
        );
    let req = http::Request::post("/grpc.health.v1.Health/Watch")
        .header("content-type", "application/grpc")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (0, 0));
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "13");
    let s = cb.snapshot();
    assert_eq!((s.failures, s.successes), (1, 0));
}

#[tokio::test]
async fn per_method_breakers_on_both_sides_open_only_the_failing_method() {
    use breakwater_core::{FamilyOptions, Registry};
    use breakwater_tower::GrpcMethod;

    const CHECK: &str = "/grpc.health.v1.Health/Check";
    let registry = Registry::builder().clock(ManualClock::new()).build();
    // Server: a breaker per gRPC method; Check's is forced open, so Check answers UNAVAILABLE.
    let served = registry.family("server", FamilyOptions::new(config()));
    served.get(CHECK).force_open();
    let addr = serve_health_behind(CircuitBreakerLayer::keyed(served.clone(), GrpcMethod)).await;
    // Client: a breaker per gRPC method too.
    let calls = registry.family("client", FamilyOptions::new(config()));
    let svc = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::keyed(calls.clone(), GrpcMethod)
                .classifier(grpc_failures(&DEFAULT_GRPC_FAILURE_CODES)),
        )
        .service(channel(addr).await);
    let mut client = HealthClient::new(svc);

    for _ in 0..3 {
        let err = client.check(check("svc")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(
            err.message()
                .contains("`server:/grpc.health.v1.Health/Check`"),
            "{err}"
        );
    }
    assert_eq!(calls.get(CHECK).state(), State::Open);
    let err = client.check(check("svc")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .contains("`client:/grpc.health.v1.Health/Check`"),
        "{err}"
    );
    assert_eq!(served.get(CHECK).snapshot().not_permitted_calls, 3);

    // Watch has breakers of its own on both sides, closed: it works.
    let mut stream = client.watch(check("svc")).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let watch = "/grpc.health.v1.Health/Watch";
    assert_eq!(calls.get(watch).state(), State::Closed);
    assert_eq!(served.get(watch).state(), State::Closed);
}

#[tokio::test]
async fn an_inner_server_breakers_refusal_is_not_the_outer_ones_failure() {
    use breakwater_core::{FamilyOptions, Registry};
    use breakwater_tower::GrpcMethod;

    const CHECK: &str = "/grpc.health.v1.Health/Check";
    // Both on the server: a breaker for the whole server around one per method. The inner one
    // refuses Check with a gRPC answer (UNAVAILABLE in an HTTP 200), which the outer one must
    // tell from the service's own failures by its mark, not by its HTTP status.
    let registry = Registry::builder().clock(ManualClock::new()).build();
    let outer = registry.breaker_with("server", config());
    let methods = registry.family("methods", FamilyOptions::new(config()));
    methods.get(CHECK).force_open();
    let grpc = || grpc_failures(&DEFAULT_GRPC_FAILURE_CODES);
    let stack = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new(outer.clone())
                .classifier(grpc())
                .respond_when_open(),
        )
        .layer(
            CircuitBreakerLayer::keyed(methods.clone(), GrpcMethod)
                .classifier(grpc())
                .respond_when_open(),
        );
    let addr = serve_health_with!(stack);
    let mut client = HealthClient::new(channel(addr).await);
    for _ in 0..5 {
        let err = client.check(check("svc")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(
            err.message().contains(&format!("`methods:{CHECK}`")),
            "{err}"
        );
    }
    let s = outer.snapshot();
    assert_eq!((s.failures, s.ignored_calls), (0, 5));
    assert_eq!(outer.state(), State::Closed);
}
