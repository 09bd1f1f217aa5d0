//! The write queue around a real tower service: what it stores while the breaker refuses,
//! its limits, and its replay once the breaker closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use breakwater::history::queue::{QueueLayer, WriteQueue};
use breakwater::{CircuitBreaker, Config};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceExt};

fn temp_dir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("breakwater-queue-{}-{nanos}", std::process::id()))
}

type Svc = tower::util::BoxCloneService<
    Request<Full<Bytes>>,
    Response<Full<Bytes>>,
    std::convert::Infallible,
>;

/// A service that tells each request's key and body, answering with `status`.
fn upstream(status: Arc<AtomicU16>) -> (Svc, mpsc::UnboundedReceiver<(String, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let svc = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let tx = tx.clone();
        let status = status.clone();
        async move {
            let key = req
                .headers()
                .get("idempotency-key")
                .map_or("-", |v| v.to_str().unwrap())
                .to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let _ = tx.send((key, String::from_utf8(body.to_vec()).unwrap()));
            let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
            *res.status_mut() = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
            Ok(res)
        }
    });
    (tower::util::BoxCloneService::new(svc), rx)
}

fn post(key: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut req = Request::post("/orders").header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

async fn send(
    svc: &mut impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = std::convert::Infallible,
    >,
    req: Request<Full<Bytes>>,
) -> (StatusCode, serde_json::Value) {
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_queued_while_open_and_applied_once_each_in_order_after_it_closes() {
    let dir = temp_dir();
    let answer_with = Arc::new(AtomicU16::new(200));
    let (inner, mut seen) = upstream(answer_with.clone());
    let breaker = CircuitBreaker::new("upstream", Config::default());
    let queue = WriteQueue::builder()
        .max_entries(4)
        .max_body(64)
        .replay_rate(1_000)
        .open(&dir)
        .unwrap();
    let mut svc = QueueLayer::new(queue.clone(), breaker.clone()).layer(inner);

    // Closed: through at once.
    assert_eq!(
        send(&mut svc, post(Some("k0"), "zero")).await.0,
        StatusCode::OK
    );
    assert_eq!(seen.recv().await.unwrap(), ("k0".into(), "zero".into()));

    breaker.force_open();
    let mut ids = Vec::new();
    for (k, body) in [("k1", "one"), ("k2", "two"), ("k3", "three")] {
        let (status, answer) = send(&mut svc, post(Some(k), body)).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (StatusCode::ACCEPTED, Some("QUEUED"))
        );
        ids.push(answer["id"].as_i64().unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // The same key again: the first entry, not a second one.
    let (status, again) = send(&mut svc, post(Some("k2"), "two, again")).await;
    assert_eq!(
        (status, again["id"].as_i64()),
        (StatusCode::ACCEPTED, Some(ids[1]))
    );
    // No key and not marked deferrable: through to the service (which the breaker guards).
    let (status, _) = send(&mut svc, post(None, "keyless")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.recv().await.unwrap().0, "-");
    // Too large, then full (4 entries at most).
    let (status, e) = send(&mut svc, post(Some("big"), &"x".repeat(65))).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("PAYLOAD_TOO_LARGE"))
    );
    assert_eq!(
        send(&mut svc, post(Some("k4"), "four")).await.0,
        StatusCode::ACCEPTED
    );
    let (status, e) = send(&mut svc, post(Some("k5"), "five")).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::INSUFFICIENT_STORAGE, Some("QUEUE_FULL"))
    );
    let view = queue.view();
    assert_eq!((view.queued_count, view.applied), (4, 0));
    assert!(
        seen.try_recv().is_err(),
        "nothing reached the service while open"
    );

    // The upstream answers 503 at first: the replay stops at the first entry and keeps it.
    answer_with.store(503, Ordering::SeqCst);
    breaker.close();
    assert_eq!(seen.recv().await.unwrap().0, "k1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.view().queued.first().is_some_and(|e| e.attempts == 0) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    assert_eq!(queue.view().queued_count, 4);
    // Closed while entries wait: a client retrying a queued key is answered by its entry.
    let (status, again) = send(&mut svc, post(Some("k3"), "three, again")).await;
    assert_eq!(
        (status, again["id"].as_i64()),
        (StatusCode::ACCEPTED, Some(ids[2]))
    );
    assert!(
        seen.try_recv().is_err(),
        "the retry did not reach the service"
    );
    // Then it recovers, and the next closing resumes: every entry, in order, once.
    answer_with.store(200, Ordering::SeqCst);
    breaker.force_open();
    breaker.close();
    let mut applied = Vec::new();
    while applied.len() < 4 {
        let (key, body) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
            .await
            .unwrap()
            .unwrap();
        applied.push(format!("{key}={body}"));
    }
    assert_eq!(applied, ["k1=one", "k2=two", "k3=three", "k4=four"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.view().applied < 4 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    assert_eq!(queue.view().queued_count, 0);
    assert!(seen.try_recv().is_err(), "each once");
    // A key already applied is not applied again.
    breaker.force_open();
    let (status, again) = send(&mut svc, post(Some("k1"), "one, again")).await;
    assert_eq!(
        (status, again["applied"].as_bool()),
        (StatusCode::ACCEPTED, Some(true))
    );
    queue.close();
    let (status, e) = send(&mut svc, post(Some("k9"), "after close")).await;
    assert_eq!(
        (status, e["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("QUEUE_UNAVAILABLE"))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn zero_limits_are_refused_naming_the_field() {
    let e = WriteQueue::builder()
        .max_entries(0)
        .open(temp_dir())
        .unwrap_err();
    assert!(e.to_string().contains("max_entries"), "{e}");
}
