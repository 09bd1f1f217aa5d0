//! The engine's `tracing` events: every transition (warn for OPEN and FORCED_OPEN, info for the
//! others) with the window's numbers, refusals at debug, nothing for successful calls.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breakwater::{CircuitBreaker, Config, ManualClock, SlidingWindow, State};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Captured>>>);

impl<S: Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields: fields.0,
        });
    }
}

impl Collect {
    fn take(&self) -> Vec<Captured> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn breaker(clock: &ManualClock) -> CircuitBreaker {
    let config = Config::builder()
        .sliding_window(SlidingWindow::Count(4))
        .minimum_number_of_calls(4)
        .failure_rate_threshold(50.0)
        .no_consecutive_failures()
        .permitted_calls_in_half_open(2)
        .wait_in_open(Duration::from_secs(1))
        .build()
        .unwrap();
    CircuitBreaker::with_clock("payments", config, clock.clone())
}

#[test]
fn transitions_and_refusals_are_events_on_target_breakwater() {
    let events = Collect::default();
    let subscriber =
        tracing_subscriber::registry().with(events.clone().with_filter(LevelFilter::TRACE));
    tracing::subscriber::with_default(subscriber, || {
        let clock = ManualClock::new();
        let b = breaker(&clock);
        // Successes are not events.
        for _ in 0..2 {
            b.try_acquire().unwrap().success();
        }
        assert!(events.take().is_empty(), "no event per successful call");

        // CLOSED -> OPEN: warn, with the numbers of the window that tripped it.
        for _ in 0..2 {
            b.try_acquire().unwrap().failure();
        }
        assert_eq!(b.state(), State::Open);
        let got = events.take();
        assert_eq!(got.len(), 1, "{got:?}");
        let e = &got[0];
        assert_eq!((e.level, e.target.as_str()), (Level::WARN, "breakwater"));
        let f = &e.fields;
        assert_eq!(f["circuit_breaker.name"], "payments");
        assert_eq!(f["from_state"], "CLOSED");
        assert_eq!(f["to_state"], "OPEN");
        assert_eq!(f["trigger"], "failure_ratio");
        assert_eq!(f["failure_rate"], "0.5");
        assert_eq!(f["buffered_calls"], "4");
        assert_eq!(f["failed_calls"], "2");
        assert!(f["message"].contains("CLOSED -> OPEN"), "{}", f["message"]);

        // A refusal: debug, with the state that refused.
        assert!(b.try_acquire().is_err());
        let got = events.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].level, Level::DEBUG);
        assert_eq!(got[0].fields["circuit_breaker.state"], "OPEN");
        assert_eq!(got[0].fields["circuit_breaker.name"], "payments");

        // OPEN -> HALF_OPEN and HALF_OPEN -> CLOSED: info; the close carries the probes.
        clock.advance(Duration::from_millis(1_001));
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        p1.success();
        p2.success();
        assert_eq!(b.state(), State::Closed);
        let got = events.take();
        let kinds: Vec<_> = got
            .iter()
            .map(|e| (e.level, e.fields["to_state"].as_str()))
            .collect();
        assert_eq!(kinds, [(Level::INFO, "HALF_OPEN"), (Level::INFO, "CLOSED")]);
        assert_eq!(got[1].fields["buffered_calls"], "2");
        assert_eq!(got[1].fields["trigger"], "probe");

        // Forced open by an operator: warn; the rates of a window not yet known are absent.
        b.force_open();
        let got = events.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].level, Level::WARN);
        assert_eq!(got[0].fields["to_state"], "FORCED_OPEN");
        assert_eq!(got[0].fields["trigger"], "manual");
        assert!(!got[0].fields.contains_key("failure_rate"));
    });
}

#[test]
fn a_subscriber_above_debug_sees_transitions_only() {
    let events = Collect::default();
    let subscriber =
        tracing_subscriber::registry().with(events.clone().with_filter(LevelFilter::INFO));
    tracing::subscriber::with_default(subscriber, || {
        let b = breaker(&ManualClock::new());
        b.force_open();
        for _ in 0..10 {
            assert!(b.try_acquire().is_err());
        }
        let got = events.take();
        assert_eq!(got.len(), 1, "refusals are debug: {got:?}");
    });
}
