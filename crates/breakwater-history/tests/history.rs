//! Per-minute history on a manual clock: counts, time in each state, latency percentiles,
//! minutes filled across flushes, the hours asked for, probes.

use std::time::Duration;

use breakwater::history::History;
use breakwater::tower::health::{HealthRegistry, Probe};
use breakwater::{Config, ManualClock, Outcome, Registry, State};

/// A minute's start.
const T0: u64 = 1_700_000_040_000;

fn setup() -> (Registry, ManualClock) {
    let clock = ManualClock::with_epoch_millis(T0);
    let registry = Registry::builder().clock(clock.clone()).build();
    let config = Config::builder()
        .consecutive_failures(3)
        .wait_in_open(Duration::from_secs(600))
        .record_call_durations(true)
        .build()
        .unwrap();
    registry.breaker_with("db", config);
    (registry, clock)
}

#[tokio::test]
async fn a_minute_counts_calls_time_in_each_state_and_latency() {
    let (registry, clock) = setup();
    let db = registry.get("db").unwrap();
    let history = History::builder(&registry).start().unwrap();

    for _ in 0..10 {
        db.try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Success, Duration::from_millis(20));
    }
    clock.advance(Duration::from_secs(30));
    for _ in 0..3 {
        db.try_acquire()
            .unwrap()
            .record_with_duration(Outcome::Failure, Duration::from_millis(20));
    }
    assert_eq!(db.state(), State::Open);
    // The minute's end (the task reads the counters then, within its one-second tick).
    clock.advance(Duration::from_secs(30));
    history.flush().await;
    // Half of the next minute, with refusals; flushed, then the rest of it.
    clock.advance(Duration::from_secs(30));
    for _ in 0..4 {
        assert!(db.try_acquire().is_err());
    }
    history.flush().await;
    let half = history.breaker("db", 1).unwrap().minutes;
    assert_eq!(half.len(), 2, "{half:?}");
    assert_eq!(half[1].refused, 4);
    assert_eq!(half[1].time_in_state.open, 30_000);
    clock.advance(Duration::from_secs(30));
    assert!(db.try_acquire().is_err());
    history.flush().await;

    let h = history.breaker("db", 1).unwrap();
    let [first, second] = &h.minutes[..] else {
        panic!("{:?}", h.minutes)
    };
    assert_eq!((first.minute, second.minute), (T0, T0 + 60_000));
    assert_eq!((first.successes, first.failures, first.refused), (10, 3, 0));
    assert_eq!(
        (first.time_in_state.closed, first.time_in_state.open),
        (30_000, 30_000)
    );
    // 13 calls of 20 ms, all in the (10, 25] ms bucket.
    assert_eq!(first.p50_ms, Some(17.5));
    assert!((first.p99_ms.unwrap() - 24.85).abs() < 1e-9);
    assert_eq!((second.refused, second.time_in_state.open), (5, 60_000));
    assert_eq!(second.p50_ms, None);
    assert_eq!(h.transitions.len(), 1);
    assert_eq!(
        (h.transitions[0].to.as_str(), h.transitions[0].at),
        ("OPEN", T0 + 30_000)
    );

    // Two hours later: the last hour holds only minutes after it began, the day all of them.
    clock.advance(Duration::from_secs(7_200));
    history.flush().await;
    let last_hour = history.breaker("db", 1).unwrap();
    let hour_ago = T0 + 120_000 + 7_200_000 - 3_600_000;
    assert!(
        last_hour
            .minutes
            .iter()
            .all(|m| m.minute >= hour_ago - 60_000)
    );
    assert!(
        last_hour
            .minutes
            .iter()
            .all(|m| m.time_in_state.open == 60_000)
    );
    assert!(last_hour.transitions.is_empty());
    let day = history.breaker("db", 24).unwrap();
    assert!(day.minutes.len() > 100, "{}", day.minutes.len());
    assert!(history.breaker("nope", 1).is_none());
}

#[tokio::test]
async fn a_quiet_closed_breaker_keeps_no_minutes_and_probes_have_theirs() {
    let (registry, clock) = setup();
    let health = HealthRegistry::new(&registry);
    let probe = Probe::builder("upstream", || async { Ok::<(), String>(()) })
        .interval(Duration::from_secs(3_600))
        .clock(clock.clone())
        .build()
        .unwrap();
    health.add_probe(probe.clone());
    let history = History::builder(&registry).probes(&health).start().unwrap();
    clock.advance(Duration::from_secs(1));
    probe.run_once().await;
    probe.run_once().await;
    clock.advance(Duration::from_secs(300));
    history.flush().await;
    assert!(history.breaker("db", 1).unwrap().minutes.is_empty());
    let p = history.probe("upstream", 1).unwrap();
    let ok: u64 = p.minutes.iter().map(|m| m.ok).sum();
    assert!(ok >= 2, "{p:?}");
    assert!(p.minutes.iter().any(|m| m.p50_ms.is_some()));
    assert!(history.probe("nope", 1).is_none());
}

#[tokio::test]
async fn a_retention_under_an_hour_is_refused_naming_it() {
    let (registry, _) = setup();
    let e = History::builder(&registry)
        .retention(Duration::from_secs(60))
        .start()
        .unwrap_err();
    assert_eq!(e.field(), "retention");
}

fn temp_dir(what: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("breakwater-{what}-{}-{nanos}", std::process::id()))
}

#[tokio::test]
async fn the_state_dir_forgets_what_is_older_than_the_retention() {
    let (registry, clock) = setup();
    let dir = temp_dir("retention");
    let db = registry.get("db").unwrap();
    let hour = Duration::from_secs(3_600);
    let history = History::builder(&registry)
        .state_dir(&dir)
        .retention(hour)
        .start()
        .unwrap();
    db.try_acquire().unwrap().success();
    clock.advance(Duration::from_secs(60));
    history.close().await;
    // Read back within the retention.
    let again = History::builder(&registry)
        .state_dir(&dir)
        .retention(hour)
        .start()
        .unwrap();
    assert_eq!(again.breaker("db", 24).unwrap().minutes.len(), 1);
    // Two hours on: the hourly clean-up (made with a flush too) deletes it.
    clock.advance(Duration::from_secs(7_200));
    again.close().await;
    let later = History::builder(&registry).state_dir(&dir).start().unwrap();
    assert!(later.breaker("db", 24).unwrap().minutes.is_empty());
    later.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_file_of_a_newer_schema_is_left_alone_and_said_why() {
    let (registry, _) = setup();
    let dir = temp_dir("schema");
    std::fs::create_dir_all(&dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join(breakwater::history::FILE_NAME)).unwrap();
    conn.pragma_update(
        None,
        "user_version",
        breakwater::history::SCHEMA_VERSION + 1,
    )
    .unwrap();
    drop(conn);
    let history = History::builder(&registry).state_dir(&dir).start().unwrap();
    let status = history.status();
    assert!(!status.persistent);
    assert!(status.problem.unwrap().contains("newer"), "why");
    let _ = std::fs::remove_dir_all(dir);
}
