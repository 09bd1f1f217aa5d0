//! Writes accepted while a circuit is open, stored durably and replayed once it closes.
//!
//! [`QueueLayer`] goes outside the breakers it relies on. While its breaker refuses calls, a
//! deferrable request (a `POST`, `PUT`, `PATCH` or `DELETE` carrying `Idempotency-Key`, or
//! one the layer's predicate marks) is stored in `queue.db` in the state dir and answered
//! `202` `{"code": "QUEUED", "id": …}`; any other request goes through as usual. Once the
//! breaker is CLOSED again, a task replays the queue in order, at a bounded rate, through the
//! service below the layer (so through the breakers): an answer under 500 (but 408 and 429)
//! applies an entry; anything else stops the replay until the breaker closes again (or, if it
//! stays closed, after a backoff doubling from 1 s to a minute). A key (per method and path)
//! is queued and applied at most once: the same key again answers its entry, also once the
//! breaker is closed while the entry still waits. An applied entry keeps only its key.
//! Bounded in entries and bytes: a full queue answers `507` `QUEUE_FULL`, a store that cannot
//! write answers `503` `QUEUE_UNAVAILABLE`, a body over the limit `413`; never a silent loss.

use std::future::Future;
use std::marker::PhantomData;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use breakwater_core::{CircuitBreaker, ConfigError, State};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tower_layer::Layer;
use tower_service::Service;

/// The queue's file in the state dir.
pub const QUEUE_FILE: &str = "queue.db";
/// Entries waiting at most, by default.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;
/// Bytes of waiting request bodies at most, by default (64 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Largest body stored, by default (1 MiB).
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Replayed requests per second at most, by default.
pub const DEFAULT_REPLAY_RATE: u32 = 20;

/// One stored request as `GET /v1/queue` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueEntry {
    /// Its id, in arrival order.
    pub id: i64,
    /// Its `Idempotency-Key`, if it had one.
    pub key: Option<String>,
    /// The method.
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// When it was stored, ms since the Unix epoch.
    pub at: u64,
    /// Its body's size.
    pub bytes: u64,
    /// `queued`, or `applied` once replayed.
    pub status: String,
    /// Replays tried.
    pub attempts: u32,
}

/// The queue's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    /// Entries waiting, oldest first (at most 1,000 shown).
    pub queued: Vec<QueueEntry>,
    /// Entries waiting in all.
    pub queued_count: u64,
    /// Their bytes.
    pub queued_bytes: u64,
    /// Entries applied since the file was created.
    pub applied: u64,
    /// The limits.
    pub max_entries: usize,
    /// The limit of bytes.
    pub max_bytes: u64,
}

/// Builds a [`WriteQueue`].
#[derive(Debug)]
#[must_use]
pub struct WriteQueueBuilder {
    max_entries: usize,
    max_bytes: u64,
    max_body: usize,
    replay_rate: u32,
}

impl WriteQueueBuilder {
    /// Entries waiting at most (default 10,000).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Bytes of waiting bodies at most (default 64 MiB).
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
    }

    /// Largest body stored (default 1 MiB); a larger one is answered 413.
    pub fn max_body(mut self, n: usize) -> Self {
        self.max_body = n;
        self
    }

    /// Replayed requests per second at most (default 20).
    pub fn replay_rate(mut self, per_second: u32) -> Self {
        self.replay_rate = per_second;
        self
    }

    /// Opens (or creates) the queue in `dir`. Refuses a zero limit; an unusable file is an
    /// error saying why (the caller then goes without a queue).
    pub fn open(self, dir: impl AsRef<Path>) -> Result<WriteQueue, QueueError> {
        for (field, zero) in [
            ("max_entries", self.max_entries == 0),
            ("max_bytes", self.max_bytes == 0),
            ("max_body", self.max_body == 0),
            ("replay_rate", self.replay_rate == 0),
        ] {
            if zero {
                return Err(QueueError::Config(ConfigError::new(
                    field,
                    "must be more than 0",
                )));
            }
        }
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| QueueError::Store(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(QUEUE_FILE);
        let store = |e: rusqlite::Error| QueueError::Store(format!("{}: {e}", path.display()));
        let conn = Connection::open(&path).map_err(store)?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(store)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(store)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(store)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS entries (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE, at INTEGER NOT NULL,
                 method TEXT NOT NULL, uri TEXT NOT NULL, headers TEXT NOT NULL,
                 body BLOB NOT NULL, bytes INTEGER NOT NULL,
                 applied INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS entries_waiting ON entries (applied, id);
             PRAGMA user_version = 1;",
        )
        .map_err(store)?;
        let waiting: i64 = conn
            .query_row("SELECT COUNT(*) FROM entries WHERE applied = 0", [], |r| {
                r.get(0)
            })
            .map_err(store)?;
        Ok(WriteQueue {
            inner: Arc::new(QueueInner {
                conn: Mutex::new(Some(conn)),
                max_entries: self.max_entries,
                max_bytes: self.max_bytes,
                max_body: self.max_body,
                replay_rate: self.replay_rate,
                replaying: AtomicBool::new(false),
                waiting: std::sync::atomic::AtomicU64::new(waiting as u64),
            }),
        })
    }
}

/// Why a queue could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// An invalid setting.
    Config(ConfigError),
    /// The file cannot be used.
    Store(String),
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueError::Config(e) => e.fmt(f),
            QueueError::Store(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for QueueError {}

/// A durable queue of requests; clones share it.
#[derive(Debug, Clone)]
pub struct WriteQueue {
    inner: Arc<QueueInner>,
}

#[derive(Debug)]
struct QueueInner {
    /// `None` once closed.
    conn: Mutex<Option<Connection>>,
    max_entries: usize,
    max_bytes: u64,
    max_body: usize,
    replay_rate: u32,
    /// Whether a replay task runs (one per queue).
    replaying: AtomicBool,
    /// Entries waiting (a keyed write while the breaker is closed is looked up only then).
    waiting: std::sync::atomic::AtomicU64,
}

/// A stored request, read back for its replay.
struct Stored {
    id: i64,
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// What storing a request came to.
enum Storing {
    Queued(i64),
    /// The same key was queued (or applied) before: that entry.
    Known(i64, bool),
    Full,
}

impl WriteQueue {
    /// A queue with the default limits: open it with [`WriteQueueBuilder::open`].
    pub fn builder() -> WriteQueueBuilder {
        WriteQueueBuilder {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_body: DEFAULT_MAX_BODY,
            replay_rate: DEFAULT_REPLAY_RATE,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.inner.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the file (so that another process may open it); the replay stops, and requests
    /// that would be queued are answered 503 `QUEUE_UNAVAILABLE`. For a graceful shutdown.
    pub fn close(&self) {
        self.conn().take();
    }

    fn is_closed(&self) -> bool {
        self.conn().is_none()
    }

    fn store(
        &self,
        key: Option<&str>,
        method: &str,
        uri: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> rusqlite::Result<Storing> {
        let mut guard = self.conn();
        let conn = guard.as_mut().ok_or_else(closed)?;
        let tx = conn.transaction()?;
        if let Some(key) = key
            && let Some((id, applied)) = tx
                .query_row(
                    "SELECT id, applied FROM entries WHERE key = ?1",
                    [key],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? != 0)),
                )
                .optional()?
        {
            return Ok(Storing::Known(id, applied));
        }
        let (count, bytes): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM entries WHERE applied = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if count as usize >= self.inner.max_entries
            || bytes as u64 + body.len() as u64 > self.inner.max_bytes
        {
            return Ok(Storing::Full);
        }
        let headers = serde_json::to_string(headers).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "INSERT INTO entries (key, at, method, uri, headers, body, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![key, now_ms() as i64, method, uri, headers, body, body.len() as i64],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        Ok(Storing::Queued(id))
    }

    /// The id of the waiting entry stored under `key`, if there is one.
    fn waiting_id(&self, key: &str) -> rusqlite::Result<Option<i64>> {
        let guard = self.conn();
        let conn = guard.as_ref().ok_or_else(closed)?;
        conn.query_row(
            "SELECT id FROM entries WHERE key = ?1 AND applied = 0",
            [key],
            |r| r.get(0),
        )
        .optional()
    }

    fn next(&self) -> rusqlite::Result<Option<Stored>> {
        let guard = self.conn();
        let Some(conn) = guard.as_ref() else {
            return Ok(None);
        };
        conn.query_row(
                "SELECT id, method, uri, headers, body FROM entries WHERE applied = 0 ORDER BY id LIMIT 1",
                [],
                |r| {
                    let headers: String = r.get(3)?;
                    Ok(Stored {
                        id: r.get(0)?,
                        method: r.get(1)?,
                        uri: r.get(2)?,
                        headers: serde_json::from_str(&headers).unwrap_or_default(),
                        body: r.get(4)?,
                    })
                },
            )
            .optional()
    }

    fn mark(&self, id: i64, applied: bool) -> rusqlite::Result<()> {
        let guard = self.conn();
        let conn = guard.as_ref().ok_or_else(closed)?;
        // An applied entry keeps its key (a repeat is still told apart), not its request.
        let changed = conn.execute(
            "UPDATE entries SET attempts = attempts + 1, applied = ?2,
                 body = CASE WHEN ?2 THEN x'' ELSE body END,
                 headers = CASE WHEN ?2 THEN '[]' ELSE headers END
             WHERE id = ?1 AND applied = 0",
            params![id, applied as i64],
        )?;
        if applied && changed > 0 {
            self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// What is waiting, and the counts.
    pub fn view(&self) -> QueueView {
        let guard = self.conn();
        let read = || -> rusqlite::Result<QueueView> {
            let conn = guard.as_ref().ok_or_else(closed)?;
            let mut q = conn.prepare(
                "SELECT id, key, method, uri, at, bytes, applied, attempts FROM entries
                 WHERE applied = 0 ORDER BY id LIMIT 1000",
            )?;
            let queued = q
                .query_map([], |r| {
                    Ok(QueueEntry {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        method: r.get(2)?,
                        uri: r.get(3)?,
                        at: r.get::<_, i64>(4)? as u64,
                        bytes: r.get::<_, i64>(5)? as u64,
                        status: if r.get::<_, i64>(6)? != 0 {
                            "applied"
                        } else {
                            "queued"
                        }
                        .into(),
                        attempts: r.get::<_, i64>(7)? as u32,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let (count, bytes, applied): (i64, i64, i64) = conn.query_row(
                "SELECT COALESCE(SUM(applied = 0), 0), COALESCE(SUM(CASE WHEN applied = 0 THEN bytes END), 0),
                        COALESCE(SUM(applied), 0) FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(QueueView {
                queued,
                queued_count: count as u64,
                queued_bytes: bytes as u64,
                applied: applied as u64,
                max_entries: self.inner.max_entries,
                max_bytes: self.inner.max_bytes,
            })
        };
        read().unwrap_or(QueueView {
            queued: Vec::new(),
            queued_count: 0,
            queued_bytes: 0,
            applied: 0,
            max_entries: self.inner.max_entries,
            max_bytes: self.inner.max_bytes,
        })
    }
}

/// The error of a closed queue.
fn closed() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure("the queue is closed".into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stores deferrable requests while `breaker` refuses calls, and replays them once it is
/// CLOSED: see the [module docs](self). Give it a named breaker (a family member may be
/// evicted and replaced), one the service below the layer goes through. `B` is the request
/// body type (inferred where the layer is used), which replayed requests are built in.
pub struct QueueLayer<B> {
    shared: Shared,
    _body: PhantomData<fn(B)>,
}

#[derive(Clone)]
struct Shared {
    queue: WriteQueue,
    breaker: CircuitBreaker,
    deferrable: Arc<dyn Fn(&http::request::Parts) -> bool + Send + Sync>,
}

impl<B> Clone for QueueLayer<B> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for QueueLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLayer")
            .field("breaker", &self.shared.breaker.name())
            .finish_non_exhaustive()
    }
}

impl<B> QueueLayer<B> {
    /// Queues into `queue` while `breaker` refuses calls: requests with an `Idempotency-Key`
    /// and a method that changes something (`POST`, `PUT`, `PATCH`, `DELETE`).
    pub fn new(queue: WriteQueue, breaker: CircuitBreaker) -> Self {
        Self {
            shared: Shared {
                queue,
                breaker,
                deferrable: Arc::new(|_| false),
            },
            _body: PhantomData,
        }
    }

    /// Also queues the requests `marks` says may be deferred without a key (each one is then
    /// queued, with nothing to tell repeats apart).
    #[must_use]
    pub fn deferrable(
        mut self,
        marks: impl Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.shared.deferrable = Arc::new(marks);
        self
    }
}

impl<S, B, RB> Layer<S> for QueueLayer<B>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: From<Bytes> + Send + 'static,
    RB: Send + 'static,
{
    type Service = QueueService<S>;

    /// Wraps `inner`, and (once per queue, on the current tokio runtime) starts the task that
    /// replays the queue through a clone of it, also what a previous run left in the queue.
    fn layer(&self, inner: S) -> QueueService<S> {
        let queue = &self.shared.queue;
        if let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !queue.inner.replaying.swap(true, Ordering::AcqRel)
        {
            runtime.spawn(replay(
                queue.clone(),
                self.shared.breaker.clone(),
                inner.clone(),
            ));
        }
        QueueService {
            inner,
            layer: self.shared.clone(),
        }
    }
}

/// The service of [`QueueLayer`].
#[derive(Clone)]
pub struct QueueService<S> {
    inner: S,
    layer: Shared,
}

impl<S> std::fmt::Debug for QueueService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueService")
            .field("breaker", &self.layer.breaker.name())
            .finish_non_exhaustive()
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn answer<B: From<Bytes>>(status: StatusCode, body: serde_json::Value) -> Response<B> {
    let mut res = Response::new(B::from(Bytes::from(body.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for QueueService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResB: From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = QueueFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let refusing = !self.layer.breaker.state().allows_calls()
            && self.layer.breaker.state() != State::HalfOpen;
        let changes = matches!(
            *req.method(),
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        let waiting = self.layer.queue.inner.waiting.load(Ordering::Relaxed) > 0;
        let keyed = changes && req.headers().contains_key(IDEMPOTENCY_KEY);
        if !(refusing || (keyed && waiting)) {
            return QueueFuture::inner(self.inner.call(req));
        }
        let (parts, body) = req.into_parts();
        // A key belongs to one method and path: another write's key of the same name is not it.
        let key = parts
            .headers
            .get(IDEMPOTENCY_KEY)
            .and_then(|v| v.to_str().ok())
            .map(|k| format!("{} {} {k}", parts.method, parts.uri.path()));
        let queue = self.layer.queue.clone();
        if !refusing {
            // Closed, with writes still waiting: one of them under this key answers for it
            // (a client retrying before the replay reached it); anything else goes through.
            let ready = self.inner.clone();
            let mut svc = std::mem::replace(&mut self.inner, ready);
            return QueueFuture::queue(Box::pin(async move {
                let k = key.clone().unwrap_or_default();
                let q = queue.clone();
                if let Ok(Ok(Some(id))) =
                    tokio::task::spawn_blocking(move || q.waiting_id(&k)).await
                {
                    return Ok(queued_answer(
                        id,
                        false,
                        "already queued under this Idempotency-Key",
                    ));
                }
                svc.call(Request::from_parts(parts, body)).await
            }));
        }
        let deferrable = (key.is_some() && changes) || (self.layer.deferrable)(&parts);
        if !deferrable {
            return QueueFuture::inner(self.inner.call(Request::from_parts(parts, body)));
        }
        QueueFuture::queue(Box::pin(
            async move { Ok(defer(queue, parts, body, key).await) },
        ))
    }
}

fn queued_answer<B: From<Bytes>>(id: i64, applied: bool, message: &str) -> Response<B> {
    answer(
        StatusCode::ACCEPTED,
        serde_json::json!({"code": "QUEUED", "id": id, "applied": applied, "message": message}),
    )
}

/// Stores one request and says so.
async fn defer<ReqB, ResB>(
    queue: WriteQueue,
    parts: http::request::Parts,
    body: ReqB,
    key: Option<String>,
) -> Response<ResB>
where
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResB: From<Bytes>,
{
    let limit = queue.inner.max_body;
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    serde_json::json!({"code": "PAYLOAD_TOO_LARGE", "message": format!("a queued body is at most {limit} bytes")}),
                )
            } else {
                answer(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"code": "BAD_REQUEST", "message": format!("the body could not be read: {e}")}),
                )
            };
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(n, _)| *n != http::header::HOST && *n != http::header::CONTENT_LENGTH)
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let method = parts.method.as_str().to_owned();
    let stored = tokio::task::spawn_blocking(move || {
        queue.store(key.as_deref(), &method, &uri, &headers, &body)
    })
    .await;
    match stored {
        Ok(Ok(Storing::Queued(id))) => answer(
            StatusCode::ACCEPTED,
            serde_json::json!({"code": "QUEUED", "id": id, "message": "the circuit is open: stored, to be applied once it closes"}),
        ),
        Ok(Ok(Storing::Known(id, applied))) => {
            queued_answer(id, applied, "already queued under this Idempotency-Key")
        }
        Ok(Ok(Storing::Full)) => answer(
            StatusCode::INSUFFICIENT_STORAGE,
            serde_json::json!({"code": "QUEUE_FULL", "message": "the write queue is full: not stored, retry later"}),
        ),
        Ok(Err(e)) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"code": "QUEUE_UNAVAILABLE", "message": format!("not stored: {e}")}),
        ),
        Err(e) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"code": "QUEUE_UNAVAILABLE", "message": format!("not stored: {e}")}),
        ),
    }
}

/// Replays the queue whenever the breaker is CLOSED, in order, at the queue's rate.
async fn replay<S, ReqB, ResB>(queue: WriteQueue, breaker: CircuitBreaker, mut service: S)
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ReqB: From<Bytes> + Send + 'static,
{
    let events = breaker.subscribe_with_capacity(16);
    let mut pace = tokio::time::interval(Duration::from_secs(1) / queue.inner.replay_rate);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After a failed replay, the next try waits for the breaker to close again (or, if it
    // never leaves CLOSED, for a backoff that doubles up to a minute).
    let mut stalled: Option<Duration> = None;
    while !queue.is_closed() {
        match stalled {
            None => {
                // Woken by the breaker's events, and once a second in any case.
                let _ = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
            }
            Some(backoff) => {
                let closed_again = async {
                    while let Some(e) = events.recv().await {
                        if matches!(
                            e.kind,
                            breakwater_core::EventKind::StateTransition {
                                to: State::Closed,
                                ..
                            }
                        ) {
                            return;
                        }
                    }
                };
                if tokio::time::timeout(backoff, closed_again).await.is_ok() {
                    stalled = None;
                } else {
                    stalled = Some((backoff * 2).min(Duration::from_secs(60)));
                }
            }
        }
        while breaker.state() == State::Closed {
            let q = queue.clone();
            let Ok(Ok(Some(entry))) = tokio::task::spawn_blocking(move || q.next()).await else {
                break;
            };
            pace.tick().await;
            let applied = match request_of(&entry) {
                Some(req) => {
                    std::future::poll_fn(|cx| service.poll_ready(cx))
                        .await
                        .is_ok()
                        && service.call(req).await.is_ok_and(|res| {
                            let s = res.status().as_u16();
                            // A timeout or a "too many" is not an answer to the write.
                            s < 500 && s != 408 && s != 429
                        })
                }
                // Not a request any more: nothing to apply.
                None => true,
            };
            let q = queue.clone();
            let id = entry.id;
            let _ = tokio::task::spawn_blocking(move || q.mark(id, applied)).await;
            if !applied {
                stalled = Some(stalled.unwrap_or(Duration::from_secs(1)));
                break;
            }
            stalled = None;
        }
    }
}

fn request_of<B: From<Bytes>>(entry: &Stored) -> Option<Request<B>> {
    let mut req = Request::builder()
        .method(Method::from_bytes(entry.method.as_bytes()).ok()?)
        .uri(entry.uri.as_str());
    for (name, value) in &entry.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            continue;
        };
        req = req.header(name, value);
    }
    req.body(B::from(Bytes::from(entry.body.clone()))).ok()
}

pin_project_lite::pin_project! {
    /// The future of [`QueueService`]: the inner service's, or the storing of a request.
    pub struct QueueFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Inner { #[pin] fut: F },
        Queue { fut: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>> },
    }
}

impl<F, B, E> QueueFuture<F, B, E> {
    fn inner(fut: F) -> Self {
        Self {
            kind: Kind::Inner { fut },
        }
    }

    fn queue(fut: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>) -> Self {
        Self {
            kind: Kind::Queue { fut },
        }
    }
}

impl<F, B, E> std::fmt::Debug for QueueFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueFuture")
    }
}

impl<F, B, E> Future for QueueFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => fut.poll(cx),
            KindProj::Queue { fut } => fut.as_mut().poll(cx),
        }
    }
}
