//! Error-budget burn-rate alerts from a breaker's history, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use breakwater::history::History;
use breakwater::ops::{AlertBook, AlertFilter, AlertStatus, ErrorBudget, Rule, Severity};
use breakwater::tower::health::HealthRegistry;
use breakwater::{CircuitBreaker, Config, ManualClock, Registry};

const T0: u64 = 1_700_000_040_000;

struct FromHistory(History);

impl ErrorBudget for FromHistory {
    fn totals(&self, circuit: &str, minutes: u32) -> (u64, u64) {
        self.0.totals(circuit, minutes)
    }
}

/// One minute of calls on each breaker (`calls`, `failed` of them failing; a refused call
/// is refused), then the minute closed.
async fn minute(clock: &ManualClock, history: &History, traffic: &[(&CircuitBreaker, u32, u32)]) {
    for (b, calls, failed) in traffic {
        for i in 0..*calls {
            if let Ok(p) = b.try_acquire() {
                if i < *failed {
                    p.failure()
                } else {
                    p.success()
                }
            }
        }
    }
    clock.advance(Duration::from_secs(60));
    history.flush().await;
}

fn slo_alerts(book: &AlertBook) -> Vec<breakwater::ops::Alert> {
    book.list(&AlertFilter::default())
        .into_iter()
        .filter(|a| a.rule == Rule::SloBurnRate)
        .collect()
}

#[tokio::test]
async fn a_fast_burn_pages_a_slow_one_warns_and_both_resolve_when_the_errors_stop() {
    let clock = ManualClock::with_epoch_millis(T0);
    let registry = Registry::builder().clock(clock.clone()).build();
    // 99.9 %: a budget of 1 call in 1,000. The breaker itself trips at 50 %.
    let checkout = registry.breaker_with(
        "checkout",
        Config::builder().slo_objective(0.999).build().unwrap(),
    );
    let plain = registry.breaker("plain");
    let health = HealthRegistry::new(&registry);
    let history = History::builder(&registry).start().unwrap();
    let book = AlertBook::new(&health);
    book.error_budget(Arc::new(FromHistory(history.clone())));

    // A quiet hour at 0.05 % errors: half the budget, no alert.
    for _ in 0..60 {
        minute(&clock, &history, &[(&checkout, 2_000, 1)]).await;
    }
    book.evaluate();
    assert!(slo_alerts(&book).is_empty());

    // 2 % errors (20x the budget): the slow burn (6x over 6 h and 30 min) warns first, then
    // the fast one (14.4x over 1 h and 5 min) holds too and the alert pages.
    let mut seen = Vec::new();
    for _ in 0..60 {
        // `plain` has no objective: never an SLO alert, however it fails.
        minute(
            &clock,
            &history,
            &[(&checkout, 1_000, 20), (&plain, 1_000, 900)],
        )
        .await;
        book.evaluate();
        if let Some(a) = slo_alerts(&book).pop() {
            if seen.last() != Some(&a.severity) {
                seen.push(a.severity);
            }
            if a.severity == Severity::Critical {
                break;
            }
        }
    }
    assert_eq!(seen, [Severity::High, Severity::Critical]);
    let alert = slo_alerts(&book).pop().unwrap();
    assert_eq!(alert.circuit, "checkout");
    assert!(
        alert.message.contains("alert at 14.4x"),
        "{}",
        alert.message
    );
    assert_eq!(slo_alerts(&book).len(), 1, "one alert per breaker");

    // The errors stop: once both short windows are clean (30 min), the alert resolves.
    for _ in 0..30 {
        minute(&clock, &history, &[(&checkout, 1_000, 0)]).await;
    }
    book.evaluate();
    let after = book.list(&AlertFilter::default());
    let page = after.iter().find(|a| a.id == alert.id).unwrap();
    assert_eq!(page.status, AlertStatus::Resolved, "{after:?}");
    assert!(slo_alerts(&book).iter().all(|a| a.circuit == "checkout"));
}

#[test]
fn the_objective_and_the_learned_threshold_are_changed_through_the_ops_api_patch() {
    use breakwater::ops::config_patch::apply;
    let current = Config::default();
    let patch =
        serde_json::json!({"sloObjective": 0.99, "learnedSlowCallThreshold": {"factor": 4.0}});
    let changed = apply(&current, patch.as_object().unwrap()).unwrap();
    assert_eq!(changed.slo_objective(), Some(0.99));
    let learned = changed.learned_slow_call_threshold().unwrap();
    assert_eq!((learned.factor, learned.quantile), (4.0, 0.99));
    for (bad, field) in [
        (serde_json::json!({"sloObjective": 1.5}), "sloObjective"),
        (
            serde_json::json!({"learnedSlowCallThreshold": {"quantile": 1.0}}),
            "quantile",
        ),
        (
            serde_json::json!({"learnedSlowCallThreshold": {"bogus": 1}}),
            "bogus",
        ),
    ] {
        let e = apply(&current, bad.as_object().unwrap()).unwrap_err();
        assert_eq!(e.code(), "INVALID_CONFIG");
        assert!(e.message().contains(field), "{}", e.message());
    }
}
