//! Cardinality: a million distinct keys of a keyed family (one per host, say) and a million
//! distinct raw paths through a keyed layer keep the family under its cap and memory bounded;
//! evicted breakers leave the metrics JSON and `/metrics`. (The two tests take turns: each
//! measures the process's memory.)

static MEMORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

use std::convert::Infallible;
use std::time::{Duration, Instant};

use breakwater_axum::{metrics_json, prometheus};
use breakwater_core::{Config, FamilyOptions, ManualClock, Registry};
use breakwater_tower::{CircuitBreakerLayer, RawPath};
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

const KEYS: usize = 1_000_000;
const CAP: usize = 1_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn registry(clock: &ManualClock) -> (Registry, breakwater_core::KeyedFamily) {
    let registry = Registry::builder().clock(clock.clone()).build();
    let family = registry.family(
        "hosts",
        FamilyOptions::new(Config::default())
            .max_keys(CAP)
            .idle_eviction(Duration::from_secs(1)),
    );
    (registry, family)
}

#[test]
fn a_million_keys_stay_under_the_cap_and_evicted_breakers_leave_the_metrics() {
    let _turn = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let clock = ManualClock::new();
    let (registry, family) = registry(&clock);
    let rss_before = rss_bytes();
    let started = Instant::now();
    for i in 0..KEYS {
        if i % CAP == 0 {
            clock.advance(Duration::from_millis(1_100));
        }
        let key = format!("host-{i}.example:443");
        family.with(&key, |b| {
            if let Ok(p) = b.try_acquire() {
                p.success();
            }
        });
        assert!(family.len() <= CAP, "{} keys after {i}", family.len());
    }
    let took = started.elapsed();
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);

    // The early keys were evicted; the latest are there. The metrics show only what is held.
    assert!(family.get_existing("host-0.example:443").is_none());
    // (Keys arriving while the family is full of members not yet seen idle share the
    // overflow breaker: one of the last two batches is held.)
    let last = (KEYS - 2 * CAP..KEYS)
        .rev()
        .map(|i| format!("host-{i}.example:443"))
        .find(|k| family.get_existing(k).is_some())
        .expect("a recent key is held");
    let json = metrics_json(&registry);
    let circuits = json["circuits"].as_object().unwrap();
    assert!(circuits.len() <= CAP + 1, "{} circuits", circuits.len());
    assert!(!circuits.contains_key("hosts:host-0.example:443"));
    assert!(circuits.contains_key(&format!("hosts:{last}")));
    let text = prometheus::render(&registry);
    assert!(!text.contains("host-0.example:443\""));
    assert!(text.contains(&format!("hosts:{last}\"")));
    println!(
        "{KEYS} keys in {took:.1?}: {} held (cap {CAP}), RSS +{} MiB",
        family.len(),
        growth >> 20
    );
}

#[test]
fn a_million_raw_paths_through_a_keyed_layer_stay_under_the_cap() {
    let _turn = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let (_registry, family) = registry(&clock);
    let inner = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let mut svc = CircuitBreakerLayer::keyed(family.clone(), RawPath).layer(inner);
    let rss_before = rss_bytes();
    for i in 0..KEYS {
        if i % CAP == 0 {
            clock.advance(Duration::from_millis(1_100));
        }
        let req = Request::get(format!("/items/{i}?q={i}")).body(()).unwrap();
        let res = rt.block_on(async { svc.ready().await.unwrap().call(req).await.unwrap() });
        assert_eq!(res.status(), 200);
    }
    assert!(family.len() <= CAP);
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    println!(
        "{KEYS} raw paths: {} keys held (cap {CAP}), RSS +{} MiB",
        family.len(),
        growth >> 20
    );
}
