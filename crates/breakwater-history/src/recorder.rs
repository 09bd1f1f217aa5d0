//! The task that samples the breakers and probes each minute and follows the transitions.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use breakwater_core::{Clock, DURATION_BUCKETS, EventKind, State, Subscription};

use crate::db::Write;
use crate::minute::{MAX_LATENCIES, MINUTE_MS, Minute, ProbeMinute, Ring, StateTimes};
use crate::{Inner, MAX_KEPT_EVENTS, MAX_SERIES, ProbeRun, Transition};

/// How often the task looks at the clock for a minute's end.
const TICK: Duration = Duration::from_secs(1);

/// A breaker's counters at the last sample, and its state's time since then.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    successes: u64,
    failures: u64,
    ignored: u64,
    refused: u64,
    slow: u64,
    /// Cumulative histogram buckets and the count.
    cumulative: Vec<u64>,
    count: u64,
    state: Option<State>,
    /// When `state` was entered, or the last sample (ms since the epoch).
    since: u64,
    times: StateTimes,
    /// Latency counts at the last sample, and each sample's new ones (sparse), for a learned
    /// slow-call threshold.
    pub(crate) latency: Vec<u64>,
    pub(crate) latency_samples: std::collections::VecDeque<(u64, Vec<(u16, u64)>)>,
}

#[derive(Debug, Default)]
struct Probe {
    ok: u64,
    slow: u64,
    failed: u64,
    /// The newest result already counted.
    last_at: u64,
}

pub(crate) struct Recorder {
    breakers: HashMap<String, Breaker>,
    probes: HashMap<String, Probe>,
    /// Start of the minute being filled.
    minute: u64,
    last_cleanup: u64,
}

/// Takes the baselines now (what happened before is not this history's) and subscribes to
/// the transitions; [`run`] goes on from there.
pub(crate) fn begin(inner: &Arc<Inner>) -> (Recorder, Subscription) {
    let now = inner.registry.clock().epoch_millis();
    let mut rec = Recorder {
        breakers: HashMap::new(),
        probes: HashMap::new(),
        minute: now - now % MINUTE_MS,
        last_cleanup: 0,
    };
    let events = inner.registry.subscribe_transitions(4_096);
    rec.sample(inner, now, false);
    (rec, events)
}

pub(crate) async fn run(
    inner: Weak<Inner>,
    mut rec: Recorder,
    events: Subscription,
    mut flushes: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let Some(inner) = inner.upgrade() else { return };
                rec.on_event(&inner, event);
            }
            _ = tick.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                rec.drain(&inner, &events);
                let now = inner.registry.clock().epoch_millis();
                rec.catch_up(&inner, now);
                rec.clean_up(&inner, now);
            }
            done = flushes.recv() => {
                let Some(done) = done else { return };
                let Some(inner) = inner.upgrade() else { return };
                rec.drain(&inner, &events);
                let now = inner.registry.clock().epoch_millis();
                rec.catch_up(&inner, now);
                rec.sample(&inner, now, true);
                rec.clean_up(&inner, now);
                let (tx, rx) = tokio::sync::oneshot::channel();
                match &inner.writer {
                    Some(w) => w.send(Write::Flush(tx)),
                    None => { let _ = tx.send(()); }
                }
                drop(inner);
                let _ = rx.await;
                let _ = done.send(());
            }
        }
    }
}

impl Recorder {
    /// The transitions already queued, before a sample.
    fn drain(&mut self, inner: &Arc<Inner>, events: &Subscription) {
        while let Some(event) = events.try_recv() {
            self.on_event(inner, event);
        }
    }

    /// A transition: the state's time so far goes to its state, and history keeps it.
    fn on_event(&mut self, inner: &Arc<Inner>, event: breakwater_core::Event) {
        let EventKind::StateTransition { from, to, trigger } = event.kind else {
            return;
        };
        self.catch_up(inner, event.at);
        let name = event.circuit.to_string();
        if !self.breakers.contains_key(&name) && self.breakers.len() >= MAX_SERIES {
            return;
        }
        let b = self.breakers.entry(name).or_default();
        let from_time = b.since.max(self.minute);
        b.times
            .add(b.state.unwrap_or(from), event.at.saturating_sub(from_time));
        b.state = Some(to);
        b.since = event.at;
        let t = Transition {
            at: event.at,
            circuit: event.circuit.to_string(),
            from: from.as_str().into(),
            to: to.as_str().into(),
            trigger: trigger.as_str().into(),
        };
        let json = serde_json::to_string(&t).unwrap_or_default();
        let mut data = inner.data();
        data.transitions.push_back(t);
        while data.transitions.len() > MAX_KEPT_EVENTS {
            data.transitions.pop_front();
        }
        drop(data);
        inner.write(Write::Transition { at: event.at, json });
    }

    /// Once an hour: the state dir forgets what is older than the retention.
    fn clean_up(&mut self, inner: &Arc<Inner>, now: u64) {
        if now >= self.last_cleanup + 3_600_000 {
            self.last_cleanup = now;
            let before = now.saturating_sub(inner.retention.as_millis() as u64);
            inner.write(Write::Cleanup { before });
        }
    }

    /// Closes every minute that ended by `now`.
    fn catch_up(&mut self, inner: &Arc<Inner>, now: u64) {
        // After a long gap, at most a day of minutes (the rings hold no more).
        let oldest = now.saturating_sub(crate::KEPT_MS);
        if self.minute + MINUTE_MS <= oldest {
            self.minute = oldest - oldest % MINUTE_MS;
        }
        while self.minute + MINUTE_MS <= now {
            self.sample(inner, self.minute + MINUTE_MS, true);
            self.minute += MINUTE_MS;
        }
    }

    /// Adds what happened since the last sample, up to `end`, to the minute being filled
    /// (kept when `keep`; otherwise only the baselines move).
    fn sample(&mut self, inner: &Arc<Inner>, end: u64, keep: bool) {
        let now = inner.registry.clock().epoch_millis();
        let minute = self.minute;
        let breakers = inner.registry.breakers();
        // Breakers gone from the registry (evicted family members) are forgotten here; what
        // history kept of them stays for its 24 h.
        if self.breakers.len() > breakers.len() {
            let live: std::collections::HashSet<&str> = breakers.iter().map(|b| b.name()).collect();
            self.breakers.retain(|name, _| live.contains(name.as_str()));
        }
        for breaker in breakers {
            let name = breaker.name();
            if !self.breakers.contains_key(name) && self.breakers.len() >= MAX_SERIES {
                continue;
            }
            let s = breaker.snapshot();
            let h = breaker.duration_histogram();
            let b = self.breakers.entry(name.to_owned()).or_default();
            let state = *b.state.get_or_insert(s.state);
            let from_time = b.since.max(minute);
            b.times.add(state, end.saturating_sub(from_time));
            b.since = end;
            // Counters go back to zero on a reset: then all of them are new.
            let d = |now: u64, before: u64| if now >= before { now - before } else { now };
            let mut m = Minute {
                minute,
                successes: d(s.successes, b.successes),
                failures: d(s.failures, b.failures),
                ignored: d(s.ignored_calls, b.ignored),
                refused: d(s.not_permitted_calls, b.refused),
                slow_calls: d(s.slow_calls, b.slow),
                time_in_state: std::mem::take(&mut b.times),
                ..Minute::default()
            };
            let cumulative: Vec<u64> = h.cumulative.to_vec();
            if h.count >= b.count && b.cumulative.len() == cumulative.len() {
                let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
                let mut below = 0;
                for (now_c, before_c) in cumulative.iter().zip(&b.cumulative) {
                    let c = now_c - before_c.min(now_c);
                    buckets.push(c.saturating_sub(below));
                    below = c;
                }
                buckets.push((h.count - b.count).saturating_sub(below));
                m.latency_buckets = buckets;
            } else {
                m.latency_buckets = counts_of(&cumulative, h.count);
            }
            if m.latency_buckets.iter().all(|&n| n == 0) {
                m.latency_buckets.clear();
            }
            m.set_percentiles();
            (b.successes, b.failures, b.ignored, b.refused, b.slow) = (
                s.successes,
                s.failures,
                s.ignored_calls,
                s.not_permitted_calls,
                s.slow_calls,
            );
            (b.cumulative, b.count) = (cumulative, h.count);
            if let (Some(learn), Some(counts)) = (
                s.config.learned_slow_call_threshold,
                breaker.latency_counts(),
            ) {
                crate::learn::sample(&breaker, learn, b, counts, end);
            }
            if keep && !m.is_empty() {
                let json;
                {
                    let mut data = inner.data();
                    let merged = data
                        .breakers
                        .entry(name.to_owned())
                        .or_insert_with(Ring::new)
                        .push(m, now);
                    json = serde_json::to_string(&merged).unwrap_or_default();
                }
                inner.write(Write::Minute {
                    kind: "breaker",
                    name: name.to_owned(),
                    minute,
                    json,
                });
            }
        }
        let Some(health) = &inner.health else { return };
        for probe in health.probes() {
            let name = probe.name().to_owned();
            if !self.probes.contains_key(&name) && self.probes.len() >= MAX_SERIES {
                continue;
            }
            let c = probe.counts();
            let view = probe.view();
            let p = self.probes.entry(name.clone()).or_default();
            let d = |now: u64, before: u64| if now >= before { now - before } else { now };
            let mut m = ProbeMinute {
                minute,
                ok: d(c.ok, p.ok),
                slow: d(c.slow, p.slow),
                failed: d(c.failed, p.failed),
                latencies_ms: view
                    .history
                    .iter()
                    .filter(|r| r.at > p.last_at && r.at <= end)
                    .take(MAX_LATENCIES)
                    .map(|r| r.latency.as_secs_f64() * 1_000.0)
                    .collect(),
                ..ProbeMinute::default()
            };
            m.set_percentiles();
            (p.ok, p.slow, p.failed) = (c.ok, c.slow, c.failed);
            // Each run itself, with its error.
            let runs: Vec<ProbeRun> = view
                .history
                .iter()
                .filter(|r| r.at > p.last_at && r.at <= end)
                .map(|r| ProbeRun {
                    probe: name.clone(),
                    at: r.at,
                    ok: r.ok,
                    slow: r.slow,
                    latency_ms: r.latency.as_secs_f64() * 1_000.0,
                    error: r.error.clone(),
                })
                .collect();
            if !runs.is_empty() {
                let mut data = inner.data();
                for run in &runs {
                    data.probe_runs.push_back(run.clone());
                }
                while data.probe_runs.len() > MAX_KEPT_EVENTS {
                    data.probe_runs.pop_front();
                }
                drop(data);
                for run in runs {
                    let json = serde_json::to_string(&run).unwrap_or_default();
                    inner.write(Write::ProbeRun { at: run.at, json });
                }
            }
            // The newest run counted: a run after `end` is the next minute's.
            if let Some(last) = view
                .history
                .iter()
                .map(|r| r.at)
                .filter(|at| *at <= end)
                .max()
            {
                p.last_at = p.last_at.max(last);
            }
            if keep && !m.is_empty() {
                let json;
                {
                    let mut data = inner.data();
                    let merged = data
                        .probes
                        .entry(name.clone())
                        .or_insert_with(Ring::new)
                        .push(m, now);
                    json = serde_json::to_string(&merged).unwrap_or_default();
                }
                inner.write(Write::Minute {
                    kind: "probe",
                    name,
                    minute,
                    json,
                });
            }
        }
    }
}

/// Calls per bucket from cumulative counts and the total.
fn counts_of(cumulative: &[u64], count: u64) -> Vec<u64> {
    let mut below = 0;
    let mut v: Vec<u64> = cumulative
        .iter()
        .map(|&c| {
            let n = c.saturating_sub(below);
            below = c;
            n
        })
        .collect();
    v.push(count.saturating_sub(below));
    v
}
