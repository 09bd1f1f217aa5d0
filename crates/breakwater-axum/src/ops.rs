//! The ops API: an axum `Router` over a breaker registry.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use breakwater_core::fleet::{StoreStats, StoreStatsView};
use breakwater_core::{CircuitBreaker, Clock, Registry, Snapshot, State};
use breakwater_tower::health::{HealthRegistry, HealthReport, health_response};
use futures_util::Stream;
use serde::Serialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use crate::alerts::{AlertBook, AlertFilter, AlertRules};
use crate::config_patch;
use crate::error::ApiError;

/// Default limit on request bodies: 64 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 64 << 10;

/// Builds the ops [`Router`] over a breaker [`Registry`]: every route of the HTTP contract.
///
/// | route | answer |
/// |---|---|
/// | `GET /health`, `/health/live`, `/health/ready` | `application/health+json` |
/// | `GET /v1/circuit-breaker/metrics` | every circuit's numbers and a summary |
/// | `GET /v1/circuit-breaker/{name}` | one circuit, with its config |
/// | `POST /v1/circuit-breaker/reset[/{name}]` | back to CLOSED, empty window, zeroed counters |
/// | `POST /v1/circuit-breaker/{force-open,disable,metrics-only,release}/{name}` | state changes |
/// | `PUT /v1/circuit-breaker/{name}/config` | a partial config change |
/// | `GET /v1/circuit-breaker/events`, `…/events/stream` | recent events; a live SSE stream |
/// | `GET /metrics` | Prometheus / OpenMetrics text |
/// | `GET /v1/alerts`, `POST /v1/alerts/{id}/resolve` | alerts and their lifecycle |
/// | `GET /v1/probes[/{name}]`, `PUT /v1/probes/{name}/config` | active probes, history, settings |
/// | `GET /v1/dashboard` | a live HTML page of every breaker, updated from the event stream (served without the read token) |
///
/// Mutating routes need `Authorization: Bearer <token>` (compared in constant time): 401
/// `UNAUTHORIZED` with `WWW-Authenticate` without a valid one, 403 `OPS_DISABLED` when no token
/// is configured. Read routes are open unless a read token is set. Errors are
/// `{"code", "message"}` JSON; bodies are JSON or empty, at most
/// [`body_limit`](Self::body_limit) bytes; names in paths are percent-decoded.
///
/// ```
/// use breakwater::ops::OpsApi;
/// use breakwater::Registry;
///
/// let registry = Registry::new();
/// let ops: axum::Router = OpsApi::new(&registry).token("s3cret").router();
/// # let _ = ops;
/// ```
#[derive(Clone)]
#[must_use]
pub struct OpsApi {
    registry: Registry,
    health: Option<HealthRegistry>,
    token: Option<String>,
    read_token: Option<String>,
    body_limit: usize,
    fallbacks: crate::prometheus::FallbackCollector,
    stores: Vec<StoreStats>,
    collectors: Vec<Arc<dyn prometheus_client::collector::Collector>>,
    notifiers: Vec<Arc<dyn crate::alerts::Notifier>>,
    #[cfg(feature = "history")]
    history: Option<breakwater_history::History>,
    #[cfg(feature = "history")]
    queue: Option<breakwater_history::queue::WriteQueue>,
}

impl std::fmt::Debug for OpsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsApi")
            .field("registry", &self.registry)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("read_token", &self.read_token.as_ref().map(|_| "…"))
            .field("body_limit", &self.body_limit)
            .field("notifiers", &self.notifiers.len())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Ops {
    pub(crate) registry: Registry,
    pub(crate) health: HealthRegistry,
    /// What `/metrics` serves: the breakers, the probes, the fallbacks.
    metrics: prometheus_client::registry::Registry,
    token: Option<Vec<u8>>,
    read_token: Option<Vec<u8>>,
    pub(crate) alerts: AlertBook,
    stores: Vec<StoreStats>,
    #[cfg(feature = "history")]
    pub(crate) history: Option<breakwater_history::History>,
    #[cfg(feature = "history")]
    pub(crate) queue: Option<breakwater_history::queue::WriteQueue>,
}

pub(crate) type Shared = Arc<Ops>;

impl OpsApi {
    /// The API over `registry`, its health from the registry's breakers alone, writes disabled.
    pub fn new(registry: &Registry) -> Self {
        Self {
            registry: registry.clone(),
            health: None,
            token: None,
            read_token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            fallbacks: crate::prometheus::FallbackCollector::new(),
            stores: Vec::new(),
            collectors: Vec::new(),
            notifiers: Vec::new(),
            #[cfg(feature = "history")]
            history: None,
            #[cfg(feature = "history")]
            queue: None,
        }
    }

    /// Serves `queue` on `GET /v1/queue`: the writes waiting for their circuit to close.
    #[cfg(feature = "history")]
    pub fn queue(mut self, queue: breakwater_history::queue::WriteQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Serves `history` (`GET /v1/circuit-breaker/{name}/history?hours=N`,
    /// `GET /v1/probes/{name}/history?hours=N`), keeps in it every change made through the
    /// API (configs, forced states, probe settings, alert rules) and every alert, and makes
    /// the changes it kept (a previous run's) again when the router is built.
    #[cfg(feature = "history")]
    pub fn history(mut self, history: breakwater_history::History) -> Self {
        self.history = Some(history);
        self
    }

    /// Also serves `collector`'s series on `/metrics` (e.g. `breakwater::guard::GuardCollector`,
    /// or a collector of your own).
    pub fn collector(
        mut self,
        collector: Arc<dyn prometheus_client::collector::Collector>,
    ) -> Self {
        self.collectors.push(collector);
        self
    }

    /// Reports a fleet's state store ([`Fleet::stats`](breakwater_core::fleet::Fleet::stats)):
    /// its `<kind>:store` health check ([`HealthRegistry::add_store`]), its counters under
    /// `stores` in the metrics JSON, and `resilience_state_store_*` on `/metrics`.
    pub fn store(mut self, stats: StoreStats) -> Self {
        self.stores.push(stats);
        self
    }

    /// Tells `notifier` of every alert change (a [`WebhookNotifier`](crate::webhook::WebhookNotifier),
    /// or your own). Alerts are kept up to date by a task on the tokio runtime that builds the
    /// router, so a change is told when it happens.
    pub fn notifier(mut self, notifier: Arc<dyn crate::alerts::Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// Also serves a fallback layer's counters on `/metrics`, under `name`
    /// (`resilience_fallback_invocations_total`).
    pub fn fallback(
        mut self,
        name: &str,
        stats: breakwater_tower::fallback::FallbackStats,
    ) -> Self {
        self.fallbacks = self.fallbacks.fallback(name, stats);
        self
    }

    /// Answers health from `health` (with its probes and checks).
    pub fn health(mut self, health: HealthRegistry) -> Self {
        self.health = Some(health);
        self
    }

    /// The bearer token mutating routes need. Without one they answer 403 `OPS_DISABLED`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// A bearer token read routes then need (the write token works too). Health stays open.
    pub fn read_token(mut self, token: impl Into<String>) -> Self {
        self.read_token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// The largest request body accepted (default 64 KiB); larger ones get 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The router: every route above and no fallback, so it merges into any app (one with a
    /// fallback of its own too). Merge it after the app's breaker layers, so that they do not
    /// wrap it: behind a service breaker, force-opening that breaker would lock operators out
    /// of the API that releases it. Served on its own listener, add
    /// `.fallback(`[`not_found`]`)` for JSON answers to unknown paths.
    pub fn router(self) -> Router {
        let health = self
            .health
            .unwrap_or_else(|| HealthRegistry::new(&self.registry));
        let mut exposition = prometheus_client::registry::Registry::default();
        exposition.register_collector(Box::new(crate::prometheus::RegistryCollector::new(
            &self.registry,
        )));
        exposition.register_collector(Box::new(crate::prometheus::ProbeCollector::new(&health)));
        if !self.fallbacks.is_empty() {
            exposition.register_collector(Box::new(self.fallbacks));
        }
        if !self.stores.is_empty() {
            exposition.register_collector(Box::new(crate::prometheus::StoreCollector::new(
                self.stores.clone(),
            )));
        }
        for store in &self.stores {
            health.add_store(store);
        }
        for collector in self.collectors {
            exposition.register_collector(Box::new(crate::prometheus::Shared(collector)));
        }
        let book = AlertBook::new(&health);
        for n in self.notifiers {
            book.add_notifier(n);
        }
        // On a tokio runtime the rules are evaluated as things happen (and the `tracing`
        // notifier speaks then); without one, whenever alerts are read.
        if tokio::runtime::Handle::try_current().is_ok() {
            book.watch();
        }
        let state: Shared = Arc::new(Ops {
            alerts: book,
            registry: self.registry,
            health,
            metrics: exposition,
            token: self.token.map(String::into_bytes),
            read_token: self.read_token.map(String::into_bytes),
            stores: self.stores,
            #[cfg(feature = "history")]
            history: self.history,
            #[cfg(feature = "history")]
            queue: self.queue,
        });
        #[cfg(feature = "history")]
        if let Some(history) = &state.history {
            crate::history::restore(history, &state);
            crate::history::keep_alerts(history, &state.alerts);
        }
        let reads = Router::new()
            .route("/v1/circuit-breaker/metrics", get(metrics))
            .route("/v1/circuit-breaker/events", get(events))
            .route("/v1/circuit-breaker/events/stream", get(event_stream))
            .route("/v1/circuit-breaker/{name}", get(circuit))
            .route("/metrics", get(prometheus))
            .route("/v1/alerts", get(alerts))
            .route("/v1/alerts/rules", get(alert_rules))
            .route("/v1/probes", get(probes))
            .route("/v1/probes/{name}", get(probe));
        #[cfg(feature = "history")]
        let reads = reads
            .route(
                "/v1/circuit-breaker/{name}/history",
                get(crate::history::breaker_history),
            )
            .route(
                "/v1/probes/{name}/history",
                get(crate::history::probe_history),
            )
            .route("/v1/queue", get(crate::history::queue));
        let reads = reads.route_layer(middleware::from_fn_with_state(state.clone(), require_read));
        let writes = Router::new()
            .route("/v1/circuit-breaker/reset", post(reset_all))
            .route("/v1/circuit-breaker/reset/{name}", post(reset))
            .route("/v1/circuit-breaker/force-open/{name}", post(force_open))
            .route("/v1/circuit-breaker/disable/{name}", post(disable))
            .route(
                "/v1/circuit-breaker/metrics-only/{name}",
                post(metrics_only),
            )
            .route("/v1/circuit-breaker/release/{name}", post(release))
            .route("/v1/circuit-breaker/{name}/config", put(config))
            .route("/v1/alerts/{id}/resolve", post(resolve_alert))
            .route("/v1/alerts/{id}/ack", post(acknowledge_alert))
            .route("/v1/alerts/rules", put(set_alert_rules))
            .route("/v1/probes/{name}/config", put(probe_config))
            .route("/v1/probes/{name}/check", post(probe_check))
            .route_layer(middleware::from_fn_with_state(state.clone(), require_write));
        let health = Router::new()
            .route("/v1/dashboard", get(dashboard))
            .route("/health", get(health_all))
            .route("/health/live", get(health_live))
            .route("/health/ready", get(health_ready));
        reads
            .merge(writes)
            .merge(health)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(self.body_limit))
            .with_state(state)
    }
}

// ----- auth -----

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

fn matches(given: Option<&[u8]>, expected: &[u8]) -> bool {
    given.is_some_and(|g| bool::from(g.ct_eq(expected)))
}

async fn require_write(AxState(ops): AxState<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = &ops.token else {
        return ApiError::ops_disabled().into_response();
    };
    if !matches(bearer(req.headers()), token) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

async fn require_read(AxState(ops): AxState<Shared>, req: Request, next: Next) -> Response {
    if let Some(read) = &ops.read_token {
        let given = bearer(req.headers());
        let write_ok = ops.token.as_ref().is_some_and(|t| matches(given, t));
        if !write_ok && !matches(given, read) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

// ----- helpers -----

/// A path parameter, percent-decoded; an undecodable one is 400 `BAD_REQUEST` in JSON.
pub(crate) struct Name(pub(crate) String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Name {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        <Path<String> as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| Name(name))
            .map_err(|e| ApiError::bad_request(format!("invalid path parameter: {e}")))
    }
}

pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("could not serialize the answer: {e}"),
        )
        .into_response(),
    }
}

/// The breaker called `name`: a registry breaker, a family member (`family:key`) or a
/// family's overflow breaker (`family:<overflow>`). Never creates one.
fn find(registry: &Registry, name: &str) -> Result<CircuitBreaker, ApiError> {
    if let Some(b) = registry.get(name) {
        return Ok(b);
    }
    for family in registry.families() {
        let Some(key) = name
            .strip_prefix(family.name())
            .and_then(|rest| rest.strip_prefix(':'))
        else {
            continue;
        };
        if key == "<overflow>" {
            return Ok(family.overflow().clone());
        }
        if let Some(b) = family.get_existing(key) {
            return Ok(b);
        }
    }
    Err(ApiError::not_found(format!(
        "no circuit breaker named `{name}`"
    )))
}

/// A request body that is empty or JSON (action routes ignore its content).
struct JsonOrEmpty(Option<Value>);

/// A request body that must be a JSON object (config changes).
struct JsonObject(Map<String, Value>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonOrEmpty {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = <Bytes as axum::extract::FromRequest<S>>::from_request(
            Request::from_parts(parts.clone(), body),
            state,
        )
        .await;
        json_body(&parts.headers, bytes).map(JsonOrEmpty)
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonOrEmpty(body) = JsonOrEmpty::from_request(req, state).await?;
        object(body).map(JsonObject)
    }
}

/// A body that must be JSON (or empty): `None` when empty.
fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<Value>, ApiError> {
    let body = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request body is too large",
        ),
        _ => ApiError::bad_request(format!("the request body could not be read: {r}")),
    })?;
    if body.is_empty() {
        return Ok(None);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            ct == "application/json" || ct.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "request bodies must be `application/json`",
        ));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

fn object(body: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match body {
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        None => Err(ApiError::bad_request("a JSON object body is required")),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WriteAnswer<'a> {
    name: &'a str,
    action: &'static str,
    previous_state: State,
    current_state: State,
    at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<breakwater_core::ConfigView>,
}

/// Runs `act` on the named breaker and answers the write contract, with an audit event.
fn write_action(
    ops: &Ops,
    name: &str,
    action: &'static str,
    act: impl FnOnce(&CircuitBreaker) -> Result<(), ApiError>,
) -> Response {
    let breaker = match find(&ops.registry, name) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let previous = breaker.state();
    if let Err(e) = act(&breaker) {
        return e.into_response();
    }
    let current = breaker.state();
    #[cfg(feature = "history")]
    crate::history::keep_breaker(ops.history.as_ref(), &breaker, action);
    tracing::info!(
        target: "breakwater::audit",
        circuit = name,
        action,
        from = %previous,
        to = %current,
        "ops action"
    );
    let config = (action == "config").then(|| breaker.config().view());
    json_response(
        StatusCode::OK,
        &WriteAnswer {
            name,
            action,
            previous_state: previous,
            current_state: current,
            at: ops.registry.clock().epoch_millis(),
            config,
        },
    )
}

// ----- read routes -----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CircuitMetrics {
    state: State,
    failures: u64,
    successes: u64,
    slow_calls: u64,
    not_permitted_calls: u64,
    consecutive_failures: u64,
    consecutive_successes: u64,
    last_failure_time: Option<u64>,
    last_success_time: Option<u64>,
    opened_at: Option<u64>,
    total_requests: u64,
    circuit_opens: u64,
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    buffered_calls: u64,
    uptime: u64,
}

impl From<&Snapshot> for CircuitMetrics {
    fn from(s: &Snapshot) -> Self {
        Self {
            state: s.state,
            failures: s.failures,
            successes: s.successes,
            slow_calls: s.slow_calls,
            not_permitted_calls: s.not_permitted_calls,
            consecutive_failures: s.consecutive_failures,
            consecutive_successes: s.consecutive_successes,
            last_failure_time: s.last_failure_time,
            last_success_time: s.last_success_time,
            opened_at: s.opened_at,
            total_requests: s.total_requests,
            circuit_opens: s.circuit_opens,
            failure_rate: s.failure_rate,
            slow_call_rate: s.slow_call_rate,
            buffered_calls: s.buffered_calls,
            uptime: s.uptime,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    total_failures: u64,
    total_successes: u64,
    total_requests: u64,
    open_circuits: Vec<String>,
    average_failure_rate: Option<f64>,
}

#[derive(Serialize)]
struct MetricsAnswer {
    timestamp: u64,
    circuits: BTreeMap<String, CircuitMetrics>,
    summary: Summary,
    /// The fleet's state stores, when breakers are shared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stores: Vec<StoreStatsView>,
}

/// The metrics document of the contract, for every breaker of `registry`.
pub fn metrics_json(registry: &Registry) -> Value {
    serde_json::to_value(metrics_answer(registry)).unwrap_or(Value::Null)
}

fn metrics_answer(registry: &Registry) -> MetricsAnswer {
    let mut circuits = BTreeMap::new();
    let mut summary = Summary {
        total_failures: 0,
        total_successes: 0,
        total_requests: 0,
        open_circuits: Vec::new(),
        average_failure_rate: None,
    };
    let (mut rate_sum, mut rates) = (0.0, 0u32);
    for s in registry.snapshots() {
        summary.total_failures += s.failures;
        summary.total_successes += s.successes;
        summary.total_requests += s.total_requests;
        if matches!(s.state, State::Open | State::ForcedOpen) {
            summary.open_circuits.push(s.name.clone());
        }
        if let Some(r) = s.failure_rate {
            rate_sum += r;
            rates += 1;
        }
        circuits.insert(s.name.clone(), CircuitMetrics::from(&s));
    }
    summary.average_failure_rate = (rates > 0).then(|| rate_sum / f64::from(rates));
    MetricsAnswer {
        timestamp: registry.clock().epoch_millis(),
        circuits,
        summary,
        stores: Vec::new(),
    }
}

async fn metrics(AxState(ops): AxState<Shared>) -> Response {
    let mut answer = metrics_answer(&ops.registry);
    answer.stores = ops.stores.iter().map(StoreStats::view).collect();
    json_response(StatusCode::OK, &answer)
}

async fn circuit(AxState(ops): AxState<Shared>, Name(name): Name) -> Response {
    match find(&ops.registry, &name) {
        Ok(b) => json_response(StatusCode::OK, &b.snapshot()),
        Err(e) => e.into_response(),
    }
}

async fn events(AxState(ops): AxState<Shared>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "events": ops.registry.recent_events(),
            "dropped": ops.registry.dropped_events(),
        }),
    )
}

async fn event_stream(
    AxState(ops): AxState<Shared>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let subscription = ops.registry.subscribe();
    let stream = futures_util::stream::unfold(subscription, |sub| async move {
        let event = sub.recv().await?;
        let kind = serde_json::to_value(&event.kind)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "EVENT".to_owned());
        let sse = SseEvent::default()
            .event(kind)
            .json_data(&event)
            .unwrap_or_else(|_| SseEvent::default().comment("unserializable event"));
        Some((Ok(sse), sub))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The live page: static HTML that reads the API itself (so it is served without the read
/// token, and asks for the token when reads need one).
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'",
            ),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

async fn prometheus(AxState(ops): AxState<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::prometheus::CONTENT_TYPE),
        )],
        crate::prometheus::encode(&ops.metrics),
    )
        .into_response()
}

async fn alerts(
    AxState(ops): AxState<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut filter = AlertFilter::default();
    for (key, value) in &query {
        let quoted = Value::String(value.clone());
        let bad = |what: &str| {
            ApiError::bad_request(format!("invalid `{key}` {value:?}: expected {what}"))
                .into_response()
        };
        match key.as_str() {
            "status" => match serde_json::from_value(quoted) {
                Ok(s) => filter.status = Some(s),
                Err(_) => return bad("firing, acknowledged or resolved"),
            },
            "severity" => match serde_json::from_value(Value::String(value.to_uppercase())) {
                Ok(s) => filter.severity = Some(s),
                Err(_) => return bad("LOW, MEDIUM, HIGH or CRITICAL"),
            },
            "circuit" => filter.circuit = Some(value.clone()),
            _ => {
                return ApiError::bad_request(format!(
                    "unknown parameter `{key}` (status, severity and circuit are known)"
                ))
                .into_response();
            }
        }
    }
    json_response(
        StatusCode::OK,
        &json!({ "alerts": ops.alerts.list(&filter) }),
    )
}

async fn alert_rules(AxState(ops): AxState<Shared>) -> Response {
    json_response(StatusCode::OK, &ops.alerts.rules())
}

async fn set_alert_rules(AxState(ops): AxState<Shared>, JsonObject(body): JsonObject) -> Response {
    let rules: AlertRules = match serde_path_to_error::deserialize(Value::Object(body)) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            return ApiError::invalid_config(format!("`{path}`: {}", e.into_inner()))
                .into_response();
        }
    };
    if let Err(e) = ops.alerts.set_rules(rules) {
        return ApiError::invalid_config(e).into_response();
    }
    #[cfg(feature = "history")]
    crate::history::keep(
        ops.history.as_ref(),
        "alertRules",
        "",
        serde_json::to_value(ops.alerts.rules()).unwrap_or(Value::Null),
    );
    tracing::info!(target: "breakwater::audit", "alert rules changed");
    json_response(StatusCode::OK, &ops.alerts.rules())
}

/// An optional `{"note": "..."}` body.
fn note_of(body: Option<Value>) -> Result<Option<String>, ApiError> {
    match body {
        None => Ok(None),
        Some(Value::Object(mut m)) => {
            let note = match m.remove("note") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => return Err(ApiError::bad_request("`note` must be a string")),
            };
            if let Some(k) = m.keys().next() {
                return Err(ApiError::bad_request(format!(
                    "unknown field `{k}` (only `note`)"
                )));
            }
            Ok(note)
        }
        Some(_) => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}

async fn acknowledge_alert(
    AxState(ops): AxState<Shared>,
    Name(id): Name,
    JsonOrEmpty(body): JsonOrEmpty,
) -> Response {
    alert_action(&id, body, "acknowledged", |id, note| {
        ops.alerts.acknowledge(id, note)
    })
}

/// An operator's action on alert `id` (with an optional note): 404 for an unknown id, an audit
/// event, the alert as it now is.
fn alert_action(
    id: &str,
    body: Option<Value>,
    done: &str,
    act: impl FnOnce(u64, Option<String>) -> Option<crate::alerts::Alert>,
) -> Response {
    let note = match note_of(body) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let Some(alert) = id.parse().ok().and_then(|id| act(id, note)) else {
        return ApiError::not_found(format!("no alert with id `{id}`")).into_response();
    };
    tracing::info!(target: "breakwater::audit", alert = alert.id, circuit = %alert.circuit, "alert {done}");
    json_response(StatusCode::OK, &alert)
}

async fn probes(AxState(ops): AxState<Shared>) -> Response {
    let views: Vec<_> = ops.health.probes().iter().map(|p| p.view()).collect();
    json_response(StatusCode::OK, &json!({ "probes": views }))
}

async fn probe(AxState(ops): AxState<Shared>, Name(name): Name) -> Response {
    match ops.health.probe(&name) {
        Some(p) => json_response(StatusCode::OK, &p.view()),
        None => ApiError::not_found(format!("no probe named `{name}`")).into_response(),
    }
}

fn health_answer(report: &HealthReport, method: &Method) -> Response {
    health_response(report, method == Method::HEAD).into_response()
}

async fn health_all(AxState(ops): AxState<Shared>, method: Method) -> Response {
    health_answer(&ops.health.report(), &method)
}

async fn health_live(AxState(ops): AxState<Shared>, method: Method) -> Response {
    health_answer(&ops.health.liveness(), &method)
}

async fn health_ready(AxState(ops): AxState<Shared>, method: Method) -> Response {
    health_answer(&ops.health.readiness(), &method)
}

// ----- write routes -----

macro_rules! action {
    ($name:ident, $action:literal, |$b:ident| $body:expr) => {
        async fn $name(
            AxState(ops): AxState<Shared>,
            Name(name): Name,
            _body: JsonOrEmpty,
        ) -> Response {
            write_action(&ops, &name, $action, |$b| {
                $body;
                Ok(())
            })
        }
    };
}

action!(reset, "reset", |b| b.reset());
action!(force_open, "force-open", |b| b.force_open());
action!(disable, "disable", |b| b.disable());
action!(metrics_only, "metrics-only", |b| b.metrics_only());
action!(release, "release", |b| {
    if matches!(
        b.state(),
        State::ForcedOpen | State::Disabled | State::MetricsOnly
    ) {
        b.close();
    }
});

async fn reset_all(AxState(ops): AxState<Shared>, _body: JsonOrEmpty) -> Response {
    let mut circuits = Vec::new();
    for b in ops.registry.breakers() {
        let previous = b.state();
        b.reset();
        circuits.push(json!({
            "name": b.name(),
            "previousState": previous,
            "currentState": b.state(),
        }));
    }
    tracing::info!(target: "breakwater::audit", action = "reset", circuits = circuits.len(), "ops action on every circuit");
    json_response(
        StatusCode::OK,
        &json!({
            "action": "reset",
            "circuits": circuits,
            "at": ops.registry.clock().epoch_millis(),
        }),
    )
}

async fn config(
    AxState(ops): AxState<Shared>,
    Name(name): Name,
    JsonObject(patch): JsonObject,
) -> Response {
    write_action(&ops, &name, "config", |b| {
        let config = config_patch::apply(&b.config(), &patch)?;
        b.update_config(config)
            .map_err(|e| config_patch::config_error(&e))
    })
}

async fn resolve_alert(
    AxState(ops): AxState<Shared>,
    Name(id): Name,
    JsonOrEmpty(body): JsonOrEmpty,
) -> Response {
    alert_action(&id, body, "resolved", |id, note| {
        ops.alerts.resolve(id, note)
    })
}

async fn probe_config(
    AxState(ops): AxState<Shared>,
    Name(name): Name,
    JsonObject(patch): JsonObject,
) -> Response {
    let Some(probe) = ops.health.probe(&name) else {
        return ApiError::not_found(format!("no probe named `{name}`")).into_response();
    };
    // `running` starts or stops the probe; every other field is one of its settings.
    let mut patch = patch;
    let running = match patch.remove("running") {
        None => None,
        Some(Value::Bool(on)) => Some(on),
        Some(_) => {
            return ApiError::invalid_config("invalid `running`: must be true or false")
                .into_response();
        }
    };
    // Merged under the probe's lock, so that concurrent changes of other fields are kept.
    let mut refused = None;
    let updated = probe.update(|s| match config_patch::merge(&*s, &patch) {
        Ok(merged) => *s = merged,
        Err(e) => refused = Some(e),
    });
    if let Some(e) = refused {
        return e.into_response();
    }
    if let Err(e) = updated {
        return config_patch::probe_error(&e).into_response();
    }
    match running {
        Some(true) => probe.start(),
        Some(false) => probe.stop(),
        None => {}
    }
    #[cfg(feature = "history")]
    crate::history::keep(ops.history.as_ref(), "probeSettings", &name, {
        let mut kept = serde_json::to_value(probe.settings()).unwrap_or(Value::Null);
        if let (Some(m), Some(on)) = (kept.as_object_mut(), running) {
            m.insert("running".into(), Value::Bool(on));
        }
        kept
    });
    tracing::info!(target: "breakwater::audit", probe = %name, "probe settings changed");
    json_response(StatusCode::OK, &probe.view())
}

/// Runs the probe now (beside its schedule) and answers the run's result with the probe.
async fn probe_check(
    AxState(ops): AxState<Shared>,
    Name(name): Name,
    _body: JsonOrEmpty,
) -> Response {
    let Some(probe) = ops.health.probe(&name) else {
        return ApiError::not_found(format!("no probe named `{name}`")).into_response();
    };
    let result = probe.run_once().await;
    tracing::info!(target: "breakwater::audit", probe = %name, ok = result.ok, "probe run on request");
    json_response(
        StatusCode::OK,
        &json!({ "result": result, "probe": probe.view() }),
    )
}

// ----- fallbacks -----

/// A fallback answering 404 `NOT_FOUND` in the ops API's JSON error form, for an ops router
/// served on its own: `OpsApi::new(&registry).router().fallback(not_found)`.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no route for `{}`", uri.path())).into_response()
}

async fn method_not_allowed(method: Method) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("`{method}` is not allowed here"),
    )
    .into_response()
}
