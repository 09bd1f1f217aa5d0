//! Keeps a tonic-health reporter in step with a health registry.

use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::registry::HealthRegistry;
use super::report::Status;

/// Keeps `service` (a gRPC service name, or `""` for the whole server) SERVING while
/// `health`'s readiness passes or warns, and NOT_SERVING while it fails (a critical breaker is
/// open, or a critical probe fails). Updates on every breaker event and probe status change;
/// the returned task runs until aborted. Needs a tokio runtime.
///
/// ```no_run
/// use breakwater::Registry;
/// use breakwater::tower::health::{HealthRegistry, sync_grpc_health};
///
/// # #[tokio::main] async fn main() {
/// let health = HealthRegistry::new(&Registry::new());
/// let (reporter, health_service) = tonic_health::server::health_reporter();
/// let task = sync_grpc_health(&health, reporter, "shop.Orders");
/// # let _ = (task, health_service);
/// # }
/// ```
pub fn sync_grpc_health(
    health: &HealthRegistry,
    reporter: HealthReporter,
    service: impl Into<String>,
) -> JoinHandle<()> {
    let health = health.clone();
    let service = service.into();
    let events = health.breakers().subscribe();
    let mut probes = health.probe_changes();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let serving = if health.readiness().status == Status::Fail {
                ServingStatus::NotServing
            } else {
                ServingStatus::Serving
            };
            if last != Some(serving) {
                reporter.set_service_status(&service, serving).await;
                last = Some(serving);
            }
            tokio::select! {
                event = events.recv() => if event.is_none() { return },
                changed = probes.changed() => if changed.is_err() { return },
            }
        }
    })
}
