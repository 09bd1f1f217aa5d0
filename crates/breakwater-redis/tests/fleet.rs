//! Replicas sharing breakers through a real `redis-server` started by each test.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater::fleet::Fleet;
use breakwater::redis::RedisStore;
use breakwater::{
    Config, Event, EventKind, FamilyOptions, Registry, SlidingWindow, State, Subscription, Trigger,
};
use support::server::RedisServer;

const WAIT: Duration = Duration::from_secs(10);

fn trip_config() -> Config {
    Config::builder()
        .consecutive_failures(3)
        .wait_in_open(Duration::from_secs(60))
        .build()
        .unwrap()
}

struct Replica {
    registry: Registry,
    fleet: Fleet,
    events: Subscription,
}

/// A replica on the Redis at `url`, its keys under `ns`: one namespace per test, so that a
/// test's replicas never hear another's (a killed server's port can be taken by another test's
/// server before it comes back).
async fn replica(
    url: &str,
    ns: &str,
    id: &str,
    tune: impl FnOnce(breakwater::fleet::FleetBuilder) -> breakwater::fleet::FleetBuilder,
) -> Replica {
    let registry = Registry::new();
    for name in ["db", "cache", "marker"] {
        registry.breaker_with(name, trip_config());
    }
    registry.family("api", FamilyOptions::new(trip_config()));
    let events = registry.subscribe();
    let store = RedisStore::builder(url).namespace(ns).build().unwrap();
    let fleet = tune(Fleet::builder(&registry, Arc::new(store)).replica_id(id))
        .start()
        .await
        .unwrap();
    Replica {
        registry,
        fleet,
        events,
    }
}

impl Replica {
    fn trip(&self, name: &str) {
        let breaker = self.registry.get(name).unwrap();
        for _ in 0..3 {
            breaker.try_acquire().unwrap().failure();
        }
        assert_eq!(breaker.state(), State::Open);
    }

    fn state(&self, name: &str) -> State {
        self.registry.get(name).unwrap().state()
    }

    /// Waits for `name` to enter `to` through the fleet; the time it took.
    async fn adopted(&self, name: &str, to: State) -> Duration {
        let started = Instant::now();
        self.wait(|e| {
            &*e.circuit == name
                && matches!(e.kind, EventKind::StateTransition { to: t, trigger: Trigger::Fleet, .. } if t == to)
        })
        .await;
        started.elapsed()
    }

    async fn wait(&self, mut pred: impl FnMut(&Event) -> bool) {
        tokio::time::timeout(WAIT, async {
            loop {
                let e = self.events.recv().await.expect("events");
                if pred(&e) {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            let states: Vec<_> = ["db", "cache", "marker"]
                .iter()
                .map(|n| {
                    let b = self.registry.get(n).unwrap();
                    (*n, b.state(), b.fleet_epoch())
                })
                .collect();
            panic!(
                "the event within the wait; states {states:?}, store {:?}",
                self.fleet.stats().view()
            )
        });
    }

    async fn healthy(&self, healthy: bool) {
        let mut changes = self.fleet.stats().health_changes();
        tokio::time::timeout(WAIT, changes.wait_for(|h| *h == healthy))
            .await
            .expect("health within the wait")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_a_reset_and_a_forced_state_reach_the_other_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = replica(
        &redis.url(),
        "a_trip_a_reset_and_a_forced_state_reach_",
        "a",
        |b| b,
    )
    .await;
    let b = replica(
        &redis.url(),
        "a_trip_a_reset_and_a_forced_state_reach_",
        "b",
        |b| b,
    )
    .await;
    assert!(a.fleet.stats().is_healthy() && b.fleet.stats().is_healthy());

    // A trips: B refuses, without any call of its own failing.
    a.trip("db");
    let took = b.adopted("db", State::Open).await;
    eprintln!("A's trip reached B in {took:?}");
    let refused = b.registry.get("db").unwrap().try_acquire().unwrap_err();
    assert_eq!(refused.state(), State::Open);
    assert!(refused.retry_after().unwrap() > Duration::from_secs(50));
    assert_eq!(b.registry.get("db").unwrap().snapshot().failures, 0);

    // A reset on B closes A.
    b.registry.get("db").unwrap().reset();
    a.adopted("db", State::Closed).await;
    assert!(a.registry.get("db").unwrap().try_acquire().is_ok());

    // A forced open on A holds on B.
    a.registry.get("db").unwrap().force_open();
    b.adopted("db", State::ForcedOpen).await;
    assert_eq!(
        b.registry
            .get("db")
            .unwrap()
            .try_acquire()
            .unwrap_err()
            .state(),
        State::ForcedOpen
    );

    // A late message (an older epoch) changes nothing; a newer one behind it shows it was read.
    let epoch = b.registry.get("db").unwrap().fleet_epoch();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let stale = format!("{}|CLOSED|0|z|db", epoch - 1);
    let newer = format!("{}|FORCED_OPEN|0|z|marker", epoch + 1_000_000_000);
    for message in [stale, newer] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("a_trip_a_reset_and_a_forced_state_reach_:events")
            .arg(message)
            .query_async(&mut raw)
            .await
            .unwrap();
    }
    b.adopted("marker", State::ForcedOpen).await;
    assert_eq!(b.state("db"), State::ForcedOpen);
    assert!(b.fleet.stats().view().stale >= 1);
    assert_eq!(a.fleet.stats().view().errors, 0);
    assert!(a.fleet.stats().view().published >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_knows_the_fleets_outage_before_it_serves() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = replica(
        &redis.url(),
        "a_new_replica_knows_the_fleets_outage_be",
        "a",
        |b| b,
    )
    .await;
    a.trip("db");
    let member = a
        .registry
        .family("api", FamilyOptions::new(trip_config()))
        .get("GET /items");
    for _ in 0..3 {
        member.try_acquire().unwrap().failure();
    }
    // Both published: A's own messages come back to it.
    a.wait(|e| {
        &*e.circuit == "api:GET /items"
            && matches!(
                e.kind,
                EventKind::StateTransition {
                    to: State::Open,
                    ..
                }
            )
    })
    .await;
    let marker = a.registry.get("marker").unwrap();
    marker.force_open();
    let deadline = Instant::now() + WAIT;
    while marker.fleet_epoch() == 0 {
        assert!(Instant::now() < deadline, "A's own message never came back");
        tokio::task::yield_now().await;
    }

    let c = replica(
        &redis.url(),
        "a_new_replica_knows_the_fleets_outage_be",
        "c",
        |b| b,
    )
    .await;
    // As soon as `start` returns: the named breaker and the family's key.
    assert_eq!(c.state("db"), State::Open);
    let family = c.registry.family("api", FamilyOptions::new(trip_config()));
    assert_eq!(
        family.get_existing("GET /items").unwrap().state(),
        State::Open
    );
    assert_eq!(c.state("cache"), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_replicas_go_on_alone_and_converge_when_it_returns() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let a = replica(&url, "with_redis_killed_replicas_go_on_alone_a", "a", |b| {
        b.flush_interval(Duration::from_millis(50))
    })
    .await;
    let b = replica(&url, "with_redis_killed_replicas_go_on_alone_a", "b", |b| {
        b.flush_interval(Duration::from_millis(50))
    })
    .await;
    let port = redis.kill();
    a.healthy(false).await;
    b.healthy(false).await;

    // Each keeps serving and breaking on its own; no call waits on Redis.
    let started = Instant::now();
    for _ in 0..1_000 {
        b.registry
            .get("db")
            .unwrap()
            .try_acquire()
            .unwrap()
            .success();
    }
    eprintln!("1,000 calls on B with Redis down: {:?}", started.elapsed());
    a.trip("db");
    b.trip("cache");
    assert_eq!(b.state("db"), State::Closed);
    assert_eq!(a.state("cache"), State::Closed);
    let down = a.fleet.stats().view();
    assert!(
        !down.healthy && !down.connected && down.errors > 0,
        "{down:?}"
    );
    assert!(down.last_error.is_some());

    // Back on the same port (empty): they reconnect, publish what happened meanwhile, converge.
    let _redis = RedisServer::start_on(port).unwrap();
    b.adopted("db", State::Open).await;
    a.adopted("cache", State::Open).await;
    a.healthy(true).await;
    b.healthy(true).await;
    assert!(a.fleet.stats().view().reconnects >= 1);
    // Epochs grew past the lost server's: a new move still wins.
    let db = a.registry.get("db").unwrap();
    let before = (db.state(), db.fleet_epoch(), a.fleet.stats().view());
    db.reset();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            let e = b.events.recv().await.expect("events");
            if &*e.circuit == "db"
                && matches!(
                    e.kind,
                    EventKind::StateTransition {
                        to: State::Closed,
                        trigger: Trigger::Fleet,
                        ..
                    }
                )
            {
                return;
            }
        }
    })
    .await;
    if closed.is_err() {
        panic!(
            "B never closed; A before its reset {before:?}; A now {:?} epoch {} {:?}",
            db.state(),
            db.fleet_epoch(),
            a.fleet.stats().view()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_window_trips_on_the_fleets_rate_where_each_local_one_would_not() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let config = Config::builder()
        .failure_rate_threshold(50.0)
        .sliding_window(SlidingWindow::Count(100))
        .minimum_number_of_calls(20)
        .wait_in_open(Duration::from_secs(60))
        .build()
        .unwrap();
    let tune = |b: breakwater::fleet::FleetBuilder| {
        b.shared_window(Duration::from_secs(30))
            .flush_interval(Duration::from_millis(50))
    };
    let a = replica(
        &redis.url(),
        "the_shared_window_trips_on_the_fleets_ra",
        "a",
        tune,
    )
    .await;
    let b = replica(
        &redis.url(),
        "the_shared_window_trips_on_the_fleets_ra",
        "b",
        tune,
    )
    .await;
    for r in [&a, &b] {
        let breaker = r.registry.breaker_with("orders", config.clone());
        // Half the fleet's calls each, 6 of 10 failed: under each one's minimum of 20 calls.
        for i in 0..10 {
            let permit = breaker.try_acquire().unwrap();
            if i < 6 {
                permit.failure()
            } else {
                permit.success()
            }
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.snapshot().failure_rate, None);
    }
    for r in [&a, &b] {
        r.wait(|e| {
            &*e.circuit == "orders"
                && matches!(
                    e.kind,
                    EventKind::StateTransition {
                        to: State::Open,
                        ..
                    }
                )
        })
        .await;
    }
    let triggers: Vec<Trigger> = [&a, &b]
        .iter()
        .flat_map(|r| r.registry.get("orders").unwrap().transition_counts())
        .map(|t| t.trigger)
        .collect();
    assert!(triggers.contains(&Trigger::FailureRatio), "{triggers:?}");
    assert!(a.fleet.stats().view().window_flushes >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_quorum_one_replica_tripping_alone_does_not_open_the_others() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let quorum = |b: breakwater::fleet::FleetBuilder| b.quorum(2);
    let a = replica(
        &redis.url(),
        "with_a_quorum_one_replica_tripping_alone",
        "a",
        quorum,
    )
    .await;
    let b = replica(
        &redis.url(),
        "with_a_quorum_one_replica_tripping_alone",
        "b",
        quorum,
    )
    .await;
    let c = replica(
        &redis.url(),
        "with_a_quorum_one_replica_tripping_alone",
        "c",
        quorum,
    )
    .await;

    a.trip("db");
    // A's writer is sequential: once its next publish (an operator's, never voted on)
    // reached C, its vote was counted.
    a.registry.get("marker").unwrap().force_open();
    c.adopted("marker", State::ForcedOpen).await;
    assert_eq!(c.state("db"), State::Closed);
    assert_eq!(b.state("db"), State::Closed);

    // A second replica trips on its own: the quorum opens the fleet.
    b.trip("db");
    c.adopted("db", State::Open).await;
    assert_eq!(a.state("db"), State::Open);
}

#[tokio::test]
async fn invalid_fleet_settings_are_refused_naming_the_field() {
    let registry = Registry::new();
    let store = || Arc::new(RedisStore::builder("redis://127.0.0.1:1/").build().unwrap());
    let e = Fleet::builder(&registry, store())
        .quorum(0)
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.field(), "quorum");
    let e = Fleet::builder(&registry, store())
        .replica_id(" ")
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.field(), "replica_id");
    let e = Fleet::builder(&registry, store())
        .shared_window(Duration::from_millis(10))
        .start()
        .await
        .unwrap_err();
    assert_eq!(e.field(), "shared_window");
}
