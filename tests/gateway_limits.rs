//! The gateway against hanging upstreams and hostile clients, on real sockets on 127.0.0.1:
//! time limits the breakers see, slow and partial request heads, the connection cap, the body
//! limit, the separate ops listener, odd ops paths, graceful shutdown, and the flags.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::any;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "limits-token";

/// An upstream that answers at once, or never (`hang`); it counts requests and the bodies it
/// received whole.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    hang: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    whole_bodies: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        let hang = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let whole_bodies = Arc::new(AtomicUsize::new(0));
        let (h, n, w) = (hang.clone(), hits.clone(), whole_bodies.clone());
        let app = Router::new().fallback(any(move |req: axum::extract::Request| {
            let (h, n, w) = (h.clone(), n.clone(), w.clone());
            async move {
                if req.uri().path() == "/" {
                    return (StatusCode::OK, "probe".to_owned()); // the health probe
                }
                n.fetch_add(1, Ordering::SeqCst);
                if h.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                if req.into_body().collect().await.is_ok() {
                    w.fetch_add(1, Ordering::SeqCst);
                }
                (StatusCode::OK, "[1,2,3]".to_owned())
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            hang,
            hits,
            whole_bodies,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    json: Value,
}

async fn send(
    client: &Client<HttpConnector, Body>,
    method: Method,
    url: String,
    body: Body,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .unwrap();
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn gateway(up: &Upstream, options: gateway::Options) -> gateway::Gateway {
    gateway::start(gateway::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: Some(format!("http://{}", up.addr).parse().unwrap()),
        ops_token: TOKEN.into(),
        ..options
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_hanging_upstream_gets_a_504_and_opens_the_endpoint_breaker() {
    let up = Upstream::start().await;
    let limit = Duration::from_millis(300);
    let gw = gateway(
        &up,
        gateway::Options {
            upstream_timeout: Some(limit),
            ..Default::default()
        },
    )
    .await;
    let http = client();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    // A good answer first, kept by the stale cache.
    assert_eq!(
        send(&http, Method::GET, url("/api/items"), Body::empty())
            .await
            .status,
        200
    );
    up.hang.store(true, Ordering::SeqCst);

    let mut took = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let a = send(&http, Method::GET, url("/api/items/7"), Body::empty()).await;
        took.push(started.elapsed());
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(a.json["code"], "UPSTREAM_TIMEOUT");
    }
    let metrics = send(
        &http,
        Method::GET,
        url("/v1/circuit-breaker/metrics"),
        Body::empty(),
    )
    .await;
    let endpoint = &metrics.json["circuits"]["read:GET /api/items/{id}"];
    assert_eq!(
        endpoint["state"], "OPEN",
        "the read preset opens after 3 failures"
    );
    assert_eq!(endpoint["failures"], 3);
    // Now refused without calling the upstream.
    let hits = up.hits();
    let started = Instant::now();
    let refused = send(&http, Method::GET, url("/api/items/7"), Body::empty()).await;
    let refused_in = started.elapsed();
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json["code"], "CIRCUIT_OPEN");
    assert_eq!(up.hits(), hits);
    // A cached GET over its limit is answered from the stale cache, marked.
    let stale = send(&http, Method::GET, url("/api/items"), Body::empty()).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.headers["x-fallback"], "stale");
    println!("timed out after {took:?} (limit {limit:?}); refused in {refused_in:?}");
    gw.shut_down().await;
}

#[tokio::test]
async fn partial_heads_are_closed_at_the_header_timeout_while_requests_go_on() {
    let up = Upstream::start().await;
    let header_timeout = Duration::from_millis(500);
    let gw = gateway(
        &up,
        gateway::Options {
            header_timeout,
            ..Default::default()
        },
    )
    .await;
    const SLOW: usize = 2_000;
    let started = Instant::now();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // Normal requests are served meanwhile.
    let http = client();
    for _ in 0..20 {
        let a = send(
            &http,
            Method::GET,
            format!("http://{}/api/items", gw.addr),
            Body::empty(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    // Every partial head's connection is closed by the server (EOF, or a reset).
    let bound = header_timeout + Duration::from_secs(10);
    let closed = tokio::time::timeout(bound, async {
        for mut s in slow {
            let mut buf = [0u8; 256];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue, // hyper may answer 408 first
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "every partial head's connection was closed");
    println!(
        "{SLOW} partial heads closed {:?} after they were opened (header timeout {header_timeout:?})",
        started.elapsed()
    );
    gw.shut_down().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let up = Upstream::start().await;
    let gw = gateway(
        &up,
        gateway::Options {
            max_connections: 4,
            ..Default::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "kept alive and answered"
        );
        held.push(s);
    }
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf))
        .await
        .expect("closed, not left waiting");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the fifth connection got no answer"
    );
    // Once one is closed, a new one is served.
    drop(held.pop());
    let http = client();
    let mut served = false;
    for _ in 0..100 {
        let req = Request::get(format!("http://{}/health/live", gw.addr))
            .body(Body::empty())
            .unwrap();
        if let Ok(res) = http.request(req).await {
            served = res.status() == StatusCode::OK;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(served);
    gw.shut_down().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_and_never_reach_the_upstream_whole() {
    let up = Upstream::start().await;
    let gw = gateway(
        &up,
        gateway::Options {
            max_body_bytes: 1024,
            ..Default::default()
        },
    )
    .await;
    let http = client();
    let url = format!("http://{}/api/orders", gw.addr);
    let ok = send(
        &http,
        Method::POST,
        url.clone(),
        Body::from(vec![b'x'; 1024]),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(up.whole_bodies.load(Ordering::SeqCst), 1);

    // Declared too large: refused before the upstream is called.
    let hits = up.hits();
    let big = send(
        &http,
        Method::POST,
        url.clone(),
        Body::from(vec![b'x'; 20 << 20]),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(big.json["code"], "PAYLOAD_TOO_LARGE");
    assert_eq!(up.hits(), hits);

    // Streamed (no length) past the limit: cut there, refused; the upstream never has it whole.
    let chunks = (0..64)
        .map(|_| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b'y'; 256]))));
    let streamed = Body::new(StreamBody::new(tokio_stream::iter(chunks)));
    let cut = send(&http, Method::POST, url, streamed).await;
    assert_eq!(cut.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        up.whole_bodies.load(Ordering::SeqCst),
        1,
        "no oversized body arrived whole"
    );
    gw.shut_down().await;
}

#[tokio::test]
async fn the_ops_listener_keeps_the_ops_api_off_the_public_one() {
    let up = Upstream::start().await;
    let gw = gateway(
        &up,
        gateway::Options {
            ops_listen: Some("127.0.0.1:0".parse().unwrap()),
            ops_read_token: Some("reader".into()),
            ..Default::default()
        },
    )
    .await;
    let http = client();
    let public = |p: &str| format!("http://{}{p}", gw.addr);
    let ops_addr = gw.ops_addr.expect("an ops listener");
    let ops = |p: &str| format!("http://{ops_addr}{p}");
    for path in ["/v1/circuit-breaker/metrics", "/metrics", "/v1/alerts"] {
        let a = send(&http, Method::GET, public(path), Body::empty()).await;
        assert_eq!(
            a.status,
            StatusCode::NOT_FOUND,
            "{path} on the public listener"
        );
        assert_eq!(a.json["code"], "NOT_FOUND");
    }
    assert_eq!(
        send(&http, Method::GET, public("/health"), Body::empty())
            .await
            .status,
        200
    );
    assert_eq!(
        send(&http, Method::GET, public("/api/items"), Body::empty())
            .await
            .status,
        200
    );
    // Reads need the read token there.
    let closed = send(
        &http,
        Method::GET,
        ops("/v1/circuit-breaker/metrics"),
        Body::empty(),
    )
    .await;
    assert_eq!(closed.status, StatusCode::UNAUTHORIZED);
    let req = Request::get(ops("/v1/circuit-breaker/metrics"))
        .header(header::AUTHORIZATION, "Bearer reader")
        .body(Body::empty())
        .unwrap();
    assert_eq!(http.request(req).await.unwrap().status(), StatusCode::OK);
    gw.shut_down().await;
}

/// Sends `raw` on a fresh connection and reads the answer's head.
async fn raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn odd_ops_paths_get_their_4xx_and_change_nothing() {
    let up = Upstream::start().await;
    let gw = gateway(&up, gateway::Options::default()).await;
    let before = gw.registry.snapshots();
    let long = "a".repeat(64 << 10);
    let paths = [
        "/v1/circuit-breaker/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/v1/circuit-breaker/%00".to_owned(),
        "/v1/circuit-breaker/%ZZ".to_owned(),
        "/v1/circuit-breaker/%C0%AF".to_owned(),
        "/v1/circuit-breaker/x%0D%0ASet-Cookie:%20a=b".to_owned(),
        format!("/v1/circuit-breaker/{long}"),
        "/v1/circuit-breaker/force-open/..%2Fupstream".to_owned(),
    ];
    for path in &paths {
        for method in ["GET", "POST", "PUT"] {
            let head = raw(
                gw.addr,
                format!(
                    "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            assert!(
                (400..500).contains(&status),
                "{method} {}: {}",
                &path[..path.len().min(60)],
                head.lines().next().unwrap_or("")
            );
            let headers = head.split("\r\n\r\n").next().unwrap_or("");
            assert!(
                !headers
                    .lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("set-cookie")),
                "no header injected: {headers}"
            );
        }
    }
    // A CR or LF in the request line itself is refused by the HTTP parser.
    let head = raw(
        gw.addr,
        b"GET /v1/circuit-breaker/a\rb HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(head.is_empty() || head.starts_with("HTTP/1.1 4"), "{head}");
    let after = gw.registry.snapshots();
    assert_eq!(
        before
            .iter()
            .map(|s| (&s.name, s.state))
            .collect::<Vec<_>>(),
        after.iter().map(|s| (&s.name, s.state)).collect::<Vec<_>>(),
        "nothing changed"
    );
    gw.shut_down().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let up = Upstream::start().await;
    let gw = gateway(&up, gateway::Options::default()).await;
    up.hang.store(true, Ordering::SeqCst);
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move {
        send(
            &client(),
            Method::GET,
            format!("http://{addr}/api/items/1"),
            Body::empty(),
        )
        .await
    });
    while up.hits() == 0 {
        tokio::task::yield_now().await;
    }
    let shutting = tokio::spawn(gw.shut_down());
    // New connections are no longer accepted...
    let mut refused = false;
    for _ in 0..1_000 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the listener is closed");
    // ...while the request in flight still gets its answer (its time limit, 2 s, ends it).
    up.hang.store(false, Ordering::SeqCst);
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    shutting.await.unwrap();
}

#[test]
fn flags_override_the_environment_and_bad_values_name_the_flag() {
    let env = |k: &str| match k {
        "BREAKWATER_UPSTREAM_TIMEOUT_MS" => Some("1500".to_owned()),
        "BREAKWATER_MAX_BODY_BYTES" => Some("2048".to_owned()),
        "BREAKWATER_OPS_LISTEN" => Some("127.0.0.1:9901".to_owned()),
        _ => None,
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = gateway::Options::parse(args(&["--upstream-timeout-ms", "250"]), env).unwrap();
    assert_eq!(o.upstream_timeout, Some(Duration::from_millis(250)));
    assert_eq!(o.max_body_bytes, 2048);
    assert_eq!(o.ops_listen, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(o.header_timeout, Duration::from_secs(10));
    assert_eq!(o.max_connections, 10_000);
    for (flag, value) in [
        ("--upstream-timeout-ms", "0"),
        ("--header-timeout-ms", "soon"),
        ("--max-connections", "-1"),
        ("--ops-listen", "localhost"),
    ] {
        let err = gateway::Options::parse(args(&[flag, value]), |_| None).unwrap_err();
        assert!(err.contains(flag), "{err}");
    }
    let a = gateway::Options::default().ops_token;
    let b = gateway::Options::default().ops_token;
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b, "a fresh random token each time");
}

#[tokio::test]
async fn http2_clients_are_told_the_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let gw = gateway(&up, gateway::Options::default()).await;
    // HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame; the server answers
    // with its own SETTINGS first.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    assert_eq!(head[3], 0x4, "a SETTINGS frame");
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    let settings: std::collections::HashMap<u16, u32> = payload
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) and SETTINGS_MAX_HEADER_LIST_SIZE (0x6).
    assert_eq!(settings.get(&0x3), Some(&256), "{settings:?}");
    assert_eq!(settings.get(&0x6), Some(&(64 << 10)), "{settings:?}");
    drop(s);
    gw.shut_down().await;
}

#[tokio::test]
async fn sigterm_stops_the_gateway_after_the_request_in_flight() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // An upstream that holds each request until the test lets it go.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let (g, h) = (gate.clone(), hits.clone());
    let app = Router::new().fallback(any(move |req: axum::extract::Request| {
        let (g, h) = (g.clone(), h.clone());
        async move {
            if req.uri().path() != "/" {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = g.acquire().await;
            }
            (StatusCode::OK, "[1,2,3]")
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // The example's own binary (built by `cargo test` beside this test).
    let exe = std::env::current_exe().unwrap();
    let gateway_bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("gateway"))
        .unwrap();
    let mut child = Command::new(&gateway_bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{up_addr}"),
            "--upstream-timeout-ms",
            "10000",
        ])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", gateway_bin.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // "Breakwater gateway on http://127.0.0.1:PORT, in front of …"
    let first = lines.next().unwrap().unwrap();
    let addr: SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    let in_flight = tokio::spawn(async move {
        send(
            &client(),
            Method::GET,
            format!("http://{addr}/api/items/1"),
            Body::empty(),
        )
        .await
    });
    while hits.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // It says so, and stops accepting, while the request in flight waits for its answer.
    let said = tokio::task::spawn_blocking(move || {
        lines
            .map_while(Result::ok)
            .find(|l| l.starts_with("shutting down"))
    })
    .await
    .unwrap();
    assert!(said.is_some(), "the gateway announced its shutdown");
    gate.add_permits(1);
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "finished, not cut");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
