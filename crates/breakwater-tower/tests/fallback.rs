//! The fallback layer around real hyper clients and axum servers on 127.0.0.1.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::routing::{any, get};
use breakwater_core::{CircuitBreaker, Config, EventKind, ManualClock, Registry, State};
use breakwater_tower::fallback::{
    FailureKind, FallbackLayer, StaleCache, X_FALLBACK, X_FALLBACK_SKIPPED,
};
use breakwater_tower::{BoxError, CircuitBreakerLayer};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn consecutive(n: u32) -> Config {
    Config::builder()
        .no_failure_rate_threshold()
        .consecutive_failures(n)
        .wait_in_open(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .success_threshold(1)
        .build()
        .unwrap()
}

fn full_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn body_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Points a request at `addr`, keeping its path and query (what a backup client does).
fn retarget<B>(addr: SocketAddr) -> impl Fn(Request<B>) -> Request<B> + Clone {
    move |mut req: Request<B>| {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(pq)
            .build()
            .unwrap();
        req
    }
}

async fn text<B>(res: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    String::from_utf8(body_bytes(res.into_body()).await.to_vec()).unwrap()
}

fn header<B>(res: &Response<B>, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn primary_down_backup_serves_then_traffic_returns_to_primary() {
    let primary = Upstream::start().await;
    let backup = Upstream::start().await;
    let clock = ManualClock::new();
    let registry = Registry::builder().clock(clock.clone()).build();
    let primary_cb = registry.breaker_with("primary", consecutive(3));
    let backup_cb = registry.breaker_with("backup", consecutive(3));

    let backup_client = ServiceBuilder::new()
        .map_request(retarget(backup.addr))
        .layer(CircuitBreakerLayer::new(backup_cb.clone()))
        .service(full_client());
    let fallback = FallbackLayer::new().events(&registry).backup(backup_client);
    let stats = fallback.stats();
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(CircuitBreakerLayer::new(primary_cb.clone()))
        .service(full_client());
    let get = |path: &str| {
        Request::get(primary.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // The primary fails three times: its answers pass through, and the breaker opens.
    primary.set_mode(FAIL);
    for _ in 0..3 {
        let res = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(header(&res, X_FALLBACK), None);
    }
    assert_eq!(primary_cb.state(), State::Open);

    // Open: the backup serves, the primary sees nothing.
    for _ in 0..5 {
        let res = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("backup"));
        assert_eq!(text(res).await, "ok");
    }
    assert_eq!((primary.hits(), backup.hits()), (3, 5));
    assert_eq!(stats.uses("backup"), 5);
    let used: Vec<_> = registry
        .recent_events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::FallbackUsed { .. }))
        .collect();
    assert_eq!(used.len(), 5);
    assert_eq!(&*used[0].circuit, "primary");
    assert_eq!(used[0].kind, EventKind::FallbackUsed { strategy: "backup" });

    // The primary recovers: after the wait the probe closes the breaker, traffic returns.
    primary.set_mode(OK);
    clock.advance(Duration::from_secs(11));
    let res = svc.clone().oneshot(get("/items")).await.unwrap();
    assert_eq!(header(&res, X_FALLBACK), None);
    assert_eq!(primary_cb.state(), State::Closed);
    for _ in 0..4 {
        let res = svc.clone().oneshot(get("/items")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, X_FALLBACK), None);
    }
    assert_eq!((primary.hits(), backup.hits()), (8, 5));
}

#[tokio::test]
async fn backup_refused_by_its_own_breaker_falls_to_the_next_strategy() {
    let primary = Upstream::start().await;
    let backup = Upstream::start().await;
    let primary_cb = CircuitBreaker::new("primary", consecutive(1));
    let backup_cb = CircuitBreaker::new("backup", consecutive(1));
    primary_cb.force_open();
    backup_cb.force_open();
    let backup_client = ServiceBuilder::new()
        .map_request(retarget(backup.addr))
        .layer(CircuitBreakerLayer::new(backup_cb))
        .service(full_client());
    let svc = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .backup(backup_client)
                .fixed(Response::new("[]")),
        )
        .layer(CircuitBreakerLayer::new(primary_cb))
        .service(full_client());
    let req = Request::get(primary.url("/items"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("fixed"));
    assert_eq!(text(res).await, "[]");
    assert_eq!((primary.hits(), backup.hits()), (0, 0));
}

/// An upstream whose answer names the path and counts the calls, and that can be killed.
struct Origin {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Origin {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new().route(
            "/{*rest}",
            any(move |req: AxumRequest| {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    let path = req.uri().path_and_query().unwrap().to_string();
                    Response::builder()
                        .header(header::CONTENT_TYPE, "text/plain")
                        .header("x-call", n)
                        .body(Body::from(format!("{} {path}", req.method())))
                        .unwrap()
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            hits,
            stop: Some((tx, task)),
        }
    }

    /// Stops the server: its port refuses connections once this returns.
    async fn kill(&mut self) {
        let (tx, task) = self.stop.take().expect("running");
        let _ = tx.send(());
        task.await.unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

#[tokio::test]
async fn a_kept_answer_is_replaced_once_it_is_refresh_after_old() {
    let mut origin = Origin::start().await;
    let clock = ManualClock::new();
    let cache = StaleCache::builder()
        .ttl(Duration::from_secs(60))
        .refresh_after(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .on_errors()
                .stale_if_error(cache.clone()),
        )
        .service(body_client());
    let url = origin.url("/items");
    let get = || {
        let req = Request::get(url.as_str()).body(Body::empty()).unwrap();
        svc.clone().oneshot(req)
    };
    // Good answers 1 to 4, half a second apart: 1 is kept, 2 is not (1 is fresh), 3 replaces
    // it (1 is a second old), 4 is not.
    for call in 1..=4 {
        let res = get().await.unwrap();
        assert_eq!(header(&res, "x-call"), Some(call.to_string()));
        text(res).await;
        clock.advance(Duration::from_millis(500));
    }
    origin.kill().await;
    let stale = get().await.unwrap();
    assert_eq!(header(&stale, X_FALLBACK).as_deref(), Some("stale"));
    assert_eq!(header(&stale, "x-call").as_deref(), Some("3"));

    let err = StaleCache::builder()
        .ttl(Duration::from_secs(5))
        .refresh_after(Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "refresh_after");
    // Left at its default, it fits a short TTL.
    assert!(
        StaleCache::builder()
            .ttl(Duration::from_secs(1))
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn stale_if_error_serves_the_last_good_answer_until_it_expires() {
    let mut origin = Origin::start().await;
    let clock = ManualClock::new();
    let cache = StaleCache::builder()
        .ttl(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let layer = FallbackLayer::new()
        .on_errors()
        .stale_if_error(cache.clone());
    let stats = layer.stats();
    let svc = ServiceBuilder::new().layer(layer).service(body_client());
    let base = origin.url("");
    let call = |method: Method, path: &str| {
        let req = Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .body(Body::empty())
            .unwrap();
        svc.clone().oneshot(req)
    };

    let res = call(Method::GET, "/items/1?page=2").await.unwrap();
    assert_eq!(header(&res, X_FALLBACK), None);
    assert_eq!(text(res).await, "GET /items/1?page=2");
    let res = call(Method::POST, "/items/1?page=2").await.unwrap();
    assert_eq!(text(res).await, "POST /items/1?page=2");
    assert_eq!(cache.len(), 1, "only the GET is kept");

    origin.kill().await;
    clock.advance(Duration::from_secs(42));

    // The same GET: the cached answer, marked stale.
    let res = call(Method::GET, "/items/1?page=2").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("stale"));
    assert_eq!(header(&res, "age").as_deref(), Some("42"));
    assert_eq!(
        header(&res, "warning").as_deref(),
        Some("110 - \"Response is Stale\"")
    );
    assert_eq!(header(&res, "x-call").as_deref(), Some("1"));
    assert_eq!(text(res).await, "GET /items/1?page=2");
    assert_eq!(stats.uses("stale"), 1);

    // Another query, a POST: nothing cached, the error's own answer.
    for (method, path) in [
        (Method::GET, "/items/1?page=3"),
        (Method::POST, "/items/1?page=2"),
    ] {
        let res = call(method, path).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(v["code"], "UPSTREAM_ERROR");
    }

    // Expired: not served, and dropped.
    clock.advance(Duration::from_secs(19));
    let res = call(Method::GET, "/items/1?page=2").await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(
        header(&res, X_FALLBACK_SKIPPED)
            .unwrap()
            .contains("nothing fresh")
    );
    assert!(cache.is_empty());
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_key_function_picks_the_entry_and_a_later_function_sees_the_request() {
    let mut origin = Origin::start().await;
    // The key ignores the query: any page of a path shares its entry.
    let cache = StaleCache::builder()
        .key(|parts| Some(parts.uri.path().to_owned()))
        .build()
        .unwrap();
    let layer = FallbackLayer::new()
        .on_errors()
        .stale_if_error(cache.clone())
        .function(|parts, _| Response::new(Bytes::from(format!("fn {}", parts.uri.path()))));
    let svc = ServiceBuilder::new().layer(layer).service(body_client());
    let base = origin.url("");
    let get = |path: &str| {
        let req = Request::get(format!("{base}{path}"))
            .body(Body::empty())
            .unwrap();
        svc.clone().oneshot(req)
    };
    assert_eq!(
        text(get("/items?page=1").await.unwrap()).await,
        "GET /items?page=1"
    );
    assert_eq!(cache.len(), 1);
    origin.kill().await;
    let res = get("/items?page=2").await.unwrap();
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("stale"));
    assert_eq!(text(res).await, "GET /items?page=1");
    // Nothing kept for this path: the function answers from the request's head.
    let res = get("/other?page=1").await.unwrap();
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("function"));
    assert_eq!(text(res).await, "fn /other");
}

#[tokio::test]
async fn private_and_credentialed_answers_are_not_cached() {
    let app = Router::new()
        .route(
            "/private",
            get(|| async { ([(header::CACHE_CONTROL, "private, max-age=60")], "mine") }),
        )
        .route(
            "/public",
            get(|| async { ([(header::CACHE_CONTROL, "public")], "ours") }),
        )
        .route("/plain", get(|| async { "plain" }));
    let addr = serve(app).await;
    let cache = StaleCache::new();
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().stale_if_error(cache.clone()))
        .service(body_client());
    for (path, auth) in [
        ("/private", false),
        ("/plain", true),
        ("/public", true),
        ("/plain", false),
    ] {
        let mut req = Request::get(format!("http://{addr}{path}"))
            .body(Body::empty())
            .unwrap();
        if auth {
            req.headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        }
        let res = svc.clone().oneshot(req).await.unwrap();
        body_bytes(res.into_body()).await;
    }
    assert_eq!(cache.len(), 2, "public with credentials, plain without");
}

#[tokio::test]
async fn cache_stays_within_its_byte_bound_under_ten_thousand_keys() {
    const MAX_BYTES: usize = 64 << 10;
    let cache = StaleCache::builder()
        .max_entries(100_000)
        .max_bytes(MAX_BYTES)
        .max_body_bytes(4 << 10)
        .build()
        .unwrap();
    let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let body = req.uri().path().repeat(8);
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    });
    let mut svc = FallbackLayer::new()
        .stale_if_error(cache.clone())
        .layer(inner);
    let mut peak = 0;
    for i in 0..10_000 {
        let req = Request::get(format!("/key/{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        body_bytes(res.into_body()).await;
        peak = peak.max(cache.bytes());
        assert!(
            cache.bytes() <= MAX_BYTES,
            "{} bytes at key {i}",
            cache.bytes()
        );
    }
    assert!(peak > MAX_BYTES / 2, "the cache was used: peak {peak}");
    assert!(cache.len() < 10_000);
}

#[tokio::test]
async fn bodies_over_the_limit_are_streamed_not_cached() {
    let cache = StaleCache::builder().max_body_bytes(1_000).build().unwrap();
    let inner = tower::service_fn(|req: Request<Full<Bytes>>| async move {
        let n: usize = req.uri().path()[1..].parse().unwrap();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; n]))))
    });
    let svc = FallbackLayer::new()
        .stale_if_error(cache.clone())
        .layer(inner);
    for n in [1_000, 1_001, 50_000] {
        let req = Request::get(format!("/{n}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(body_bytes(res.into_body()).await.len(), n);
    }
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn streamed_post_is_not_replayed_and_the_answer_says_why() {
    let primary = Upstream::start().await;
    let backup = Upstream::start().await;
    let primary_cb = CircuitBreaker::new("orders", consecutive(1));
    primary_cb.force_open();
    let backup_client = ServiceBuilder::new()
        .map_request(retarget(backup.addr))
        .service(body_client());
    let svc = ServiceBuilder::new()
        .layer(
            FallbackLayer::new()
                .replay_bodies(1_024)
                .backup(backup_client),
        )
        .layer(CircuitBreakerLayer::new(primary_cb))
        .service(body_client());

    // A streamed body of unknown length: not buffered, not replayed.
    let chunks = (0..64).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 1_024])));
    let req = Request::post(primary.url("/orders"))
        .body(Body::from_stream(futures_stream(chunks)))
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        header(&res, X_FALLBACK_SKIPPED)
            .unwrap()
            .contains("not buffered")
    );
    let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(v["code"], "CIRCUIT_OPEN");
    assert_eq!(v["circuit"], "orders");
    assert!(v["fallback"][0].as_str().unwrap().contains("not replayed"));

    // A large body of known size: not buffered either.
    let req = Request::post(primary.url("/orders"))
        .body(Body::from(vec![b'x'; 4_096]))
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backup.hits(), 0);

    // A small one is buffered and replayed.
    let req = Request::post(primary.url("/orders"))
        .body(Body::from("{\"item\":1}"))
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("backup"));
    assert_eq!(backup.hits(), 1);
    assert_eq!(primary.hits(), 0);
}

#[tokio::test]
async fn without_body_replay_only_idempotent_bodiless_requests_fail_over() {
    let backup = Upstream::start().await;
    let cb = CircuitBreaker::new("primary", consecutive(1));
    cb.force_open();
    let backup_client = ServiceBuilder::new()
        .map_request(retarget(backup.addr))
        .service(full_client());
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new().backup(backup_client))
        .layer(CircuitBreakerLayer::new(cb))
        .service(full_client());
    let cases = [
        (Method::DELETE, "", true),
        (Method::POST, "", false),
        (Method::PUT, "body", false),
    ];
    for (method, body, replayed) in cases {
        let req = Request::builder()
            .method(method.clone())
            .uri("http://127.0.0.1:9/x")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        let fell_over = header(&res, X_FALLBACK).as_deref() == Some("backup");
        assert_eq!(fell_over, replayed, "{method} {body:?}");
        if !replayed {
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(header(&res, X_FALLBACK_SKIPPED).is_some());
        }
    }
    assert_eq!(backup.hits(), 1);
}

#[tokio::test]
async fn axum_server_stays_infallible_and_answers_open_circuits() {
    let cb = CircuitBreaker::new("items", consecutive(1));
    cb.force_open();
    let app = Router::new()
        .route("/items", get(|| async { "[1]" }))
        .route("/other", get(|| async { "x" }))
        .route_layer(
            ServiceBuilder::new()
                .layer(FallbackLayer::new().function(|parts, failure| {
                    assert_eq!(failure.kind(), FailureKind::CircuitOpen);
                    let body = if parts.uri.path() == "/items" {
                        "[]"
                    } else {
                        "{}"
                    };
                    Response::new(Bytes::from(body))
                }))
                .layer(CircuitBreakerLayer::new(cb.clone()).respond_when_open()),
        );
    let addr = serve(app).await;
    let client = body_client();
    let get_items =
        |addr: std::net::SocketAddr| client.get(format!("http://{addr}/items").parse().unwrap());
    let res = get_items(addr).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("function"));
    assert_eq!(text(res).await, "[]");

    // With no strategy the refusal is the 503 contract itself.
    let app = Router::new()
        .route("/items", get(|| async { "[1]" }))
        .layer(
            ServiceBuilder::new()
                .layer(FallbackLayer::new())
                .layer(CircuitBreakerLayer::new(cb.clone())),
        );
    let addr = serve(app).await;
    let res = get_items(addr).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, "retry-after").as_deref(), Some("1"));
    let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(v["code"], "CIRCUIT_OPEN");
    assert_eq!(v["state"], "FORCED_OPEN");

    // The same with axum's own body type on both layers.
    let app = Router::new()
        .route("/items", get(|| async { "[1]" }))
        .layer(
            ServiceBuilder::new()
                .layer(FallbackLayer::new().fixed(Response::new("[]")).for_axum())
                .layer(CircuitBreakerLayer::new(cb.clone()).for_axum()),
        );
    let addr = serve(app).await;
    let res = get_items(addr).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("fixed"));
    assert_eq!(text(res).await, "[]");
    cb.reset();
    let res = get_items(addr).await.unwrap();
    assert_eq!(header(&res, X_FALLBACK), None);
    assert_eq!(text(res).await, "[1]");
}

#[tokio::test(start_paused = true)]
async fn timeouts_fall_back_when_asked_and_are_504_otherwise() {
    let up = Upstream::start().await;
    up.set_mode(HANG);
    let timed = || {
        ServiceBuilder::new()
            .timeout(Duration::from_secs(1))
            .service(full_client())
    };
    let req = || {
        Request::get(up.url("/slow"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let svc = FallbackLayer::new()
        .on_timeouts()
        .async_function(|_, failure| {
            let kind = failure.kind();
            async move { Response::new(Bytes::from(kind.as_str())) }
        })
        .layer(timed());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("function"));
    assert_eq!(text(res).await, "timeout");

    let svc = FallbackLayer::new()
        .fixed(Response::new("never"))
        .layer(timed());
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(v["code"], "UPSTREAM_TIMEOUT");
    up.release(2);
}

#[tokio::test]
async fn failed_answers_fall_back_only_when_asked() {
    let up = Upstream::start().await;
    up.set_mode(FAIL);
    let req = || {
        Request::get(up.url("/x"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let plain = FallbackLayer::new()
        .fixed(Response::new("fallback"))
        .layer(full_client());
    let res = plain.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let asked = FallbackLayer::new()
        .on_failed_responses()
        .fixed(Response::new("fallback"))
        .layer(full_client());
    let res = asked.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "fallback");

    // Nothing answers: the dependency's own answer, untouched.
    let none = FallbackLayer::new()
        .on_failed_responses()
        .stale_if_error(StaleCache::new())
        .layer(full_client());
    let res = none.oneshot(req()).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(res).await, "down");
}

#[tokio::test]
async fn grpc_requests_get_a_grpc_status_when_nothing_answers() {
    let cb = CircuitBreaker::new("greeter", consecutive(1));
    cb.force_open();
    let inner = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
    });
    let svc = ServiceBuilder::new()
        .layer(FallbackLayer::new())
        .layer(CircuitBreakerLayer::new(cb))
        .service(inner);
    let req = Request::post("/greeter.Greeter/Hello")
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "grpc-status").as_deref(), Some("14"));
}

#[tokio::test]
async fn invalid_cache_settings_are_refused_naming_the_field() {
    let err = StaleCache::builder().max_entries(0).build().unwrap_err();
    assert_eq!(err.field(), "max_entries");
    let err = StaleCache::builder()
        .ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("`ttl`"));
}

/// A stream of body chunks.
fn futures_stream<I>(items: I) -> impl tokio_stream::Stream<Item = I::Item> + Send + 'static
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
{
    tokio_stream::iter(items)
}

#[tokio::test]
async fn a_server_side_stale_cache_keeps_answers_of_known_length() {
    stale_cache_on_a_server(false).await;
    // With axum's own body type: the recorded body is boxed, and still kept.
    stale_cache_on_a_server(true).await;
}

async fn stale_cache_on_a_server(for_axum: bool) {
    // A server that knows the body's length stops polling it after the last byte: the answer
    // must be kept all the same.
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = down.clone();
    let cache = StaleCache::new();
    let routes = Router::new().route(
        "/items",
        get(move || {
            let down = flag.load(Ordering::SeqCst);
            async move {
                if down {
                    (StatusCode::INTERNAL_SERVER_ERROR, "down")
                } else {
                    (StatusCode::OK, "[1,2,3]")
                }
            }
        }),
    );
    let layer = FallbackLayer::new()
        .on_failed_responses()
        .stale_if_error(cache.clone());
    let app = if for_axum {
        routes.layer(layer.for_axum())
    } else {
        routes.layer(layer)
    };
    let addr = serve(app).await;
    let client = body_client();
    let url = format!("http://{addr}/items");
    let res = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "7");
    assert_eq!(text(res).await, "[1,2,3]");
    assert_eq!(cache.len(), 1);

    down.store(true, Ordering::SeqCst);
    let res = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, X_FALLBACK).as_deref(), Some("stale"));
    assert_eq!(text(res).await, "[1,2,3]");
}
