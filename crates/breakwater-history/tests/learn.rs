//! Slow-call thresholds learned from scripted latency on a manual clock.

use std::time::Duration;

use breakwater::history::History;
use breakwater::{CircuitBreaker, Config, LearnedThreshold, ManualClock, Registry};

const T0: u64 = 1_700_000_040_000;

fn learning(max_ms: u64) -> Config {
    Config::builder()
        .slow_call_rate_threshold(90.0)
        .slow_call_duration_threshold(Duration::from_secs(1))
        .learn_slow_call_threshold(LearnedThreshold {
            max_ms,
            ..LearnedThreshold::default()
        })
        .build()
        .unwrap()
}

/// `n` calls of `d` each, timed by the breaker on the manual clock.
fn calls(b: &CircuitBreaker, clock: &ManualClock, n: u32, d: Duration) {
    for _ in 0..n {
        let permit = b.try_acquire().unwrap();
        clock.advance(d);
        permit.success();
    }
}

#[tokio::test]
async fn each_endpoint_learns_three_times_its_own_p99_within_its_bounds() {
    let clock = ManualClock::with_epoch_millis(T0);
    let registry = Registry::builder().clock(clock.clone()).build();
    let fast = registry.breaker_with("fast", learning(60_000));
    let slow = registry.breaker_with("slow", learning(5_000));
    let history = History::builder(&registry).start().unwrap();

    // Under the warm-up (100 calls): nothing learned, the static 1 s applies.
    calls(&fast, &clock, 50, Duration::from_millis(10));
    history.flush().await;
    assert_eq!(fast.learned_slow_call_threshold(), None);

    // An endpoint at 20 ms p99, another at 2 s.
    calls(&fast, &clock, 930, Duration::from_millis(10));
    calls(&fast, &clock, 20, Duration::from_millis(20));
    calls(&slow, &clock, 980, Duration::from_millis(500));
    calls(&slow, &clock, 20, Duration::from_secs(2));
    clock.advance(Duration::from_secs(60));
    history.flush().await;

    let f = fast.learned_slow_call_threshold().expect("learned");
    assert_eq!(
        (f.calls, f.quantile, f.factor, f.clamped),
        (1_000, 0.99, 3.0, None)
    );
    assert!((f.quantile_ms - 20.0).abs() <= 20.0 * 0.07, "{f:?}");
    assert!(
        (f.threshold_ms - 60.0).abs() <= 60.0 * 0.07,
        "~60 ms: {f:?}"
    );
    let s = slow.learned_slow_call_threshold().expect("learned");
    assert!((s.quantile_ms - 2_000.0).abs() <= 2_000.0 * 0.07, "{s:?}");
    assert_eq!(
        (s.threshold_ms, s.clamped),
        (5_000.0, Some("max")),
        "6 s clamped: {s:?}"
    );

    // The learned value is the threshold the calls are judged by.
    let before = fast.snapshot().slow_calls;
    calls(&fast, &clock, 1, Duration::from_millis(50));
    assert_eq!(fast.snapshot().slow_calls, before);
    calls(&fast, &clock, 1, Duration::from_millis(70));
    assert_eq!(fast.snapshot().slow_calls, before + 1);
    // And what the snapshot (so the ops API) shows, with its basis.
    let shown = fast.snapshot().learned_slow_call_threshold.unwrap();
    assert_eq!(shown, f);
    let json = serde_json::to_value(fast.snapshot()).unwrap();
    assert_eq!(json["learnedSlowCallThreshold"]["calls"], 1_000);
    assert_eq!(json["config"]["learnedSlowCallThreshold"]["factor"], 3.0);

    // An hour later with faster calls, the old ones have left the horizon.
    clock.advance(Duration::from_secs(3_600));
    calls(&fast, &clock, 200, Duration::from_millis(4));
    history.flush().await;
    let later = fast.learned_slow_call_threshold().unwrap();
    assert_eq!(later.calls, 202, "{later:?}");
    assert!(later.threshold_ms < 20.0, "{later:?}");
}

#[test]
fn invalid_learning_settings_are_refused_naming_the_field() {
    let bad = |l: LearnedThreshold| {
        Config::builder()
            .learn_slow_call_threshold(l)
            .build()
            .unwrap_err()
            .field()
    };
    let d = LearnedThreshold::default();
    assert_eq!(
        bad(LearnedThreshold { quantile: 1.0, ..d }),
        "learned_slow_call_threshold.quantile"
    );
    assert_eq!(
        bad(LearnedThreshold { factor: 0.0, ..d }),
        "learned_slow_call_threshold.factor"
    );
    assert_eq!(
        bad(LearnedThreshold {
            min_ms: 10,
            max_ms: 5,
            ..d
        }),
        "learned_slow_call_threshold.min_ms"
    );
}
