//! The simulated upstream: its failure rate and latency change at run time (`PUT /sim`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Json, Request, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// The simulation's knobs, changed at run time with `PUT /sim`.
#[derive(Debug, Default)]
pub(crate) struct Simulation {
    /// Per-mille of requests answered 500.
    failure_permille: AtomicU64,
    /// Added latency in ms.
    latency_ms: AtomicU64,
    /// Requests received.
    pub(crate) hits: AtomicU64,
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SimSettings {
    #[serde(default)]
    failure_rate: Option<f64>,
    #[serde(default)]
    latency_ms: Option<u64>,
}

impl Simulation {
    fn settings(&self) -> SimSettings {
        SimSettings {
            failure_rate: Some(self.failure_permille.load(Ordering::Relaxed) as f64 / 1000.0),
            latency_ms: Some(self.latency_ms.load(Ordering::Relaxed)),
        }
    }
}

async fn simulated(AxState(sim): AxState<Arc<Simulation>>, req: Request) -> Response {
    sim.hits.fetch_add(1, Ordering::Relaxed);
    let latency = sim.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let failure = sim.failure_permille.load(Ordering::Relaxed);
    if failure > 0 && fastrand::u64(0..1000) < failure {
        return (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure").into_response();
    }
    let path = req.uri().path().to_owned();
    let body = match (req.method().as_str(), path.as_str()) {
        ("GET", "/items") => {
            serde_json::json!([{"id": 1, "name": "anchor"}, {"id": 2, "name": "buoy"}])
        }
        ("GET", p) if p.starts_with("/items/") => {
            serde_json::json!({"id": &p["/items/".len()..], "name": "item"})
        }
        ("POST", "/orders") => {
            serde_json::json!({"order": fastrand::u32(..), "status": "accepted"})
        }
        (m, p) => serde_json::json!({"method": m, "path": p}),
    };
    Json(body).into_response()
}

/// `GET` and `PUT /sim`: the simulation's settings, on the gateway's listener.
pub(crate) fn router(sim: Arc<Simulation>) -> Router {
    Router::new()
        .route("/sim", axum::routing::get(get_sim).put(put_sim))
        .with_state(sim)
}

/// Starts the simulated upstream on 127.0.0.1 (a free port).
pub(crate) async fn start_simulation() -> std::io::Result<(SocketAddr, Arc<Simulation>)> {
    let sim = Arc::new(Simulation::default());
    let app = Router::new().fallback(simulated).with_state(sim.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, sim))
}

async fn get_sim(AxState(sim): AxState<Arc<Simulation>>) -> Response {
    Json(sim.settings()).into_response()
}

async fn put_sim(
    AxState(sim): AxState<Arc<Simulation>>,
    body: Result<Json<SimSettings>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(s)) = body else {
        return breakwater::ops::ApiError::bad_request(
            "expected {\"failureRate\": 0..1, \"latencyMs\": n}",
        )
        .into_response();
    };
    if let Some(rate) = s.failure_rate {
        if !(0.0..=1.0).contains(&rate) {
            return breakwater::ops::ApiError::bad_request("`failureRate` must be within 0..1")
                .into_response();
        }
        sim.failure_permille
            .store((rate * 1000.0).round() as u64, Ordering::Relaxed);
    }
    if let Some(ms) = s.latency_ms {
        sim.latency_ms.store(ms.min(60_000), Ordering::Relaxed);
    }
    Json(sim.settings()).into_response()
}
