//! The tower layer against the bare service, in one run: per-service breaker, keyed breakers
//! with 1, 1,000 and 100,000 live keys, tower-resilience's layer, and HTTP end to end over
//! loopback (hyper client → axum server) with and without the layer on both sides (on the
//! server by `Router::layer`, and in the interleaved rounds also around the router). The bare
//! service, the body-mapping layer, the floor layers (`support/floor.rs`: the least a breaker
//! layer can do), the per-service breaker, the keyed layer on one live key and tower-resilience
//! are also run in alternating rounds, and so are the HTTP rows; their medians are printed
//! (`… interleaved: …`).
//!
//! Run with `cargo bench --bench tower`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use breakwater::{CircuitBreaker, FamilyOptions, Registry};
use breakwater_tower::{CircuitBreakerLayer, GrpcMethod};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[path = "support/mod.rs"]
mod support;

#[path = "support/floor.rs"]
mod floor;

use support::config;
use support::service::inner;

/// [`support::service::drive`] with a request for `uri`.
fn drive<S, B>(svc: &mut S, uri: &Uri) -> bool
where
    S: Service<Request<()>, Response = Response<B>>,
{
    support::service::drive_with(svc, |()| {
        let mut req = Request::new(());
        *req.uri_mut() = uri.clone();
        req
    })
}

/// The path as the key, written (the way a closure gives it); [`GrpcMethod`] gives the same key
/// and compares it in place.
fn path_key(req: &Request<()>, buf: &mut String) {
    buf.push_str(req.uri().path());
}

fn layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer");
    let uri: Uri = "/k0".parse().unwrap();
    let mut bare = inner();
    g.bench_function("bare_service", |b| {
        b.iter(|| black_box(drive(&mut bare, &uri)))
    });

    // For scale: the least a layer that changes the response body type does.
    let mut mapped = tower::util::MapResponseLayer::new(|res: Response<Empty<Bytes>>| {
        res.map(http_body_util::Either::<_, Empty<Bytes>>::Left)
    })
    .layer(inner());
    g.bench_function("map_response_body_only", |b| {
        b.iter(|| black_box(drive(&mut mapped, &uri)))
    });

    // For scale: the least a breaker layer can do (`support/floor.rs`), without and with a
    // reference to shared state owned by each call's future.
    let mut floor = floor::Floor::<_, false>::new(inner());
    g.bench_function("floor", |b| b.iter(|| black_box(drive(&mut floor, &uri))));
    let mut floor_owned = floor::Floor::<_, true>::new(inner());
    g.bench_function("floor_owned", |b| {
        b.iter(|| black_box(drive(&mut floor_owned, &uri)))
    });

    let mut floor_keyed = floor::FloorKeyed::new(inner(), uri.path());
    g.bench_function("floor_keyed", |b| {
        b.iter(|| black_box(drive(&mut floor_keyed, &uri)))
    });

    let mut single =
        CircuitBreakerLayer::new(CircuitBreaker::new("bench", config())).layer(inner());
    g.bench_function("breakwater_single", |b| {
        b.iter(|| black_box(drive(&mut single, &uri)))
    });

    // One live key, kept for the interleaved rounds below.
    let one_key = {
        let registry = Registry::new();
        let family = registry.family("bench-one", FamilyOptions::new(config()));
        family.get(uri.path());
        CircuitBreakerLayer::keyed(family, GrpcMethod).layer(inner())
    };
    let mut one_key = one_key;
    let mut one_key_written = {
        let registry = Registry::new();
        let family = registry.family("bench-written", FamilyOptions::new(config()));
        family.get(uri.path());
        CircuitBreakerLayer::keyed(family, path_key).layer(inner())
    };
    for keys in [1usize, 1_000, 100_000] {
        let registry = Registry::new();
        let family = registry.family("bench", FamilyOptions::new(config()).max_keys(keys + 1));
        let uris: Vec<Uri> = (0..keys)
            .map(|i| format!("/k{i}").parse().unwrap())
            .collect();
        for u in &uris {
            family.get(u.path());
        }
        let mut keyed = CircuitBreakerLayer::keyed(family, GrpcMethod).layer(inner());
        let mut i = 0usize;
        g.bench_function(format!("breakwater_keyed_{keys}_keys"), |b| {
            b.iter(|| {
                i = (i + 7919) % keys;
                black_box(drive(&mut keyed, &uris[i]))
            })
        });
    }

    let tr = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .unwrap();
    let mut tr = tr.layer(inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    g.bench_function("tower_resilience", |b| {
        b.iter(|| black_box(drive(&mut tr, &uri)))
    });
    g.finish();

    support::interleaved(
        "layer",
        20_000,
        &mut [
            ("bare_service", &mut row(&mut bare, &uri)),
            ("map_response_body_only", &mut row(&mut mapped, &uri)),
            ("floor", &mut row(&mut floor, &uri)),
            ("floor_owned", &mut row(&mut floor_owned, &uri)),
            ("floor_keyed", &mut row(&mut floor_keyed, &uri)),
            ("breakwater_single", &mut row(&mut single, &uri)),
            ("breakwater_keyed_1_key", &mut row(&mut one_key, &uri)),
            (
                "breakwater_keyed_1_key_written",
                &mut row(&mut one_key_written, &uri),
            ),
            ("tower_resilience", &mut row(&mut tr, &uri)),
        ],
    );
}

/// An interleaved row: `n` calls through `svc`.
fn row<'a, S, B>(svc: &'a mut S, uri: &'a Uri) -> impl FnMut(u32) + 'a
where
    S: Service<Request<()>, Response = Response<B>>,
{
    support::times(move || {
        black_box(drive(svc, uri));
    })
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// `n` GET requests through `svc`, 16 in flight at a time, each reading its whole body.
async fn load<S, B>(n: u64, addr: SocketAddr, svc: S) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: http_body::Body + Send,
    B::Error: std::fmt::Debug,
    B::Data: Send,
{
    const IN_FLIGHT: u64 = 16;
    let start = Instant::now();
    let uri: Uri = format!("http://{addr}/items").parse().unwrap();
    let mut tasks = Vec::new();
    for w in 0..IN_FLIGHT {
        let svc = svc.clone();
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (w..n).step_by(IN_FLIGHT as usize) {
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let res = svc.clone().oneshot(req).await.unwrap();
                black_box(res.into_body().collect().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn end_to_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("http_end_to_end");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(8));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (plain, guarded, around, noop) = rt.block_on(async {
        let app = || Router::new().route("/items", get(|| async { "[]" }));
        let plain = serve(app()).await;
        // The layer as a route layer would be (`Router::layer`)...
        let server_breaker = CircuitBreaker::new("server", config());
        let guarded = serve(app().layer(CircuitBreakerLayer::new(server_breaker).for_axum())).await;
        // ...and around the whole router, served as it is.
        let around_breaker = CircuitBreaker::new("around", config());
        let wrapped = CircuitBreakerLayer::new(around_breaker)
            .for_axum()
            .layer(app());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let around = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let wrapped = axum::ServiceExt::<axum::extract::Request>::into_make_service(wrapped);
            axum::serve(listener, wrapped).await.unwrap()
        });
        // For scale: axum's own cost of `Router::layer`, with a layer that does nothing but hold
        // something, as a breaker layer holds its breaker (axum clones and applies a handler's
        // layers on every request; a layer that holds nothing clones for free).
        let held = std::sync::Arc::new(());
        let noop = serve(app().layer(tower::util::MapResponseLayer::new(
            move |res: Response<axum::body::Body>| {
                let _ = &held;
                res
            },
        )))
        .await;
        (plain, guarded, around, noop)
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let client_breaker = CircuitBreaker::new("client", config());
    let layered = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(client_breaker))
        .service(client.clone());

    g.bench_function("without_layers", |b| {
        b.iter_custom(|n| rt.block_on(load(n, plain, client.clone())))
    });
    g.bench_function("with_layers_both_sides", |b| {
        b.iter_custom(|n| rt.block_on(load(n, guarded, layered.clone())))
    });
    // The two sequential benches above drift with the machine; alternate short rounds of each
    // (each round in a different order) and compare medians to get the ratios.
    const ROUNDS: usize = 31;
    const REQUESTS: u64 = 2_000;
    let mut times = [const { Vec::new() }; 4];
    for round in 0..ROUNDS {
        for k in 0..4 {
            let row = (round + k) % 4;
            let took = match row {
                0 => rt.block_on(load(REQUESTS, plain, client.clone())),
                1 => rt.block_on(load(REQUESTS, guarded, layered.clone())),
                2 => rt.block_on(load(REQUESTS, around, layered.clone())),
                _ => rt.block_on(load(REQUESTS, noop, client.clone())),
            };
            times[row].push(took.as_secs_f64() * 1e6 / REQUESTS as f64);
        }
    }
    let [without, with_route_layer, with_around, noop] = times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[ROUNDS / 2]
    });
    println!(
        "http_end_to_end interleaved: median {without:.2} µs/request without layers; with a client \
         layer and the server's layer by Router::layer {with_route_layer:.2} (ratio {:.3}), \
         around the router {with_around:.2} (ratio {:.3}); no breaker, a Router::layer that does \
         nothing {noop:.2} (ratio {:.3})",
        with_route_layer / without,
        with_around / without,
        noop / without,
    );
    g.finish();
}

criterion_group!(benches, layer, end_to_end);
criterion_main!(benches);
