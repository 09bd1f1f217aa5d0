//! Breakers shared through Redis, in one run against a `redis-server` of the bench's own: the
//! layer's call with the fleet attached (the shared window flushing meanwhile) against the
//! same layer on a local-only registry, in interleaved rounds; the time from one replica's
//! trip to the other's refusal over 1,000 trips; and the Redis commands per trip and per
//! second of traffic in shared-window mode (from `INFO commandstats`).
//!
//! Run with `cargo bench --bench fleet --features full` (needs `redis-server` on the PATH).

use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater::fleet::{Fleet, FleetBuilder};
use breakwater::redis::RedisStore;
use breakwater::{Config, EventKind, Registry, State};
use breakwater_tower::CircuitBreakerLayer;
use tower::Layer;

#[path = "../crates/breakwater-redis/tests/support/server.rs"]
mod redis_server;
#[path = "support/mod.rs"]
mod support;

use support::service::{inner, row};

fn trip_config() -> Config {
    Config::builder()
        .consecutive_failures(1)
        .wait_in_open(Duration::from_secs(60))
        .build()
        .unwrap()
}

struct Server {
    runtime: tokio::runtime::Runtime,
    url: String,
    raw: redis::Client,
}

impl Server {
    fn fleet(
        &self,
        registry: &Registry,
        id: &str,
        tune: fn(FleetBuilder) -> FleetBuilder,
    ) -> Fleet {
        let store = RedisStore::builder(self.url.clone())
            .namespace("bench")
            .build()
            .unwrap();
        let builder = tune(Fleet::builder(registry, Arc::new(store)).replica_id(id));
        let fleet = self.runtime.block_on(builder.start()).unwrap();
        assert!(fleet.stats().is_healthy(), "Redis answers");
        fleet
    }

    /// Commands Redis executed since the last call (all kinds, scripts' own included), and
    /// of those the `EVALSHA`/`EVAL` round trips.
    fn commands(&self) -> (u64, u64) {
        self.runtime.block_on(async {
            let mut c = self.raw.get_multiplexed_async_connection().await.unwrap();
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut c)
                .await
                .unwrap();
            let _: () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut c)
                .await
                .unwrap();
            let (mut all, mut scripts) = (0, 0);
            for line in info.lines().filter(|l| l.starts_with("cmdstat_")) {
                let name = &line["cmdstat_".len()..line.find(':').unwrap()];
                let calls: u64 = line
                    .split(&[':', ','][..])
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                // The statistics' own commands are not the fleet's.
                if matches!(name, "info" | "config|resetstat") {
                    continue;
                }
                all += calls;
                if name.starts_with("eval") {
                    scripts += calls;
                }
            }
            (all, scripts)
        })
    }
}

fn main() {
    let Some(redis) = redis_server::RedisServer::start() else {
        return;
    };
    let server = Server {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
        url: redis.url(),
        raw: redis::Client::open(redis.url()).unwrap(),
    };

    // The call path, local-only and shared (the window flushed every 100 ms meanwhile).
    let local = Registry::new();
    let shared = Registry::new();
    let _fleet = server.fleet(&shared, "hot", |b| {
        b.shared_window(Duration::from_secs(10))
            .flush_interval(Duration::from_millis(100))
    });
    let mut bare = inner();
    let mut layer =
        CircuitBreakerLayer::new(local.breaker_with("a", support::config())).layer(inner());
    let mut layer_shared =
        CircuitBreakerLayer::new(shared.breaker_with("a", support::config())).layer(inner());
    support::interleaved(
        "fleet",
        20_000,
        &mut [
            ("bare_service", &mut row(&mut bare)),
            ("layer_local", &mut row(&mut layer)),
            ("layer_shared_redis", &mut row(&mut layer_shared)),
        ],
    );

    // From A's trip to B's refusal, 1,000 times (B's reset in between, waited for on A).
    let (a, b) = (Registry::new(), Registry::new());
    let (ab, bb) = (
        a.breaker_with("db", trip_config()),
        b.breaker_with("db", trip_config()),
    );
    let _fa = server.fleet(&a, "a", |b| b);
    let _fb = server.fleet(&b, "b", |b| b);
    let (a_events, b_events) = (a.subscribe_transitions(16), b.subscribe_transitions(16));
    let wait = |events: &breakwater::Subscription, to: State| loop {
        let e = events.recv_blocking().unwrap();
        if matches!(e.kind, EventKind::StateTransition { to: t, .. } if t == to) {
            return;
        }
    };
    server.commands();
    let trips = 1_000;
    let mut took = Vec::with_capacity(trips);
    for _ in 0..trips {
        let start = Instant::now();
        ab.try_acquire().unwrap().failure();
        wait(&b_events, State::Open);
        took.push(start.elapsed());
        assert!(bb.try_acquire().is_err());
        wait(&a_events, State::Open);
        bb.reset();
        wait(&a_events, State::Closed);
        wait(&b_events, State::Closed);
    }
    let (commands, scripts) = server.commands();
    took.sort();
    let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
    println!(
        "fleet propagation: A's trip to B's refusal over {trips} trips: p50 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        took[took.len() - 1]
    );
    // Each round is two published transitions (A's trip, B's reset).
    let published = 2 * trips as u64;
    println!(
        "fleet commands: per published transition {:.2} script calls, {:.2} commands in Redis",
        scripts as f64 / published as f64,
        commands as f64 / published as f64
    );

    // Shared-window mode: two replicas with traffic on 20 breakers, flushing every second.
    let (c, d) = (Registry::new(), Registry::new());
    let breakers: Vec<_> = (0..20)
        .flat_map(|i| {
            [
                c.breaker_with(&format!("w{i}"), support::config()),
                d.breaker_with(&format!("w{i}"), support::config()),
            ]
        })
        .collect();
    let window = |b: FleetBuilder| b.shared_window(Duration::from_secs(10));
    let _fc = server.fleet(&c, "c", window);
    let _fd = server.fleet(&d, "d", window);
    server.commands();
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_secs(5) && calls < 500_000_000 {
        for b in &breakers {
            b.try_acquire().unwrap().success();
        }
        calls += breakers.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let (commands, scripts) = server.commands();
    println!(
        "fleet shared window: 2 replicas x 20 breakers, {:.0} calls/s: {:.2} script calls/s, {:.1} commands/s in Redis",
        calls as f64 / secs,
        scripts as f64 / secs,
        commands as f64 / secs
    );
}
