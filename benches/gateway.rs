//! The gateway example's whole stack against a bare proxy of the same shape (the same axum
//! router, handler and hyper client, no layers), both in front of the same simulated upstream,
//! under a load generator in this file (a hyper client per target, its connections kept open,
//! 64 requests in flight, a fixed number of requests per round). On a shared machine the speed
//! drifts by tens of percent within seconds, so the rounds are short and come in pairs, one
//! per target, the pair's order alternating; the ratio gateway ÷ bare is taken per pair, and
//! the medians over the pairs are printed.
//!
//! Run with `cargo bench --bench gateway --features full` (`BREAKWATER_BENCH_ROUNDS` pairs, default 41, of
//! `BREAKWATER_BENCH_REQUESTS` requests per round, default 4,000, change the run's length).

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const IN_FLIGHT: usize = 64;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

/// One round against one target: requests per second and latency quantiles.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IN_FLIGHT)
        .build_http()
}

/// `n` GETs of `path` at `addr`, `IN_FLIGHT` at a time; every answer must be a 200.
async fn load(client: &HttpClient, addr: SocketAddr, path: &str, n: usize) -> Run {
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(IN_FLIGHT);
    for w in 0..IN_FLIGHT {
        let (client, uri) = (client.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n / IN_FLIGHT + 1);
            for _ in (w..n).step_by(IN_FLIGHT) {
                let t = Instant::now();
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let res = client.request(req).await.expect("an answer");
                assert_eq!(res.status(), 200, "{uri}");
                res.into_body().collect().await.expect("a whole body");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        rps: n as f64 / elapsed.as_secs_f64(),
        p50: q(0.50),
        p99: q(0.99),
    }
}

fn median<T: Copy>(mut v: Vec<T>, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> T {
    v.sort_by(cmp);
    v[v.len() / 2]
}

/// `BREAKWATER_BENCH_ONLY=bare|gateway`: only `BREAKWATER_BENCH_REQUESTS` requests to that
/// target (`GET /api/items/5`, or `BREAKWATER_BENCH_PATH`), after a warm-up of as many, on one thread, for counting instructions under
/// callgrind (the difference between two counts with different request numbers, divided by
/// twice the difference of the numbers, is the cost per request).
async fn only(target: &str, path: &str, requests: usize, bare: SocketAddr, gw: SocketAddr) {
    let addr = if target == "bare" { bare } else { gw };
    let c = client();
    load(&c, addr, path, requests).await;
    load(&c, addr, path, requests).await;
}

fn main() {
    let rounds = env_number("BREAKWATER_BENCH_ROUNDS", 41);
    let requests = env_number("BREAKWATER_BENCH_REQUESTS", 4_000);
    // Counting instructions: one thread, so that the count does not depend on how work was
    // spread over the workers.
    let rt = if std::env::var_os("BREAKWATER_BENCH_ONLY").is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .unwrap();
    rt.block_on(async {
        let (upstream, _sim) = gateway::start_simulation().await.unwrap();
        let upstream: http::Uri = format!("http://{upstream}").parse().unwrap();
        let gw = gateway::start(gateway::Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: Some(upstream.clone()),
            ops_token: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let bare = gateway::start_bare(upstream).await.unwrap();
        if let Ok(target) = std::env::var("BREAKWATER_BENCH_ONLY") {
            let path = std::env::var("BREAKWATER_BENCH_PATH");
            let path = path.as_deref().unwrap_or("/api/items/5");
            only(&target, path, requests, bare, gw.addr).await;
            return;
        }
        println!("{rounds} pairs of rounds of {requests} requests, {IN_FLIGHT} in flight");
        let (to_bare, to_gw) = (client(), client());
        for path in ["/api/items/5", "/api/items"] {
            // Warm up both: connections, breakers, the stale cache.
            load(&to_bare, bare, path, requests).await;
            load(&to_gw, gw.addr, path, requests).await;
            let (mut ratio, mut p99_ratio) = (Vec::new(), Vec::new());
            let (mut bare_runs, mut gw_runs) = (Vec::new(), Vec::new());
            for round in 0..rounds {
                let (b, g) = if round % 2 == 0 {
                    let b = load(&to_bare, bare, path, requests).await;
                    (b, load(&to_gw, gw.addr, path, requests).await)
                } else {
                    let g = load(&to_gw, gw.addr, path, requests).await;
                    (load(&to_bare, bare, path, requests).await, g)
                };
                ratio.push(g.rps / b.rps);
                p99_ratio.push(g.p99.as_secs_f64() / b.p99.as_secs_f64());
                bare_runs.push(b);
                gw_runs.push(g);
            }
            let f = |a: &f64, b: &f64| a.total_cmp(b);
            let show = |runs: &[Run]| {
                let rps = median(runs.iter().map(|r| r.rps).collect(), f);
                let p50 = median(runs.iter().map(|r| r.p50).collect(), Ord::cmp);
                let p99 = median(runs.iter().map(|r| r.p99).collect(), Ord::cmp);
                format!("{rps:9.0} req/s, p50 {p50:>9.2?}, p99 {p99:>9.2?}")
            };
            let mut sorted = ratio.clone();
            sorted.sort_by(f);
            // The middle half of the pairs' ratios.
            let (lo, hi) = (sorted[sorted.len() / 4], sorted[sorted.len() * 3 / 4]);
            println!("GET {path}");
            println!("  bare proxy  {}", show(&bare_runs));
            println!("  gateway     {}", show(&gw_runs));
            println!(
                "  throughput ratio gateway / bare: median {:.3} (quartiles {lo:.3}-{hi:.3}); p99 ratio median {:.3}",
                median(ratio.clone(), f),
                median(p99_ratio, f),
            );
        }
    });
}
