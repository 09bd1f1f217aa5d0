//! Real servers on 127.0.0.1 for the layer's tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::any;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

pub const OK: u8 = 0;
pub const FAIL: u8 = 1;
pub const HANG: u8 = 2;

/// An upstream that counts the requests it receives, answers 200 or 500, or holds requests
/// until the test releases them; every arrival is announced on a channel.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    arrivals: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
}

struct UpstreamState {
    hits: AtomicUsize,
    mode: AtomicU8,
    gate: Semaphore,
    arrived: mpsc::UnboundedSender<()>,
}

async fn handle(State(s): State<Arc<UpstreamState>>) -> (StatusCode, &'static str) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let _ = s.arrived.send(());
    match s.mode.load(Ordering::SeqCst) {
        FAIL => (StatusCode::INTERNAL_SERVER_ERROR, "down"),
        HANG => {
            let _permit = s.gate.acquire().await;
            (StatusCode::OK, "late")
        }
        _ => (StatusCode::OK, "ok"),
    }
}

impl Upstream {
    pub async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(UpstreamState {
            hits: AtomicUsize::new(0),
            mode: AtomicU8::new(OK),
            gate: Semaphore::new(0),
            arrived: tx,
        });
        let app = Router::new()
            .route("/{*rest}", any(handle))
            .route("/", any(handle))
            .with_state(state.clone());
        let addr = serve(app).await;
        Self {
            addr,
            state,
            arrivals: tokio::sync::Mutex::new(rx),
        }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    /// Lets `n` held requests answer.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Waits until `n` more requests have arrived.
    pub async fn arrived(&self, n: usize) {
        let mut rx = self.arrivals.lock().await;
        for _ in 0..n {
            rx.recv().await.expect("upstream alive");
        }
    }

    /// Forgets arrivals announced so far.
    pub async fn drain_arrivals(&self) {
        let mut rx = self.arrivals.lock().await;
        while rx.try_recv().is_ok() {}
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Serves an axum app on 127.0.0.1 (a free port) in the background.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn request(url: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(url).body(Empty::new()).unwrap()
}

/// Reads a whole body.
pub async fn body_bytes<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

/// An axum answer's status, headers and body: as JSON, or (not JSON) as a string.
pub async fn answer(
    res: http::Response<axum::body::Body>,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let (parts, body) = res.into_parts();
    let bytes = body_bytes(body).await;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    (parts.status, parts.headers, json)
}

/// An empty GET of `path`, for an axum app.
pub fn get(path: &str) -> http::Request<axum::body::Body> {
    http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// Counts futures dropped before they finished (the cancelled calls): each holds a
/// [`Cancelled::guard`], forgotten when it finishes.
#[derive(Clone, Default)]
pub struct Cancelled(Arc<AtomicUsize>);

/// Counts one cancellation when dropped.
pub struct CancelGuard(Arc<AtomicUsize>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Cancelled {
    /// A guard for one call.
    pub fn guard(&self) -> CancelGuard {
        CancelGuard(self.0.clone())
    }

    /// How many calls were cancelled.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}
