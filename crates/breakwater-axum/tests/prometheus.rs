//! The Prometheus/OpenMetrics text of a registry, read back by a strict parser.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use breakwater_axum::prometheus::{CONTENT_TYPE, RegistryCollector, render};
use breakwater_core::{
    CircuitBreaker, Config, DURATION_BUCKETS, FamilyOptions, ManualClock, Registry, SlidingWindow,
    State,
};

// ---------------------------------------------------------------------------------------------
// A strict reader of the text format.

/// A series' labels other than `le`, in the order written.
type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    /// Label values unescaped, in the order written.
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Family {
    name: String,
    kind: String,
    unit: Option<String>,
}

#[derive(Debug)]
struct Exposition {
    families: Vec<Family>,
    samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A float as the text format writes one: a decimal number, `+Inf`, `-Inf` or `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => return Some(f64::INFINITY),
        "-Inf" => return Some(f64::NEG_INFINITY),
        "NaN" => return Some(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if !digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
    {
        return None;
    }
    s.parse().ok()
}

/// Parses `{k="v",...}` at the start of `s`; returns the labels and the rest of `s`.
fn parse_labels<'a>(s: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    let mut rest = s
        .strip_prefix('{')
        .unwrap_or_else(|| panic!("expected {{ in {line:?}"));
    assert!(!rest.starts_with('}'), "empty label set in {line:?}");
    loop {
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("label without = in {line:?}"));
        let key = &rest[..eq];
        assert!(is_label_name(key), "bad label name {key:?} in {line:?}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(
            labels.iter().all(|(k, _)| k != key),
            "duplicate label {key:?} in {line:?}"
        );
        labels.push((key.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        } else {
            panic!("expected , or }} after a label value in {line:?}");
        }
    }
}

/// Reads an exposition, panicking on anything but the lines prometheus-client should write:
/// `# HELP`, `# TYPE`, `# UNIT` of a family, its samples (with the suffixes its type allows,
/// each series once), and a final `# EOF`.
fn parse(text: &str) -> Exposition {
    assert!(text.ends_with("# EOF\n"), "must end with # EOF: {text:?}");
    assert!(!text.contains('\r'), "no carriage returns");
    let lines: Vec<&str> = text.lines().collect();
    let (eof, lines) = lines.split_last().unwrap();
    assert_eq!(*eof, "# EOF");

    let mut families: Vec<Family> = Vec::new();
    let mut samples = Vec::new();
    let mut help: Option<&str> = None;
    let mut seen = HashSet::new();
    for line in lines {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# ") {
            let (kind, rest) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad comment {line:?}"));
            let (name, arg) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("comment without an argument {line:?}"));
            assert!(is_metric_name(name), "bad metric name in {line:?}");
            assert!(!arg.is_empty(), "empty argument in {line:?}");
            match kind {
                "HELP" => {
                    assert!(help.is_none(), "two HELPs in a row: {line:?}");
                    help = Some(name);
                }
                "TYPE" => {
                    assert_eq!(help.take(), Some(name), "HELP then TYPE of {name}");
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&arg),
                        "unexpected type in {line:?}"
                    );
                    assert!(
                        families.iter().all(|f| f.name != name),
                        "family {name} declared twice"
                    );
                    families.push(Family {
                        name: name.to_owned(),
                        kind: arg.to_owned(),
                        unit: None,
                    });
                }
                "UNIT" => {
                    let family = families.last_mut().expect("UNIT before TYPE");
                    assert_eq!(family.name, name, "UNIT of another family: {line:?}");
                    assert!(family.unit.is_none(), "two UNITs: {line:?}");
                    assert!(
                        name.ends_with(&format!("_{arg}")),
                        "unit is not the name's suffix: {line:?}"
                    );
                    family.unit = Some(arg.to_owned());
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(help.is_none(), "HELP without TYPE before {line:?}");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..], line)
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("expected one space before the value in {line:?}"));
        let value = parse_value(value).unwrap_or_else(|| panic!("bad value {value:?} in {line:?}"));

        let family = families
            .last()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let suffix = name
            .strip_prefix(family.name.as_str())
            .unwrap_or_else(|| panic!("{name} is not of family {}", family.name));
        let allowed: &[&str] = match family.kind.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => unreachable!(),
        };
        assert!(
            allowed.contains(&suffix),
            "{name}: suffix {suffix:?} not allowed for a {}",
            family.kind
        );
        let has_le = labels.iter().any(|(k, _)| k == "le");
        assert_eq!(has_le, suffix == "_bucket", "le only on buckets: {line:?}");
        if suffix == "_total" || suffix == "_count" || suffix == "_bucket" {
            assert!(
                value >= 0.0 && value.fract() == 0.0,
                "counts are whole: {line:?}"
            );
        }
        let mut key: Vec<(String, String)> = labels.clone();
        key.sort();
        assert!(
            seen.insert((name.to_owned(), key)),
            "series written twice: {line:?}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    assert!(help.is_none(), "trailing HELP");
    let exposition = Exposition { families, samples };
    exposition.check_histograms();
    exposition
}

impl Exposition {
    fn family(&self, name: &str) -> &Family {
        self.families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    /// The samples called `name` whose labels include all of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .collect()
    }

    /// The one sample called `name` with exactly `labels` (in any order).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .find(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert!(found.len() <= 1, "several {name}{labels:?}");
        found.first().map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Every histogram series: buckets in increasing `le` ending at `+Inf`, cumulative, the
    /// last equal to `_count`, and a `_sum`.
    fn check_histograms(&self) {
        for family in self.families.iter().filter(|f| f.kind == "histogram") {
            let bucket = format!("{}_bucket", family.name);
            let mut series: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
            for s in self.samples.iter().filter(|s| s.name == bucket) {
                let le = s.label("le").unwrap();
                let le = parse_value(le).unwrap_or_else(|| panic!("bad le {le:?}"));
                let mut rest: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .cloned()
                    .collect();
                rest.sort();
                series.entry(rest).or_default().push((le, s.value));
            }
            for (labels, buckets) in &series {
                assert!(
                    buckets
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "buckets of {labels:?} not increasing and cumulative: {buckets:?}"
                );
                let (last_le, last) = *buckets.last().unwrap();
                assert_eq!(last_le, f64::INFINITY, "{labels:?} lacks +Inf");
                let with = |suffix: &str| {
                    let name = format!("{}{suffix}", family.name);
                    let l: Vec<(&str, &str)> = labels
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    self.value(&name, &l)
                };
                assert_eq!(with("_count"), last, "+Inf bucket is the count");
                assert!(with("_sum") >= 0.0);
            }
            let sums = self
                .samples
                .iter()
                .filter(|s| s.name == format!("{}_sum", family.name))
                .count();
            assert_eq!(sums, series.len(), "one _sum per bucket series");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const STATE: &str = "resilience_circuit_breaker_state";
const CALLS: &str = "resilience_circuit_breaker_calls_total";
const SLOW: &str = "resilience_circuit_breaker_slow_calls_total";
const FAILURE_RATIO: &str = "resilience_circuit_breaker_failure_ratio";
const SLOW_RATIO: &str = "resilience_circuit_breaker_slow_call_ratio";
const BUFFERED: &str = "resilience_circuit_breaker_buffered_calls";
const TRANSITIONS: &str = "resilience_circuit_breaker_transitions_total";
const DURATION: &str = "resilience_circuit_breaker_call_duration_seconds";
const NAME: &str = "circuit_breaker_name";

fn snake(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::ForcedOpen => "forced_open",
        State::Disabled => "disabled",
        State::MetricsOnly => "metrics_only",
    }
}

fn registry() -> (Registry, ManualClock) {
    let clock = ManualClock::new();
    (Registry::builder().clock(clock.clone()).build(), clock)
}

/// What [`RegistryCollector`] writes through prometheus-client's own label encoders (and
/// escaping), in a registry of its own.
fn collected(registry: &Registry) -> String {
    let mut prom = prometheus_client::registry::Registry::default();
    prom.register_collector(Box::new(RegistryCollector::new(registry)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
    text
}

/// Renders `registry`, checks the text is exactly what the collector writes, and reads it.
fn scrape(registry: &Registry) -> Exposition {
    let text = render(registry);
    assert_eq!(text, collected(registry));
    parse(&text)
}

fn outcomes(b: &CircuitBreaker, successes: u32, failures: u32, ignored: u32) {
    for _ in 0..successes {
        b.try_acquire().unwrap().success();
    }
    for _ in 0..failures {
        b.try_acquire().unwrap().failure();
    }
    for _ in 0..ignored {
        b.try_acquire().unwrap().ignore();
    }
}

/// Every breaker's series agree with its snapshot, transition counts and histogram.
fn check_against_breakers(e: &Exposition, registry: &Registry) {
    let breakers = registry.breakers();
    let names: BTreeSet<&str> = e
        .find(STATE, &[])
        .iter()
        .map(|s| s.label(NAME).expect("every series is named"))
        .collect();
    assert_eq!(
        names.len(),
        breakers.len(),
        "one state series set per breaker"
    );
    for s in &e.samples {
        assert!(s.label(NAME).is_some(), "{} lacks {NAME}", s.name);
    }
    for b in &breakers {
        let snap = b.snapshot();
        let n = snap.name.as_str();
        let states = e.find(STATE, &[(NAME, n)]);
        assert_eq!(states.len(), 6, "{n}: one sample per state");
        assert_eq!(states.iter().map(|s| s.value).sum::<f64>(), 1.0, "{n}");
        assert_eq!(
            e.value(
                STATE,
                &[(NAME, n), ("circuit_breaker_state", snake(snap.state))]
            ),
            1.0
        );
        for (outcome, count) in [
            ("success", snap.successes),
            ("failure", snap.failures),
            ("ignored", snap.ignored_calls),
            ("rejected", snap.not_permitted_calls),
        ] {
            assert_eq!(
                e.value(CALLS, &[(NAME, n), ("circuit_breaker_outcome", outcome)]),
                count as f64,
                "{n} {outcome}"
            );
        }
        assert_eq!(e.find(CALLS, &[(NAME, n)]).len(), 4);
        assert_eq!(e.value(SLOW, &[(NAME, n)]), snap.slow_calls as f64);
        assert_eq!(e.get(FAILURE_RATIO, &[(NAME, n)]), snap.failure_rate);
        assert_eq!(e.get(SLOW_RATIO, &[(NAME, n)]), snap.slow_call_rate);
        assert_eq!(e.value(BUFFERED, &[(NAME, n)]), snap.buffered_calls as f64);

        let transitions = b.transition_counts();
        assert_eq!(
            e.find(TRANSITIONS, &[(NAME, n)]).len(),
            transitions.len(),
            "{n}"
        );
        for t in &transitions {
            let labels = [
                (NAME, n),
                ("from_state", snake(t.from)),
                ("to_state", snake(t.to)),
                ("trigger", t.trigger.as_str()),
            ];
            assert_eq!(e.value(TRANSITIONS, &labels), t.count as f64);
        }

        let h = b.duration_histogram();
        let buckets = e.find(
            "resilience_circuit_breaker_call_duration_seconds_bucket",
            &[(NAME, n)],
        );
        if h.count == 0 {
            assert!(buckets.is_empty(), "{n}: no histogram before a timed call");
            continue;
        }
        assert_eq!(buckets.len(), DURATION_BUCKETS.len() + 1);
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            let le = parse_value(buckets[i].label("le").unwrap()).unwrap();
            assert_eq!(le, *bound);
            assert_eq!(buckets[i].value, h.cumulative[i] as f64, "{n} le={bound}");
        }
        assert_eq!(buckets[11].label("le"), Some("+Inf"));
        assert_eq!(buckets[11].value, h.count as f64);
        let count = e.value(&format!("{DURATION}_count"), &[(NAME, n)]);
        assert_eq!(count, h.count as f64);
        let sum = e.value(&format!("{DURATION}_sum"), &[(NAME, n)]);
        assert!(
            (sum - h.sum.as_secs_f64()).abs() < 1e-9,
            "{sum} vs {:?}",
            h.sum
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn families_are_declared_with_their_types() {
    let (registry, _clock) = registry();
    registry.breaker("db");
    let e = scrape(&registry);
    let declared: Vec<(&str, &str)> = e
        .families
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(
        declared,
        [
            (STATE, "gauge"),
            ("resilience_circuit_breaker_calls", "counter"),
            ("resilience_circuit_breaker_slow_calls", "counter"),
            (FAILURE_RATIO, "gauge"),
            (SLOW_RATIO, "gauge"),
            (
                "resilience_circuit_breaker_failure_ratio_threshold",
                "gauge"
            ),
            (
                "resilience_circuit_breaker_slow_call_ratio_threshold",
                "gauge"
            ),
            (BUFFERED, "gauge"),
            ("resilience_circuit_breaker_transitions", "counter"),
            (DURATION, "histogram"),
        ]
    );
    assert_eq!(e.family(DURATION).unit.as_deref(), Some("seconds"));
    assert_eq!(
        CONTENT_TYPE,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
}

#[test]
fn empty_registry_renders_descriptors_only() {
    let (registry, _clock) = registry();
    let e = scrape(&registry);
    assert!(e.samples.is_empty());
    assert_eq!(e.families.len(), 10);
}

#[test]
fn counters_states_and_transitions_follow_the_breakers() {
    let (registry, _clock) = registry();
    let db = registry.breaker("db");
    outcomes(&db, 3, 2, 1);

    let trip = registry.breaker_with(
        "trip",
        Config::builder().consecutive_failures(2).build().unwrap(),
    );
    outcomes(&trip, 1, 2, 0);
    assert_eq!(trip.state(), State::Open);
    assert!(trip.try_acquire().is_err());

    let forced = registry.breaker("forced");
    outcomes(&forced, 4, 0, 0);
    forced.force_open();
    assert!(forced.try_acquire().is_err());
    assert!(forced.try_acquire().is_err());

    let off = registry.breaker("off");
    off.disable();
    let metrics = registry.breaker("metrics");
    metrics.metrics_only();
    outcomes(&metrics, 0, 7, 0);

    let text = render(&registry);
    assert_eq!(text, collected(&registry));
    let e = parse(&text);
    check_against_breakers(&e, &registry);

    // The numbers, spelled out.
    let calls =
        |n: &str, outcome: &str| e.value(CALLS, &[(NAME, n), ("circuit_breaker_outcome", outcome)]);
    assert_eq!(calls("db", "success"), 3.0);
    assert_eq!(calls("db", "failure"), 2.0);
    assert_eq!(calls("db", "ignored"), 1.0);
    assert_eq!(calls("db", "rejected"), 0.0);
    assert_eq!(calls("trip", "failure"), 2.0);
    assert_eq!(calls("trip", "rejected"), 1.0);
    assert_eq!(calls("forced", "success"), 4.0);
    assert_eq!(calls("forced", "rejected"), 2.0);
    assert_eq!(calls("metrics", "failure"), 7.0);
    assert!(text.contains(
        "resilience_circuit_breaker_calls_total{circuit_breaker_name=\"db\",circuit_breaker_outcome=\"success\"} 3\n"
    ));

    let state = |n: &str, s: &str| e.value(STATE, &[(NAME, n), ("circuit_breaker_state", s)]);
    assert_eq!(state("db", "closed"), 1.0);
    assert_eq!(state("db", "open"), 0.0);
    assert_eq!(state("trip", "open"), 1.0);
    assert_eq!(state("trip", "closed"), 0.0);
    assert_eq!(state("forced", "forced_open"), 1.0);
    assert_eq!(state("off", "disabled"), 1.0);
    assert_eq!(state("metrics", "metrics_only"), 1.0);
    assert_eq!(state("metrics", "open"), 0.0, "metrics-only never trips");

    let transition = |n: &str, from: &str, to: &str, trigger: &str| {
        e.get(
            TRANSITIONS,
            &[
                (NAME, n),
                ("from_state", from),
                ("to_state", to),
                ("trigger", trigger),
            ],
        )
    };
    assert_eq!(
        transition("trip", "closed", "open", "consecutive_failures"),
        Some(1.0)
    );
    assert_eq!(
        transition("forced", "closed", "forced_open", "manual"),
        Some(1.0)
    );
    assert_eq!(transition("off", "closed", "disabled", "manual"), Some(1.0));
    assert!(e.find(TRANSITIONS, &[(NAME, "db")]).is_empty());

    // No rates yet (100 calls by default), nothing timed, nothing slow.
    assert!(e.find(FAILURE_RATIO, &[]).is_empty());
    assert!(e.find(SLOW_RATIO, &[]).is_empty());
    assert!(e.find(&format!("{DURATION}_count"), &[]).is_empty());
    assert_eq!(e.value(SLOW, &[(NAME, "db")]), 0.0);
    assert_eq!(
        e.value(BUFFERED, &[(NAME, "db")]),
        5.0,
        "ignored calls are not buffered"
    );
}

#[test]
fn transitions_accumulate_over_a_trip_and_recovery() {
    let (registry, clock) = registry();
    let config = Config::builder()
        .consecutive_failures(1)
        .wait_in_open(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let b = registry.breaker_with("flappy", config);
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), State::Open);
        clock.advance(Duration::from_secs(11));
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), State::Closed);
    }
    let e = scrape(&registry);
    check_against_breakers(&e, &registry);
    let t = |from: &str, to: &str| {
        e.find(
            TRANSITIONS,
            &[(NAME, "flappy"), ("from_state", from), ("to_state", to)],
        )
        .iter()
        .map(|s| s.value)
        .sum::<f64>()
    };
    assert_eq!(t("closed", "open"), 3.0);
    assert_eq!(t("open", "half_open"), 3.0);
    assert_eq!(t("half_open", "closed"), 3.0);
}

#[test]
fn ratios_appear_once_the_window_is_judged() {
    let (registry, _clock) = registry();
    let config = Config::builder()
        .sliding_window(SlidingWindow::Count(4))
        .minimum_number_of_calls(4)
        .failure_rate_threshold(100.0)
        .build()
        .unwrap();
    let b = registry.breaker_with("rated", config);
    outcomes(&b, 2, 1, 0);
    let e = scrape(&registry);
    assert_eq!(b.snapshot().failure_rate, None);
    assert_eq!(e.get(FAILURE_RATIO, &[(NAME, "rated")]), None);
    assert_eq!(e.get(SLOW_RATIO, &[(NAME, "rated")]), None);
    assert_eq!(e.value(BUFFERED, &[(NAME, "rated")]), 3.0);

    outcomes(&b, 1, 0, 0);
    let e = scrape(&registry);
    check_against_breakers(&e, &registry);
    assert_eq!(e.value(FAILURE_RATIO, &[(NAME, "rated")]), 0.25);
    assert_eq!(
        e.get(SLOW_RATIO, &[(NAME, "rated")]),
        b.snapshot().slow_call_rate
    );
    assert_eq!(e.value(BUFFERED, &[(NAME, "rated")]), 4.0);
}

#[test]
fn a_breaker_reopened_by_its_probes_exports_their_ratio() {
    let (registry, clock) = registry();
    let config = Config::builder()
        .sliding_window(SlidingWindow::Count(4))
        .minimum_number_of_calls(4)
        .permitted_calls_in_half_open(4)
        .failure_rate_threshold(50.0)
        .wait_in_open(Duration::from_secs(10))
        .build()
        .unwrap();
    let b = registry.breaker_with("probed", config);
    outcomes(&b, 0, 4, 0);
    clock.advance(Duration::from_secs(11));
    outcomes(&b, 1, 3, 0);
    assert_eq!(b.state(), State::Open);
    let e = scrape(&registry);
    check_against_breakers(&e, &registry);
    assert_eq!(e.value(FAILURE_RATIO, &[(NAME, "probed")]), 0.75);
    assert_eq!(e.value(BUFFERED, &[(NAME, "probed")]), 4.0);
}

#[test]
fn timed_calls_fill_the_duration_histogram() {
    let (registry, clock) = registry();
    let config = Config::builder()
        .slow_call_rate_threshold(100.0)
        .slow_call_duration_threshold(Duration::from_millis(200))
        .record_call_durations(true)
        .build()
        .unwrap();
    let b = registry.breaker_with("timed", config);
    let untimed = registry.breaker("untimed");
    outcomes(&untimed, 2, 0, 0);
    for (ms, ok) in [(3, true), (5, true), (300, true), (20_000, false)] {
        let permit = b.try_acquire().unwrap();
        clock.advance(Duration::from_millis(ms));
        if ok {
            permit.success();
        } else {
            permit.failure();
        }
    }

    let e = scrape(&registry);
    check_against_breakers(&e, &registry);

    let bucket = format!("{DURATION}_bucket");
    let buckets: Vec<(String, f64)> = e
        .find(&bucket, &[(NAME, "timed")])
        .iter()
        .map(|s| (s.label("le").unwrap().to_owned(), s.value))
        .collect();
    let expected = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0, 4.0];
    assert_eq!(buckets.len(), expected.len());
    for ((le, value), want) in buckets.iter().zip(expected) {
        assert_eq!(*value, want, "le={le}");
    }
    assert_eq!(
        buckets[0].0, "0.005",
        "5 ms is in the 5 ms bucket (upper-inclusive)"
    );
    assert_eq!(buckets[11].0, "+Inf");
    assert_eq!(
        e.value(&format!("{DURATION}_count"), &[(NAME, "timed")]),
        4.0
    );
    let sum = e.value(&format!("{DURATION}_sum"), &[(NAME, "timed")]);
    assert!((sum - 20.308).abs() < 1e-9, "sum {sum}");
    assert_eq!(
        e.value(SLOW, &[(NAME, "timed")]),
        2.0,
        "300 ms and 20 s are slow"
    );
    assert!(e.find(&bucket, &[(NAME, "untimed")]).is_empty());
}

#[test]
fn awkward_names_are_escaped() {
    let (registry, _clock) = registry();
    let family = registry.family("items", FamilyOptions::new(Config::default()));
    outcomes(&family.get("GET /items/{id} \"x\""), 1, 0, 0);
    outcomes(&registry.breaker("back\\slash \\\" end\\"), 0, 1, 0);
    outcomes(&registry.breaker("two\nlines"), 0, 0, 1);
    outcomes(&registry.breaker("ünïcødé ✓ = , } {"), 1, 0, 0);

    let text = render(&registry);
    assert_eq!(text, collected(&registry));
    let e = parse(&text);
    check_against_breakers(&e, &registry);

    let names: BTreeSet<&str> = e.samples.iter().map(|s| s.label(NAME).unwrap()).collect();
    let expected: BTreeSet<&str> = [
        "items:GET /items/{id} \"x\"",
        "back\\slash \\\" end\\",
        "two\nlines",
        "ünïcødé ✓ = , } {",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    assert!(text.contains(r#"circuit_breaker_name="items:GET /items/{id} \"x\"""#));
    assert!(text.contains(r#"circuit_breaker_name="back\\slash \\\" end\\""#));
    assert!(text.contains(r#"circuit_breaker_name="two\nlines""#));
    assert_eq!(
        e.value(
            CALLS,
            &[
                (NAME, "items:GET /items/{id} \"x\""),
                ("circuit_breaker_outcome", "success")
            ]
        ),
        1.0
    );
}

#[test]
fn the_collector_composes_with_other_metrics() {
    use prometheus_client::metrics::counter::Counter;

    let (registry, _clock) = registry();
    outcomes(&registry.breaker("db"), 1, 0, 0);
    let collector = RegistryCollector::new(&registry);
    assert!(format!("{collector:?}").contains("RegistryCollector"));

    let mut prom = prometheus_client::registry::Registry::default();
    let requests: Counter = Counter::default();
    requests.inc_by(5);
    prom.register("app_requests", "Requests served", requests);
    prom.register_collector(Box::new(collector));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
    let e = parse(&text);
    check_against_breakers(&e_without(&e, "app_requests"), &registry);
    assert_eq!(e.value("app_requests_total", &[]), 5.0);

    // A breaker created later shows up in the next scrape.
    registry.breaker("later");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prom).unwrap();
    let e = parse(&text);
    assert_eq!(
        e.value(
            STATE,
            &[(NAME, "later"), ("circuit_breaker_state", "closed")]
        ),
        1.0
    );
}

/// The exposition without one family (to check the breakers' series alone).
fn e_without(e: &Exposition, family: &str) -> Exposition {
    Exposition {
        families: e
            .families
            .iter()
            .filter(|f| f.name != family)
            .map(|f| Family {
                name: f.name.clone(),
                kind: f.kind.clone(),
                unit: f.unit.clone(),
            })
            .collect(),
        samples: e
            .samples
            .iter()
            .filter(|s| !s.name.starts_with(family))
            .cloned()
            .collect(),
    }
}

#[test]
fn ten_thousand_breakers() {
    const N: usize = 10_000;
    let (registry, _clock) = registry();
    for i in 0..N {
        let b = registry.breaker(&format!("breaker-{i:05}"));
        b.try_acquire().unwrap().success();
    }
    let text = render(&registry);
    let second = render(&registry);
    assert_eq!(second, text, "nothing changed, same text");
    assert_eq!(text, collected(&registry));

    // Per breaker: 6 states, 4 outcomes, slow calls, the failure-rate threshold, buffered calls
    // (no rates, transitions or timed calls); per family HELP and TYPE, the histogram's UNIT,
    // and EOF.
    let lines = text.lines().count();
    assert_eq!(lines, N * 13 + 10 * 2 + 1 + 1);
    let e = parse(&text);
    assert_eq!(e.samples.len(), N * 13);
    assert_eq!(
        e.value(
            CALLS,
            &[
                (NAME, "breaker-09999"),
                ("circuit_breaker_outcome", "success")
            ]
        ),
        1.0
    );
    let closed = e
        .find(STATE, &[("circuit_breaker_state", "closed")])
        .iter()
        .map(|s| s.value)
        .sum::<f64>();
    assert_eq!(closed, N as f64);
}

#[test]
fn the_reader_rejects_malformed_text() {
    const HEAD: &str = "# HELP x A counter.\n# TYPE x counter\n";
    let good = format!("{HEAD}x_total{{a=\"b\\\"\\\\\\n\",c=\"d\"}} 1\n# EOF\n");
    let e = parse(&good);
    assert_eq!(e.samples[0].label("a"), Some("b\"\\\n"));
    let bad = [
        format!("{HEAD}x_total 1\n"),                      // no # EOF
        format!("{HEAD}x_total 1\n# EOF\nx_total 2\n"),    // # EOF not last
        format!("{HEAD}x_total{{a=\"b\"c\"}} 1\n# EOF\n"), // unescaped quote
        format!("{HEAD}x_total{{a=\"b\\q\"}} 1\n# EOF\n"), // unknown escape
        format!("{HEAD}x_total{{a=\"b\nc\"}} 1\n# EOF\n"), // raw newline
        format!("{HEAD}x_total{{a-b=\"c\"}} 1\n# EOF\n"),  // bad label name
        format!("{HEAD}x_total{{a=\"b\",}} 1\n# EOF\n"),   // trailing comma
        format!("{HEAD}x_total{{a=b}} 1\n# EOF\n"),        // unquoted value
        format!("{HEAD}x_total{{}} 1\n# EOF\n"),           // empty label set
        format!("{HEAD}x_total  1\n# EOF\n"),              // two spaces
        format!("{HEAD}x_total 1 2\n# EOF\n"),             // timestamp / junk
        format!("{HEAD}x_total one\n# EOF\n"),             // not a number
        format!("{HEAD}x 1\n# EOF\n"),                     // counter without _total
        format!("{HEAD}y_total 1\n# EOF\n"),               // sample of another family
        format!("{HEAD}x_total 1\nx_total 1\n# EOF\n"),    // series twice
        format!("{HEAD}x_total 1.5\n# EOF\n"),             // fractional count
        "1x 1\n# EOF\n".to_owned(),                        // bad name, no TYPE
        "# TYPE x counter\nx_total 1\n# EOF\n".to_owned(), // TYPE without HELP
        format!("{HEAD}# COMMENT x y\n# EOF\n"),           // unknown comment
        format!("{HEAD}\nx_total 1\n# EOF\n"),             // empty line
    ];
    for text in bad {
        let result = std::panic::catch_unwind(|| parse(&text));
        assert!(result.is_err(), "accepted {text:?}");
    }
}

#[tokio::test]
async fn the_ops_api_also_serves_its_probes_and_fallbacks() {
    use breakwater::tower::FallbackLayer;
    use breakwater::tower::health::{HealthRegistry, Probe};
    use breakwater_axum::OpsApi;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let registry = Registry::new();
    let health = HealthRegistry::new(&registry);
    let probe = Probe::builder("dns", || async { Ok::<(), String>(()) })
        .build()
        .unwrap();
    health.add_probe(probe.clone());
    probe.run_once().await;
    probe.run_once().await;
    let fallback = FallbackLayer::new().fixed(http::Response::new("[]"));
    let stats = fallback.stats();
    // The fallback answers for a service that fails.
    let failing = tower::service_fn(
        |_req: http::Request<http_body_util::Empty<bytes::Bytes>>| async {
            Err::<http::Response<http_body_util::Empty<bytes::Bytes>>, std::io::Error>(
                std::io::Error::other("down"),
            )
        },
    );
    let res = tower::Layer::layer(&fallback.on_errors(), failing)
        .oneshot(http::Request::new(http_body_util::Empty::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    registry.breaker_with(
        "db",
        breakwater::Config::builder()
            .failure_rate_threshold(40.0)
            .no_slow_call_rate_threshold()
            .build()
            .unwrap(),
    );
    let router = OpsApi::new(&registry)
        .health(health)
        .fallback("api", stats)
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let res = client
        .request(
            http::Request::get(format!("http://{addr}/metrics"))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()[http::header::CONTENT_TYPE], CONTENT_TYPE);
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let e = parse(&text);
    // The registry runs the probe too (its first run comes at once, the next a whole interval
    // later): the scrape shows every run so far.
    let runs = probe.counts();
    assert!(runs.ok >= 2);
    assert_eq!(
        e.value(
            "resilience_probe_results_total",
            &[("probe_name", "dns"), ("probe_result", "ok")]
        ),
        runs.ok as f64
    );
    assert_eq!(
        e.value(
            "resilience_probe_results_total",
            &[("probe_name", "dns"), ("probe_result", "failed")]
        ),
        0.0
    );
    assert_eq!(
        e.value(
            "resilience_probe_duration_seconds",
            &[("probe_name", "dns")]
        ),
        probe.last().unwrap().latency.as_secs_f64()
    );
    assert_eq!(
        e.value(
            "resilience_fallback_invocations_total",
            &[("fallback_name", "api"), ("fallback_strategy", "fixed")]
        ),
        1.0
    );
    assert_eq!(
        e.value(
            "resilience_fallback_invocations_total",
            &[("fallback_name", "api"), ("fallback_strategy", "stale")]
        ),
        0.0
    );
    // The thresholds, as ratios, beside the rates they are judged against.
    assert_eq!(
        e.value(
            "resilience_circuit_breaker_failure_ratio_threshold",
            &[("circuit_breaker_name", "db")]
        ),
        0.4
    );
    assert_eq!(
        e.get(
            "resilience_circuit_breaker_slow_call_ratio_threshold",
            &[("circuit_breaker_name", "db")]
        ),
        None,
        "absent while the policy is off"
    );
}
