//! The strategies, why a fallback was needed, and the chain that tries them in order.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use breakwater_core::{EventKind, Registry};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use tower::util::{BoxCloneSyncService, ServiceExt};

use super::body::FallbackBody;
use super::cache::{Cached, StaleCache};
use crate::classify::HttpFailures;
use crate::error::{BoxError, CircuitOpen};

/// The header every fallback answer carries, naming the strategy that gave it.
pub const X_FALLBACK: &str = "x-fallback";
/// On an answer that is not the dependency's, the strategies that could not help, and why.
pub const X_FALLBACK_SKIPPED: &str = "x-fallback-skipped";

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type FunctionFn = dyn Fn(&Parts, &Failure) -> BoxFuture<Response<Bytes>> + Send + Sync;
pub(crate) type BackupService =
    BoxCloneSyncService<Request<Bytes>, Response<UnsyncBoxBody<Bytes, BoxError>>, BoxError>;

/// Why the dependency's answer was not good enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// A circuit refused the call ([`CircuitOpen`]): the dependency was not called.
    CircuitOpen,
    /// The call timed out: tower's `Elapsed`, an I/O `TimedOut` error, or a 408 or 504 answer.
    Timeout,
    /// The inner service failed with an error.
    Error,
    /// The answer was a failure by the layer's classifier (5xx by default).
    FailedResponse,
}

impl FailureKind {
    /// `circuit_open`, `timeout`, `error` or `failed_response`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::CircuitOpen => "circuit_open",
            FailureKind::Timeout => "timeout",
            FailureKind::Error => "error",
            FailureKind::FailedResponse => "failed_response",
        }
    }
}

/// What went wrong, as a fallback function sees it.
pub struct Failure {
    kind: FailureKind,
    open: Option<CircuitOpen>,
    error: Option<BoxError>,
    status: Option<StatusCode>,
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("kind", &self.kind)
            .field("open", &self.open)
            .field("error", &self.error.as_ref().map(ToString::to_string))
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(open) = &self.open {
            return open.fmt(f);
        }
        if let Some(e) = &self.error {
            return e.fmt(f);
        }
        match self.status {
            Some(s) => write!(f, "the dependency answered {s}"),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

impl Failure {
    pub(crate) fn open(open: CircuitOpen, status: Option<StatusCode>) -> Self {
        Self {
            kind: FailureKind::CircuitOpen,
            open: Some(open),
            error: None,
            status,
        }
    }

    pub(crate) fn from_error(kind: FailureKind, error: BoxError) -> Self {
        Self {
            kind,
            open: None,
            error: Some(error),
            status: None,
        }
    }

    pub(crate) fn response(kind: FailureKind, status: StatusCode) -> Self {
        Self {
            kind,
            open: None,
            error: None,
            status: Some(status),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The refusal, when a circuit refused the call.
    pub fn circuit_open(&self) -> Option<&CircuitOpen> {
        self.open.as_ref()
    }

    /// The inner service's error, when it failed with one.
    pub fn error(&self) -> Option<&BoxError> {
        self.error.as_ref()
    }

    /// The dependency's status, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }
}

#[derive(Clone)]
pub(crate) enum Strategy {
    Fixed(Arc<Fixed>),
    Function(Arc<FunctionFn>),
    Stale(StaleCache),
    Backup(BackupService),
}

impl Strategy {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Strategy::Fixed(_) => "fixed",
            Strategy::Function(_) => "function",
            Strategy::Stale(_) => "stale",
            Strategy::Backup(_) => "backup",
        }
    }
}

pub(crate) struct Fixed {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Fixed {
    pub(crate) fn from_response<T: Into<Bytes>>(res: Response<T>) -> Self {
        let (parts, body) = res.into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: body.into(),
        }
    }

    fn response(&self) -> Response<Bytes> {
        let mut res = Response::new(self.body.clone());
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        res
    }
}

/// Uses of each strategy, counted per layer; clones share them.
#[derive(Debug, Clone, Default)]
pub struct FallbackStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    fixed: AtomicU64,
    function: AtomicU64,
    stale: AtomicU64,
    backup: AtomicU64,
    none: AtomicU64,
}

impl FallbackStats {
    /// How many answers the strategy gave: `fixed`, `function`, `stale` or `backup` (0 for any
    /// other name).
    pub fn uses(&self, strategy: &str) -> u64 {
        let c = &self.counters;
        match strategy {
            "fixed" => c.fixed.load(Ordering::Relaxed),
            "function" => c.function.load(Ordering::Relaxed),
            "stale" => c.stale.load(Ordering::Relaxed),
            "backup" => c.backup.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// How many answers every strategy gave together.
    pub fn total(&self) -> u64 {
        ["fixed", "function", "stale", "backup"]
            .iter()
            .map(|s| self.uses(s))
            .sum()
    }

    /// How many failures no strategy could answer (they got the default error answer).
    pub fn unanswered(&self) -> u64 {
        self.counters.none.load(Ordering::Relaxed)
    }

    fn count(&self, strategy: &str) {
        let c = &self.counters;
        let counter = match strategy {
            "fixed" => &c.fixed,
            "function" => &c.function,
            "stale" => &c.stale,
            "backup" => &c.backup,
            _ => &c.none,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the layer shares with its services and futures.
#[derive(Default, Clone)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) strategies: Vec<Strategy>,
    pub(crate) on_errors: bool,
    pub(crate) on_timeouts: bool,
    pub(crate) failed_responses: Option<HttpFailures>,
    pub(crate) events: Option<Registry>,
    pub(crate) stats: FallbackStats,
    /// A strategy needs the request's head after the call (function, backup).
    pub(crate) keep_parts: bool,
    pub(crate) stale: Option<StaleCache>,
}

/// Why a request could not be replayed to a backup.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NoReplay {
    NotIdempotent,
    BodyNotBuffered,
    BodyTooLarge(usize),
}

impl fmt::Display for NoReplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoReplay::NotIdempotent => f.write_str(
                "the request is not idempotent and its body was not buffered, so it was not replayed",
            ),
            NoReplay::BodyNotBuffered => f.write_str(
                "the request has a body and body replay is off, so it was not replayed",
            ),
            NoReplay::BodyTooLarge(limit) => write!(
                f,
                "the request body is streamed or over {limit} bytes, so it was not buffered and was not replayed"
            ),
        }
    }
}

/// What a call keeps for its fallbacks, when a strategy needs anything.
#[derive(Default)]
pub(crate) struct Saved {
    /// The request's head and body, for a function or a backup (boxed: only they need it).
    pub(crate) kept: Option<Box<Kept>>,
    /// What the stale cache held for the request when it started; `None` when its answers
    /// are not cached.
    pub(crate) cached: Option<Cached>,
}

/// The request's head and, for a replay, its body (or why there is none).
pub(crate) struct Kept {
    pub(crate) parts: Parts,
    pub(crate) replay: Option<Result<Bytes, NoReplay>>,
}

/// Everything the chain needs once the primary failed.
pub(crate) struct Attempt<B> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) failure: Failure,
    pub(crate) saved: Option<Saved>,
    pub(crate) grpc: bool,
    /// The dependency's own answer, returned when no strategy helps.
    pub(crate) original: Option<Response<B>>,
}

impl Shared {
    /// Whether a response with `status` needs no further look (the common case).
    #[inline]
    pub(crate) fn passes_status(&self, status: StatusCode) -> bool {
        status.as_u16() < 400 || (!self.on_timeouts && self.failed_responses.is_none())
    }

    /// Whether calls keep anything for the strategies (the request's head, a cache key).
    #[inline]
    pub(crate) fn saves(&self) -> bool {
        self.keep_parts || self.stale.is_some()
    }

    pub(crate) fn has_backup(&self) -> bool {
        self.strategies
            .iter()
            .any(|s| matches!(s, Strategy::Backup(_)))
    }

    pub(crate) fn stats_unanswered(&self) {
        self.stats.count("none");
    }

    fn used(&self, failure: &Failure, strategy: &'static str) {
        self.stats.count(strategy);
        crate::span::fallback(strategy);
        if let Some(registry) = &self.events {
            let circuit = failure.open.as_ref().map_or(&*self.name, |o| o.name());
            registry.emit(circuit, EventKind::FallbackUsed { strategy });
        }
    }
}

fn mark<B>(mut res: Response<B>, strategy: &'static str) -> Response<B> {
    res.headers_mut()
        .insert(X_FALLBACK, HeaderValue::from_static(strategy));
    res
}

/// Tries the strategies in order; without one that answers, the default answer.
pub(crate) async fn run<B>(attempt: Attempt<B>) -> Response<FallbackBody<B>> {
    let Attempt {
        shared,
        failure,
        saved,
        grpc,
        original,
    } = attempt;
    let saved = saved.unwrap_or_default();
    let mut skipped: Vec<String> = Vec::new();
    for strategy in &shared.strategies {
        let name = strategy.name();
        match strategy {
            Strategy::Fixed(fixed) => {
                shared.used(&failure, name);
                return mark(fixed.response(), name).map(FallbackBody::full);
            }
            Strategy::Function(f) => {
                let Some(Kept { parts, .. }) = saved.kept.as_deref() else {
                    continue;
                };
                let res = f(parts, &failure).await;
                shared.used(&failure, name);
                return mark(res, name).map(FallbackBody::full);
            }
            Strategy::Stale(cache) => {
                let Some(cached) = &saved.cached else {
                    continue;
                };
                match cached.entry.as_ref().filter(|e| cache.is_fresh(e)) {
                    Some(entry) => {
                        shared.used(&failure, name);
                        return mark(cache.response(entry), name).map(FallbackBody::full);
                    }
                    None => {
                        skipped.push("stale: nothing fresh cached for this request".into());
                    }
                }
            }
            Strategy::Backup(service) => {
                let Some(Kept {
                    parts,
                    replay: Some(replay),
                }) = saved.kept.as_deref()
                else {
                    continue;
                };
                let body = match replay {
                    Ok(body) => body.clone(),
                    Err(why) => {
                        skipped.push(format!("backup: {why}"));
                        continue;
                    }
                };
                let req = Request::from_parts(parts.clone(), body);
                match service.clone().oneshot(req).await {
                    Ok(res) if backup_answered(&shared, &res) => {
                        shared.used(&failure, name);
                        return mark(res, name).map(FallbackBody::boxed);
                    }
                    Ok(res) => skipped.push(format!("backup: it answered {}", res.status())),
                    Err(e) => skipped.push(format!("backup: {}", flatten(&*e))),
                }
            }
        }
    }
    shared.stats.count("none");
    default_answer(failure, original, grpc, &skipped)
}

/// A backup's answer is taken unless its own circuit refused or it failed by the classifier.
fn backup_answered<B>(shared: &Shared, res: &Response<B>) -> bool {
    if CircuitOpen::in_response(res).is_some() {
        return false;
    }
    match shared.failed_responses {
        Some(classifier) => !super::is_failed_response(classifier, res),
        None => true,
    }
}

fn flatten(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// No strategy answered: the dependency's own answer if there was one, else the error as the
/// JSON error contract (gRPC: a status).
pub(crate) fn default_answer<B>(
    failure: Failure,
    original: Option<Response<B>>,
    grpc: bool,
    skipped: &[String],
) -> Response<FallbackBody<B>> {
    let mut res = match original {
        Some(res) => res.map(FallbackBody::inner),
        None => error_response(&failure, grpc, skipped).map(FallbackBody::full),
    };
    if !skipped.is_empty()
        && let Ok(v) = HeaderValue::from_str(&skipped.join("; "))
    {
        res.headers_mut().insert(X_FALLBACK_SKIPPED, v);
    }
    res
}

fn error_response(failure: &Failure, grpc: bool, skipped: &[String]) -> Response<Bytes> {
    match &failure.open {
        Some(open) if grpc => open.grpc_response(),
        Some(open) => open.http_response_with(crate::answer::skipped_field(skipped)),
        None => crate::answer::upstream_error(
            failure.kind == FailureKind::Timeout,
            &failure.to_string(),
            grpc,
            skipped,
        ),
    }
}
