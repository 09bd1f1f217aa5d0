//! What the tower and ops benches share: the breaker configuration, and rows measured in
//! alternating rounds. Criterion runs its rows one after another, and on a shared machine they
//! drift apart (the same row has moved by a third between runs); rounds of each row, taken in
//! turn, see the same machine, so their medians compare fairly.

use std::time::Instant;

use breakwater::Config;

/// The breakers' configuration: failure rate 50 % over the last 100 calls.
pub(crate) fn config() -> Config {
    Config::builder()
        .failure_rate_threshold(50.0)
        .minimum_number_of_calls(100)
        .build()
        .unwrap()
}

/// Rounds per row; odd, so the median is one round.
const ROUNDS: usize = 31;

/// A row for [`interleaved`]: `call` made `n` times (monomorphised, so nothing is added per call).
pub(crate) fn times(mut call: impl FnMut()) -> impl FnMut(u32) {
    move |n| {
        for _ in 0..n {
            call();
        }
    }
}

/// Runs each row's `run(calls)` in `ROUNDS` alternating rounds and prints the median time per
/// call of each, and each row's overhead over the first.
pub(crate) fn interleaved(group: &str, calls: u32, rows: &mut [(&str, &mut dyn FnMut(u32))]) {
    let mut times = vec![Vec::with_capacity(ROUNDS); rows.len()];
    for _ in 0..ROUNDS {
        for ((_, run), t) in rows.iter_mut().zip(&mut times) {
            let start = Instant::now();
            run(calls);
            t.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(calls));
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[ROUNDS / 2]
        })
        .collect();
    for ((name, _), m) in rows.iter().zip(&medians) {
        println!(
            "{group} interleaved: {name:<28} {m:8.2} ns/call, overhead {:7.2} ns",
            m - medians[0]
        );
    }
}
pub(crate) mod service;
