//! The gateway's guards over HTTP: the authentication-failure circuit on `/api/auth/...` and
//! the per-client rate limit, clients told apart by a trusted proxy's `X-Forwarded-For`.

#[path = "../examples/gateway/main.rs"]
mod gateway;

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::any;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

async fn upstream() -> std::net::SocketAddr {
    let app = Router::new().fallback(any(|req: axum::extract::Request| async move {
        if req.uri().path().starts_with("/auth/") {
            let ok = req
                .headers()
                .get("x-password")
                .is_some_and(|p| p == "right");
            return if ok {
                (StatusCode::OK, "welcome")
            } else {
                (StatusCode::UNAUTHORIZED, "no")
            };
        }
        (StatusCode::OK, "[1,2,3]")
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn gateway(args: &[&str]) -> gateway::Gateway {
    let up = upstream().await;
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--ops-token",
        "t",
        "--trusted-proxies",
        "127.0.0.1",
    ];
    let up = format!("http://{up}");
    all.extend(["--upstream", up.as_str()]);
    all.extend(args);
    let options = gateway::Options::parse(all.iter().map(|a| (*a).to_owned()), |_| None).unwrap();
    gateway::start(options).await.unwrap()
}

async fn get(
    gw: &gateway::Gateway,
    path: &str,
    client: &str,
    password: &str,
) -> (StatusCode, Option<String>, String) {
    let req = Request::get(format!("http://{}{path}", gw.addr))
        .header("x-forwarded-for", client)
        .header("x-password", password)
        .body(Body::empty())
        .unwrap();
    let res = Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

/// The gateway's `/metrics` text.
async fn metrics(gw: &gateway::Gateway) -> String {
    let req = Request::get(format!("http://{}/metrics", gw.addr))
        .body(Body::empty())
        .unwrap();
    let res = Client::builder(TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_20_bad_logins_is_refused_while_another_still_logs_in() {
    let gw = gateway(&[]).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&gw, "/api/auth/login", "203.0.113.66", "wrong").await);
    }
    assert!(
        statuses[..10]
            .iter()
            .all(|(s, ..)| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    for (status, retry, body) in &statuses[10..] {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("60"));
        assert!(body.contains("TOO_MANY_AUTH_FAILURES"), "{body}");
    }
    let (status, ..) = get(&gw, "/api/auth/login", "203.0.113.7", "right").await;
    assert_eq!(status, StatusCode::OK, "another client still logs in");
    // Other routes are not the auth guard's.
    let (status, ..) = get(&gw, "/api/items", "203.0.113.66", "").await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics(&gw).await;
    assert!(
        text.contains("resilience_auth_guard_refused_total{guard_name=\"auth\"} 10"),
        "{text}"
    );
    assert!(
        text.contains("resilience_auth_guard_blocked_total{guard_name=\"auth\"} 1"),
        "{text}"
    );
    gw.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_refuses_a_client_over_its_rate_and_counts_it() {
    let gw = gateway(&["--rate-limit", "5", "--rate-limit-groups", "auth=1"]).await;
    let mut refused = None;
    let mut ok = 0;
    for _ in 0..20 {
        match get(&gw, "/api/items", "198.51.100.1", "").await {
            (StatusCode::OK, ..) => ok += 1,
            (StatusCode::TOO_MANY_REQUESTS, retry, body) => {
                assert!(body.contains("RATE_LIMITED"), "{body}");
                refused.get_or_insert(retry);
            }
            other => panic!("{other:?}"),
        }
    }
    // A burst of one second's worth, then refusals (how many more got through depends on how
    // long the loop took: the deterministic figure is `breakwater-guard`'s manual-clock test).
    assert!((5..20).contains(&ok), "{ok} let through");
    assert_eq!(refused, Some(Some("1".to_owned())));
    // Another client is not limited by the first one's requests.
    assert_eq!(
        get(&gw, "/api/items", "198.51.100.2", "").await.0,
        StatusCode::OK
    );
    let text = metrics(&gw).await;
    let rejected = format!(
        "resilience_rate_limiter_calls_total{{rate_limiter_name=\"reads\",outcome=\"rejected\"}} {}",
        20 - ok
    );
    assert!(text.contains(&rejected), "{text}");
    // A refused request never reached the breakers: the upstream's counts only the rest.
    let upstream = format!(
        "resilience_circuit_breaker_calls_total{{circuit_breaker_name=\"upstream\",circuit_breaker_outcome=\"success\"}} {}",
        ok + 1
    );
    assert!(text.contains(&upstream), "{text}");
    gw.shut_down().await;
}

#[test]
fn guard_flags_are_checked() {
    let parse =
        |args: &[&str]| gateway::Options::parse(args.iter().map(|a| (*a).to_owned()), |_| None);
    let o = parse(&[
        "--rate-limit",
        "50",
        "--rate-limit-groups",
        "writes=2",
        "--auth-failures",
        "3",
    ])
    .unwrap();
    assert!(o.rate_limits.contains(&("reads", 50)) && o.rate_limits.contains(&("writes", 2)));
    assert_eq!(o.auth_guard.failures, 3);
    let rfc = parse(&[
        "--trusted-proxies",
        "10.0.0.1",
        "--forwarded-header",
        "Forwarded",
    ])
    .unwrap();
    assert_eq!(
        rfc.trusted_proxies,
        breakwater::guard::TrustedProxies::parse("10.0.0.1")
            .unwrap()
            .header(breakwater::guard::ForwardedHeader::Forwarded)
    );
    assert!(
        parse(&[]).unwrap().rate_limits.is_empty(),
        "off unless asked for"
    );
    for (args, named) in [
        (vec!["--rate-limit", "0"], "--rate-limit"),
        (vec!["--rate-limit-groups", "bogus=3"], "unknown group"),
        (vec!["--rate-limit-groups", "reads"], "GROUP=RPS"),
        (vec!["--trusted-proxies", "not-an-ip"], "--trusted-proxies"),
        (vec!["--forwarded-header", "via"], "--forwarded-header"),
        (vec!["--auth-block-s", "0"], "--auth-block-s"),
    ] {
        let e = parse(&args).unwrap_err();
        assert!(e.contains(named), "{e}");
    }
    let env = gateway::Options::parse(Vec::<String>::new(), |k| {
        (k == "BREAKWATER_RATE_LIMIT").then(|| "9".to_owned())
    })
    .unwrap();
    assert!(env.rate_limits.contains(&("auth", 9)));
}
