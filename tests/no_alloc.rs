//! The hot paths allocate nothing: CLOSED acquire + record, and OPEN rejection.
//!
//! A counting global allocator (the only unsafe code in the project, confined to this test
//! binary) counts allocations made by this thread while the paths run.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use breakwater::{CircuitBreaker, Config, ManualClock, SlidingWindow, State};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn config() -> Config {
    Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(100))
        .minimum_number_of_calls(100)
        .wait_in_open(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[test]
fn closed_path_allocates_nothing() {
    for cb in [
        CircuitBreaker::new("system", config()),
        CircuitBreaker::with_clock("manual", config(), ManualClock::new()),
        CircuitBreaker::new(
            "timed",
            config()
                .to_builder()
                .slow_call_rate_threshold(100.0)
                .build()
                .unwrap(),
        ),
    ] {
        // Warm up (first use of the system clock calibrates it).
        cb.try_acquire().unwrap().success();
        let n = allocations_during(|| {
            for i in 0..10_000 {
                let p = cb.try_acquire().unwrap();
                if i % 50 == 0 {
                    p.failure();
                } else {
                    p.success();
                }
            }
        });
        assert_eq!(cb.state(), State::Closed);
        assert_eq!(n, 0, "{}", cb.name());
    }
}

#[test]
fn open_path_allocates_nothing() {
    let cb = CircuitBreaker::new("open", config());
    cb.force_open();
    cb.transition_to(State::Closed).unwrap();
    cb.open_for(Duration::from_secs(3_600)).unwrap();
    let _ = cb.try_acquire();
    let n = allocations_during(|| {
        for _ in 0..10_000 {
            assert!(cb.try_acquire().is_err());
        }
    });
    assert_eq!(n, 0);
    assert_eq!(cb.snapshot().not_permitted_calls, 10_001);
}

#[test]
fn layer_on_a_known_key_allocates_nothing() {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use breakwater::{FamilyOptions, Registry};
    use breakwater_tower::CircuitBreakerLayer;
    use tower::{Layer, Service};

    let registry = Registry::new();
    let family = registry.family("alloc", FamilyOptions::new(config()));
    let key = |req: &http::Request<()>, buf: &mut String| buf.push_str(req.uri().path());
    let inner = tower::service_fn(|_req: http::Request<()>| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        )))
    });
    let mut keyed = CircuitBreakerLayer::keyed(family, key).layer(inner);
    let mut single = CircuitBreakerLayer::new(CircuitBreaker::new("single", config())).layer(inner);
    // A fallback with a fixed answer outside a breaker: nothing allocated until it answers.
    type Empty = http_body_util::Empty<bytes::Bytes>;
    let inner_http = tower::service_fn(|_req: http::Request<Empty>| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(Empty::new())))
    });
    let mut fallback = breakwater_tower::FallbackLayer::new()
        .fixed(http::Response::new("[]"))
        .layer(CircuitBreakerLayer::new(CircuitBreaker::new("fb", config())).layer(inner_http));
    let mut fallback = tower::ServiceExt::map_request(&mut fallback, |r: http::Request<()>| {
        r.map(|()| Empty::new())
    });
    let uris: Vec<http::Uri> = (0..4).map(|i| format!("/k{i}").parse().unwrap()).collect();
    let call = |svc: &mut dyn FnMut(http::Request<()>) -> bool, i: usize| {
        let mut req = http::Request::new(());
        *req.uri_mut() = uris[i % 4].clone();
        assert!(svc(req));
    };
    fn drive<S: Service<http::Request<()>>>(svc: &mut S, req: http::Request<()>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = pin!(svc.call(req));
        matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_)))
    }
    // Warm up: creates the four breakers and grows the key buffer.
    for i in 0..8 {
        call(&mut |r| drive(&mut keyed, r), i);
        call(&mut |r| drive(&mut single, r), i);
        call(&mut |r| drive(&mut fallback, r), i);
    }
    let n = allocations_during(|| {
        for i in 0..1_000 {
            call(&mut |r| drive(&mut keyed, r), i);
            call(&mut |r| drive(&mut single, r), i);
            call(&mut |r| drive(&mut fallback, r), i);
        }
    });
    assert_eq!(n, 0);
    // A clone per request, as axum's router and hyper's server make: still nothing, once the
    // thread has a key buffer to lend (the first clone's).
    call(&mut |r| drive(&mut keyed.clone(), r), 0);
    let n = allocations_during(|| {
        for i in 0..1_000 {
            call(&mut |r| drive(&mut keyed.clone(), r), i);
            call(&mut |r| drive(&mut single.clone(), r), i);
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn for_axum_hands_axum_its_own_body_unboxed() {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use axum::body::Body;
    use axum::response::IntoResponse;
    use breakwater_tower::CircuitBreakerLayer;
    use tower::{Layer, Service};

    // An axum handler's answer: a response with axum's `Body` (an empty one allocates nothing).
    let inner = tower::service_fn(|_req: http::Request<()>| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(Body::empty())))
    });
    let mut for_axum = CircuitBreakerLayer::new(CircuitBreaker::new("for_axum", config()))
        .for_axum()
        .layer(inner);
    let mut respond = CircuitBreakerLayer::new(CircuitBreaker::new("respond", config()))
        .respond_when_open()
        .layer(inner);
    fn drive<S, B>(svc: &mut S) -> http::Response<B>
    where
        S: Service<http::Request<()>, Response = http::Response<B>>,
    {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = pin!(svc.call(http::Request::new(())));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(res)) => res,
            _ => panic!("the inner service answers at once"),
        }
    }
    drive(&mut for_axum);
    drive(&mut respond);
    // What axum does with each answer (`IntoResponse`): its own `Body` is kept as it is...
    let kept = allocations_during(|| {
        for _ in 0..1_000 {
            drop(drive(&mut for_axum).into_response());
        }
    });
    assert_eq!(kept, 0);
    // ...and any other body is boxed, once per response.
    let boxed = allocations_during(|| {
        for _ in 0..1_000 {
            drop(drive(&mut respond).into_response());
        }
    });
    assert_eq!(boxed, 1_000);
}

#[test]
fn an_axum_router_allocates_no_more_with_breakers_and_a_fallback_than_with_layers_that_do_nothing()
{
    // Per request, axum itself allocates for its routing, its boxed services and futures, and
    // the clones of the layers around handlers; breakers and fallback add nothing to that.
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use breakwater::{FamilyOptions, Registry};
    use breakwater_tower::{CircuitBreakerLayer, FallbackLayer, MethodAndRoute};
    use tower::ServiceExt;

    let registry = Registry::new();
    let family = registry.family("routes", FamilyOptions::new(config()));
    let routes = || {
        Router::new()
            .route("/items", get(|| async { "[]" }))
            .route("/items/{id}", get(|| async { "item" }))
    };
    // A layer that does nothing but, like a breaker layer, holds something: axum clones a
    // handler's layers on every request, and a clone of a layer that holds nothing is free.
    let held = std::sync::Arc::new(());
    let noop = || {
        let held = held.clone();
        tower::util::MapResponseLayer::new(move |res: http::Response<Body>| {
            let _ = &held;
            res
        })
    };
    let service = CircuitBreaker::new("service", config());
    let guarded = routes()
        .route_layer(CircuitBreakerLayer::keyed(family, MethodAndRoute).for_axum())
        .layer(
            tower::ServiceBuilder::new()
                .layer(
                    FallbackLayer::new()
                        .fixed(http::Response::new("[]"))
                        .for_axum(),
                )
                .layer(CircuitBreakerLayer::new(service).for_axum()),
        );
    let plain = routes()
        .route_layer(noop())
        .layer(tower::ServiceBuilder::new().layer(noop()).layer(noop()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let run = |app: &Router| {
        rt.block_on(async {
            for path in ["/items", "/items/7"] {
                let req = http::Request::get(path).body(Body::empty()).unwrap();
                let res = app.clone().oneshot(req).await.unwrap();
                assert_eq!(res.status(), 200);
            }
        })
    };
    // Warm up: the breakers exist, the thread's key buffer too.
    run(&guarded);
    run(&plain);
    let with_breakers = allocations_during(|| (0..100).for_each(|_| run(&guarded)));
    let with_noops = allocations_during(|| (0..100).for_each(|_| run(&plain)));
    assert_eq!(with_breakers, with_noops);
}

#[test]
fn health_layer_for_axum_adds_no_allocation_to_a_routed_request() {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use breakwater::Registry;
    use breakwater_tower::health::{HealthLayer, HealthRegistry};
    use tower::ServiceExt;

    let health = HealthRegistry::new(&Registry::new());
    let routes = || Router::new().route("/items", get(|| async { "[]" }));
    let held = std::sync::Arc::new(());
    let noop = tower::util::MapResponseLayer::new(move |res: http::Response<Body>| {
        let _ = &held;
        res
    });
    let for_axum = routes().layer(HealthLayer::new(health.clone()).for_axum());
    let either = routes().layer(HealthLayer::new(health.clone()));
    let plain = routes().layer(noop);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let get = |app: &Router, path: &str| {
        rt.block_on(async {
            let req = http::Request::get(path).body(Body::empty()).unwrap();
            app.clone().oneshot(req).await.unwrap()
        })
    };
    let answer = get(&for_axum, "/health");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["content-type"],
        breakwater_tower::health::HEALTH_JSON
    );
    for app in [&for_axum, &either, &plain] {
        assert_eq!(get(app, "/items").status(), 200);
    }
    let count =
        |app: &Router| allocations_during(|| (0..100).for_each(|_| drop(get(app, "/items"))));
    let with_for_axum = count(&for_axum);
    let with_either = count(&either);
    let with_noop = count(&plain);
    assert_eq!(with_for_axum, with_noop);
    // Without it, axum boxes the `Either` body of every response.
    assert_eq!(with_either, with_noop + 100);
}

#[test]
fn with_opentelemetry_and_a_tracing_subscriber_the_paths_allocate_nothing() {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use breakwater::Registry;
    use breakwater::otel::BreakerMetrics;
    use breakwater_tower::CircuitBreakerLayer;
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use tower::{Layer, Service};
    use tracing_subscriber::layer::{Layer as _, SubscriberExt};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let registry = Registry::new();
    assert!(BreakerMetrics::builder(&registry).register(&provider.meter("breakwater")));
    let timed = registry.breaker_with(
        "timed",
        config()
            .to_builder()
            .record_call_durations(true)
            .build()
            .unwrap(),
    );
    let untimed = registry.breaker_with("untimed", config());
    let inner = tower::service_fn(|_req: http::Request<()>| {
        std::future::ready(Ok::<_, Infallible>(http::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        )))
    });
    let mut layered = CircuitBreakerLayer::new(untimed.clone()).layer(inner);
    fn drive<S: Service<http::Request<()>>>(svc: &mut S) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = pin!(svc.call(http::Request::new(())));
        matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(_)))
    }
    // A subscriber as an application runs one: console output at info, inside a request span.
    // (The span declares no breaker field here: a subscriber that keeps recorded fields, as the
    // console one does, allocates for them itself, once per request span in real use.)
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
    );
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request");
        let _entered = span.enter();
        // Warm up: the histogram's series for `timed` is created on its first record, and
        // `tracing` registers each callsite the first time it is reached.
        for i in 0..100 {
            let p = timed.try_acquire().unwrap();
            if i % 50 == 0 {
                p.failure();
            } else {
                p.success();
            }
            assert!(drive(&mut layered));
        }
        let n = allocations_during(|| {
            for i in 0..10_000 {
                let p = timed.try_acquire().unwrap();
                if i % 50 == 0 {
                    p.failure();
                } else {
                    p.success();
                }
                assert!(drive(&mut layered));
            }
        });
        assert_eq!(n, 0);
    });
    assert_eq!(timed.duration_histogram().count, 10_100);
    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    assert!(!exported.is_empty());
}

#[path = "../crates/breakwater-redis/tests/support/server.rs"]
mod redis_server;

#[test]
fn closed_path_with_breakers_shared_through_redis_allocates_nothing() {
    use breakwater::fleet::Fleet;
    use breakwater::redis::RedisStore;
    let Some(redis) = redis_server::RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = breakwater::Registry::new();
    let cb = registry.breaker_with("shared", config());
    let store = RedisStore::builder(redis.url()).build().unwrap();
    let fleet = runtime.block_on(async {
        Fleet::builder(&registry, std::sync::Arc::new(store))
            .shared_window(Duration::from_secs(10))
            .flush_interval(Duration::from_millis(5))
            .start()
            .await
            .unwrap()
    });
    assert!(fleet.stats().is_healthy());
    cb.try_acquire().unwrap().success();
    // Calls on this thread while the fleet's tasks flush the shared window on another.
    let (mut allocations, mut rounds) = (0, 0);
    while fleet.stats().view().window_flushes < 3 && rounds < 10_000 {
        allocations += allocations_during(|| {
            for i in 0..10_000 {
                let p = cb.try_acquire().unwrap();
                if i % 50 == 0 {
                    p.failure()
                } else {
                    p.success()
                }
            }
        });
        rounds += 1;
    }
    assert!(
        fleet.stats().view().window_flushes >= 3,
        "the window was flushed meanwhile"
    );
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(allocations, 0);
}

#[test]
fn closed_path_with_history_kept_in_a_state_dir_allocates_nothing() {
    use breakwater::history::History;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("breakwater-no-alloc-{}", std::process::id()));
    let registry = breakwater::Registry::new();
    let cb = registry.breaker_with("kept", config());
    let history =
        runtime.block_on(async { History::builder(&registry).state_dir(&dir).start().unwrap() });
    assert!(history.status().persistent);
    cb.try_acquire().unwrap().success();
    let n = allocations_during(|| {
        for i in 0..10_000 {
            let p = cb.try_acquire().unwrap();
            if i % 50 == 0 {
                p.failure()
            } else {
                p.success()
            }
        }
    });
    // The history's task samples the breaker meanwhile, on the runtime's thread.
    runtime.block_on(history.close());
    let kept = runtime.block_on(async { history.breaker("kept", 1).unwrap() });
    assert_eq!(kept.minutes.iter().map(|m| m.failures).sum::<u64>(), 200);
    assert_eq!(n, 0);
    let _ = std::fs::remove_dir_all(dir);
}
