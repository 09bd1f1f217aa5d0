use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use breakwater_core::{CircuitBreaker, Clock, ClockHandle, HealthMode, Registry, State};
use tokio::sync::watch;

use super::probe::Probe;
use super::report::{CheckEntry, CheckResult, HealthReport, rfc3339};

type CheckFn = dyn Fn() -> CheckResult + Send + Sync;

struct Custom {
    name: String,
    /// `custom`, or `store` for a fleet's state store.
    kind: &'static str,
    critical: bool,
    check: Arc<CheckFn>,
}

/// Everything that makes up a service's health: the breakers of a [`Registry`], active
/// [`Probe`]s, and custom checks.
///
/// A breaker's check follows its config's [`HealthMode`]: CLOSED passes, HALF_OPEN warns, OPEN
/// and FORCED_OPEN warn, or fail when the breaker is `critical`; DISABLED and METRICS_ONLY pass
/// with a note; `ignore` leaves it out. A probe's check is its status; a custom check's is what
/// it returns. Only critical checks can fail the report: a non-critical failure counts as
/// `warn`. Clones share the registry.
///
/// ```
/// use breakwater::{Config, HealthMode, Registry};
/// use breakwater::tower::health::{CheckResult, HealthRegistry, Status};
///
/// let registry = Registry::new();
/// let db = registry.breaker_with(
///     "db",
///     Config::builder().health(HealthMode::Critical).build().unwrap(),
/// );
/// let health = HealthRegistry::new(&registry);
/// health.add_check("disk", false, || CheckResult::pass());
/// assert_eq!(health.readiness().status, Status::Pass);
///
/// db.force_open();
/// assert_eq!(health.readiness().status, Status::Fail);
/// assert_eq!(health.liveness().status, Status::Pass);
/// ```
#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    breakers: Registry,
    probes: RwLock<Vec<Probe>>,
    checks: RwLock<Vec<Custom>>,
    clock: ClockHandle,
    started: Duration,
    /// Bumped when a probe's status changes.
    changes: watch::Sender<u64>,
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthRegistry")
            .field("breakers", &self.inner.breakers)
            .field("probes", &read(&self.inner.probes).len())
            .field("checks", &read(&self.inner.checks).len())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl HealthRegistry {
    /// The health of `registry`'s breakers (on its clock), to which probes and custom checks
    /// can be added. For probes and checks alone, pass an empty `Registry::new()`.
    pub fn new(registry: &Registry) -> Self {
        let breakers = registry.clone();
        let clock = registry.clock().clone();
        let started = clock.now();
        Self {
            inner: Arc::new(Inner {
                breakers,
                probes: RwLock::new(Vec::new()),
                checks: RwLock::new(Vec::new()),
                clock,
                started,
                changes: watch::channel(0).0,
            }),
        }
    }

    /// The breaker registry it reports.
    pub fn breakers(&self) -> &Registry {
        &self.inner.breakers
    }

    /// Adds a custom check, run on every health request (keep it cheap).
    pub fn add_check(
        &self,
        name: impl Into<String>,
        critical: bool,
        check: impl Fn() -> CheckResult + Send + Sync + 'static,
    ) {
        self.push_check(name.into(), "custom", critical, Arc::new(check));
    }

    fn push_check(&self, name: String, kind: &'static str, critical: bool, check: Arc<CheckFn>) {
        write(&self.inner.checks).push(Custom {
            name,
            kind,
            critical,
            check,
        });
    }

    /// Adds the check of a fleet's state store, `<kind>:store` (e.g. `redis:store`),
    /// non-critical: `pass` while the store answers, `warn` with its latest error while it
    /// does not (the breakers then go on with their own states). Adding the same check again
    /// changes nothing.
    ///
    /// ```
    /// use breakwater::Registry;
    /// use breakwater::fleet::StoreStats;
    /// use breakwater::tower::health::{HealthRegistry, Status};
    ///
    /// let health = HealthRegistry::new(&Registry::new());
    /// health.add_store(&StoreStats::new("redis", "replica-1"));
    /// let report = health.report();
    /// assert_eq!(report.status, Status::Warn); // never connected
    /// assert_eq!(health.readiness().status, Status::Pass); // not critical
    /// assert!(report.checks.contains_key("redis:store"));
    /// ```
    pub fn add_store(&self, stats: &breakwater_core::fleet::StoreStats) {
        let name = stats.kind().to_owned();
        if read(&self.inner.checks)
            .iter()
            .any(|c| c.kind == "store" && c.name == name)
        {
            return;
        }
        let stats = stats.clone();
        let check = move || {
            let view = stats.view();
            let observed = serde_json::json!({
                "replica": view.replica,
                "connected": view.connected,
                "errors": view.errors,
            });
            let result = if view.healthy {
                CheckResult::pass()
            } else {
                let why = view
                    .last_error
                    .unwrap_or_else(|| "not connected".to_owned());
                CheckResult::warn(format!("{}: {why}; breakers use local state", view.store))
            };
            result.with_observed(observed, None)
        };
        self.push_check(name, "store", false, Arc::new(check));
    }

    /// Adds `probe` (replacing one of the same name) and starts it; needs a tokio runtime.
    pub fn add_probe(&self, probe: Probe) {
        let changes = self.inner.changes.clone();
        probe.on_change(Arc::new(move || {
            changes.send_modify(|n| *n = n.wrapping_add(1));
        }));
        {
            let mut probes = write(&self.inner.probes);
            if let Some(old) = probes.iter().position(|p| p.name() == probe.name()) {
                probes.remove(old).stop();
            }
            probes.push(probe.clone());
        }
        probe.start();
    }

    /// Removes and stops the probe called `name`.
    pub fn remove_probe(&self, name: &str) -> Option<Probe> {
        let mut probes = write(&self.inner.probes);
        let i = probes.iter().position(|p| p.name() == name)?;
        let probe = probes.remove(i);
        probe.stop();
        Some(probe)
    }

    /// The probe called `name`.
    pub fn probe(&self, name: &str) -> Option<Probe> {
        read(&self.inner.probes)
            .iter()
            .find(|p| p.name() == name)
            .cloned()
    }

    /// Every probe.
    pub fn probes(&self) -> Vec<Probe> {
        read(&self.inner.probes).clone()
    }

    /// A receiver that changes whenever a probe's status does (breaker changes come as the
    /// breaker registry's events).
    pub fn probe_changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Seconds since the registry was made.
    pub fn uptime(&self) -> Duration {
        self.inner.clock.now().saturating_sub(self.inner.started)
    }

    /// Everything: breakers, probes, custom checks and uptime.
    pub fn report(&self) -> HealthReport {
        self.collect(false)
    }

    /// Readiness: the critical checks only; fails when one of them fails.
    pub fn readiness(&self) -> HealthReport {
        self.collect(true)
    }

    /// Liveness: the process answers; no dependency is consulted.
    pub fn liveness(&self) -> HealthReport {
        let mut report = HealthReport::new();
        self.add_uptime(&mut report);
        report
    }

    fn add_uptime(&self, report: &mut HealthReport) {
        let now = rfc3339(self.inner.clock.epoch_millis());
        report.add(
            "uptime".into(),
            CheckEntry {
                component_type: "system",
                critical: false,
                result: CheckResult::pass().with_observed(self.uptime().as_secs_f64(), Some("s")),
                time: now,
            },
        );
    }

    fn collect(&self, critical_only: bool) -> HealthReport {
        let mut report = HealthReport::new();
        let now_ms = self.inner.clock.epoch_millis();
        let now = rfc3339(now_ms);
        for breaker in self.inner.breakers.breakers() {
            let Some((critical, result)) = breaker_check(&breaker) else {
                continue;
            };
            if critical_only && !critical {
                continue;
            }
            report.add(
                format!("{}:circuitBreaker", breaker.name()),
                CheckEntry {
                    component_type: "circuitBreaker",
                    critical,
                    result,
                    time: now.clone(),
                },
            );
        }
        for probe in read(&self.inner.probes).iter() {
            if critical_only && !probe.is_critical() {
                continue;
            }
            let last = probe.last();
            let mut result = CheckResult::new(probe.status());
            let time = match &last {
                Some(r) => {
                    result = result.with_observed(r.latency.as_secs_f64() * 1_000.0, Some("ms"));
                    if let Some(e) = &r.error {
                        result = result.with_output(e.clone());
                    } else if r.slow {
                        result = result.with_output("slow");
                    }
                    rfc3339(r.at)
                }
                None => {
                    result = result.with_output("no result yet");
                    now.clone()
                }
            };
            report.add(
                format!("{}:probe", probe.name()),
                CheckEntry {
                    component_type: "probe",
                    critical: probe.is_critical(),
                    result,
                    time,
                },
            );
        }
        let checks: Vec<(String, &'static str, bool, Arc<CheckFn>)> = read(&self.inner.checks)
            .iter()
            .map(|c| (c.name.clone(), c.kind, c.critical, c.check.clone()))
            .collect();
        for (name, kind, critical, check) in checks {
            if critical_only && !critical {
                continue;
            }
            report.add(
                format!("{name}:{kind}"),
                CheckEntry {
                    component_type: kind,
                    critical,
                    result: check(),
                    time: now.clone(),
                },
            );
        }
        if !critical_only {
            self.add_uptime(&mut report);
        }
        report
    }
}

/// A breaker's check, or `None` when its health is ignored.
fn breaker_check(breaker: &CircuitBreaker) -> Option<(bool, CheckResult)> {
    let critical = match breaker.config().health() {
        HealthMode::Ignore => return None,
        HealthMode::Report => false,
        HealthMode::Critical => true,
    };
    let state = breaker.state();
    let result = match state {
        State::Closed => CheckResult::pass(),
        State::HalfOpen => CheckResult::warn("probing"),
        State::Open | State::ForcedOpen if critical => CheckResult::fail("circuit open"),
        State::Open | State::ForcedOpen => CheckResult::warn("circuit open"),
        State::Disabled => CheckResult::pass().with_output("disabled: not protecting"),
        State::MetricsOnly => CheckResult::pass().with_output("metrics only: not protecting"),
    };
    let value = serde_json::to_value(state).unwrap_or_default();
    Some((critical, result.with_observed(value, None)))
}
